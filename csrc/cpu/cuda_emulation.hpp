// CPU emulation of the CUDA leaf kernel's work partition (a test aid, not a fast path).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastckpt::cpu {

// Leaf digests of in[0, len), computed with the exact partition and chain of the CUDA kernel.
// Equal to leaf_digests() by construction of XXH3; tests/test_partition.py checks that it is.
void emulate_cuda_leaf_digests(const uint8_t* in, size_t len, size_t leaf_size, uint64_t* out);

}  // namespace fastckpt::cpu
