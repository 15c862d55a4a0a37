// The fused protect pass (parity_scan.hpp). Work is cut into contiguous byte ranges of the file; for
// each range, while it is in cache, the range's extra work is done: the leaf digests of every span
// leaf that *starts* in the range (hashed whole, so one that straddles the range's end reads a little
// past it) and the CRC-32 of every piece of a CRC span inside the range (pieces are joined with
// crc32_combine at the end). With parity the ranges are the rows of gf::encode's windows (RangeHook);
// without, they are fixed chunks whose file leaves are hashed first.
#include "parity_scan.hpp"
#include "workers.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace fastckpt::parity {
namespace {

// The unit of work of the pass without parity: one sequential stream per task (4 MiB chunks hashed
// 18 % faster than 256 KiB ones, which restart the hardware prefetcher more often). The extra work
// runs leaf by leaf, right after the leaf is hashed, while it is in L2; a tensor leaf that reads into
// the next leaf finds it on its way in from the same stream.
constexpr size_t kChunkBytes = size_t{1} << 22;
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

// The memory behind the parity writer's window buffers, kept for the next scan of the process: a
// training job that protects checkpoint after checkpoint (the save hook) reuses the same pages
// instead of faulting in and zeroing fresh ones every time, which on VMs that hand freed memory back
// to the host costs more than the windows' encode. One arena is kept, at most kMaxCachedBytes; a
// scan that finds it taken (another thread's scan) allocates its own.
class WindowArena {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kMaxCachedBytes = size_t{64} << 20;

  WindowArena() = default;
  WindowArena(const WindowArena&) = delete;
  WindowArena& operator=(const WindowArena&) = delete;
  ~WindowArena() { give_back(); }

  // At least nbytes, 2 MiB aligned (so that the kernel may back it with huge pages).
  uint8_t* take(size_t nbytes) {
    give_back();
    {
      std::lock_guard<std::mutex> lock(cache_mu());
      if (cached().base != nullptr && cached().bytes >= nbytes) {
        held_ = cached();
        cached() = Block{};
        return held_.base;
      }
    }
    const size_t bytes = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = nullptr;
    if (::posix_memalign(&p, kHugePage, bytes) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: 4 KiB pages work as well, a little slower
#endif
    held_ = Block{static_cast<uint8_t*>(p), bytes};
    return held_.base;
  }

 private:
  struct Block {
    uint8_t* base = nullptr;
    size_t bytes = 0;
  };
  static std::mutex& cache_mu() {
    static std::mutex mu;
    return mu;
  }
  static Block& cached() {
    static Block block;
    return block;
  }

  // The held block becomes the cached one when it is larger (and not too large); the other is freed.
  void give_back() {
    if (held_.base == nullptr) return;
    Block drop = held_;
    held_ = Block{};
    if (drop.bytes <= kMaxCachedBytes) {
      std::lock_guard<std::mutex> lock(cache_mu());
      if (cached().bytes < drop.bytes) std::swap(cached(), drop);
    }
    std::free(drop.base);
  }

  Block held_;
};

// Writes finished parity windows to the sidecar's temp file on a thread of its own, so that the
// writes (and, through the page cache, starting their write-back with sync_file_range) happen while
// the pass goes on, and the workers never wait on the file (unless it falls behind by more than its
// buffers). The parity is never held whole: ~5 % of the file in fresh pages cost more than the
// encode itself. The descriptor is the caller's: protect hands it one opened with O_DIRECT where the
// file system allows (sidecar_parity.StreamedSidecar.parity_fd), which the page-aligned buffers and
// whole-leaf writes here satisfy.
class ParityWriter {
 public:
  // Small parity, or no thread to be had (a process or pids limit): each worker writes its own
  // windows, one worker at a time.
  //
  // Up to 2 * workers + 20 window buffers: a direct write returns only when the device has the data,
  // and the batch being written holds its buffers until then, so with few buffers the workers waited
  // for them (2 GiB, 2 workers: 0.140-0.154 s with 8 buffers, 0.127-0.136 s with 24). Buffers are
  // carved from the arena only when none is free, so the pages of unused ones are never touched.
  ParityWriter(int fd, uint64_t out_offset, const gf::Code& code, int workers)
      : fd_(fd),
        out_offset_(out_offset),
        code_(code),
        max_buffers_(2 * static_cast<size_t>(std::max(1, workers)) + 20) {
    const uint64_t parity_bytes = static_cast<uint64_t>(code.m) * code.groups * code.leaf_size;
    if (parity_bytes >= kMinBytesForThread) {
      try {
        thread_ = std::thread([this] { run(); });
      } catch (const std::system_error&) {
      }
    }
  }

  ParityWriter(const ParityWriter&) = delete;
  ParityWriter& operator=(const ParityWriter&) = delete;

  ~ParityWriter() { stop(); }

  // A buffer of nbytes for a worker's next window: a free one, a new one while there are fewer than
  // the limit, or else the first one the writer gives back.
  uint8_t* acquire(size_t nbytes) {
    std::unique_lock<std::mutex> lock(mu_);
    if (nbytes_ == 0) nbytes_ = nbytes;
    if (nbytes != nbytes_) throw std::logic_error("parity writer: windows of different sizes");
    if (free_.empty() && handed_out_ < max_buffers_) {
      // Buffers are carved from one arena at page-aligned strides.
      const size_t stride = (nbytes + kPageAlign - 1) / kPageAlign * kPageAlign;
      if (arena_base_ == nullptr) arena_base_ = arena_.take(stride * max_buffers_);
      return arena_base_ + stride * handed_out_++;
    }
    released_.wait(lock, [this] { return !free_.empty(); });
    uint8_t* b = free_.back();
    free_.pop_back();
    return b;
  }

  // Queues a window for writing; `owned`: rows came from acquire() and return to the pool after.
  void submit(uint8_t* rows, size_t row_stride, size_t g0, size_t n_groups, bool owned) {
    const Window w{rows, row_stride, g0, n_groups, owned};
    if (!thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(inline_mu_);
        if (error_ == 0) write_run(&w, 1);
      }
      if (owned) release(&w, 1);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(w);
    }
    queued_.notify_one();
  }

  // Waits until everything submitted is written; throws std::system_error for the first write error.
  void finish() {
    stop();
    if (error_ != 0) throw std::system_error(error_, std::generic_category(), "writing parity to the sidecar");
  }

 private:
  // Whole pages: what O_DIRECT requires of buffers, and what copies into the page cache fastest.
  static constexpr size_t kPageAlign = 4096;
  static constexpr size_t kMaxRun = 16;  // windows per write
  // Below this much parity a thread of its own is not worth starting.
  static constexpr uint64_t kMinBytesForThread = uint64_t{8} << 20;
  struct Window {
    uint8_t* rows;
    size_t row_stride;
    size_t g0;
    size_t n_groups;
    bool owned;
  };

  // The writer thread writes what is queued and returns; joined here.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    queued_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  void run() {
    std::vector<Window> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        queued_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        batch.assign(queue_.begin(), queue_.end());
        queue_.clear();
      }
      // Windows of consecutive groups are consecutive in each parity row: one write (and one
      // write-back request) per row for a whole run of them rather than per 256 KiB window row.
      std::sort(batch.begin(), batch.end(), [](const Window& a, const Window& b) { return a.g0 < b.g0; });
      for (size_t i = 0; i < batch.size();) {
        size_t j = i + 1;
        while (j < batch.size() && j - i < kMaxRun && batch[j].g0 == batch[j - 1].g0 + batch[j - 1].n_groups) ++j;
        if (error_ == 0) write_run(&batch[i], j - i);
        release(&batch[i], j - i);
        i = j;
      }
    }
  }

  // The buffers of these windows that came from acquire() go back to the pool.
  void release(const Window* w, size_t count) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t t = 0; t < count; ++t)
        if (w[t].owned) free_.push_back(w[t].rows);
    }
    released_.notify_all();
  }

  void write_run(const Window* w, size_t count) {
    const uint64_t L = code_.leaf_size, G = code_.groups;
    std::vector<iovec> iov(count);
    for (int r = 0; r < code_.m; ++r) {
      for (size_t t = 0; t < count; ++t) {
        iov[t].iov_base = w[t].rows + static_cast<size_t>(r) * w[t].row_stride;
        iov[t].iov_len = w[t].n_groups * static_cast<size_t>(L);
      }
      const uint64_t at = out_offset_ + (static_cast<uint64_t>(r) * G + w[0].g0) * L;
      std::vector<iovec> left(iov);
      if (const int err = write_all(fd_, left, at); err != 0) {
        error_ = err;
        return;
      }
#ifdef SYNC_FILE_RANGE_WRITE
      size_t n = 0;
      for (const iovec& v : iov) n += v.iov_len;
      ::sync_file_range(fd_, static_cast<off_t>(at), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
#endif
    }
  }

  // pwritev until every byte of `iov` is written (it is consumed); 0 or the errno.
  static int write_all(int fd, std::vector<iovec>& iov, uint64_t at) {
    size_t first = 0;
    while (first < iov.size()) {
      const int cnt = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
      const ssize_t w = ::pwritev(fd, &iov[first], cnt, static_cast<off_t>(at));
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (w == 0) return EIO;
      at += static_cast<uint64_t>(w);
      size_t done = static_cast<size_t>(w);
      while (done > 0) {
        iovec& v = iov[first];
        const size_t take = std::min(done, v.iov_len);
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + take;
        v.iov_len -= take;
        done -= take;
        if (v.iov_len == 0) ++first;
      }
      while (first < iov.size() && iov[first].iov_len == 0) ++first;
    }
    return 0;
  }

  int fd_;
  uint64_t out_offset_;
  gf::Code code_;
  size_t max_buffers_;
  size_t nbytes_ = 0;
  std::mutex mu_;
  std::condition_variable queued_, released_;
  std::deque<Window> queue_;
  std::vector<uint8_t*> free_;
  WindowArena arena_;
  uint8_t* arena_base_ = nullptr;
  size_t handed_out_ = 0;
  bool stop_ = false;
  std::mutex inline_mu_;  // serializes the workers' own writes when there is no writer thread
  // Written by the writer thread (or under inline_mu_), read after the thread is joined (or after
  // the workers are).
  int error_ = 0;
  std::thread thread_;
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

  // Parity streaming (ScanJob::out_fd): set by scan() when the parity is written out.
  ParityWriter* writer = nullptr;
  std::atomic<size_t> groups_done{0};

  // Parity rows of groups [g0, g0 + n_groups), final: hashed while in cache, then written out.
  void window_done(size_t g0, size_t n_groups, uint8_t* rows, size_t row_stride) {
    const gf::Code& code = *job->code;
    const size_t L = job->leaf_size, G = code.groups;
    if (job->parity_leaves != nullptr)
      for (int r = 0; r < code.m; ++r)
        for (size_t u = 0; u < n_groups; ++u)
          job->parity_leaves[static_cast<uint64_t>(r) * G + g0 + u] =
              cpu::hash64(rows + static_cast<size_t>(r) * row_stride + u * L, L, job->hash_loop);
    groups_done.fetch_add(n_groups, std::memory_order_relaxed);
    if (writer != nullptr) writer->submit(rows, row_stride, g0, n_groups, job->parity == nullptr);
  }

  void finish_parity() {
    if (job->code == nullptr) return;
    if (writer != nullptr) writer->finish();
    // gf::encode reports every window whenever leaves are whole tiles, which a scan (it hashes whole
    // leaves) always has; anything else would leave parity unwritten or unhashed.
    if (groups_done.load() != job->code->groups)
      throw std::logic_error("parity scan: the encode did not report every window");
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
void window_fn(void* ctx, size_t g0, size_t n, uint8_t* rows, size_t row_stride) {
  static_cast<Context*>(ctx)->window_done(g0, n, rows, row_stride);
}
uint8_t* window_buffer_fn(void* ctx, size_t nbytes) { return static_cast<Context*>(ctx)->writer->acquire(nbytes); }

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
    if (job.parity == nullptr && job.out_fd < 0) throw std::invalid_argument("parity scan: no parity buffer and no out_fd");
    std::unique_ptr<ParityWriter> writer;
    if (job.out_fd >= 0 && len > 0) {
      writer = std::make_unique<ParityWriter>(job.out_fd, job.out_offset, *job.code,
                                              resolve_threads(job.threads, len, job.code->groups));
      ctx.writer = writer.get();
    }
    // With a parity buffer the windows are written out from it; without, from the writer's buffers.
    const gf::RangeHook hook{hook_fn, &ctx, job.populate, window_fn,
                             writer != nullptr && job.parity == nullptr ? window_buffer_fn : nullptr};
    gf::encode(data, len, *job.code, job.parity, job.file_leaves, job.hash_loop, job.threads, kernels, &hook);
    ctx.finish_parity();
  } else if (len > 0) {
    const bool has_extra = !job.leaf_spans.empty() || !job.crc_spans.empty();
    const size_t chunk = std::max(L, kChunkBytes / L * L);
    const size_t n_chunks = (len + chunk - 1) / chunk;
    cpu::parallel_tasks(n_chunks, resolve_threads(job.threads, len, n_chunks), [&](size_t c, int) {
      const size_t a = c * chunk, b = std::min(len, a + chunk);
      if (job.populate) cpu::populate_range(data + a, b - a);
      for (size_t off = a; off < b; off += L) {
        const size_t end = std::min(off + L, len);
        job.file_leaves[off / L] = cpu::hash64(data + off, end - off, job.hash_loop);
        if (has_extra) ctx.range(off, end);
      }
    });
  }
  ctx.finish_crcs();
}

}  // namespace fastckpt::parity
