// CUDA leaf hashing: XXH3-64 of every leaf of many tensors in one launch, one warp per leaf.
//
// The partition (8 groups x 4 pair threads, serial chain over groups) and all of its arithmetic
// live in common/xxh3_partition.hpp, shared with the CPU emulation that tests/test_partition.py
// checks against xxhash. This file adds only what a GPU needs: finding the leaf of a warp through
// the descriptor list, 16-byte vector loads, the secret in shared memory, and warp shuffles.
//
// Throughput design: every thread of a warp keeps a whole 1 KiB block's quarter-stripes (16 x 16
// bytes) in flight before it computes, so 8 KiB per warp are outstanding; a 1 GiB tensor of 64 KiB
// leaves is 16384 warps. No atomics, no shared-memory traffic in the hot loop except the (broadcast)
// secret words, and only the leaf digests are written.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/xxh3_partition.hpp"
#include "backend.hpp"
#include "runtime.cuh"

namespace fastckpt::cuda {
namespace {

namespace xp = xxh3::partition;

struct LeafDesc {
  const uint8_t* ptr;
  uint64_t nbytes;
  uint64_t leaf_begin;  // index of this tensor's first leaf in the output
};

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

struct AlignedLoad {
  __device__ __forceinline__ void operator()(const uint8_t* p, uint64_t& d0, uint64_t& d1) const {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    d0 = static_cast<uint64_t>(v.x) | (static_cast<uint64_t>(v.y) << 32);
    d1 = static_cast<uint64_t>(v.z) | (static_cast<uint64_t>(v.w) << 32);
  }
};

__global__ void __launch_bounds__(kThreads) leaf_digest_kernel(const LeafDesc* __restrict__ descs, int n_descs,
                                                               uint64_t total_leaves, int leaf_shift,
                                                               uint64_t* __restrict__ out) {
  __shared__ uint64_t sw[xp::kSecretWords];
  if (threadIdx.x < xp::kSecretWords) sw[threadIdx.x] = xxh3::read64(xxh3::kDeviceSecret + 8 * threadIdx.x);
  __syncthreads();

  const uint64_t leaf = static_cast<uint64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (leaf >= total_leaves) return;  // uniform across the warp
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane / xp::kPairs;
  const int j = lane % xp::kPairs;

  // The last descriptor whose first leaf is <= leaf (descriptors are sorted, none is empty).
  int lo = 0, hi = n_descs;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (descs[mid].leaf_begin <= leaf) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const LeafDesc d = descs[lo];
  const uint64_t off = (leaf - d.leaf_begin) << leaf_shift;
  const uint8_t* p = d.ptr + off;
  const uint64_t len = min(uint64_t{1} << leaf_shift, d.nbytes - off);
  const uint8_t* secret = xxh3::kDeviceSecret;

  if (len <= xxh3::kMidSizeMax) {
    if (lane == 0) out[leaf] = xxh3::hash64_short(p, len, secret);
    return;
  }
  const xp::LeafShape shape = xp::leaf_shape(len);
  // Leaves start at multiples of leaf_size (>= 64), so the tensor's alignment is the leaf's.
  const bool aligned = (reinterpret_cast<uintptr_t>(d.ptr) & 15) == 0;
  xp::Pair acc = xp::initial_pair(j);
  for (uint64_t r = 0; r < shape.rounds; ++r) {
    const uint64_t block = r * xp::kGroups + g;
    const xp::Pair mine = aligned ? xp::block_contribution(p, shape, block, j, sw, AlignedLoad{})
                                  : xp::block_contribution(p, shape, block, j, sw, xp::UnalignedLoad{});
#pragma unroll
    for (int gg = 0; gg < xp::kGroups; ++gg) {
      const uint64_t b = r * xp::kGroups + gg;
      if (!xp::block_in_leaf(shape, b)) break;  // uniform: depends on r and the leaf only
      xp::Pair c;
      c.lo = __shfl_sync(kFullMask, mine.lo, gg * xp::kPairs + j);
      c.hi = __shfl_sync(kFullMask, mine.hi, gg * xp::kPairs + j);
      xp::chain_step(acc, c, xp::block_scrambles(shape, b), j, sw);
    }
  }
  if (aligned && len % 16 == 0) {
    xp::last_stripe(acc, p, len, j, secret, AlignedLoad{});
  } else {
    xp::last_stripe(acc, p, len, j, secret, xp::UnalignedLoad{});
  }
  // Every group holds the same accumulators; the four pair terms of a group are summed.
  uint64_t term = xp::merge_term(acc, j, secret);
  term += __shfl_xor_sync(kFullMask, term, 1);
  term += __shfl_xor_sync(kFullMask, term, 2);
  if (lane == 0) out[leaf] = xp::finish_leaf(term, len);
}

}  // namespace

std::vector<uint64_t> leaf_digests(const std::vector<HashJob>& jobs, uint64_t leaf_size, int device,
                                   uintptr_t stream_handle) {
  if (leaf_size < 64 || leaf_size > (uint64_t{1} << 30) || (leaf_size & (leaf_size - 1)) != 0) {
    throw std::invalid_argument("leaf_size must be a power of two between 64 and 2**30, got " +
                                std::to_string(leaf_size));
  }
  int leaf_shift = 0;
  while ((uint64_t{1} << leaf_shift) < leaf_size) ++leaf_shift;

  std::vector<LeafDesc> descs;
  descs.reserve(jobs.size());
  uint64_t total = 0;
  for (const HashJob& job : jobs) {
    if (job.nbytes == 0) continue;  // no leaves
    if (job.address == 0) throw std::invalid_argument("null device address with a non-zero length");
    descs.push_back(LeafDesc{reinterpret_cast<const uint8_t*>(job.address), job.nbytes, total});
    total += (job.nbytes + leaf_size - 1) / leaf_size;
  }
  std::vector<uint64_t> out(total);
  if (total == 0) return out;
  if (descs.size() > static_cast<size_t>(INT32_MAX)) throw std::invalid_argument("too many tensors in one call");
  const uint64_t blocks = (total + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > static_cast<uint64_t>(INT32_MAX)) throw std::invalid_argument("too many leaves in one call");

  detail::DeviceScope scope(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  detail::check_not_capturing(stream);
  const size_t desc_bytes = detail::align_up(descs.size() * sizeof(LeafDesc), 256);
  detail::DeviceBuffer scratch(desc_bytes + total * sizeof(uint64_t), device, stream);
  auto* d_descs = reinterpret_cast<LeafDesc*>(scratch.data());
  auto* d_out = reinterpret_cast<uint64_t*>(scratch.data() + desc_bytes);
  detail::check(cudaMemcpyAsync(d_descs, descs.data(), descs.size() * sizeof(LeafDesc), cudaMemcpyHostToDevice, stream),
                "cudaMemcpyAsync (leaf descriptors to the device)");
  leaf_digest_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      d_descs, static_cast<int>(descs.size()), total, leaf_shift, d_out);
  detail::check_launch("leaf_digest_kernel");
  detail::check(cudaMemcpyAsync(out.data(), d_out, total * sizeof(uint64_t), cudaMemcpyDeviceToHost, stream),
                "cudaMemcpyAsync (leaf digests to the host)");
  detail::check(cudaStreamSynchronize(stream), "leaf_digest_kernel (reported at cudaStreamSynchronize)");
  return out;
}

}  // namespace fastckpt::cuda
