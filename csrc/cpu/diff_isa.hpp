// Vectorized tile kernels of the CPU diff, one per instruction set. Declarations and plain data only:
// the ISA files that define them are compiled with wider -m flags (see CMakeLists.txt) and reached
// only after a run-time CPU check (diff.cpp).
#pragma once

#include <cstdint>

namespace fastckpt::cpu {

constexpr uint32_t kDiffLanes = 256;         // diff::kLanes
constexpr uint32_t kDiffTileBytes = 32768;   // diff::kTileBytes

// Order-free statistics of the elements seen so far (diff_math.hpp's definitions).
struct RowAccum {
  double max_abs = 0.0;
  double max_rel = 0.0;
  uint64_t max_ulp = 0;
  uint64_t n_diff = 0;
  uint64_t introduced = 0;
  uint64_t removed = 0;
};

// The 256 lane sums of one tile (docs/DIFF_SEMANTICS.md, "Order of the two sums", steps 1-2) for
// |a-b|, (a-b)^2 over differing finite pairs, and a^2 over the finite elements of a. The halving
// tree over the lanes is left to the caller (one implementation for every kernel).
struct TileLanes {
  double abs[kDiffLanes];
  double sq[kDiffLanes];
  double a2[kDiffLanes];
};

// One full 32 KiB tile of a and b (any alignment): every lane sum in canonical order, maxima and
// counts folded into *acc. Without `norm` the a^2 lanes are not computed (left undefined), and
// equal 64-byte blocks are skipped. AVX2 (+FMA unused: the file is compiled with -ffp-contract=off) only.
void diff_tile_f64_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_f32_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_bf16_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_f16_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
// The same with eight lanes per vector: AVX-512 F/BW/VL/DQ only.
void diff_tile_f64_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_f32_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_bf16_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);
void diff_tile_f16_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* acc, bool norm);

}  // namespace fastckpt::cpu
