// Sum of squares of the finite elements of a float buffer, for the relative change ||B-A||/||A||
// that `fastckpt diff` reports (the diff kernel measures B-A; this measures A).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastckpt::cpu {

struct SumSquares {
  double sum_sq;         // sum of x*x over finite elements, in float64
  uint64_t non_finite;   // NaN and Inf elements (left out of the sum)
};

// Bytes per element of a float dtype name this function accepts (float64, float32, float16,
// bfloat16, float8_e4m3fn, float8_e5m2); 0 for any other name.
uint32_t sum_squares_itemsize(const std::string& dtype);

// nbytes must be a multiple of the element size. Work is split over `threads` (0 = all hardware
// threads; inputs under 8 MiB use one). The summation order is unspecified (not bit-reproducible
// across thread counts): the result feeds a ratio shown to people, not a digest.
SumSquares sum_squares(const uint8_t* data, size_t nbytes, const std::string& dtype, int threads);

}  // namespace fastckpt::cpu
