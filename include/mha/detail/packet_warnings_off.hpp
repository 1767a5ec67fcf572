// Included (no include guard: once per use) before code that names an SSE / AVX / AVX-512 Packet
// as a template argument (PacketBlock<Packet, N>, unpacket_traits<Packet>, WideLoad<Packet, KV>):
// a Packet is a vector type with attributes, which trips GCC's -Wignored-attributes, as inside
// Eigen, which silences it the same way (Eigen/src/Core/util/DisableStupidWarnings.h). Pair with
// packet_warnings_restore.hpp at the end of that code.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
