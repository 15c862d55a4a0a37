// How the CUDA leaf-hashing kernel splits one XXH3-64 leaf over a warp, as host/device functions.
//
// XXH3's long path keeps eight u64 lanes. Inside one 1 KiB block every stripe only *adds* into the
// lanes (mod 2^64), and a lane pair (2j, 2j+1) only ever receives bytes 16j..16j+15 of each stripe,
// so lanes never mix within a block. Between blocks each lane is scrambled on its own. Hence:
//
//   * a warp owns one leaf; lane `4g + j` is "group g, pair j";
//   * in round r, group g computes the whole contribution of block 8r+g to lanes (2j, 2j+1) with
//     16-byte loads (one quarter-stripe per stripe), without touching any other thread's state;
//   * the serial part is a chain over the 8 groups' contributions in block order:
//     acc = scramble(acc + contribution), done redundantly by every group after shuffles;
//   * the partial last block (up to 15 stripes, no scramble) is "block nb_blocks", the last 64
//     bytes are added by each pair thread, and the four pair terms of the final merge are summed.
//
// Every piece below is called by both the kernel (csrc/cuda/leaf_hash.cu, where the "gather" is a
// warp shuffle) and the CPU emulation (csrc/cpu/cuda_emulation.cpp, where it is an array read), and
// tests/test_partition.py checks the emulation against the `xxhash` package. So the GPU's
// arithmetic and its partition are tested on machines without a GPU; only the shuffles and the
// memory access are not.
#pragma once

#include <cstddef>
#include <cstdint>

#include "xxh3.hpp"

namespace fastckpt {
namespace xxh3 {
namespace partition {

constexpr int kPairs = 4;                // threads per block-group; thread j owns lanes 2j, 2j+1
constexpr int kGroups = 8;               // groups per warp; group g takes block 8r+g in round r
constexpr int kWarpThreads = kPairs * kGroups;  // 32
constexpr int kSecretWords = 24;         // the 192-byte secret as little-endian u64 words
constexpr int kScrambleWord = 16;        // scramble key of lane i is secret word 16 + i

struct Pair {
  uint64_t lo;  // acc[2j]
  uint64_t hi;  // acc[2j + 1]
};

// The shape of a long leaf (len > 240): full blocks (each followed by a scramble), then
// `tail_stripes` stripes of the partial block (no scramble), then the last 64 bytes.
struct LeafShape {
  uint64_t nb_blocks;
  uint32_t tail_stripes;
  uint64_t rounds;  // rounds of kGroups pseudo-blocks; pseudo-block nb_blocks is the partial block
};

FCK_HD LeafShape leaf_shape(uint64_t len) {
  LeafShape s;
  s.nb_blocks = (len - 1) / kBlockLen;
  s.tail_stripes = static_cast<uint32_t>(((len - 1) - s.nb_blocks * kBlockLen) / kStripeLen);
  s.rounds = (s.nb_blocks + 1 + kGroups - 1) / kGroups;
  return s;
}

// The initial lanes of pair j (xxh3::initial_acc), selected without indexing an array by a run-time
// value, which would put the array in GPU local memory.
FCK_HD Pair initial_pair(int j) {
  switch (j) {
    case 0: return Pair{kPrime32_3, kPrime64_1};
    case 1: return Pair{kPrime64_2, kPrime64_3};
    case 2: return Pair{kPrime64_4, kPrime32_2};
    default: return Pair{kPrime64_5, kPrime32_1};
  }
}

// One quarter-stripe: data words d0 (lane 2j) and d1 (lane 2j+1) with their secret words k0, k1.
// XXH3 adds data into the neighbouring lane (acc[i ^ 1] += d[i]) and the 32x32 product of the
// keyed word into its own lane; both stay inside the pair.
FCK_HD void accumulate_quarter(Pair& p, uint64_t d0, uint64_t d1, uint64_t k0, uint64_t k1) {
  const uint64_t x0 = d0 ^ k0;
  const uint64_t x1 = d1 ^ k1;
  p.hi += d0;
  p.lo += (x0 & 0xFFFFFFFFULL) * (x0 >> 32);
  p.lo += d1;
  p.hi += (x1 & 0xFFFFFFFFULL) * (x1 >> 32);
}

FCK_HD uint64_t scramble_lane(uint64_t a, uint64_t key) {
  a = xorshift64(a, 47);
  a ^= key;
  return a * kPrime32_1;
}

// The contribution of pseudo-block `block` (full block, partial block, or past the end: zero) to
// pair j. `load(p, d0, d1)` reads 16 bytes at p; the kernel passes an aligned vector load when it
// can. `sw` is the secret as u64 words (stripe s of lane i uses word s + i).
template <class Load>
FCK_HD Pair block_contribution(const uint8_t* leaf, const LeafShape& shape, uint64_t block, int j,
                               const uint64_t* sw, Load load) {
  Pair s{0, 0};
  const uint8_t* base = leaf + block * kBlockLen + 16 * j;
  if (block < shape.nb_blocks) {
    // Issue all 16 loads before using any, so a GPU thread keeps 256 bytes in flight.
    uint64_t d[2 * kStripesPerBlock];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int st = 0; st < static_cast<int>(kStripesPerBlock); ++st) load(base + st * kStripeLen, d[2 * st], d[2 * st + 1]);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int st = 0; st < static_cast<int>(kStripesPerBlock); ++st)
      accumulate_quarter(s, d[2 * st], d[2 * st + 1], sw[st + 2 * j], sw[st + 2 * j + 1]);
  } else if (block == shape.nb_blocks) {
    for (uint32_t st = 0; st < shape.tail_stripes; ++st) {
      uint64_t d0, d1;
      load(base + st * kStripeLen, d0, d1);
      accumulate_quarter(s, d0, d1, sw[st + 2 * j], sw[st + 2 * j + 1]);
    }
  }
  return s;
}

// Whether pseudo-block `block` takes part in the chain, and whether a scramble follows it.
FCK_HD bool block_in_leaf(const LeafShape& shape, uint64_t block) { return block <= shape.nb_blocks; }
FCK_HD bool block_scrambles(const LeafShape& shape, uint64_t block) { return block < shape.nb_blocks; }

// One link of the serial chain: add a block's contribution, then scramble if it was a full block.
FCK_HD void chain_step(Pair& acc, Pair contribution, bool scramble_after, int j, const uint64_t* sw) {
  acc.lo += contribution.lo;
  acc.hi += contribution.hi;
  if (scramble_after) {
    acc.lo = scramble_lane(acc.lo, sw[kScrambleWord + 2 * j]);
    acc.hi = scramble_lane(acc.hi, sw[kScrambleWord + 2 * j + 1]);
  }
}

// The last 64 bytes of the leaf, keyed at the unaligned secret offset 121 (192 - 64 - 7). The
// address is unaligned whenever len is not a multiple of 16, so the caller picks the loader.
template <class Load>
FCK_HD void last_stripe(Pair& acc, const uint8_t* leaf, uint64_t len, int j, const uint8_t* secret, Load load) {
  uint64_t d0, d1;
  load(leaf + len - kStripeLen + 16 * j, d0, d1);
  const uint8_t* k = secret + kSecretSize - kStripeLen - 7 + 16 * j;
  accumulate_quarter(acc, d0, d1, read64(k), read64(k + 8));
}

// Pair j's term of the final merge (secret offset 11); the four terms are summed mod 2^64, so any
// reduction order gives the same sum.
FCK_HD uint64_t merge_term(Pair acc, int j, const uint8_t* secret) {
  const uint8_t* k = secret + 11 + 16 * j;
  return mul128_fold64(acc.lo ^ read64(k), acc.hi ^ read64(k + 8));
}

FCK_HD uint64_t finish_leaf(uint64_t sum_of_terms, uint64_t len) {
  return avalanche(len * kPrime64_1 + sum_of_terms);
}

// A 16-byte load that makes no alignment assumption (byte-exact on every platform).
struct UnalignedLoad {
  FCK_HD void operator()(const uint8_t* p, uint64_t& d0, uint64_t& d1) const {
    d0 = read64(p);
    d1 = read64(p + 8);
  }
};

}  // namespace partition
}  // namespace xxh3
}  // namespace fastckpt
