// Sum of squares of finite float elements (see sum_squares.hpp). Branch-free loops over 8
// independent float64 accumulators, so that the compiler vectorizes them at the baseline ISA;
// values are decoded exactly with the diff kernel's definitions (common/diff_math.hpp).
#include "sum_squares.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../common/diff_math.hpp"

namespace fastckpt::cpu {

// sum_squares_avx2.cpp (compiled with -mavx2 -mfma; called only when the CPU has both).
double sum_squares_f32_avx2(const uint8_t* p, size_t n, uint64_t* non_finite);
double sum_squares_bf16_avx2(const uint8_t* p, size_t n, uint64_t* non_finite);

namespace {

using diff::Kind;

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

template <double (*Avx2)(const uint8_t*, size_t, uint64_t*), Kind K, uint32_t Size>
SumSquares run_dispatch(const uint8_t* p, size_t n);

constexpr size_t kMinBytesForThreads = size_t{8} << 20;
constexpr int kAcc = 8;

template <uint32_t Size>
struct Bits;
template <>
struct Bits<1> {
  using T = uint8_t;
};
template <>
struct Bits<2> {
  using T = uint16_t;
};
template <>
struct Bits<4> {
  using T = uint32_t;
};
template <>
struct Bits<8> {
  using T = uint64_t;
};

template <Kind K, uint32_t Size>
SumSquares run(const uint8_t* p, size_t n) {
  using U = typename Bits<Size>::T;
  double acc[kAcc] = {};
  uint64_t bad[kAcc] = {};
  size_t i = 0;
  for (; i + kAcc <= n; i += kAcc) {
    for (int j = 0; j < kAcc; ++j) {
      U u;
      std::memcpy(&u, p + (i + j) * Size, Size);
      const bool finite = diff::classify<K>(u) == diff::kFinite;
      const double x = finite ? diff::decode<K>(u) : 0.0;
      acc[j] += x * x;
      bad[j] += !finite;
    }
  }
  for (; i < n; ++i) {
    U u;
    std::memcpy(&u, p + i * Size, Size);
    const bool finite = diff::classify<K>(u) == diff::kFinite;
    const double x = finite ? diff::decode<K>(u) : 0.0;
    acc[0] += x * x;
    bad[0] += !finite;
  }
  SumSquares r{0.0, 0};
  for (int j = 0; j < kAcc; ++j) {
    r.sum_sq += acc[j];
    r.non_finite += bad[j];
  }
  return r;
}

template <double (*Avx2)(const uint8_t*, size_t, uint64_t*), Kind K, uint32_t Size>
SumSquares run_dispatch(const uint8_t* p, size_t n) {
  if (!have_avx2()) return run<K, Size>(p, n);
  uint64_t bad = 0;
  const double s = Avx2(p, n, &bad);
  return SumSquares{s, bad};
}

using Fn = SumSquares (*)(const uint8_t*, size_t);

struct Entry {
  const char* name;
  Fn fn;
  uint32_t size;
};

const Entry kEntries[] = {
    {"float64", run<Kind::kF64, 8>, 8},
    {"float32", run_dispatch<sum_squares_f32_avx2, Kind::kF32, 4>, 4},
    {"float16", run<Kind::kF16, 2>, 2},
    {"bfloat16", run_dispatch<sum_squares_bf16_avx2, Kind::kBF16, 2>, 2},
    {"float8_e4m3fn", run<Kind::kF8E4M3FN, 1>, 1}, {"float8_e5m2", run<Kind::kF8E5M2, 1>, 1},
};

const Entry* find(const std::string& dtype) {
  for (const Entry& e : kEntries)
    if (dtype == e.name) return &e;
  return nullptr;
}

}  // namespace

uint32_t sum_squares_itemsize(const std::string& dtype) {
  const Entry* e = find(dtype);
  return e ? e->size : 0;
}

SumSquares sum_squares(const uint8_t* data, size_t nbytes, const std::string& dtype, int threads) {
  const Entry* e = find(dtype);
  if (e == nullptr) {
    throw std::invalid_argument("sum_squares: unsupported dtype " + dtype +
                                " (float64, float32, float16, bfloat16, float8_e4m3fn, float8_e5m2)");
  }
  if (nbytes % e->size != 0) {
    throw std::invalid_argument("sum_squares: byte length " + std::to_string(nbytes) +
                                " is not a multiple of the element size of " + dtype);
  }
  const size_t n = nbytes / e->size;
  int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (nbytes < kMinBytesForThreads) t = 1;
  if (t == 1) return e->fn(data, n);
  const size_t per = (n + static_cast<size_t>(t) - 1) / static_cast<size_t>(t);
  std::vector<SumSquares> parts(static_cast<size_t>(t), SumSquares{0.0, 0});
  std::vector<std::thread> workers;
  for (int w = 1; w < t; ++w) {
    const size_t lo = std::min(n, per * static_cast<size_t>(w)), hi = std::min(n, lo + per);
    workers.emplace_back([&parts, e, data, lo, hi, w] { parts[w] = e->fn(data + lo * e->size, hi - lo); });
  }
  parts[0] = e->fn(data, std::min(n, per));
  for (auto& th : workers) th.join();
  SumSquares r{0.0, 0};
  for (const auto& s : parts) {
    r.sum_sq += s.sum_sq;
    r.non_finite += s.non_finite;
  }
  return r;
}

}  // namespace fastckpt::cpu
