// The CPU bitwise-diff kernel and the dtype table shared with the CUDA diff entry points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/diff_math.hpp"

namespace fastckpt::cpu {

struct DiffDType {
  const char* name;  // torch's dtype name without "torch." (e.g. "bfloat16"), or rawN
  diff::Kind kind;   // kBits: counts only
  uint32_t size;     // bytes per element: 1, 2, 4, 8 or 16
};

// Every dtype name the diff accepts, in a stable order.
const std::vector<DiffDType>& diff_dtypes();
// Throws std::invalid_argument naming the accepted dtypes when `name` is unknown.
const DiffDType& diff_dtype(const std::string& name);

// The diff's vector kernels (results never depend on the choice; see diff_isa.hpp).
enum class DiffIsa { kScalar, kAvx2, kAvx512 };
// Names of the usable ones, narrowest first ("scalar", then "avx2", "avx512" when the CPU has them).
std::vector<std::string> diff_isas();
// "" = the widest usable; throws std::invalid_argument for an unknown or unusable name.
DiffIsa diff_isa(const std::string& name);

struct DiffResult {
  diff::Partial p;
  // With norm_a, for a float dtype, when a and b differ: the sum of a*a over A's finite elements,
  // each square one rounded float64 product, added in the canonical order of the two difference
  // sums (docs/DIFF_SEMANTICS.md). has_sum_sq_a says whether it was computed.
  double sum_sq_a;
  bool has_sum_sq_a;
};

// Statistics of a[0, nbytes) against b[0, nbytes) as elements of `dtype` (see diff_math.hpp for
// the order of reduction). nbytes must be a multiple of dtype.size. Tiles are spread over
// `threads` workers (0 = all hardware threads; small inputs use one).
DiffResult diff_buffers(const uint8_t* a, const uint8_t* b, size_t nbytes, const DiffDType& dtype, int threads,
                        bool norm_a = false, DiffIsa isa = diff_isa(""));

}  // namespace fastckpt::cpu
