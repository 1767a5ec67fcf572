#pragma once
// The attention core's drivers: run an AttentionProblem on a thread team, with the tiled kernel
// (no [L, S] buffer; split-K for decoding) or the reference kernel (which can return weights).
// Every layer calls these; none has a kernel of its own.

#include <algorithm>
#include <type_traits>

#include "../parallel.hpp"
#include "attention_problem.hpp"
#include "reference_attention.hpp"
#include "scratch.hpp"
#include "tiled_attention.hpp"

namespace mha {
namespace detail {

/// Keys per split-K chunk when decoding. Fixed, so that the chunks (and so the rounding of the
/// result) depend on the shapes only, never on the thread count.
constexpr Index kSplitKeys = 512;

/// Stacked query rows from which a task's products run on packed panels (PackedOperands). Packing
/// all of a head's K^T and V costs about as much as one 32-row query tile's products with them:
/// run_tiled alone, 8 heads, d = 64, S = 1000, one thread, us per call, direct / packed:
/// L = 1: 167 / 263, 16: 614 / 628, 32: 1113 / 1313, 64: 2167 / 2074, 128: 4452 / 3925. Below
/// it (decoding: g heads x a few new tokens) the direct path reads K and V where they lie.
constexpr Index kPackedMinRows = 48;

/// Starting a thread team costs microseconds: below ~1 MFLOP of attention one thread is faster.
template <class Scalar, class KV>
int threads_for_work(const AttentionProblem<Scalar, KV>& p, int threads) {
  const double flops = 4.0 * double(p.batch * p.heads) * double(p.q_len) * double(p.total_keys()) * double(p.head_dim);
  return flops < 1e6 ? 1 : threads;
}

/// How run_tiled cuts a problem into tasks; depends on the shapes and tile sizes only.
struct TilePlan {
  Index rows_per_tile = 0;  // queries per task (per head of a kv group)
  Index tile_count = 0;     // query tiles
  Index heads = 0;          // (batch entry, kv head) pairs
  Index chunks = 1;         // key chunks (split-K) per tile
  Index stacked_rows = 0;   // M: rows of the largest task
  bool packed = false;      // products on packed K^T / V panels (PackedOperands)

  Index tasks() const { return tile_count * heads * chunks; }
};

template <class Scalar, class KV>
TilePlan plan_tiles(const AttentionProblem<Scalar, KV>& p, const TileSizes& tiles) {
  TilePlan plan;
  const Index g = p.group_size();
  plan.rows_per_tile = std::min(p.q_len, std::max<Index>(1, tiles.query_rows / g));
  plan.tile_count = (p.q_len + plan.rows_per_tile - 1) / plan.rows_per_tile;
  plan.heads = p.batch * ((p.heads + g - 1) / g);
  plan.stacked_rows = std::min(g, p.heads) * plan.rows_per_tile;
  // A few query rows against many keys (decoding): split the keys so that threads share them.
  if (p.q_len * g <= 32 && p.k_len >= 2 * kSplitKeys) plan.chunks = (p.k_len + kSplitKeys - 1) / kSplitKeys;
  plan.packed = plan.chunks == 1 && plan.stacked_rows >= kPackedMinRows && p.k_len > 0;
  return plan;
}

/// The tiled kernel over every (batch entry, kv head, query tile, key chunk) task. Causal tasks
/// run heaviest first (the last query tiles see the most keys) and dynamic scheduling fills the
/// tail with the light ones.
template <class Scalar, class KV>
void run_tiled(const AttentionProblem<Scalar, KV>& p, TileSizes tiles, int threads, ScratchPool<Scalar>& pool) {
  threads = threads_for_work(p, threads);
  const TilePlan plan = plan_tiles(p, tiles);
  const Index M = plan.stacked_rows, d = p.head_dim, dv = p.v_dim;
  // Grow-only: a decoder alternates prefill chunks and decode steps of different shapes.
  pool.grow_each(&ThreadScratch<Scalar>::tile, threads, M, TileScratch<Scalar>::cols(tiles, d, dv));
  const Index kv_heads = plan.heads / p.batch;
  // Packed path: every (batch entry, kv head)'s K^T [d, S] and V [S, dv], packed once here (as
  // much memory as K and V; MultiHeadAttention bounds it with head groups) and read by every
  // query tile of the head. Both sizes are multiples of NR, so every block stays aligned. One
  // thread packs: packing is ~1% of the kernel's time, and a team of its own would add a barrier,
  // which on a loaded machine costs a scheduler time slice (2 threads, (1, 512, 512, 8), 2 busy
  // cores: forward medians 40 ms with a parallel pack, 32 ms with this one).
  const Index kt_size = packed_b_size<Scalar>(d, p.k_len), v_size = packed_b_size<Scalar>(p.k_len, dv);
  Scalar* packed_kv = nullptr;  // [pairs][packed K^T, packed V]
  if (plan.packed) {
    packed_kv = pool.packed_kv(plan.heads * (kt_size + v_size));
    pool.reserve_packed(threads, packed_a_size<Scalar>(M, d + tiles.key_rows));
    parallel_for(1, plan.heads, [&](Index pair, int) {
      Scalar* dst = packed_kv + pair * (kt_size + v_size);
      const Index n = pair / kv_heads, kv = pair % kv_heads;
      pack_b_transposed(d, p.k_len, p.k.row(n, kv, 0), p.k.row_stride, dst);
      pack_b(p.k_len, dv, p.v.row(n, kv, 0), p.v.row_stride, dst + kt_size);
    });
  } else {
    if (!std::is_same<KV, Scalar>::value) pool.grow_each(&ThreadScratch<Scalar>::kv, threads, tiles.key_rows, d + dv);
    pool.reserve_gemm(threads, M, tiles.key_rows, d);   // Q K^T
    pool.reserve_gemm(threads, M, dv, tiles.key_rows);  // P V
  }
  const Index per_tile = plan.heads * plan.chunks;
  auto task_of = [&](Index t) {
    TileTask task;
    const Index tile = p.causal ? plan.tile_count - 1 - t / per_tile : t / per_tile;
    const Index nh = (t % per_tile) / plan.chunks, chunk = t % plan.chunks;
    task.n = nh / kv_heads;
    task.kv = nh % kv_heads;
    task.i0 = tile * plan.rows_per_tile;
    task.i1 = std::min(p.q_len, task.i0 + plan.rows_per_tile);
    task.j_begin = plan.chunks == 1 ? 0 : chunk * kSplitKeys;
    task.j_end = plan.chunks == 1 ? p.k_len : std::min(p.k_len, task.j_begin + kSplitKeys);
    return task;
  };
  const Index part_size = M * (dv + 2);  // one task's [M, dv + 2] partial, at the start of its row
  if (plan.chunks > 1) {
    grow(pool.partials(), plan.tasks(), part_size);
    pool.grow_each(&ThreadScratch<Scalar>::aux, threads, 2, std::max(dv + 2, d));
  }
  parallel_for(threads, plan.tasks(), [&](Index t, int thread) {
    ThreadScratch<Scalar>& scratch = pool[thread];
    Scalar* partial = plan.chunks > 1 ? pool.partials().row(t).data() : nullptr;
    const TileTask task = task_of(t);
    if (!plan.packed) {
      attend_tile(p, task, tiles, scratch.tile, scratch.kv, scratch.gemm, static_cast<const PackedOperands<Scalar>*>(nullptr), partial);
      return;
    }
    constexpr int NR = GemmBlocking<Scalar>::NR;
    const Scalar* head = packed_kv + (task.n * kv_heads + task.kv) * (kt_size + v_size);
    const PackedOperands<Scalar> operands{PackedB<Scalar>{head, d * NR, 0, p.k_len, d},
                                          PackedB<Scalar>{head + kt_size, p.k_len * NR, 0, dv, p.k_len},
                                          scratch.packed.data()};
    attend_tile(p, task, tiles, scratch.tile, scratch.kv, scratch.gemm, &operands, partial);
  });
  if (plan.chunks == 1) return;
  // Task t * chunks + c is chunk c of tile task t: merge each tile's chunks in order.
  parallel_for(threads, plan.tasks() / plan.chunks, [&](Index t, int thread) {
    merge_partials(p, task_of(t * plan.chunks), plan.chunks, pool.partials().row(t * plan.chunks).data(),
                   pool.partials().cols(), pool[thread].aux);
  });
}

/// The reference kernel over all (batch entry, head) pairs, optionally writing the weights:
/// averaged over the layer's heads into `[N * L, S']`, or per head into `[N * H * L, S']` at rows
/// of slice `n * H + head_offset + h` (the caller sizes `weights`; averaged weights must start
/// zeroed, as heads add into them).
template <class Scalar>
void run_reference(const AttentionProblem<Scalar>& p, int threads, ScratchPool<Scalar>& pool, Matrix<Scalar>* weights,
                   bool average) {
  const Index N = p.batch, H = p.heads, L = p.q_len;
  threads = threads_for_work(p, threads);
  pool.reserve_tiles(threads, p.q_len, p.total_keys());
  pool.reserve(&ThreadScratch<Scalar>::aux, threads, p.q_len, p.head_dim);
  pool.reserve_gemm(threads, p.q_len, p.k_len, p.head_dim);  // Q K^T
  pool.reserve_gemm(threads, p.q_len, p.v_dim, p.k_len);     // P V
  // With averaged weights, heads of one batch entry add into the same rows: one task per batch
  // entry then, so that no two threads write the same row.
  const bool by_entry = weights && average;
  const Index tasks = by_entry ? N : N * H;
  parallel_for(threads, tasks, [&](Index t, int thread) {
    ThreadScratch<Scalar>& scratch = pool[thread];
    Matrix<Scalar>& probs = scratch.tile;  // [L, S']
    const Index h_begin = by_entry ? 0 : t % H, h_end = by_entry ? H : t % H + 1;
    const Index n = by_entry ? t : t / H;
    for (Index h = h_begin; h < h_end; ++h) {
      attend_head_reference(p, n, h, probs, scratch.aux, scratch.gemm);
      if (!weights) continue;
      if (average)
        weights->middleRows(n * L, L) += probs / Scalar(p.num_heads);
      else
        weights->middleRows((n * p.num_heads + p.head_offset + h) * L, L) = probs;
    }
  });
}

}  // namespace detail
}  // namespace mha
