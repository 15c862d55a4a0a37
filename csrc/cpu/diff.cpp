// The CPU bitwise-diff kernel: the same tiles, lanes and reduction order as the CUDA kernel
// (csrc/common/diff_math.hpp), so both give bit-identical statistics.
//
// Workers take runs of 32 KiB tiles from a shared counter and write one Partial per tile; the
// caller then folds tiles into super-tiles and super-tiles into the total, sequentially, exactly as
// the GPU does after its block reduction. A tile whose bytes are equal (memcmp, memory speed) is
// skipped entirely: it contributes nothing to any statistic.
#include "diff.hpp"

#include "diff_isa.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>

namespace fastckpt::cpu {
namespace {

using diff::Kind;
using diff::Partial;

constexpr uint64_t kTilesPerTask = 32;  // 1 MiB of each operand
constexpr size_t kMinBytesForThreads = size_t{8} << 20;

const std::vector<DiffDType> kTable = {
    {"float64", Kind::kF64, 8},
    {"float32", Kind::kF32, 4},
    {"float16", Kind::kF16, 2},
    {"bfloat16", Kind::kBF16, 2},
    {"float8_e4m3fn", Kind::kF8E4M3FN, 1},
    {"float8_e5m2", Kind::kF8E5M2, 1},
    {"bool", Kind::kBits, 1},
    {"uint8", Kind::kBits, 1},
    {"int8", Kind::kBits, 1},
    {"uint16", Kind::kBits, 2},
    {"int16", Kind::kBits, 2},
    {"uint32", Kind::kBits, 4},
    {"int32", Kind::kBits, 4},
    {"uint64", Kind::kBits, 8},
    {"int64", Kind::kBits, 8},
    {"complex32", Kind::kBits, 4},
    {"complex64", Kind::kBits, 8},
    {"complex128", Kind::kBits, 16},
    // Formats whose NaN/zero conventions differ from IEEE are compared bitwise only.
    {"float8_e4m3fnuz", Kind::kBits, 1},
    {"float8_e5m2fnuz", Kind::kBits, 1},
    {"float8_e8m0fnu", Kind::kBits, 1},
    {"float4_e2m1fn_x2", Kind::kBits, 1},
    {"raw1", Kind::kBits, 1},
    {"raw2", Kind::kBits, 2},
    {"raw4", Kind::kBits, 4},
    {"raw8", Kind::kBits, 8},
    {"raw16", Kind::kBits, 16},
};


template <uint32_t Size>
struct UInt;
template <>
struct UInt<1> {
  using T = uint8_t;
};
template <>
struct UInt<2> {
  using T = uint16_t;
};
template <>
struct UInt<4> {
  using T = uint32_t;
};
template <>
struct UInt<8> {
  using T = uint64_t;
};

// One element after another, without branches: the same definitions as diff::differing_element
// (which the GPU uses), for the elements the vector kernels leave over and for the other float
// formats. Elements whose bits are equal contribute exact zeros, which leave every sum unchanged.
template <Kind K, uint32_t Size>
void row_elements(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum& rs) {
  using U = typename UInt<Size>::T;
  const double inf = diff::bits_to_double(diff::kInfBits);
  for (uint32_t e = 0; e < n; ++e) {
    U xa, xb;
    std::memcpy(&xa, a + static_cast<size_t>(e) * Size, Size);
    std::memcpy(&xb, b + static_cast<size_t>(e) * Size, Size);
    const uint64_t ua = xa, ub = xb;
    const bool differ = ua != ub;
    rs.n_diff += differ;
    if constexpr (K != Kind::kBits) {
      const uint32_t ca = diff::classify<K>(ua), cb = diff::classify<K>(ub);
      rs.introduced += differ & (cb != diff::kFinite) & (cb != ca);
      rs.removed += differ & (ca != diff::kFinite) & (ca != cb);
      const bool use = differ & (ca == diff::kFinite) & (cb == diff::kFinite);
      const double x = diff::decode<K>(ua), y = diff::decode<K>(ub);
      const double d_any = diff::abs_exact(diff::sub_rn(x, y));
      const double d = use ? d_any : 0.0;
      c_abs[e] = d;
      c_sq[e] = diff::mul_rn(d, d);
      if (!use) continue;
      if (d > rs.max_abs) rs.max_abs = d;
      const double ax = diff::abs_exact(x);
      if (ax == 0.0) {
        if (d != 0.0) rs.max_rel = inf;
      } else if (diff::rel_may_exceed(d, ax, rs.max_rel)) {
        const double r = diff::div_rn(d, ax);
        if (r > rs.max_rel) rs.max_rel = r;
      }
      const uint64_t u = diff::ulp_distance(diff::ordered<K>(ua), diff::ordered<K>(ub));
      if (u > rs.max_ulp) rs.max_ulp = u;
    }
  }
}

using VectorRowFn = void (*)(const uint8_t*, const uint8_t*, uint32_t, double*, double*, RowAccum*);

// The AVX2 row kernel for K, or null (then every element takes row_elements).
template <Kind K>
VectorRowFn vector_row() {
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  if (!avx2) return nullptr;
  if constexpr (K == Kind::kF64) return diff_row_f64_avx2;
  if constexpr (K == Kind::kF32) return diff_row_f32_avx2;
  if constexpr (K == Kind::kBF16) return diff_row_bf16_avx2;
  return nullptr;
}

constexpr uint32_t kBlockBytes = 64;
constexpr int kSparseBlocks = 16;  // of a row's 64 blocks; above this the whole row is computed

// Bit i set when bytes [64 i, 64 i + 64) of the row differ.
inline uint64_t differing_blocks(const uint8_t* a, const uint8_t* b, uint64_t len) {
  uint64_t mask = 0;
  for (uint64_t blk = 0; blk * kBlockBytes < len; ++blk) {
    const uint64_t off = blk * kBlockBytes;
    const uint64_t n = std::min<uint64_t>(kBlockBytes, len - off);
    if (n == kBlockBytes) {
      uint64_t x[8], y[8], acc = 0;
      std::memcpy(x, a + off, kBlockBytes);
      std::memcpy(y, b + off, kBlockBytes);
      for (int i = 0; i < 8; ++i) acc |= x[i] ^ y[i];
      mask |= static_cast<uint64_t>(acc != 0) << blk;
    } else {
      mask |= static_cast<uint64_t>(std::memcmp(a + off, b + off, n) != 0) << blk;
    }
  }
  return mask;
}

// Elements [0, n): the vector kernel for the largest multiple of 4, scalar code for the rest.
template <Kind K, uint32_t Size>
inline void compute_elements(VectorRowFn vec, const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs,
                             double* c_sq, RowAccum& rs) {
  const uint32_t n_vec = vec != nullptr ? n & ~3u : 0;
  if (n_vec != 0) vec(a, b, n_vec, c_abs, c_sq, &rs);
  row_elements<K, Size>(a + static_cast<size_t>(n_vec) * Size, b + static_cast<size_t>(n_vec) * Size, n - n_vec,
                        c_abs + n_vec, c_sq + n_vec, rs);
}

constexpr uint64_t kRowBytes = uint64_t{diff::kLanes} * diff::kChunkBytes;  // 4 KiB: chunk k*256 + t, t < 256

// One tile, row by row (row k holds chunk k*256 + t for lane t, so a lane's elements in row order
// are its canonical order). Equal rows are skipped with memcmp.
template <Kind K, uint32_t Size>
Partial tile_partial(const uint8_t* a, const uint8_t* b, uint64_t tile_off, uint64_t nbytes) {
  Partial p = diff::empty_partial();
  const uint64_t tile_len = std::min<uint64_t>(diff::kTileBytes, nbytes - tile_off);
  if (std::memcmp(a + tile_off, b + tile_off, tile_len) == 0) return p;
  if constexpr (Size == 16) {
    for (uint64_t off = tile_off; off < tile_off + tile_len; off += 16) {
      if (std::memcmp(a + off, b + off, 16) != 0) {
        p.n_diff += 1;
        if (off / 16 < p.first_diff) p.first_diff = off / 16;
      }
    }
    return p;
  } else {
    constexpr uint32_t per_row = static_cast<uint32_t>(kRowBytes / Size);
    constexpr uint32_t per_chunk = diff::kChunkBytes / Size;
    double lane_abs[diff::kLanes] = {};
    double lane_sq[diff::kLanes] = {};
    alignas(64) double c_abs[per_row];
    alignas(64) double c_sq[per_row];
    RowAccum rs;
    uint64_t first = diff::kNoIndex;
    const VectorRowFn vec = vector_row<K>();
    for (uint64_t row_off = tile_off; row_off < tile_off + tile_len; row_off += kRowBytes) {
      const uint64_t row_len = std::min<uint64_t>(kRowBytes, tile_off + tile_len - row_off);
      const uint8_t* ra = a + row_off;
      const uint8_t* rb = b + row_off;
      if (std::memcmp(ra, rb, row_len) == 0) continue;
      const uint32_t n = static_cast<uint32_t>(row_len / Size);
      if (first == diff::kNoIndex) {
        uint32_t e = 0;
        while (std::memcmp(ra + static_cast<size_t>(e) * Size, rb + static_cast<size_t>(e) * Size, Size) == 0) ++e;
        first = row_off / Size + e;
      }
      // Sparse rows: only the differing 64-byte blocks are computed, and their contributions go
      // straight to their lanes (a lane's elements sit in one chunk of the row, so block order
      // is index order and the skipped elements would only have added zeros).
      const uint64_t blocks = differing_blocks(ra, rb, row_len);
      if (__builtin_popcountll(blocks) <= kSparseBlocks) {
        for (uint64_t m = blocks; m != 0; m &= m - 1) {
          const uint32_t blk = static_cast<uint32_t>(__builtin_ctzll(m));
          const uint32_t e0 = blk * (kBlockBytes / Size);
          const uint32_t ne = static_cast<uint32_t>(std::min<uint64_t>(kBlockBytes, row_len - blk * kBlockBytes) / Size);
          compute_elements<K, Size>(vec, ra + blk * kBlockBytes, rb + blk * kBlockBytes, ne, c_abs + e0, c_sq + e0, rs);
          if constexpr (K != Kind::kBits) {
            for (uint32_t e = e0; e < e0 + ne; ++e) {
              lane_abs[e / per_chunk] = diff::add_rn(lane_abs[e / per_chunk], c_abs[e]);
              lane_sq[e / per_chunk] = diff::add_rn(lane_sq[e / per_chunk], c_sq[e]);
            }
          }
        }
        continue;
      }
      compute_elements<K, Size>(vec, ra, rb, n, c_abs, c_sq, rs);
      if constexpr (K != Kind::kBits) {
        for (uint32_t e = n; e < per_row; ++e) c_abs[e] = c_sq[e] = 0.0;
        // v outside, lanes inside: each lane still adds its elements in index order, and the
        // inner loop over independent lanes vectorizes.
        for (uint32_t v = 0; v < per_chunk; ++v) {
          for (uint32_t t = 0; t < diff::kLanes; ++t) {
            lane_abs[t] = diff::add_rn(lane_abs[t], c_abs[t * per_chunk + v]);
            lane_sq[t] = diff::add_rn(lane_sq[t], c_sq[t * per_chunk + v]);
          }
        }
      }
    }
    p.max_abs = rs.max_abs;
    p.max_rel = rs.max_rel;
    p.max_ulp = rs.max_ulp;
    p.n_diff = rs.n_diff;
    p.introduced = rs.introduced;
    p.removed = rs.removed;
    p.first_diff = first;
    if constexpr (K != Kind::kBits) {
      for (uint32_t h = diff::kLanes / 2; h >= 1; h >>= 1) {
        for (uint32_t t = 0; t < h; ++t) {
          lane_abs[t] = diff::add_rn(lane_abs[t], lane_abs[t + h]);
          lane_sq[t] = diff::add_rn(lane_sq[t], lane_sq[t + h]);
        }
      }
      p.sum_abs = lane_abs[0];
      p.sum_sq = lane_sq[0];
    }
    return p;
  }
}

using TileFn = Partial (*)(const uint8_t*, const uint8_t*, uint64_t, uint64_t);

TileFn tile_fn_for(const DiffDType& dt) {
  switch (dt.kind) {
    case Kind::kF64: return tile_partial<Kind::kF64, 8>;
    case Kind::kF32: return tile_partial<Kind::kF32, 4>;
    case Kind::kF16: return tile_partial<Kind::kF16, 2>;
    case Kind::kBF16: return tile_partial<Kind::kBF16, 2>;
    case Kind::kF8E4M3FN: return tile_partial<Kind::kF8E4M3FN, 1>;
    case Kind::kF8E5M2: return tile_partial<Kind::kF8E5M2, 1>;
    case Kind::kBits:
      switch (dt.size) {
        case 1: return tile_partial<Kind::kBits, 1>;
        case 2: return tile_partial<Kind::kBits, 2>;
        case 4: return tile_partial<Kind::kBits, 4>;
        case 8: return tile_partial<Kind::kBits, 8>;
        case 16: return tile_partial<Kind::kBits, 16>;
        default: break;
      }
      break;
  }
  throw std::invalid_argument(std::string("no diff kernel for dtype ") + dt.name);
}

int resolve_threads(int requested, uint64_t nbytes, uint64_t n_tasks) {
  if (nbytes < kMinBytesForThreads) return 1;
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(1, n);
  return static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(n), n_tasks));
}

}  // namespace

const std::vector<DiffDType>& diff_dtypes() { return kTable; }

const DiffDType& diff_dtype(const std::string& name) {
  for (const auto& d : kTable)
    if (name == d.name) return d;
  std::string known;
  for (const auto& d : kTable) known += (known.empty() ? "" : ", ") + std::string(d.name);
  throw std::invalid_argument("unknown dtype '" + name + "' for diff; use one of: " + known);
}

Partial diff_buffers(const uint8_t* a, const uint8_t* b, size_t nbytes, const DiffDType& dtype, int threads) {
  if (nbytes % dtype.size != 0)
    throw std::invalid_argument("byte length " + std::to_string(nbytes) + " is not a multiple of the " +
                                std::to_string(dtype.size) + "-byte element size of " + dtype.name);
  const TileFn tile = tile_fn_for(dtype);
  const uint64_t n_tiles = diff::tile_count(nbytes);
  if (n_tiles == 0) return diff::empty_partial();
  std::vector<Partial> tiles(n_tiles);
  const uint64_t n_tasks = (n_tiles + kTilesPerTask - 1) / kTilesPerTask;
  std::atomic<uint64_t> next{0};
  auto worker = [&]() {
    for (;;) {
      const uint64_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= n_tasks) return;
      const uint64_t last = std::min(n_tiles, (task + 1) * kTilesPerTask);
      for (uint64_t t = task * kTilesPerTask; t < last; ++t) tiles[t] = tile(a, b, t * diff::kTileBytes, nbytes);
    }
  };
  const int n_threads = resolve_threads(threads, nbytes, n_tasks);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(n_threads - 1));
  for (int t = 1; t < n_threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();

  std::vector<Partial> supers(diff::super_count(n_tiles));
  for (uint64_t s = 0; s < supers.size(); ++s) {
    const uint64_t first = s * diff::kTilesPerSuper;
    supers[s] = diff::fold_sequential(tiles.data() + first, std::min(diff::kTilesPerSuper, n_tiles - first));
  }
  return diff::fold_sequential(supers.data(), supers.size());
}

}  // namespace fastckpt::cpu
