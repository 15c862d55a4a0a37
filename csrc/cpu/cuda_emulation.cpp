// CPU emulation of the CUDA leaf-hashing kernel's partition (one warp per leaf, 8 groups x 4 pair
// threads, chain over groups). It calls exactly the functions the kernel calls, in the kernel's
// order, with the warp shuffles replaced by array reads; tests/test_partition.py compares it with
// the `xxhash` package so the GPU arithmetic is tested where there is no GPU.
#include "cuda_emulation.hpp"

#include "../common/xxh3_partition.hpp"

namespace fastckpt::cpu {
namespace {

namespace xp = xxh3::partition;

uint64_t emulate_leaf(const uint8_t* leaf, uint64_t len, const uint64_t* sw, const uint8_t* secret) {
  if (len <= xxh3::kMidSizeMax) return xxh3::hash64_short(leaf, len, secret);
  const xp::LeafShape shape = xp::leaf_shape(len);
  const xp::UnalignedLoad load;
  // Every group keeps its own copy of the pair accumulators in the kernel; they stay identical,
  // so one copy per pair stands for all eight here.
  xp::Pair acc[xp::kPairs];
  for (int j = 0; j < xp::kPairs; ++j) acc[j] = xp::initial_pair(j);
  for (uint64_t r = 0; r < shape.rounds; ++r) {
    xp::Pair contribution[xp::kGroups][xp::kPairs];
    for (int g = 0; g < xp::kGroups; ++g)
      for (int j = 0; j < xp::kPairs; ++j)
        contribution[g][j] = xp::block_contribution(leaf, shape, r * xp::kGroups + g, j, sw, load);
    for (int g = 0; g < xp::kGroups; ++g) {
      const uint64_t block = r * xp::kGroups + g;
      if (!xp::block_in_leaf(shape, block)) break;
      for (int j = 0; j < xp::kPairs; ++j)
        xp::chain_step(acc[j], contribution[g][j], xp::block_scrambles(shape, block), j, sw);
    }
  }
  uint64_t sum = 0;
  for (int j = 0; j < xp::kPairs; ++j) {
    xp::last_stripe(acc[j], leaf, len, j, secret, load);
    sum += xp::merge_term(acc[j], j, secret);
  }
  return xp::finish_leaf(sum, len);
}

}  // namespace

void emulate_cuda_leaf_digests(const uint8_t* in, size_t len, size_t leaf_size, uint64_t* out) {
  const uint8_t* secret = xxh3::default_secret();
  uint64_t sw[xp::kSecretWords];
  for (int i = 0; i < xp::kSecretWords; ++i) sw[i] = xxh3::read64(secret + 8 * i);
  const size_t n_leaves = (len + leaf_size - 1) / leaf_size;
  for (size_t i = 0; i < n_leaves; ++i) {
    const size_t off = i * leaf_size;
    const size_t n = len - off < leaf_size ? len - off : leaf_size;
    out[i] = emulate_leaf(in + off, n, sw, secret);
  }
}

}  // namespace fastckpt::cpu
