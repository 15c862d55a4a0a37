// GF(2^8) arithmetic, the Cauchy coding matrix, kernel dispatch and the threaded encode and
// reconstruct drivers of the parity engine. The portable ("scalar") kernels are here too; they are
// the fallback on CPUs without AVX2 and a second implementation the vector kernels are tested against.
#include "gf256.hpp"
#include "workers.hpp"

#include "../common/xxh3.hpp"

#include <algorithm>
#include <initializer_list>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

namespace fastckpt::gf {
namespace {

struct Tables {
  uint8_t exp[512];  // doubled so that exp[log a + log b] needs no reduction mod 255
  uint8_t log[256];
  uint8_t mul[256][256];
  Tables() {
    unsigned x = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = static_cast<uint8_t>(x);
      log[x] = static_cast<uint8_t>(i);
      x <<= 1;
      if (x & 0x100) x ^= kPolynomial;
    }
    for (int i = 255; i < 512; ++i) exp[i] = exp[i - 255];
    log[0] = 0;  // never read: mul() and inv() handle zero first
    for (int a = 0; a < 256; ++a)
      for (int b = 0; b < 256; ++b)
        mul[a][b] = (a == 0 || b == 0) ? 0 : exp[log[a] + log[b]];
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

void mul_acc_scalar(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                    const CoefTable* coef) {
  for (int r = 0; r < n_dst; ++r) {
    uint8_t* d = dst[r];
    for (int s = 0; s < n_src; ++s) {
      const uint8_t* row = tables().mul[coef[static_cast<size_t>(s) * n_dst + r].value];
      const uint8_t* x = src[s];
      for (size_t i = 0; i < len; ++i) d[i] ^= row[x[i]];
    }
  }
}

void xor_acc_scalar(const uint8_t* src, size_t len, uint8_t* dst) {
  for (size_t i = 0; i < len; ++i) dst[i] ^= src[i];
}

bool cpu_has_all(std::initializer_list<const char*> features) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  for (const char* f : features) {
    // __builtin_cpu_supports needs a literal, hence the chain; it also consults XCR0, so an OS that
    // does not save the wide registers reports the feature as absent.
    const std::string name(f);
    bool ok = false;
    if (name == "avx2") ok = __builtin_cpu_supports("avx2");
    else if (name == "avx512f") ok = __builtin_cpu_supports("avx512f");
    else if (name == "avx512bw") ok = __builtin_cpu_supports("avx512bw");
    else if (name == "avx512vl") ok = __builtin_cpu_supports("avx512vl");
    else if (name == "avx512dq") ok = __builtin_cpu_supports("avx512dq");
    else if (name == "bmi2") ok = __builtin_cpu_supports("bmi2");
    else if (name == "gfni") ok = __builtin_cpu_supports("gfni");
    if (!ok) return false;
  }
  return true;
#else
  (void)features;
  return false;
#endif
}

struct IsaEntry {
  Kernels kernels;
  bool usable;
};

std::vector<IsaEntry> build_table() {
  std::vector<IsaEntry> t;
  t.push_back({{"scalar", mul_acc_scalar, xor_acc_scalar, nullptr}, true});
#if defined(FASTCKPT_HAVE_AVX2)
  t.push_back({{"avx2", mul_acc_avx2, xor_acc_avx2, nullptr}, cpu_has_all({"avx2", "bmi2"})});
#endif
#if defined(FASTCKPT_HAVE_AVX512)
  const bool avx512 = cpu_has_all({"avx512f", "avx512bw", "avx512vl", "avx512dq", "bmi2"});
  t.push_back({{"avx512", mul_acc_avx512, xor_acc_avx512, mul_acc_hash_avx512}, avx512});
  // GF2P8AFFINEQB does the whole multiply in one instruction for any field polynomial (GF2P8MULB is
  // fixed to the AES polynomial 0x11B, so it is of no use for 0x11D).
  t.push_back({{"gfni", mul_acc_gfni, xor_acc_avx512, mul_acc_hash_gfni}, avx512 && cpu_has_all({"gfni"})});
#endif
  return t;
}

const std::vector<IsaEntry>& isa_table() {
  static const std::vector<IsaEntry> t = build_table();
  return t;
}

// Columns are processed in tiles of this many bytes, so that the m parity tiles being accumulated
// stay in L2 while the k data tiles stream through once.
constexpr size_t kTileBytes = size_t{64} << 10;
// Data leaves multiplied in per kernel call: the partial sums stay in registers across them, so the
// parity tiles are read and written k / kBatch times instead of k times.
// 8 to 16 measured best on a 2-vCPU Xeon (60 was slower: too many concurrent streams).
constexpr size_t kBatch = 8;
// Adjacent groups processed together by one task (their leaves are neighbours in memory): 2 measured
// a few percent faster than 1 or 4.
constexpr size_t kWindow = 2;
// With a RangeHook: its work on a leaf (a tensor leaf that starts in it) may read into the next one,
// which is in the same window, hence read anyway, unless the leaf is the last of its window's row;
// wider windows waste less. 2, 4 and 8 measured alike on a 2-vCPU Xeon; 4 wastes at most 1/8.
constexpr size_t kHookWindow = 4;
// Below this much input, starting threads costs more than it saves.
constexpr size_t kMinBytesForThreads = size_t{8} << 20;

int resolve_threads(int requested, size_t work_bytes, size_t n_tasks) {
  if (work_bytes < kMinBytesForThreads || n_tasks < 2) return 1;
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(1, n);
  return static_cast<int>(std::min<size_t>(static_cast<size_t>(n), n_tasks));
}


uint64_t n_leaves_of(uint64_t size, size_t leaf_size) { return (size + leaf_size - 1) / leaf_size; }

}  // namespace

uint8_t mul(uint8_t a, uint8_t b) { return tables().mul[a][b]; }

uint8_t inv(uint8_t a) {
  if (a == 0) throw std::invalid_argument("0 has no inverse in GF(2^8)");
  return tables().exp[255 - tables().log[a]];
}

namespace {

CoefTable build_coef_table(uint8_t value) {
  const uint8_t* row = tables().mul[value];
  CoefTable t{};
  t.value = value;
  for (int x = 0; x < 16; ++x) {
    t.lo[x] = row[x];
    t.hi[x] = row[x << 4];
  }
  // GF2P8AFFINEQB computes output bit i as parity(A.byte[7 - i] & x). Multiplication by `value` is
  // linear over GF(2): output bit i is the XOR over input bits j of bit i of value * 2^j.
  uint64_t affine = 0;
  for (int i = 0; i < 8; ++i) {
    unsigned bits = 0;
    for (int j = 0; j < 8; ++j) bits |= ((row[1u << j] >> i) & 1u) << j;
    affine |= static_cast<uint64_t>(bits) << (8 * (7 - i));
  }
  t.affine = affine;
  return t;
}

struct AllCoefTables {
  CoefTable t[256];
  AllCoefTables() {
    for (int v = 0; v < 256; ++v) t[v] = build_coef_table(static_cast<uint8_t>(v));
  }
};

}  // namespace

CoefTable make_coef_table(uint8_t value) {
  static const AllCoefTables all;
  return all.t[value];
}

std::vector<uint8_t> cauchy_matrix(int k, int m) {
  if (k < 1 || m < 1 || k + m > kFieldSize)
    throw std::invalid_argument("a Cauchy matrix needs k >= 1, m >= 1 and k + m <= 256");
  std::vector<uint8_t> c(static_cast<size_t>(k) * static_cast<size_t>(m));
  for (int r = 0; r < m; ++r)
    for (int j = 0; j < k; ++j) c[static_cast<size_t>(r) * k + j] = inv(static_cast<uint8_t>((k + r) ^ j));
  return c;
}

bool invert(std::vector<uint8_t>& a, int n) {
  const size_t nn = static_cast<size_t>(n);
  std::vector<uint8_t> b(nn * nn, 0);
  for (size_t i = 0; i < nn; ++i) b[i * nn + i] = 1;
  for (size_t col = 0; col < nn; ++col) {
    size_t pivot = col;
    while (pivot < nn && a[pivot * nn + col] == 0) ++pivot;
    if (pivot == nn) return false;
    if (pivot != col) {
      for (size_t j = 0; j < nn; ++j) {
        std::swap(a[pivot * nn + j], a[col * nn + j]);
        std::swap(b[pivot * nn + j], b[col * nn + j]);
      }
    }
    const uint8_t scale = inv(a[col * nn + col]);
    for (size_t j = 0; j < nn; ++j) {
      a[col * nn + j] = mul(a[col * nn + j], scale);
      b[col * nn + j] = mul(b[col * nn + j], scale);
    }
    for (size_t row = 0; row < nn; ++row) {
      const uint8_t f = a[row * nn + col];
      if (row == col || f == 0) continue;
      for (size_t j = 0; j < nn; ++j) {
        a[row * nn + j] ^= mul(f, a[col * nn + j]);
        b[row * nn + j] ^= mul(f, b[col * nn + j]);
      }
    }
  }
  a.swap(b);
  return true;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const auto& e : isa_table())
    if (e.usable) names.emplace_back(e.kernels.name);
  return names;
}

const std::string& default_isa() {
  static const std::string best = available_isas().back();
  return best;
}

const Kernels& kernels_for(const std::string& isa) {
  for (const auto& e : isa_table()) {
    if (isa == e.kernels.name) {
      if (!e.usable)
        throw std::invalid_argument("instruction set '" + isa + "' is compiled in but this CPU cannot run it");
      return e.kernels;
    }
  }
  std::string known;
  for (const auto& name : available_isas()) known += (known.empty() ? "" : ", ") + name;
  throw std::invalid_argument("unknown parity instruction set '" + isa + "'; this build can use: " + known);
}

void check_code(const Code& code, uint64_t size) {
  if (code.k < 1 || code.m < 1 || code.k + code.m > kFieldSize)
    throw std::invalid_argument("parity needs k >= 1 data and m >= 1 parity leaves per group with k + m <= 256, got k=" +
                                std::to_string(code.k) + ", m=" + std::to_string(code.m));
  const uint64_t n = n_leaves_of(size, code.leaf_size);
  const uint64_t min_groups = (n + static_cast<uint64_t>(code.k) - 1) / static_cast<uint64_t>(code.k);
  // G = 0 exactly when there are no leaves; more groups than leaves would only add all-zero parity.
  if (code.groups < min_groups || code.groups > n)
    throw std::invalid_argument("groups must be between ceil(n_leaves / k) and n_leaves: " + std::to_string(n) +
                                " leaves and k=" + std::to_string(code.k) + " allow " + std::to_string(min_groups) +
                                ".." + std::to_string(n) + ", got " + std::to_string(code.groups));
}

void encode(const uint8_t* data, size_t len, const Code& code, uint8_t* parity, uint64_t* digests,
            cpu::LongAccumulateFn hash_loop, int threads, const Kernels& kernels, const RangeHook* hook) {
  check_code(code, len);
  const size_t L = code.leaf_size, G = code.groups;
  const size_t k = static_cast<size_t>(code.k), m = static_cast<size_t>(code.m);
  const uint64_t n = n_leaves_of(len, L);
  if (n == 0 || G == 0) return;
  // Coefficient tables column-major (all m rows of data position s together), as the kernel takes them.
  const std::vector<uint8_t> c = cauchy_matrix(code.k, code.m);
  std::vector<CoefTable> coef(k * m);
  for (size_t s = 0; s < k; ++s)
    for (size_t r = 0; r < m; ++r) coef[s * m + r] = make_coef_table(c[r * k + s]);
  // Hashing needs whole leaves, so with digests a tile is a whole leaf. Where the kernel set has a
  // fused multiply-and-hash kernel, each byte is loaded once for both (the XXH3 long loop needs
  // leaves of more than 240 bytes, whole stripes of 64).
  const size_t tile = digests != nullptr ? L : std::min(L, kTileBytes);
  const bool fused = digests != nullptr && kernels.mul_acc_hash != nullptr && L > xxh3::kMidSizeMax && L % 64 == 0 &&
                     code.m <= kMaxFusedRows && kBatch <= static_cast<size_t>(kMaxFusedSources);
  const uint8_t* secret = xxh3::default_secret();
  const size_t n_tiles = (L + tile - 1) / tile;
  const size_t W = hook != nullptr ? kHookWindow : kWindow, n_windows = (G + W - 1) / W;
  const bool reports_windows = hook != nullptr && hook->window_done != nullptr && n_tiles == 1;
  if (parity == nullptr && !(reports_windows && hook->window_buffer != nullptr))
    throw std::invalid_argument(
        "encode without a parity buffer needs window_buffer and window_done hooks and whole-leaf tiles");
  const int n_threads = resolve_threads(threads, len, n_windows * n_tiles);
  // Without a parity buffer each window's m rows of W leaves are accumulated in a buffer from the
  // hook (a few hundred KiB that stay in cache), never in a buffer of all the parity: ~5 % of the file
  // in fresh pages, whose first touches cost more than the encode itself.
  cpu::parallel_tasks(n_windows * n_tiles, n_threads, [&](size_t task, int) {
    const size_t g0 = (task / n_tiles) * W, col = (task % n_tiles) * tile;
    const size_t width = std::min(tile, L - col);
    const size_t n_groups = std::min(W, G - g0);
    uint8_t* rows = parity != nullptr ? parity + g0 * L : hook->window_buffer(hook->ctx, m * W * L);
    const size_t row_stride = parity != nullptr ? G * L : W * L;
    // dst[u * m + r]: parity row r of group g0 + u.
    std::vector<uint8_t*> dst(n_groups * m);
    for (size_t u = 0; u < n_groups; ++u)
      for (size_t r = 0; r < m; ++r) {
        dst[u * m + r] = rows + r * row_stride + u * L + col;
        std::memset(dst[u * m + r], 0, width);
      }
    // Leaves are taken kBatch at a time: the kernel streams them from memory together (several
    // streams keep more memory requests in flight than one). Groups are taken kWindow at a time,
    // batch by batch, so that the leaves read one after the other are neighbours in memory.
    std::vector<const uint8_t*> src;
    src.reserve(kBatch);
    std::vector<uint64_t> lanes(8 * kBatch);
    for (size_t s0 = 0; s0 < k && s0 * G + g0 < n; s0 += kBatch) {
      const size_t s_end = std::min(k, s0 + kBatch);
      // Row s of this window is one contiguous run of the data: leaves s * G + g0 .. + n_groups.
      auto row_range = [&](size_t s, size_t& a, size_t& b) {
        a = (s * G + g0) * L;
        b = std::min<size_t>(std::min<uint64_t>(s * G + g0 + n_groups, n) * L, len);
      };
      if (hook != nullptr && hook->populate && col == 0)
        for (size_t s = s0; s < s_end && s * G + g0 < n; ++s) {
          size_t a, b;
          row_range(s, a, b);
          cpu::populate_range(data + a, b - a);
        }
      for (size_t u = 0; u < n_groups; ++u) {
        const size_t g = g0 + u;
        if (s0 * G + g >= n) break;
        uint8_t* const* gdst = &dst[u * m];
        src.clear();
        size_t short_len = width;  // bytes of this tile present in the batch's last leaf
        const size_t s1 = std::min(k, s0 + kBatch);
        for (size_t s = s0; s < s1 && s * G + g < n; ++s) {
          const size_t off = (s * G + g) * L, leaf_len = std::min<size_t>(L, len - off);
          src.push_back(data + off + col);
          // Only the last leaf of the range is short, and it is the last of its group; bytes past
          // its end are zero padding and contribute nothing.
          if (leaf_len < col + width) short_len = leaf_len > col ? leaf_len - col : 0;
        }
        const int full = static_cast<int>(src.size()) - (short_len < width ? 1 : 0);
        const CoefTable* cf = &coef[s0 * m];
        size_t hashed = 0;  // leaves of this batch whose digests are done
        if (fused && full > 0) {
          for (int j = 0; j < full; ++j) {
            const xxh3::Acc init = xxh3::initial_acc();
            std::memcpy(&lanes[8 * static_cast<size_t>(j)], init.lane, sizeof init.lane);
          }
          kernels.mul_acc_hash(src.data(), full, width, gdst, code.m, cf, code.m, lanes.data(), secret);
          for (size_t j = 0; j < static_cast<size_t>(full); ++j)
            digests[(s0 + j) * G + g] = xxh3::finish64_long(&lanes[8 * j], L, secret);
          hashed = static_cast<size_t>(full);
        } else if (full > 0) {
          kernels.mul_acc(src.data(), full, width, gdst, code.m, cf);
        }
        if (short_len < width && short_len > 0)
          kernels.mul_acc(&src[static_cast<size_t>(full)], 1, short_len, gdst, code.m,
                          cf + static_cast<size_t>(full) * m);
        if (digests != nullptr) {
          // Hashed after the multiply, from cache.
          for (size_t j = hashed; j < src.size(); ++j) {
            const size_t off = ((s0 + j) * G + g) * L;
            digests[(s0 + j) * G + g] = cpu::hash64(data + off, std::min<size_t>(L, len - off), hash_loop);
          }
        }
        // The hook's work on these leaves, while they are in cache (a leaf of its own per call, so
        // that what it reads is what the kernel just read, however wide the window is).
        if (hook != nullptr && col + width == L)
          for (size_t j = 0; j < src.size(); ++j) {
            const size_t off = ((s0 + j) * G + g) * L;
            hook->fn(hook->ctx, off, std::min(off + L, len));
          }
      }
    }
    if (reports_windows) hook->window_done(hook->ctx, g0, n_groups, rows, row_stride);
  });
}

void xor_encode(const uint8_t* data, size_t len, size_t leaf_size, size_t groups, uint8_t* parity, int threads,
                const Kernels& kernels) {
  const size_t L = leaf_size, G = groups;
  const uint64_t n = n_leaves_of(len, L);
  if (n == 0 || G == 0) return;
  const size_t tile = std::min(L, kTileBytes), n_tiles = (L + tile - 1) / tile;
  const int n_threads = resolve_threads(threads, len, G * n_tiles);
  cpu::parallel_tasks(G * n_tiles, n_threads, [&](size_t task, int) {
    const size_t g = task / n_tiles, col = (task % n_tiles) * tile;
    const size_t width = std::min(tile, L - col);
    uint8_t* dst = parity + g * L + col;
    std::memset(dst, 0, width);
    for (uint64_t i = g; i < n; i += G) {
      const size_t off = i * L, leaf_len = std::min<size_t>(L, len - off);
      if (leaf_len > col) kernels.xor_acc(data + off + col, std::min(width, leaf_len - col), dst);
    }
  });
}

ReconstructPlan plan_reconstruct(size_t len, uint64_t size, const Code& code, const std::vector<uint64_t>& damaged,
                                 const std::vector<uint64_t>& damaged_parity) {
  check_code(code, size);
  const size_t L = code.leaf_size, G = code.groups;
  const uint64_t n = n_leaves_of(size, L);
  for (uint64_t i : damaged)
    if (i >= n)
      throw std::invalid_argument("damaged leaf " + std::to_string(i) + " is out of range: the file has " +
                                  std::to_string(n) + " leaves");
  const uint64_t n_parity = static_cast<uint64_t>(code.m) * G;
  for (uint64_t j : damaged_parity)
    if (j >= n_parity)
      throw std::invalid_argument("damaged parity leaf " + std::to_string(j) + " is out of range: there are " +
                                  std::to_string(n_parity) + " parity leaves");
  // Leaf i is wholly present iff min((i + 1) * L, size) <= len; with len < size the first leaf that is
  // not is leaf len / L, and every later one is missing too.
  const uint64_t first_missing = len >= size ? n : len / L;
  std::vector<uint64_t> erased(damaged.begin(), damaged.end());
  for (uint64_t i = first_missing; i < n; ++i) erased.push_back(i);
  std::sort(erased.begin(), erased.end(), [G](uint64_t a, uint64_t b) {
    return a % G != b % G ? a % G < b % G : a < b;
  });
  erased.erase(std::unique(erased.begin(), erased.end()), erased.end());
  std::vector<int> parity_lost(G, 0);
  {
    std::vector<uint64_t> dp(damaged_parity.begin(), damaged_parity.end());
    std::sort(dp.begin(), dp.end());
    dp.erase(std::unique(dp.begin(), dp.end()), dp.end());
    for (uint64_t j : dp) ++parity_lost[j % G];
  }
  ReconstructPlan plan;
  for (size_t a = 0; a < erased.size();) {
    const uint64_t g = erased[a] % G;
    size_t b = a;
    while (b < erased.size() && erased[b] % G == g) ++b;
    const bool ok = static_cast<int>(b - a) <= code.m - parity_lost[g];
    auto& into = ok ? plan.rebuilt : plan.lost;
    into.insert(into.end(), erased.begin() + static_cast<std::ptrdiff_t>(a), erased.begin() + static_cast<std::ptrdiff_t>(b));
    a = b;
  }
  std::sort(plan.rebuilt.begin(), plan.rebuilt.end());
  std::sort(plan.lost.begin(), plan.lost.end());
  return plan;
}

namespace {

// How one group is rebuilt: e output leaves, each a GF(2^8) combination of the sources.
struct GroupDecode {
  uint64_t group;
  std::vector<size_t> out_slot;          // e slots in the output buffer
  std::vector<const uint8_t*> src;       // surviving parity leaves, then surviving data leaves
  std::vector<size_t> src_len;           // bytes actually present (a short last leaf is zero-padded)
  std::vector<CoefTable> coef;           // src.size() x e, source-major
};

}  // namespace

void reconstruct(const uint8_t* data, size_t len, uint64_t size, const Code& code, const uint8_t* parity,
                 const std::vector<uint64_t>& damaged_parity, const ReconstructPlan& plan, uint8_t* out, int threads,
                 const Kernels& kernels) {
  check_code(code, size);
  if (plan.rebuilt.empty()) return;
  const size_t L = code.leaf_size, G = code.groups;
  const size_t k = static_cast<size_t>(code.k), m = static_cast<size_t>(code.m);
  const uint64_t n = n_leaves_of(size, L);
  const std::vector<uint8_t> c = cauchy_matrix(code.k, code.m);
  std::vector<uint8_t> parity_ok(m * G, 1);
  for (uint64_t j : damaged_parity) parity_ok[j] = 0;

  // Group the rebuilt leaves; every other leaf of such a group survives (it is in data[0, len)),
  // because plan_reconstruct erased all damaged and missing leaves of a group together.
  std::vector<size_t> order(plan.rebuilt.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const uint64_t x = plan.rebuilt[a], y = plan.rebuilt[b];
    return x % G != y % G ? x % G < y % G : x < y;
  });
  std::vector<GroupDecode> groups;
  for (size_t a = 0; a < order.size();) {
    const uint64_t g = plan.rebuilt[order[a]] % G;
    GroupDecode d;
    d.group = g;
    std::vector<size_t> erased_pos;  // positions s in the group
    size_t b = a;
    for (; b < order.size() && plan.rebuilt[order[b]] % G == g; ++b) {
      d.out_slot.push_back(order[b]);
      erased_pos.push_back(static_cast<size_t>(plan.rebuilt[order[b]] / G));
    }
    a = b;
    const size_t e = erased_pos.size();
    std::vector<size_t> rows;  // the first e surviving parity rows
    for (size_t r = 0; r < m && rows.size() < e; ++r)
      if (parity_ok[r * G + g]) rows.push_back(r);
    if (rows.size() < e) throw std::logic_error("reconstruct: plan does not match the damaged parity leaves");
    // A = C[rows][erased_pos] is a square submatrix of a Cauchy matrix, hence invertible.
    std::vector<uint8_t> ainv(e * e);
    for (size_t q = 0; q < e; ++q)
      for (size_t p = 0; p < e; ++p) ainv[q * e + p] = c[rows[q] * k + erased_pos[p]];
    if (!invert(ainv, static_cast<int>(e))) throw std::logic_error("reconstruct: singular Cauchy submatrix");
    // D_E = Ainv * P_rows + Ainv * C[rows][s] * D_s summed over the surviving positions s.
    for (size_t q = 0; q < e; ++q) {
      d.src.push_back(parity + (rows[q] * G + g) * L);
      d.src_len.push_back(L);
      for (size_t p = 0; p < e; ++p) d.coef.push_back(make_coef_table(ainv[p * e + q]));
    }
    for (size_t s = 0; s < k; ++s) {
      const uint64_t i = s * G + g;
      if (i >= n) break;  // virtual zero leaves contribute nothing
      if (std::find(erased_pos.begin(), erased_pos.end(), s) != erased_pos.end()) continue;
      const size_t off = i * L, leaf_len = std::min<uint64_t>(L, size - off);
      if (off + leaf_len > len) throw std::logic_error("reconstruct: a surviving leaf is outside the buffer");
      d.src.push_back(data + off);
      d.src_len.push_back(leaf_len);
      for (size_t p = 0; p < e; ++p) {
        uint8_t v = 0;
        for (size_t q = 0; q < e; ++q) v ^= mul(ainv[p * e + q], c[rows[q] * k + s]);
        d.coef.push_back(make_coef_table(v));
      }
    }
    groups.push_back(std::move(d));
  }

  const size_t tile = std::min(L, kTileBytes), n_tiles = (L + tile - 1) / tile;
  const size_t work = groups.size() * k * L;
  const int n_threads = resolve_threads(threads, work, groups.size() * n_tiles);
  cpu::parallel_tasks(groups.size() * n_tiles, n_threads, [&](size_t task, int) {
    const GroupDecode& d = groups[task / n_tiles];
    const size_t col = (task % n_tiles) * tile, width = std::min(tile, L - col);
    const size_t e = d.out_slot.size();
    std::vector<uint8_t*> dst(e);
    for (size_t p = 0; p < e; ++p) {
      dst[p] = out + d.out_slot[p] * L + col;
      std::memset(dst[p], 0, width);
    }
    // Runs of sources that cover the whole tile go through the kernel together.
    for (size_t q = 0; q < d.src.size();) {
      if (d.src_len[q] >= col + width) {
        size_t run = 0;
        while (q + run < d.src.size() && run < kBatch && d.src_len[q + run] >= col + width) ++run;
        std::vector<const uint8_t*> src(run);
        for (size_t j = 0; j < run; ++j) src[j] = d.src[q + j] + col;
        kernels.mul_acc(src.data(), static_cast<int>(run), width, dst.data(), static_cast<int>(e), &d.coef[q * e]);
        q += run;
      } else {
        if (d.src_len[q] > col) {
          const uint8_t* src = d.src[q] + col;
          kernels.mul_acc(&src, 1, d.src_len[q] - col, dst.data(), static_cast<int>(e), &d.coef[q * e]);
        }
        ++q;
      }
    }
  });
}

}  // namespace fastckpt::gf
