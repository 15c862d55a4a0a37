// The CPU bitwise-diff kernel: the same tiles, lanes and reduction order as the CUDA kernel
// (csrc/common/diff_math.hpp), so both give bit-identical statistics.
//
// Workers take runs of 32 KiB tiles from a shared counter and write one result per tile; the caller
// then folds tiles into super-tiles and super-tiles into the total, sequentially, exactly as the GPU
// does after its block reduction. A tile whose bytes are equal (memcmp, memory speed) is skipped: it
// contributes nothing to any difference statistic. A differing tile goes to a vector kernel
// (diff_avx2.cpp: full float64/float32/bfloat16/float16 tiles) or to the scalar one, which also sum a^2 over
// A's finite elements in the same canonical order: ||A|| for the relative change, with no second
// pass over the differing tiles.
#include "diff.hpp"

#include "diff_isa.hpp"
#include "workers.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <xmmintrin.h>

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

static_assert(kDiffLanes == diff::kLanes && kDiffTileBytes == diff::kTileBytes, "diff_isa.hpp is out of date");

// One tile's statistics: the Partial of the specification plus the canonical sum of a^2 over A's
// finite elements (||A||^2, for the relative change), which the other backends do not compute.
struct TileResult {
  Partial p;
  double a2;
  bool has_a2;  // false for an equal tile skipped by memcmp (its a2 is computed only if needed)
};

using TileFn = void (*)(const uint8_t*, const uint8_t*, uint64_t, DiffIsa, bool, TileResult&);

// Index of the first differing element of a tile known to differ.
template <uint32_t Size>
uint64_t first_differing(const uint8_t* a, const uint8_t* b, uint64_t len) {
  uint64_t off = 0;
  for (; off + 64 <= len; off += 64)
    if (std::memcmp(a + off, b + off, 64) != 0) break;
  while (std::memcmp(a + off, b + off, Size) == 0) off += Size;
  return off / Size;
}

// The halving tree over the 256 lanes (step 3 of the canonical order).
inline double lane_tree(double* lanes) {
  for (uint32_t h = diff::kLanes / 2; h >= 1; h >>= 1)
    for (uint32_t t = 0; t < h; ++t) lanes[t] = diff::add_rn(lanes[t], lanes[t + h]);
  return lanes[0];
}

void set_from(TileResult& r, TileLanes& lanes, const RowAccum& rs) {
  r.p.max_abs = rs.max_abs;
  r.p.max_rel = rs.max_rel;
  r.p.max_ulp = rs.max_ulp;
  r.p.n_diff = rs.n_diff;
  r.p.introduced = rs.introduced;
  r.p.removed = rs.removed;
  r.p.sum_abs = lane_tree(lanes.abs);
  r.p.sum_sq = lane_tree(lanes.sq);
  r.a2 = lane_tree(lanes.a2);
  r.has_a2 = true;
}

// Any tile of a float format, element by element, chunk by chunk in index order (so lane t = chunk
// mod 256 adds its elements in index order): the specification written out, for the formats and
// tile lengths the vector kernels do not cover and for CPUs without AVX2. Equal chunks add only a^2
// (nothing without `norm`).
template <Kind K, uint32_t Size>
void tile_scalar(const uint8_t* a, const uint8_t* b, uint64_t len, bool norm, TileResult& r) {
  using U = typename UInt<Size>::T;
  const double inf = diff::bits_to_double(diff::kInfBits);
  TileLanes lanes = {};
  RowAccum rs;
  for (uint64_t off = 0; off < len; off += diff::kChunkBytes) {
    const uint32_t t = static_cast<uint32_t>((off / diff::kChunkBytes) % diff::kLanes);
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(diff::kChunkBytes, len - off) / Size);
    const bool chunk_differs = std::memcmp(a + off, b + off, n * Size) != 0;
    if (!chunk_differs && !norm) continue;
    for (uint32_t e = 0; e < n; ++e) {
      U xa, xb;
      std::memcpy(&xa, a + off + e * Size, Size);
      std::memcpy(&xb, b + off + e * Size, Size);
      const uint64_t ua = xa, ub = xb;
      const uint32_t ca = diff::classify<K>(ua);
      const double x = ca == diff::kFinite ? diff::decode<K>(ua) : 0.0;
      lanes.a2[t] = diff::add_rn(lanes.a2[t], diff::mul_rn(x, x));
      if (!chunk_differs || ua == ub) continue;
      rs.n_diff += 1;
      const uint32_t cb = diff::classify<K>(ub);
      if (ca != diff::kFinite || cb != diff::kFinite) {
        if (cb != diff::kFinite && cb != ca) rs.introduced += 1;
        if (ca != diff::kFinite && ca != cb) rs.removed += 1;
        continue;
      }
      const double y = diff::decode<K>(ub);
      const double d = diff::abs_exact(diff::sub_rn(x, y));
      lanes.abs[t] = diff::add_rn(lanes.abs[t], d);
      lanes.sq[t] = diff::add_rn(lanes.sq[t], diff::mul_rn(d, d));
      if (d > rs.max_abs) rs.max_abs = d;
      const double ax = diff::abs_exact(x);
      if (ax == 0.0) {
        if (d != 0.0) rs.max_rel = inf;
      } else if (diff::rel_may_exceed(d, ax, rs.max_rel)) {
        const double q = diff::div_rn(d, ax);
        if (q > rs.max_rel) rs.max_rel = q;
      }
      const uint64_t u = diff::ulp_distance(diff::ordered<K>(ua), diff::ordered<K>(ub));
      if (u > rs.max_ulp) rs.max_ulp = u;
    }
  }
  set_from(r, lanes, rs);
  if (r.p.n_diff != 0) r.p.first_diff = first_differing<Size>(a, b, len);
}

using VectorTileFn = void (*)(const uint8_t*, const uint8_t*, TileLanes*, RowAccum*, bool);

bool have_avx2() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return ok;
}

bool have_avx512() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return ok;
}

// Full tiles of float64/float32/bfloat16/float16 take the widest vector kernel the CPU (and `isa`)
// allows; the rest the scalar one. All give the same bits (tests/test_diff.py holds each to the
// numpy reference).
template <Kind K, uint32_t Size, VectorTileFn Avx2, VectorTileFn Avx512>
void tile_float(const uint8_t* a, const uint8_t* b, uint64_t len, DiffIsa isa, bool norm, TileResult& r) {
  VectorTileFn vec = nullptr;
  if (len == diff::kTileBytes) {
    if (isa == DiffIsa::kAvx512) vec = Avx512;
    if (isa == DiffIsa::kAvx2) vec = Avx2;
  }
  if (vec == nullptr) return tile_scalar<K, Size>(a, b, len, norm, r);
  TileLanes lanes;
  RowAccum rs;
  vec(a, b, &lanes, &rs, norm);
  set_from(r, lanes, rs);
  if (r.p.n_diff != 0) r.p.first_diff = first_differing<Size>(a, b, len);
}

// Bitwise-only formats: counts and the first index.
template <uint32_t Size>
void tile_bits(const uint8_t* a, const uint8_t* b, uint64_t len, DiffIsa, bool, TileResult& r) {
  uint64_t n_diff = 0;
  if constexpr (Size == 16) {
    for (uint64_t off = 0; off < len; off += 16) n_diff += std::memcmp(a + off, b + off, 16) != 0;
  } else {
    using U = typename UInt<Size>::T;
    for (uint64_t off = 0; off < len; off += Size) {
      U xa, xb;
      std::memcpy(&xa, a + off, Size);
      std::memcpy(&xb, b + off, Size);
      n_diff += xa != xb;
    }
  }
  r.p.n_diff = n_diff;
  if (n_diff != 0) r.p.first_diff = first_differing<Size>(a, b, len);
}

TileFn tile_fn_for(const DiffDType& dt) {
  switch (dt.kind) {
    case Kind::kF64: return tile_float<Kind::kF64, 8, diff_tile_f64_avx2, diff_tile_f64_avx512>;
    case Kind::kF32: return tile_float<Kind::kF32, 4, diff_tile_f32_avx2, diff_tile_f32_avx512>;
    case Kind::kF16: return tile_float<Kind::kF16, 2, diff_tile_f16_avx2, diff_tile_f16_avx512>;
    case Kind::kBF16: return tile_float<Kind::kBF16, 2, diff_tile_bf16_avx2, diff_tile_bf16_avx512>;
    case Kind::kF8E4M3FN: return tile_float<Kind::kF8E4M3FN, 1, nullptr, nullptr>;
    case Kind::kF8E5M2: return tile_float<Kind::kF8E5M2, 1, nullptr, nullptr>;
    case Kind::kBits:
      switch (dt.size) {
        case 1: return tile_bits<1>;
        case 2: return tile_bits<2>;
        case 4: return tile_bits<4>;
        case 8: return tile_bits<8>;
        case 16: return tile_bits<16>;
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

// Subnormal values must convert and multiply exactly: a caller that set flush-to-zero or
// denormals-are-zero (torch.set_flush_denormal(True) does, on its thread) would otherwise turn
// them into zeros in the conversions to float64. Clears both MXCSR bits for the scope.
class DenormalsExact {
 public:
  DenormalsExact() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~0x8040u); }  // FTZ bit 15, DAZ bit 6
  ~DenormalsExact() { _mm_setcsr(saved_); }
  DenormalsExact(const DenormalsExact&) = delete;
  DenormalsExact& operator=(const DenormalsExact&) = delete;

 private:
  unsigned saved_;
};

// Runs job(i) for i < n_items, in runs of kTilesPerTask, over the resolved number of threads.
template <typename Job>
void parallel_tiles(uint64_t n_items, int n_threads, const Job& job) {
  const uint64_t n_tasks = (n_items + kTilesPerTask - 1) / kTilesPerTask;
  std::atomic<uint64_t> next{0};
  auto worker = [&]() {
    const DenormalsExact exact;
    for (;;) {
      const uint64_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= n_tasks) return;
      const uint64_t last = std::min(n_items, (task + 1) * kTilesPerTask);
      for (uint64_t t = task * kTilesPerTask; t < last; ++t) job(t);
    }
  };
  run_workers(n_threads, [&](int) { worker(); });
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

std::vector<std::string> diff_isas() {
  std::vector<std::string> out{"scalar"};
  if (have_avx2()) out.push_back("avx2");
  if (have_avx512()) out.push_back("avx512");
  return out;
}

DiffIsa diff_isa(const std::string& name) {
  if (name.empty()) return have_avx512() ? DiffIsa::kAvx512 : have_avx2() ? DiffIsa::kAvx2 : DiffIsa::kScalar;
  for (const auto& usable : diff_isas())
    if (name == usable) return name == "avx512" ? DiffIsa::kAvx512 : name == "avx2" ? DiffIsa::kAvx2 : DiffIsa::kScalar;
  std::string known;
  for (const auto& usable : diff_isas()) known += (known.empty() ? "" : ", ") + usable;
  throw std::invalid_argument("diff isa '" + name + "' is not usable on this CPU; use \"\" or one of: " + known);
}

DiffResult diff_buffers(const uint8_t* a, const uint8_t* b, size_t nbytes, const DiffDType& dtype, int threads,
                        bool norm_a, DiffIsa isa) {
  if (nbytes % dtype.size != 0)
    throw std::invalid_argument("byte length " + std::to_string(nbytes) + " is not a multiple of the " +
                                std::to_string(dtype.size) + "-byte element size of " + dtype.name);
  const TileFn tile = tile_fn_for(dtype);
  DiffResult out{diff::empty_partial(), 0.0, false};
  const uint64_t n_tiles = diff::tile_count(nbytes);
  if (n_tiles == 0) return out;
  std::vector<TileResult> tiles(n_tiles);
  const int n_threads = resolve_threads(threads, nbytes, (n_tiles + kTilesPerTask - 1) / kTilesPerTask);
  const bool floats = dtype.kind != Kind::kBits;
  parallel_tiles(n_tiles, n_threads, [&](uint64_t t) {
    TileResult& r = tiles[t];
    r.p = diff::empty_partial();
    r.a2 = 0.0;
    r.has_a2 = false;
    const uint64_t off = t * diff::kTileBytes;
    const uint64_t len = std::min<uint64_t>(diff::kTileBytes, nbytes - off);
    // The next tile is requested now so that its loads (and, on 4 KiB pages of a file mapping,
    // its page walks) overlap this tile's work; a differing tile's kernel visits 16 rows at once,
    // which the hardware prefetcher follows poorly. Measured ~10% less CPU time on mapped files.
    if (t + 1 < n_tiles) {
      const uint64_t next = off + diff::kTileBytes;
      const uint64_t next_len = std::min<uint64_t>(diff::kTileBytes, nbytes - next);
      for (uint64_t i = 0; i < next_len; i += 64) {
        __builtin_prefetch(a + next + i, 0, 3);
        __builtin_prefetch(b + next + i, 0, 3);
      }
    }
    // Equal tiles contribute nothing to the difference statistics: memory speed.
    if (std::memcmp(a + off, b + off, len) == 0) return;
    tile(a + off, b + off, len, isa, norm_a, r);
    if (r.p.first_diff != diff::kNoIndex) r.p.first_diff += off / dtype.size;  // tile-local -> global
  });

  std::vector<Partial> parts(n_tiles);
  uint64_t n_diff = 0;
  for (uint64_t t = 0; t < n_tiles; ++t) {
    parts[t] = tiles[t].p;
    n_diff += tiles[t].p.n_diff;
  }
  std::vector<Partial> supers(diff::super_count(n_tiles));
  for (uint64_t s = 0; s < supers.size(); ++s) {
    const uint64_t first = s * diff::kTilesPerSuper;
    supers[s] = diff::fold_sequential(parts.data() + first, std::min(diff::kTilesPerSuper, n_tiles - first));
  }
  out.p = diff::fold_sequential(supers.data(), supers.size());

  // ||A||^2 only when asked and the buffers differ: the differing tiles computed their a^2 sums
  // while their bytes were in cache; the equal ones (skipped above) are read once more now.
  if (norm_a && floats && n_diff != 0) {
    parallel_tiles(n_tiles, n_threads, [&](uint64_t t) {
      TileResult& r = tiles[t];
      if (r.has_a2) return;
      const uint64_t off = t * diff::kTileBytes;
      const uint64_t len = std::min<uint64_t>(diff::kTileBytes, nbytes - off);
      tile(a + off, a + off, len, isa, true, r);  // a against itself: only the a^2 sums are non-zero
    });
    for (uint64_t t = 0; t < n_tiles; ++t) {
      parts[t] = diff::empty_partial();
      parts[t].sum_abs = tiles[t].a2;
    }
    for (uint64_t s = 0; s < supers.size(); ++s) {
      const uint64_t first = s * diff::kTilesPerSuper;
      supers[s] = diff::fold_sequential(parts.data() + first, std::min(diff::kTilesPerSuper, n_tiles - first));
    }
    out.sum_sq_a = diff::fold_sequential(supers.data(), supers.size()).sum_abs;
    out.has_sum_sq_a = true;
  }
  return out;
}

}  // namespace fastckpt::cpu
