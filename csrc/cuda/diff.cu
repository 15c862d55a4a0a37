// CUDA bitwise diff of many tensor pairs: one block per 32 KiB tile (of each operand), then one
// thread per super-tile of 256 tiles, then the host folds super-tiles (common/diff_math.hpp).
//
// Each thread owns one lane of the canonical order: it loads its 8 chunks of both operands (16
// bytes each, 256 bytes in flight), then compares them in chunk order, so its running sums are
// exactly the CPU kernel's lane sums. The block combines lanes with the canonical halving tree
// (shared memory for h >= 32, shuffles below), and maxima/counts with any order. A tile with no
// differing byte skips the reductions (__syncthreads_or). No atomics anywhere.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/diff_math.hpp"
#include "backend.hpp"
#include "runtime.cuh"

namespace fastckpt::cuda {
namespace {

using diff::Chunk;
using diff::Kind;
using diff::Partial;

struct PairDesc {
  const uint8_t* a;
  const uint8_t* b;
  uint64_t nbytes;
  uint64_t tile_begin;   // index of this pair's first tile among all tiles of the launch
  uint64_t super_begin;  // same for super-tiles
  uint32_t kind;
  uint32_t size;
};

constexpr int kThreads = static_cast<int>(diff::kLanes);
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr int kSuperThreads = 128;

__device__ __forceinline__ Chunk load_aligned(const uint8_t* p) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  return Chunk{{static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32),
                static_cast<uint64_t>(v.z) | (static_cast<uint64_t>(v.w) << 32)}};
}

// The tail chunk of a buffer, or any chunk of a buffer that is not 16-byte aligned.
__device__ __forceinline__ Chunk load_bytes(const uint8_t* p, uint32_t n) {
  uint64_t lo = 0, hi = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t byte = __ldg(p + i);
    if (i < 8) {
      lo |= byte << (8 * i);
    } else {
      hi |= byte << (8 * (i - 8));
    }
  }
  return Chunk{{lo, hi}};
}

// Bytes of the chunk at `off` that lie inside the buffer (off < nbytes).
__device__ __forceinline__ uint32_t chunk_len(uint64_t nbytes, uint64_t off) {
  return nbytes - off < diff::kChunkBytes ? static_cast<uint32_t>(nbytes - off) : diff::kChunkBytes;
}

template <typename T>
__device__ __forceinline__ T warp_max(T x) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) {
    const T y = __shfl_xor_sync(kFullMask, x, m);
    x = y > x ? y : x;
  }
  return x;
}
__device__ __forceinline__ uint64_t warp_min(uint64_t x) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) {
    const uint64_t y = __shfl_xor_sync(kFullMask, x, m);
    x = y < x ? y : x;
  }
  return x;
}
__device__ __forceinline__ uint64_t warp_sum(uint64_t x) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) x += __shfl_xor_sync(kFullMask, x, m);
  return x;
}

// Shared memory of one block. It is declared once in the kernel: a __shared__ array inside this
// template would be allocated once per instantiation.
struct TileShared {
  double abs[kThreads];
  double sq[kThreads];
  Partial warp[kWarps];
};

template <Kind K, uint32_t Size>
__device__ void diff_tile(const PairDesc& d, uint64_t tile_local, Partial* out, TileShared& sh) {
  const int tid = static_cast<int>(threadIdx.x);
  const uint64_t tile_off = tile_local * diff::kTileBytes;
  const bool aligned = ((reinterpret_cast<uintptr_t>(d.a) | reinterpret_cast<uintptr_t>(d.b)) & 15) == 0;

  // Pass 1 (the memory-bound part): load all 8 chunk pairs, keep only a bit per differing chunk.
  // Full aligned tiles issue all 16 loads before the first compare (256 bytes in flight per thread).
  uint32_t differing = 0;
  if (aligned && d.nbytes - tile_off >= diff::kTileBytes) {
    Chunk ca[diff::kChunksPerLane], cb[diff::kChunksPerLane];
#pragma unroll
    for (uint32_t k = 0; k < diff::kChunksPerLane; ++k) {
      const uint64_t off = tile_off + (static_cast<uint64_t>(k) * diff::kLanes + tid) * diff::kChunkBytes;
      ca[k] = load_aligned(d.a + off);
      cb[k] = load_aligned(d.b + off);
    }
#pragma unroll
    for (uint32_t k = 0; k < diff::kChunksPerLane; ++k)
      if (ca[k].w[0] != cb[k].w[0] || ca[k].w[1] != cb[k].w[1]) differing |= 1u << k;
  } else {
    for (uint32_t k = 0; k < diff::kChunksPerLane; ++k) {
      const uint64_t off = tile_off + (static_cast<uint64_t>(k) * diff::kLanes + tid) * diff::kChunkBytes;
      if (off >= d.nbytes) break;
      const uint32_t n = chunk_len(d.nbytes, off);
      const Chunk ca = aligned && n == diff::kChunkBytes ? load_aligned(d.a + off) : load_bytes(d.a + off, n);
      const Chunk cb = aligned && n == diff::kChunkBytes ? load_aligned(d.b + off) : load_bytes(d.b + off, n);
      if (ca.w[0] != cb.w[0] || ca.w[1] != cb.w[1]) differing |= 1u << k;
    }
  }

  // Pass 2, only for differing chunks, in chunk order (the lane's canonical order). The chunk is
  // read again (an L1/L2 hit): keeping all 8 in registers would halve the blocks per SM.
  Partial p = diff::empty_partial();
  double lane_abs = 0.0, lane_sq = 0.0;
  const bool any = differing != 0;
  while (differing != 0) {
    const uint32_t k = static_cast<uint32_t>(__ffs(static_cast<int>(differing)) - 1);
    differing &= differing - 1;
    const uint64_t off = tile_off + (static_cast<uint64_t>(k) * diff::kLanes + tid) * diff::kChunkBytes;
    const uint32_t n = chunk_len(d.nbytes, off);
    Chunk ca, cb;
    if (aligned && n == diff::kChunkBytes) {
      ca = load_aligned(d.a + off);
      cb = load_aligned(d.b + off);
    } else {
      ca = load_bytes(d.a + off, n);
      cb = load_bytes(d.b + off, n);
    }
    diff::compare_chunk<K, Size>(ca, cb, n / Size, off / Size, p, lane_abs, lane_sq);
  }
  if (!__syncthreads_or(any)) {
    if (tid == 0) *out = diff::empty_partial();
    return;
  }

  // Canonical halving tree over the 256 lanes: lane t += lane t+h for h = 128, 64, ..., 1.
  if constexpr (K != Kind::kBits) {
    sh.abs[tid] = lane_abs;
    sh.sq[tid] = lane_sq;
    __syncthreads();
#pragma unroll
    for (int h = kThreads / 2; h >= 32; h >>= 1) {
      if (tid < h) {
        sh.abs[tid] = diff::add_rn(sh.abs[tid], sh.abs[tid + h]);
        sh.sq[tid] = diff::add_rn(sh.sq[tid], sh.sq[tid + h]);
      }
      __syncthreads();
    }
    if (tid < 32) {
      double x = sh.abs[tid], y = sh.sq[tid];
#pragma unroll
      for (int h = 16; h >= 1; h >>= 1) {
        // Lane t (t < h) receives lane t+h: the same pairs as the tree above.
        x = diff::add_rn(x, __shfl_down_sync(kFullMask, x, h));
        y = diff::add_rn(y, __shfl_down_sync(kFullMask, y, h));
      }
      if (tid == 0) {
        p.sum_abs = x;
        p.sum_sq = y;
      }
    }
  }

  // Order-free fields: warp reductions, then thread 0 merges the warps.
  Partial w;
  w.max_abs = warp_max(p.max_abs);
  w.max_rel = warp_max(p.max_rel);
  w.max_ulp = warp_max(p.max_ulp);
  w.n_diff = warp_sum(p.n_diff);
  w.introduced = warp_sum(p.introduced);
  w.removed = warp_sum(p.removed);
  w.first_diff = warp_min(p.first_diff);
  w.sum_abs = 0.0;
  w.sum_sq = 0.0;
  if ((tid & 31) == 0) sh.warp[tid / 32] = w;
  __syncthreads();
  if (tid == 0) {
    Partial total = diff::empty_partial();
    for (int i = 0; i < kWarps; ++i) diff::merge_unordered(total, sh.warp[i]);
    total.sum_abs = p.sum_abs;
    total.sum_sq = p.sum_sq;
    *out = total;
  }
}

__device__ __forceinline__ int find_pair_by_tile(const PairDesc* descs, int n, uint64_t tile) {
  int lo = 0, hi = n;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (descs[mid].tile_begin <= tile) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads, 3) diff_tile_kernel(const PairDesc* __restrict__ descs, int n_descs,
                                                             Partial* __restrict__ tiles) {
  __shared__ TileShared sh;
  const uint64_t tile = blockIdx.x;
  const PairDesc d = descs[find_pair_by_tile(descs, n_descs, tile)];
  const uint64_t local = tile - d.tile_begin;
  Partial* out = tiles + tile;
  switch (static_cast<Kind>(d.kind)) {
    case Kind::kF64: diff_tile<Kind::kF64, 8>(d, local, out, sh); break;
    case Kind::kF32: diff_tile<Kind::kF32, 4>(d, local, out, sh); break;
    case Kind::kF16: diff_tile<Kind::kF16, 2>(d, local, out, sh); break;
    case Kind::kBF16: diff_tile<Kind::kBF16, 2>(d, local, out, sh); break;
    case Kind::kF8E4M3FN: diff_tile<Kind::kF8E4M3FN, 1>(d, local, out, sh); break;
    case Kind::kF8E5M2: diff_tile<Kind::kF8E5M2, 1>(d, local, out, sh); break;
    case Kind::kBits:
      switch (d.size) {
        case 1: diff_tile<Kind::kBits, 1>(d, local, out, sh); break;
        case 2: diff_tile<Kind::kBits, 2>(d, local, out, sh); break;
        case 4: diff_tile<Kind::kBits, 4>(d, local, out, sh); break;
        case 8: diff_tile<Kind::kBits, 8>(d, local, out, sh); break;
        default: diff_tile<Kind::kBits, 16>(d, local, out, sh); break;
      }
      break;
  }
}

__global__ void __launch_bounds__(kSuperThreads) diff_super_kernel(const PairDesc* __restrict__ descs, int n_descs,
                                                                   uint64_t total_supers,
                                                                   const Partial* __restrict__ tiles,
                                                                   Partial* __restrict__ supers) {
  const uint64_t s = static_cast<uint64_t>(blockIdx.x) * kSuperThreads + threadIdx.x;
  if (s >= total_supers) return;
  int lo = 0, hi = n_descs;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (descs[mid].super_begin <= s) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const PairDesc d = descs[lo];
  const uint64_t n_tiles = diff::tile_count(d.nbytes);
  const uint64_t first = (s - d.super_begin) * diff::kTilesPerSuper;
  supers[s] = diff::fold_sequential(tiles + d.tile_begin + first, min(diff::kTilesPerSuper, n_tiles - first));
}

}  // namespace

std::vector<Partial> diff(const std::vector<DiffJob>& jobs, int device, uintptr_t stream_handle) {
  std::vector<PairDesc> descs;
  std::vector<size_t> job_of_desc;
  descs.reserve(jobs.size());
  uint64_t tiles = 0, supers = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const DiffJob& job = jobs[i];
    if (job.size == 0 || job.nbytes % job.size != 0)
      throw std::invalid_argument("byte length is not a multiple of the element size");
    if (job.nbytes == 0) continue;
    if (job.a == 0 || job.b == 0) throw std::invalid_argument("null device address with a non-zero length");
    const uint64_t n_tiles = diff::tile_count(job.nbytes);
    descs.push_back(PairDesc{reinterpret_cast<const uint8_t*>(job.a), reinterpret_cast<const uint8_t*>(job.b),
                             job.nbytes, tiles, supers, static_cast<uint32_t>(job.kind), job.size});
    job_of_desc.push_back(i);
    tiles += n_tiles;
    supers += diff::super_count(n_tiles);
  }
  std::vector<Partial> result(jobs.size(), diff::empty_partial());
  if (descs.empty()) return result;
  if (descs.size() > static_cast<size_t>(INT32_MAX) || tiles > static_cast<uint64_t>(INT32_MAX))
    throw std::invalid_argument("too much data in one diff call (more than 2^31 tiles of 32 KiB)");

  detail::DeviceScope scope(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  detail::check_not_capturing(stream);
  const size_t desc_bytes = detail::align_up(descs.size() * sizeof(PairDesc), 256);
  const size_t tile_bytes = detail::align_up(tiles * sizeof(Partial), 256);
  detail::DeviceBuffer scratch(desc_bytes + tile_bytes + supers * sizeof(Partial), device, stream);
  auto* d_descs = reinterpret_cast<PairDesc*>(scratch.data());
  auto* d_tiles = reinterpret_cast<Partial*>(scratch.data() + desc_bytes);
  auto* d_supers = reinterpret_cast<Partial*>(scratch.data() + desc_bytes + tile_bytes);
  detail::check(cudaMemcpyAsync(d_descs, descs.data(), descs.size() * sizeof(PairDesc), cudaMemcpyHostToDevice, stream),
                "cudaMemcpyAsync (diff descriptors to the device)");
  diff_tile_kernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(d_descs, static_cast<int>(descs.size()),
                                                                         d_tiles);
  detail::check_launch("diff_tile_kernel");
  const uint64_t super_blocks = (supers + kSuperThreads - 1) / kSuperThreads;
  diff_super_kernel<<<static_cast<unsigned>(super_blocks), kSuperThreads, 0, stream>>>(
      d_descs, static_cast<int>(descs.size()), supers, d_tiles, d_supers);
  detail::check_launch("diff_super_kernel");
  std::vector<Partial> host_supers(supers);
  detail::check(cudaMemcpyAsync(host_supers.data(), d_supers, supers * sizeof(Partial), cudaMemcpyDeviceToHost, stream),
                "cudaMemcpyAsync (diff results to the host)");
  detail::check(cudaStreamSynchronize(stream), "diff kernels (reported at cudaStreamSynchronize)");
  for (size_t k = 0; k < descs.size(); ++k) {
    const uint64_t n = diff::super_count(diff::tile_count(descs[k].nbytes));
    result[job_of_desc[k]] = diff::fold_sequential(host_supers.data() + descs[k].super_begin, n);
  }
  return result;
}

}  // namespace fastckpt::cuda
