// Ends the region that packet_warnings_off.hpp began (no include guard: once per use).
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
