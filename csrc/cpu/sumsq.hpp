// Sums of squares over one tensor in consecutive checkpoints, for the run report's relative change
// ||B-A|| / ||A||. The reduction order is fixed (below), so the result does not depend on the
// number of threads and equals the numpy reference in fastckpt/_change.py bit for bit.
//
// Reduction order:
//  * element i of buffer j is a value x (a complex value is two elements, re then im);
//  * float32, float16, bfloat16 and float8 values are exact in float, and their terms are computed
//    in float arithmetic: x*x, and (x - y)*(x - y) with y from buffer j-1; every other dtype
//    (float64, integers, bool) is converted to double and its terms are computed in double;
//  * elements are split into blocks of kSumsqBlock; inside a block, term i is added (in the same
//    precision) to lane i % 16, lanes starting at +0.0, in element order; the block total is the
//    pairwise fold of the 16 lanes converted to double:
//    ((((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)))+(((l8+l9)+(l10+l11))+((l12+l13)+(l14+l15))));
//  * a float-family block total that is infinite (float squares overflow above ~1.8e19) is
//    recomputed from the values converted to double, with the same lanes and fold;
//  * a buffer given as null (identical to buffer j-1) has block totals equal to buffer j-1's and a
//    difference of exactly +0.0;
//  * blocks are grouped into tasks of kSumsqTaskBlocks; a task total adds its block totals in order
//    starting from +0.0; the result adds the task totals in order starting from +0.0.
// No fused multiply-add is ever used (x*x + acc is rounded twice).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fastckpt::cpu {

constexpr size_t kSumsqBlock = 4096;
constexpr size_t kSumsqTaskBlocks = 64;

struct SumsqDType {
  const char* name;  // torch's dtype name without "torch."
  int code;          // internal conversion code
  uint32_t size;     // bytes per scalar element (a complex value is two elements)
};

// Every dtype name accepted, in a stable order.
const std::vector<SumsqDType>& sumsq_dtypes();
// Throws std::invalid_argument naming the accepted dtypes when `name` is unknown.
const SumsqDType& sumsq_dtype(const std::string& name);

// bufs[j] (j < k) points at nbytes bytes, or is null when buffer j equals buffer j-1 (bufs[0] must
// not be null). Writes sq[j] = sum(X_j^2) for j < k and sq_diff[j-1] = sum((X_j - X_{j-1})^2) for
// 1 <= j < k. nbytes must be a multiple of dtype.size. `threads` 0 = all hardware threads.
void sumsq_sequence(const uint8_t* const* bufs, size_t k, size_t nbytes, const SumsqDType& dtype, double* sq,
                    double* sq_diff, int threads);

}  // namespace fastckpt::cpu
