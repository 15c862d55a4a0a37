// The fused protect pass (parity_scan.hpp). Work is cut into contiguous byte ranges of the file; for
// each range, while it is in cache, the range's extra work is done: the leaf digests of every span
// leaf that *starts* in the range (hashed whole, so one that straddles the range's end reads a little
// past it) and the CRC-32 of every piece of a CRC span inside the range (pieces are joined with
// crc32_combine at the end). With parity the ranges are the rows of gf::encode's windows (RangeHook);
// without, they are fixed chunks whose file leaves are hashed first.
#include "parity_scan.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace fastckpt::parity {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;           // the unit of the pass without parity
constexpr size_t kMinBytesForThreads = size_t{8} << 20;  // below this one thread is faster

uint64_t leaves_of(uint64_t nbytes, size_t leaf_size) { return (nbytes + leaf_size - 1) / leaf_size; }

// Spans sorted by offset with the running maximum of their ends, so that the spans overlapping a
// range are found by one binary search even when spans overlap (aliased tensor storages).
struct SpanIndex {
  std::vector<Span> spans;
  std::vector<size_t> order;         // span indices by offset
  std::vector<uint64_t> max_end;     // max over order[0..i] of the span end
  std::vector<uint64_t> first_leaf;  // per span (in the caller's order), for leaf outputs

  SpanIndex(const std::vector<Span>& s, size_t leaf_size) : spans(s), order(s.size()), first_leaf(s.size()) {
    uint64_t acc = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      first_leaf[i] = acc;
      acc += leaves_of(s[i].nbytes, leaf_size);
      order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s[a].offset < s[b].offset; });
    max_end.resize(order.size());
    uint64_t m = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      m = std::max(m, s[order[i]].offset + s[order[i]].nbytes);
      max_end[i] = m;
    }
  }

  // Calls f(span index) for every non-empty span that overlaps [a, b).
  template <class F>
  void overlapping(uint64_t a, uint64_t b, const F& f) const {
    size_t i = static_cast<size_t>(std::upper_bound(max_end.begin(), max_end.end(), a) - max_end.begin());
    for (; i < order.size(); ++i) {
      const Span& sp = spans[order[i]];
      if (sp.offset >= b) break;
      if (sp.nbytes != 0 && sp.offset + sp.nbytes > a) f(order[i]);
    }
  }
};

struct CrcPiece {
  size_t span;
  uint64_t offset;
  uint64_t length;
  uint32_t crc;
};

struct Context {
  const uint8_t* data;
  const ScanJob* job;
  SpanIndex leaf_index;
  SpanIndex crc_index;
  std::mutex mu;
  std::vector<CrcPiece> pieces;

  Context(const uint8_t* d, const ScanJob& j)
      : data(d), job(&j), leaf_index(j.leaf_spans, j.leaf_size), crc_index(j.crc_spans, j.leaf_size) {}

  void range(uint64_t a, uint64_t b) {
    const size_t L = job->leaf_size;
    leaf_index.overlapping(a, b, [&](size_t t) {
      const Span& sp = leaf_index.spans[t];
      const uint64_t n = leaves_of(sp.nbytes, L);
      // Leaves j with a <= offset + j * L < b.
      const uint64_t j0 = sp.offset >= a ? 0 : (a - sp.offset + L - 1) / L;
      const uint64_t j1 = std::min<uint64_t>(n, (b - sp.offset + L - 1) / L);
      for (uint64_t j = j0; j < j1; ++j) {
        const uint64_t off = sp.offset + j * L;
        const size_t len = static_cast<size_t>(std::min<uint64_t>(L, sp.offset + sp.nbytes - off));
        job->span_leaves[leaf_index.first_leaf[t] + j] = cpu::hash64(data + off, len, job->hash_loop);
      }
    });
    std::vector<CrcPiece> local;
    crc_index.overlapping(a, b, [&](size_t c) {
      const Span& sp = crc_index.spans[c];
      const uint64_t lo = std::max(a, sp.offset), hi = std::min(b, sp.offset + sp.nbytes);
      local.push_back({c, lo, hi - lo, job->crc(0, data + lo, static_cast<size_t>(hi - lo))});
    });
    if (!local.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      pieces.insert(pieces.end(), local.begin(), local.end());
    }
  }

  // Parity streaming (ScanJob::out_fd).
  std::atomic<size_t> groups_written{0};
  std::atomic<int> write_error{0};

  void write_out(const uint8_t* p, size_t n, uint64_t at) {
    while (n > 0) {
      const ssize_t w = ::pwrite(job->out_fd, p, n, static_cast<off_t>(at));
      if (w < 0) {
        if (errno == EINTR) continue;
        int expected = 0;
        write_error.compare_exchange_strong(expected, errno);
        return;
      }
      p += w;
      n -= static_cast<size_t>(w);
      at += static_cast<uint64_t>(w);
    }
  }

  void window_done(size_t g0, size_t n_groups) {
    if (write_error.load(std::memory_order_relaxed) != 0) return;
    const gf::Code& code = *job->code;
    const size_t L = job->leaf_size, G = code.groups;
    for (int r = 0; r < code.m; ++r) {
      const uint64_t first = (static_cast<uint64_t>(r) * G + g0) * L;
      write_out(job->parity + first, n_groups * L, job->out_offset + first);
#ifdef SYNC_FILE_RANGE_WRITE
      // Start write-back now (asynchronously), while the pass goes on.
      ::sync_file_range(job->out_fd, static_cast<off_t>(job->out_offset + first), static_cast<off_t>(n_groups * L),
                        SYNC_FILE_RANGE_WRITE);
#endif
    }
    groups_written.fetch_add(n_groups, std::memory_order_relaxed);
  }

  void finish_parity() {
    if (job->out_fd < 0 || job->code == nullptr) return;
    const size_t G = job->code->groups;
    if (groups_written.load() != G && write_error.load() == 0)  // the encode did not report windows
      write_out(job->parity, static_cast<size_t>(job->code->m) * G * job->leaf_size, job->out_offset);
    if (const int err = write_error.load(); err != 0)
      throw std::system_error(err, std::generic_category(), "writing parity to the sidecar");
  }

  void finish_crcs() {
    std::sort(pieces.begin(), pieces.end(), [](const CrcPiece& x, const CrcPiece& y) {
      return x.span != y.span ? x.span < y.span : x.offset < y.offset;
    });
    for (size_t i = 0; i < job->crc_spans.size(); ++i) job->crcs[i] = 0;  // empty spans
    std::vector<uint64_t> covered(job->crc_spans.size(), 0);
    for (const CrcPiece& p : pieces) {
      if (p.offset != job->crc_spans[p.span].offset + covered[p.span])
        throw std::logic_error("parity scan: CRC pieces do not tile their span");
      job->crcs[p.span] = cpu::crc32_combine(job->crcs[p.span], p.crc, p.length);
      covered[p.span] += p.length;
    }
    for (size_t i = 0; i < covered.size(); ++i)
      if (covered[i] != job->crc_spans[i].nbytes) throw std::logic_error("parity scan: a CRC span was not covered");
  }
};

void hook_fn(void* ctx, size_t a, size_t b) { static_cast<Context*>(ctx)->range(a, b); }
void window_fn(void* ctx, size_t g0, size_t n) { static_cast<Context*>(ctx)->window_done(g0, n); }

int resolve_threads(int requested, size_t len, size_t n_tasks) {
  if (len < kMinBytesForThreads || n_tasks < 2) return 1;
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  return static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, n)), n_tasks));
}

void check_spans(const std::vector<Span>& spans, size_t len, const char* what) {
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    if (s.offset > len || s.nbytes > len - s.offset)
      throw std::invalid_argument(std::string(what) + " " + std::to_string(i) + " (offset " + std::to_string(s.offset) +
                                  ", " + std::to_string(s.nbytes) + " bytes) does not lie inside the " +
                                  std::to_string(len) + "-byte data");
  }
}

}  // namespace

uint64_t total_span_leaves(const std::vector<Span>& spans, size_t leaf_size) {
  uint64_t n = 0;
  for (const Span& s : spans) n += leaves_of(s.nbytes, leaf_size);
  return n;
}

void scan(const uint8_t* data, size_t len, const ScanJob& job, const gf::Kernels& kernels) {
  check_spans(job.leaf_spans, len, "span");
  check_spans(job.crc_spans, len, "CRC span");
  if (job.code != nullptr) gf::check_code(*job.code, len);
  Context ctx(data, job);
  const size_t L = job.leaf_size;
  if (job.code != nullptr) {
    const gf::RangeHook hook{hook_fn, &ctx, job.populate, job.out_fd >= 0 ? window_fn : nullptr};
    gf::encode(data, len, *job.code, job.parity, job.file_leaves, job.hash_loop, job.threads, kernels, &hook);
  } else if (len > 0) {
    const size_t chunk = std::max(L, kChunkBytes / L * L);
    const size_t n_chunks = (len + chunk - 1) / chunk;
    std::atomic<size_t> next{0};
    auto worker = [&]() {
      for (;;) {
        const size_t c = next.fetch_add(1, std::memory_order_relaxed);
        if (c >= n_chunks) return;
        const size_t a = c * chunk, b = std::min(len, a + chunk);
        if (job.populate) cpu::populate_range(data + a, b - a);
        for (size_t off = a; off < b; off += L)
          job.file_leaves[off / L] = cpu::hash64(data + off, std::min(L, len - off), job.hash_loop);
        ctx.range(a, b);
      }
    };
    const int n_threads = resolve_threads(job.threads, len, n_chunks);
    std::vector<std::thread> pool;
    for (int i = 1; i < n_threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  }
  ctx.finish_parity();
  ctx.finish_crcs();
}

}  // namespace fastckpt::parity
