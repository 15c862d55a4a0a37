// Vectorized row kernels of the CPU diff, one per instruction set. Declarations and plain data only:
// the ISA files that define them are compiled with wider -m flags (see CMakeLists.txt).
#pragma once

#include <cstdint>

namespace fastckpt::cpu {

// Order-free statistics of the elements seen so far (diff_math.hpp's definitions).
struct RowAccum {
  double max_abs = 0.0;
  double max_rel = 0.0;
  uint64_t max_ulp = 0;
  uint64_t n_diff = 0;
  uint64_t introduced = 0;
  uint64_t removed = 0;
};

// n elements (a multiple of 4) of a and b: c_abs[i] = |a_i - b_i| and c_sq[i] = c_abs[i]^2 for
// differing finite pairs, else exact zeros; maxima and counts are folded into *acc. AVX2 only:
// call after checking the CPU.
void diff_row_f64_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc);
void diff_row_f32_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc);
void diff_row_bf16_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc);

}  // namespace fastckpt::cpu
