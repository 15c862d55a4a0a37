// Sums of squares across consecutive checkpoints (see sumsq.hpp for the normative reduction order).
//
// Work is walked block by block, all checkpoints at once: block b of buffer j is converted to
// doubles once and compared with block b of buffer j-1 while both are in cache, so each byte is
// read from memory once however many pairs it belongs to. Tasks of kSumsqTaskBlocks blocks go to
// workers through a shared counter; each task writes its own totals, which the caller adds in task
// order, so the result is independent of the thread count.
#include "sumsq.hpp"
#include "workers.hpp"

// The reduction order is normative, so a fused multiply-add (which rounds x*x + acc once instead
// of twice) must never be used: this file is compiled with the baseline x86-64 flags, which have no
// FMA instructions. Do not rename it with an ISA suffix (those add -mfma).

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace fastckpt::cpu {
namespace {

enum Code : int {
  kF32,
  kF64,
  kF16,
  kBF16,
  kF8E4M3FN,
  kF8E5M2,
  kF8E4M3FNUZ,
  kF8E5M2FNUZ,
  kI8,
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
};

const std::vector<SumsqDType> kTable = {
    {"float32", kF32, 4},         {"float64", kF64, 8},        {"float16", kF16, 2},
    {"bfloat16", kBF16, 2},       {"float8_e4m3fn", kF8E4M3FN, 1}, {"float8_e5m2", kF8E5M2, 1},
    {"float8_e4m3fnuz", kF8E4M3FNUZ, 1}, {"float8_e5m2fnuz", kF8E5M2FNUZ, 1},
    {"int8", kI8, 1},             {"uint8", kU8, 1},           {"bool", kU8, 1},
    {"int16", kI16, 2},           {"uint16", kU16, 2},         {"int32", kI32, 4},
    {"uint32", kU32, 4},          {"int64", kI64, 8},          {"uint64", kU64, 8},
    {"complex32", kF16, 2},       {"complex64", kF32, 4},      {"complex128", kF64, 8},
};

constexpr size_t kLanes = 16;
constexpr size_t kMinBytesForThreads = size_t{8} << 20;

// Float8 decoding, the same definition as fastckpt._change._decode_float8.
double decode_f8(unsigned code, int exp_bits, int man_bits, bool fn, bool fnuz) {
  const int bias = (1 << (exp_bits - 1)) - 1 + (fnuz ? 1 : 0);
  const double sign = (code & 0x80) ? -1.0 : 1.0;
  const int e = static_cast<int>((code >> man_bits) & ((1u << exp_bits) - 1));
  const int m = static_cast<int>(code & ((1u << man_bits) - 1));
  const int e_max = (1 << exp_bits) - 1;
  const int m_max = (1 << man_bits) - 1;
  if (fnuz && code == 0x80) return std::nan("");
  if (!fnuz) {
    if (fn && e == e_max && m == m_max) return std::nan("");
    if (!fn && e == e_max) return m ? std::nan("") : sign * HUGE_VAL;
  }
  if (e == 0) return sign * m * std::ldexp(1.0, 1 - bias - man_bits);
  return sign * (1.0 + static_cast<double>(m) / (1 << man_bits)) * std::ldexp(1.0, e - bias);
}

struct F8Tables {
  std::array<double, 256> e4m3fn, e5m2, e4m3fnuz, e5m2fnuz;
  F8Tables() {
    for (unsigned c = 0; c < 256; ++c) {
      e4m3fn[c] = decode_f8(c, 4, 3, true, false);
      e5m2[c] = decode_f8(c, 5, 2, false, false);
      e4m3fnuz[c] = decode_f8(c, 4, 3, true, true);
      e5m2fnuz[c] = decode_f8(c, 5, 2, false, true);
    }
  }
};

const F8Tables& f8_tables() {
  static const F8Tables t;
  return t;
}

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half -> float, exact: the half's exponent and mantissa moved into float position and
// rescaled by 2^112 (this also normalises subnormals); infinities and NaNs keep their payload.
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  float mag;
  if (em >= 0x7c00u) {
    mag = bits_to_float((em << 13) | 0x7f800000u);
  } else {
    mag = bits_to_float(em << 13) * 5.192296858534828e33f;  // 2^112
  }
  uint32_t u;
  std::memcpy(&u, &mag, 4);
  return bits_to_float(u | sign);
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool is_single(int code) {
  return code == kF32 || code == kF16 || code == kBF16 || code == kF8E4M3FN || code == kF8E5M2 ||
         code == kF8E4M3FNUZ || code == kF8E5M2FNUZ;
}

const double* f8_table(int code) {
  const F8Tables& t = f8_tables();
  return code == kF8E4M3FN     ? t.e4m3fn.data()
         : code == kF8E5M2     ? t.e5m2.data()
         : code == kF8E4M3FNUZ ? t.e4m3fnuz.data()
                               : t.e5m2fnuz.data();
}

// Converts n elements at p to floats (single-precision family: every value is exact in float).
void to_float(const uint8_t* p, size_t n, int code, float* out) {
  switch (code) {
    case kF32:
      std::memcpy(out, p, n * 4);
      return;
    case kF16:
      for (size_t i = 0; i < n; ++i) out[i] = half_to_float(load<uint16_t>(p + 2 * i));
      return;
    case kBF16:
      for (size_t i = 0; i < n; ++i) out[i] = bits_to_float(static_cast<uint32_t>(load<uint16_t>(p + 2 * i)) << 16);
      return;
    default: {
      const double* table = f8_table(code);
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(table[p[i]]);
      return;
    }
  }
}

// Converts n elements at p to doubles (any dtype).
void to_double(const uint8_t* p, size_t n, int code, double* out) {
  switch (code) {
    case kF32:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<float>(p + 4 * i));
      return;
    case kF64:
      std::memcpy(out, p, n * 8);
      return;
    case kF16:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(half_to_float(load<uint16_t>(p + 2 * i)));
      return;
    case kBF16:
      for (size_t i = 0; i < n; ++i)
        out[i] = static_cast<double>(bits_to_float(static_cast<uint32_t>(load<uint16_t>(p + 2 * i)) << 16));
      return;
    case kF8E4M3FN:
    case kF8E5M2:
    case kF8E4M3FNUZ:
    case kF8E5M2FNUZ: {
      const double* table = f8_table(code);
      for (size_t i = 0; i < n; ++i) out[i] = table[p[i]];
      return;
    }
    case kI8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(static_cast<int8_t>(p[i]));
      return;
    case kU8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(p[i]);
      return;
    case kI16:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<int16_t>(p + 2 * i));
      return;
    case kU16:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<uint16_t>(p + 2 * i));
      return;
    case kI32:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<int32_t>(p + 4 * i));
      return;
    case kU32:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<uint32_t>(p + 4 * i));
      return;
    case kI64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<int64_t>(p + 8 * i));
      return;
    case kU64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(load<uint64_t>(p + 8 * i));
      return;
    default:
      throw std::invalid_argument("sumsq: unknown dtype code");
  }
}

template <typename T>
double fold_lanes(const T* l) {
  double v[kLanes];
  for (size_t i = 0; i < kLanes; ++i) v[i] = static_cast<double>(l[i]);
  return (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) +
         (((v[8] + v[9]) + (v[10] + v[11])) + ((v[12] + v[13]) + (v[14] + v[15])));
}

// 16 lanes of T held as vectors of 16 bytes (GCC/clang vector extensions, baseline SSE2): vector q
// holds lanes 4q.. (float) or 2q.. (double), so loading 16 consecutive elements as the vectors in
// order puts element i in lane i % 16 as the reduction order requires.
template <typename T>
struct Lanes {
  typedef T vec __attribute__((vector_size(16)));
  static constexpr size_t kPer = 16 / sizeof(T);
  static constexpr size_t kVecs = kLanes / kPer;

  static vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }

  // sum of x*x over n elements.
  static double squares(const T* x, size_t n) {
    vec acc[kVecs] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (size_t q = 0; q < kVecs; ++q) {
        const vec v = load(x + i + q * kPer);
        acc[q] += v * v;
      }
    }
    T l[kLanes];
    std::memcpy(l, acc, sizeof(l));
    for (size_t j = 0; i < n; ++i, ++j) l[j] += x[i] * x[i];
    return fold_lanes(l);
  }

  // sum of (x - y)*(x - y) over n elements.
  static double diffs(const T* x, const T* y, size_t n) {
    vec acc[kVecs] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (size_t q = 0; q < kVecs; ++q) {
        const vec t = load(x + i + q * kPer) - load(y + i + q * kPer);
        acc[q] += t * t;
      }
    }
    T l[kLanes];
    std::memcpy(l, acc, sizeof(l));
    for (size_t j = 0; i < n; ++i, ++j) {
      const T t = x[i] - y[i];
      l[j] += t * t;
    }
    return fold_lanes(l);
  }
};

template <typename T>
void block_sums(const T* x, const T* y, size_t n, double* sq_out, double* diff_out) {
  *sq_out = Lanes<T>::squares(x, n);
  if (y != nullptr) *diff_out = Lanes<T>::diffs(x, y, n);
}

// Scratch for one block of one buffer.
struct BlockData {
  std::vector<float> f;
  std::vector<double> d;
  const uint8_t* src = nullptr;  // the raw bytes, for a recomputation in double
  BlockData() : f(kSumsqBlock), d(kSumsqBlock) {}
};

// Sums for block `cur` (and its difference with `prev`, when given) into s / dd.
void sums_for(BlockData& cur, BlockData* prev, size_t m, int code, double* s, double* dd) {
  if (!is_single(code)) {
    block_sums(cur.d.data(), prev ? prev->d.data() : nullptr, m, s, dd);
    return;
  }
  block_sums(cur.f.data(), prev ? prev->f.data() : nullptr, m, s, dd);
  const bool redo_sq = std::isinf(*s);
  const bool redo_diff = prev != nullptr && std::isinf(*dd);
  if (!redo_sq && !redo_diff) return;
  // float32 squares overflow above ~1.8e19: this block is recomputed in double.
  std::vector<double> x(m), y(prev ? m : 0);
  to_double(cur.src, m, code, x.data());
  if (prev) to_double(prev->src, m, code, y.data());
  double s2 = 0.0, d2 = 0.0;
  block_sums(x.data(), prev ? y.data() : nullptr, m, &s2, &d2);
  if (redo_sq) *s = s2;
  if (redo_diff) *dd = d2;
}

}  // namespace

const std::vector<SumsqDType>& sumsq_dtypes() { return kTable; }

const SumsqDType& sumsq_dtype(const std::string& name) {
  for (const auto& d : kTable)
    if (name == d.name) return d;
  std::string known;
  for (const auto& d : kTable) known += (known.empty() ? "" : ", ") + std::string(d.name);
  throw std::invalid_argument("no relative change for dtype '" + name + "'; supported: " + known);
}

void sumsq_sequence(const uint8_t* const* bufs, size_t k, size_t nbytes, const SumsqDType& dtype, double* sq,
                    double* sq_diff, int threads) {
  if (k == 0) return;
  if (bufs[0] == nullptr) throw std::invalid_argument("sumsq: the first buffer must be given");
  if (nbytes % dtype.size != 0)
    throw std::invalid_argument("byte length " + std::to_string(nbytes) + " is not a multiple of the " +
                                std::to_string(dtype.size) + "-byte element size of " + dtype.name);
  const size_t n = nbytes / dtype.size;
  const size_t n_blocks = (n + kSumsqBlock - 1) / kSumsqBlock;
  const size_t n_tasks = (n_blocks + kSumsqTaskBlocks - 1) / kSumsqTaskBlocks;
  // Per task: k totals of squares, then k-1 totals of squared differences.
  const size_t stride = 2 * k - 1;
  std::vector<double> task_totals(n_tasks * stride, 0.0);
  std::atomic<size_t> next{0};
  const bool single = is_single(dtype.code);
  auto worker = [&]() {
    BlockData cur, prev;
    for (;;) {
      const size_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= n_tasks) return;
      double* tot = task_totals.data() + task * stride;
      const size_t b_end = std::min(n_blocks, (task + 1) * kSumsqTaskBlocks);
      for (size_t b = task * kSumsqTaskBlocks; b < b_end; ++b) {
        const size_t e0 = b * kSumsqBlock;
        const size_t m = std::min(kSumsqBlock, n - e0);
        double last_sq = 0.0;
        bool have_prev = false;
        for (size_t j = 0; j < k; ++j) {
          if (bufs[j] == nullptr) {
            // Identical to buffer j-1: the same squares and a difference of exactly +0.0.
            tot[j] += last_sq;
            tot[k + j - 1] += 0.0;
            continue;
          }
          cur.src = bufs[j] + e0 * dtype.size;
          if (single) {
            to_float(cur.src, m, dtype.code, cur.f.data());
          } else {
            to_double(cur.src, m, dtype.code, cur.d.data());
          }
          double s = 0.0, d = 0.0;
          sums_for(cur, have_prev ? &prev : nullptr, m, dtype.code, &s, &d);
          tot[j] += s;
          if (j) tot[k + j - 1] += d;
          last_sq = s;
          std::swap(cur, prev);
          have_prev = true;
        }
      }
    }
  };
  int n_threads = 1;
  if (nbytes * k >= kMinBytesForThreads) {
    n_threads = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
    n_threads = static_cast<int>(std::min<size_t>(std::max(1, n_threads), n_tasks));
  }
  run_workers(n_threads, [&](int) { worker(); });
  for (size_t j = 0; j < stride; ++j) {
    double total = 0.0;
    for (size_t t = 0; t < n_tasks; ++t) total += task_totals[t * stride + j];
    if (j < k) {
      sq[j] = total;
    } else {
      sq_diff[j - k] = total;
    }
  }
}

}  // namespace fastckpt::cpu
