// The one way the CPU backend starts worker threads. Every parallel loop here hands out its tasks
// from a shared counter (parallel_tasks, or run_workers for loops with per-worker state), so any
// number of workers finishes the work; that makes two failure modes survivable instead of fatal:
//  - a thread that cannot be started (EAGAIN under a process limit or a container's pids.max, which
//    a many-core machine reaches quickly when every rank starts a thread per core) is skipped: the
//    workers already running share its tasks, down to the calling thread alone;
//  - an exception in any worker reaches the caller after every started thread is joined (escaping
//    a thread's function, or a std::thread destroyed while joinable, would end the process with
//    std::terminate); the first one is rethrown.
// Include it only from files compiled without ISA flags (the *_avx2.cpp etc. files must not
// instantiate shared templates: the linker could keep their wide-instruction copy).
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace fastckpt::cpu {

// Runs worker(w) for w in [0, n): worker 0 on the calling thread, the others on threads of their
// own where they can be started. Each worker must take tasks from a shared counter until none are
// left. Returns how many workers ran.
template <class F>
int run_workers(int n, const F& worker) {
  std::mutex mu;
  std::exception_ptr first;
  auto guarded = [&](int w) {
    try {
      worker(w);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  if (n > 1) pool.reserve(static_cast<size_t>(n - 1));
  for (int w = 1; w < n; ++w) {
    try {
      pool.emplace_back(guarded, w);
    } catch (const std::system_error&) {
      break;  // no more threads for now: the ones running take the rest
    }
  }
  guarded(0);
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
  return static_cast<int>(pool.size()) + 1;
}

// Runs task(t, w) for every t in [0, n_tasks) on up to `threads` workers (w: the worker's index)
// that take tasks from a shared counter: the loop every pool here needs.
template <class F>
void parallel_tasks(size_t n_tasks, int threads, const F& task) {
  std::atomic<size_t> next{0};
  run_workers(threads, [&](int w) {
    for (;;) {
      const size_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_tasks) return;
      task(t, w);
    }
  });
}

}  // namespace fastckpt::cpu
