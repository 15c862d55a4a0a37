// The CPU bitwise-diff kernel: the same tiles, lanes and reduction order as the CUDA kernel
// (csrc/common/diff_math.hpp), so both give bit-identical statistics.
//
// Workers take runs of 32 KiB tiles from a shared counter and write one Partial per tile; the
// caller then folds tiles into super-tiles and super-tiles into the total, sequentially, exactly as
// the GPU does after its block reduction. A tile whose bytes are equal (memcmp, memory speed) is
// skipped entirely: it contributes nothing to any statistic.
#include "diff.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>

namespace fastckpt::cpu {
namespace {

using diff::Chunk;
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

Chunk load_chunk(const uint8_t* p, size_t n) {
  Chunk c{{0, 0}};
  std::memcpy(c.w, p, n);
  return c;
}

template <Kind K, uint32_t Size>
Partial tile_partial(const uint8_t* a, const uint8_t* b, uint64_t tile_off, uint64_t nbytes) {
  Partial p = diff::empty_partial();
  const uint64_t tile_len = std::min<uint64_t>(diff::kTileBytes, nbytes - tile_off);
  if (std::memcmp(a + tile_off, b + tile_off, tile_len) == 0) return p;
  double lane_abs[diff::kLanes] = {};
  double lane_sq[diff::kLanes] = {};
  const uint64_t n_chunks = (tile_len + diff::kChunkBytes - 1) / diff::kChunkBytes;
  for (uint64_t c = 0; c < n_chunks; ++c) {
    const uint64_t off = tile_off + c * diff::kChunkBytes;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(diff::kChunkBytes, nbytes - off));
    const Chunk ca = load_chunk(a + off, n), cb = load_chunk(b + off, n);
    if (ca.w[0] == cb.w[0] && ca.w[1] == cb.w[1]) continue;
    const uint32_t lane = static_cast<uint32_t>(c % diff::kLanes);
    diff::compare_chunk<K, Size>(ca, cb, static_cast<uint32_t>(n / Size), off / Size, p, lane_abs[lane],
                                 lane_sq[lane]);
  }
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
