// The Reed-Solomon parity engine (docs/FORMAT.md, "Parity (Reed-Solomon)"): GF(2^8) arithmetic with
// the polynomial 0x11D, the Cauchy coding matrix, and the threaded encode / reconstruct drivers.
//
// The vector kernels live in gf256_avx2.cpp, gf256_avx512.cpp and gf256_gfni.cpp, which are compiled
// with wider -m flags; like backend.hpp, this header is included by them and must therefore hold only
// declarations, PODs and constants, never inline functions with bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend.hpp"

namespace fastckpt::cpu {
// Maps [p, p + n) of a file mapping up front (leaf_hash.cpp; a no-op where the kernel cannot).
void populate_range(const uint8_t* p, size_t n);
}  // namespace fastckpt::cpu

namespace fastckpt::gf {

constexpr unsigned kPolynomial = 0x11D;  // x^8 + x^4 + x^3 + x^2 + 1; 2 generates the multiplicative group
constexpr int kFieldSize = 256;

// Everything a kernel needs to multiply bytes by one coefficient `value`, precomputed once per
// coefficient by the driver so that the kernels need no field arithmetic of their own:
//  * lo[x] = value * x and hi[x] = value * (x << 4) for x < 16 (PSHUFB nibble tables), so that
//    value * b = lo[b & 15] ^ hi[b >> 4];
//  * affine: the 8x8 bit matrix of "multiply by value" in the layout GF2P8AFFINEQB expects (byte 7-i
//    of the qword holds output bit i as a row over the input bits).
struct alignas(16) CoefTable {
  uint8_t lo[16];
  uint8_t hi[16];
  uint64_t affine;
  uint8_t value;
  uint8_t pad[7];
};

// dst[r][0, len) ^= XOR over s < n_src of coef[s * n_dst + r].value * src[s][0, len), for every
// r < n_dst. Taking several sources per call lets a kernel keep the partial sums in registers and
// read-modify-write each dst once per call instead of once per source. Buffers may be unaligned;
// no src may overlap a dst.
using MulAccFn = void (*)(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                          const CoefTable* coef);
// dst[0, len) ^= src[0, len): the plain XOR parity the benchmark compares against.
using XorAccFn = void (*)(const uint8_t* src, size_t len, uint8_t* dst);
// mul_acc (with coef[s * coef_stride + r]) fused with the XXH3-64 long loop over each whole source,
// so that every byte is loaded once for both: hash_acc[8 * s, 8 * s + 8) holds source s's eight XXH3
// lanes (initialised by the caller, finished by it with xxh3::finish64_long), `secret` the 192-byte
// default secret. Requires len % 64 == 0, len > 240, n_src <= kMaxFusedSources and
// n_dst <= kMaxFusedRows; every source must be a whole leaf of exactly len bytes.
using MulAccHashFn = void (*)(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                              const CoefTable* coef, int coef_stride, uint64_t* hash_acc, const uint8_t* secret);
constexpr int kMaxFusedSources = 16;
constexpr int kMaxFusedRows = 8;

struct Kernels {
  const char* name;
  MulAccFn mul_acc;
  XorAccFn xor_acc;
  MulAccHashFn mul_acc_hash;  // null where there is none: the driver then hashes separately
};

void mul_acc_avx2(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                    const CoefTable* coef);
void xor_acc_avx2(const uint8_t* src, size_t len, uint8_t* dst);
void mul_acc_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                    const CoefTable* coef);
void xor_acc_avx512(const uint8_t* src, size_t len, uint8_t* dst);
void mul_acc_hash_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                         const CoefTable* coef, int coef_stride, uint64_t* hash_acc, const uint8_t* secret);
void mul_acc_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                    const CoefTable* coef);
void mul_acc_hash_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                       const CoefTable* coef, int coef_stride, uint64_t* hash_acc, const uint8_t* secret);

// ---- field arithmetic (portable) ----
uint8_t mul(uint8_t a, uint8_t b);
uint8_t inv(uint8_t a);  // a != 0
CoefTable make_coef_table(uint8_t value);

// The m x k parity rows, row-major: C[r][j] = 1 / (x_r + y_j) with x_r = k + r and y_j = j. The
// x and y sets are disjoint as long as k + m <= 256, so every square submatrix is invertible.
std::vector<uint8_t> cauchy_matrix(int k, int m);
// Inverts an n x n row-major matrix in place (Gauss-Jordan); returns false when it is singular.
bool invert(std::vector<uint8_t>& a, int n);

// ---- dispatch ----
std::vector<std::string> available_isas();  // narrowest first: "scalar", "avx2", "avx512", "gfni"
const std::string& default_isa();
// Throws std::invalid_argument for an unknown name or one this CPU cannot run.
const Kernels& kernels_for(const std::string& isa);

// ---- drivers ----
// Code parameters for a byte range of `size` bytes cut into leaves of `leaf_size` bytes.
struct Code {
  size_t leaf_size;
  int k;          // data leaves per group (a group may hold fewer; the rest are virtual zero leaves)
  int m;          // parity leaves per group
  size_t groups;  // G: data leaf i belongs to group i % G, at position i / G; parity leaf r*G + g
};

// Throws std::invalid_argument unless 1 <= k, 1 <= m, k + m <= 256 and ceil(n / k) <= G <= n for the
// n = ceil(size / leaf_size) leaves (so G = 0 exactly when size = 0).
void check_code(const Code& code, uint64_t size);

// Work that rides along with encode's pass over the data (see parity_scan.cpp): `fn(ctx, begin, end)`
// is called on a worker thread for contiguous byte ranges [begin, end) of the data that the task has
// just read (so they are in cache); over the whole call the ranges partition [0, len). `populate`
// asks the kernel to map each range of a file mapping before it is read (one madvise instead of a
// page fault per few pages).
// `window_done(ctx, g0, n, rows, row_stride)`, when not null, is called once the parity of groups
// [g0, g0 + n) is final (every group exactly once, unless the leaves are cut into several tiles: then
// never), on the worker that computed it: parity leaf r * G + g0 + u is at rows + r * row_stride +
// u * leaf_size, for r < m and u < n. Those bytes are valid only during the call, unless they came
// from `window_buffer`.
// `window_buffer(ctx, nbytes)`, when not null and encode has no parity buffer, provides the nbytes
// (m rows of a window) that a worker accumulates its next window in; they pass back to the hook with
// the window_done call that reports that window (e.g. to be written out while the pass goes on).
struct RangeHook {
  void (*fn)(void* ctx, size_t begin, size_t end);
  void* ctx;
  bool populate;
  void (*window_done)(void* ctx, size_t g0, size_t n_groups, uint8_t* rows, size_t row_stride);
  uint8_t* (*window_buffer)(void* ctx, size_t nbytes) = nullptr;
};

// Parity of data[0, len): m * G leaves of leaf_size bytes, leaf j = r * G + g, written to `parity`.
// When `digests` is not null, the XXH3-64 of every data leaf is written there as well (with
// `hash_loop`), in the same pass over memory: each leaf is hashed just before it is multiplied in,
// while it is in cache.
// `parity` may be null when the hook's `window_buffer` provides each window's buffer and its
// `window_done` consumes the window, and the leaves are not cut into tiles (digests given): the
// m * G * leaf_size bytes are then never held at once (std::invalid_argument otherwise).
void encode(const uint8_t* data, size_t len, const Code& code, uint8_t* parity, uint64_t* digests,
            cpu::LongAccumulateFn hash_loop, int threads, const Kernels& kernels, const RangeHook* hook = nullptr);

// XOR parity with the same interleaving (G leaves, leaf g = XOR of the group's data leaves).
void xor_encode(const uint8_t* data, size_t len, size_t leaf_size, size_t groups, uint8_t* parity, int threads,
                const Kernels& kernels);

struct ReconstructPlan {
  std::vector<uint64_t> rebuilt;  // data leaves that will be rebuilt, ascending
  std::vector<uint64_t> lost;     // data leaves that cannot be: their group lost more than it has parity
};

// Decides what can be rebuilt. The erased data leaves are `damaged` plus every leaf of the original
// range [0, size) that is not wholly inside data[0, len) (truncation). A group can be rebuilt when its
// erased data leaves are no more than its parity leaves that are not in `damaged_parity`.
ReconstructPlan plan_reconstruct(size_t len, uint64_t size, const Code& code, const std::vector<uint64_t>& damaged,
                                 const std::vector<uint64_t>& damaged_parity);

// Rebuilds plan.rebuilt into out (plan.rebuilt.size() * leaf_size bytes; slot j holds leaf
// plan.rebuilt[j], zero-padded to leaf_size when it is the short last leaf). Reads only surviving
// data leaves (inside data[0, len)) and surviving parity leaves.
void reconstruct(const uint8_t* data, size_t len, uint64_t size, const Code& code, const uint8_t* parity,
                 const std::vector<uint64_t>& damaged_parity, const ReconstructPlan& plan, uint8_t* out, int threads,
                 const Kernels& kernels);

}  // namespace fastckpt::gf
