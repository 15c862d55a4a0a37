// Portable CRC-32 (slicing-by-8), GF(2) combine, dispatch and the threaded range driver.
//
// Slicing-by-8 processes 8 bytes per step with eight 256-entry tables: T[0] is the classic byte
// table and T[k][b] is the register after feeding byte b followed by k zero bytes. It runs at about
// 1 byte/cycle-ish and is the fallback for CPUs without PCLMULQDQ and for short tails.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <stdexcept>
#include <thread>

#include "crc32.hpp"
#include "workers.hpp"

namespace fastckpt::cpu {
namespace {

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t r = b;
    for (int i = 0; i < 8; ++i) r = (r >> 1) ^ ((r & 1u) ? kCrc32Poly : 0u);
    t[0][b] = r;
  }
  for (size_t k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  return t;
}

constexpr Tables kTables = make_tables();

uint32_t load_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// Product of two polynomials mod P in the reflected representation (bit 31 is x^0).
uint32_t mulmod(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b >> 1) ^ ((b & 1u) ? kCrc32Poly : 0u);  // b *= x
  }
  return product;
}

// kPow2[k] = x^(2^k) mod P; x^1 is bit 30 in the reflected representation.
std::array<uint32_t, 64> make_pow2() {
  std::array<uint32_t, 64> p{};
  p[0] = 1u << 30;
  for (size_t k = 1; k < 64; ++k) p[k] = mulmod(p[k - 1], p[k - 1]);
  return p;
}

// x^(8n) mod P: appending n zero bytes multiplies the (raw) register by this.
uint32_t x8n(uint64_t n) {
  static const std::array<uint32_t, 64> pow2 = make_pow2();
  uint32_t r = 1u << 31;  // x^0
  for (size_t k = 3; n != 0 && k < 64; ++k, n >>= 1)
    if (n & 1u) r = mulmod(r, pow2[k]);
  return r;
}

bool cpu_supports_pclmul() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#else
  return false;
#endif
}

bool cpu_supports_vpclmul() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // __builtin_cpu_supports consults XCR0, so ZMM state must be enabled by the OS too.
  return __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && cpu_supports_pclmul();
#else
  return false;
#endif
}

struct Entry {
  const char* name;
  Crc32Fn fn;
  bool usable;
};

const std::vector<Entry>& table() {
  static const std::vector<Entry> t = {
      {"slice8", crc32_slice8, true},
      {"pclmul", crc32_pclmul, cpu_supports_pclmul()},
      {"vpclmul", crc32_vpclmul, cpu_supports_vpclmul()},
  };
  return t;
}

// Pieces of a large range hashed by one worker; big enough that combine costs are noise, small
// enough to balance two slow vCPUs.
constexpr uint64_t kPieceBytes = uint64_t{4} << 20;
constexpr uint64_t kMinBytesForThreads = uint64_t{8} << 20;

// Maps a piece of a file mapping with one system call instead of a page fault per few pages: on
// the VMs we measured, demand faults cost more than the CRC itself. Harmless on memory that is
// already mapped (it only walks the page tables) or not file-backed; errors (old kernels without
// MADV_POPULATE_READ, special mappings) just leave the faults to happen as usual.
void populate(const uint8_t* p, uint64_t n) {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;
#endif
  if (n < (uint64_t{1} << 20)) return;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + n;
  ::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_READ);
}

}  // namespace

uint32_t crc32_raw_table(uint32_t reg, const uint8_t* in, size_t len) {
  while (len >= 8) {
    const uint32_t lo = load_le32(in) ^ reg;
    const uint32_t hi = load_le32(in + 4);
    reg = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
          kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
          kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
    in += 8;
    len -= 8;
  }
  while (len--) reg = (reg >> 8) ^ kTables[0][(reg ^ *in++) & 0xFF];
  return reg;
}

uint32_t crc32_slice8(uint32_t crc, const uint8_t* in, size_t len) {
  return ~crc32_raw_table(~crc, in, len);
}

uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  // The finalized CRC is linear up to the constant from the inversions, which cancels in this form.
  return mulmod(x8n(len_b), crc_a) ^ crc_b;
}

std::vector<std::string> crc32_isas() {
  std::vector<std::string> names;
  for (const auto& e : table())
    if (e.usable) names.emplace_back(e.name);
  return names;
}

const std::string& crc32_default_isa() {
  static const std::string best = crc32_isas().back();
  return best;
}

Crc32Fn crc32_for(const std::string& isa) {
  const std::string& want = isa.empty() ? crc32_default_isa() : isa;
  for (const auto& e : table()) {
    if (want == e.name) {
      if (!e.usable)
        throw std::invalid_argument("CRC-32 implementation '" + want + "' is compiled in but this CPU cannot run it");
      return e.fn;
    }
  }
  std::string known;
  for (const auto& name : crc32_isas()) known += (known.empty() ? "" : ", ") + name;
  throw std::invalid_argument("unknown CRC-32 implementation '" + want + "'; this build can use: " + known);
}

void crc32_ranges(const uint8_t* base, const uint64_t* offsets, const uint64_t* lengths, const uint32_t* init,
                  size_t count, uint32_t* out, int threads, Crc32Fn fn) {
  // Flatten every range into pieces of at most kPieceBytes so one huge record and many small ones
  // both spread over all workers.
  struct Piece {
    size_t range;
    uint64_t offset, length;
    uint32_t crc;
  };
  std::vector<Piece> pieces;
  uint64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    total += lengths[i];
    uint64_t off = offsets[i], left = lengths[i];
    do {
      const uint64_t n = std::min(left, kPieceBytes);
      pieces.push_back({i, off, n, 0});
      off += n;
      left -= n;
    } while (left != 0);
  }
  int n_threads = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  n_threads = std::max(1, n_threads);
  if (total < kMinBytesForThreads) n_threads = 1;
  n_threads = static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(n_threads), pieces.size())));

  parallel_tasks(pieces.size(), n_threads, [&](size_t k, int) {
    Piece& p = pieces[k];
    populate(base + p.offset, p.length);
    p.crc = fn(0, base + p.offset, static_cast<size_t>(p.length));
  });

  for (size_t i = 0; i < count; ++i) out[i] = init ? init[i] : 0u;
  for (const Piece& p : pieces) out[p.range] = crc32_combine(out[p.range], p.crc, p.length);
}

}  // namespace fastckpt::cpu
