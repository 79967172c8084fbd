#include "cpu/threads.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTRNN_PAUSE() _mm_pause()
#else
#define FASTRNN_PAUSE() std::this_thread::yield()
#endif

namespace fastrnn::cpu {

void SpinBarrier::wait() {
  const unsigned gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == parties_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    // seq_cst, paired with the sleeper's increment of sleepers_ and its re-check of generation_:
    // either the sleeper sees the new generation, or this thread sees the sleeper.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    return;
  }
  constexpr int kSpins = 4000, kYields = 64;
  for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
    if (spins < kSpins) {
      FASTRNN_PAUSE();
    } else if (spins < kSpins + kYields) {
      std::this_thread::yield();
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != gen; });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
  }
}

namespace {

// The first exception thrown by any part of a job, rethrown in the caller.
class FirstError {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
};

// GNU OpenMP's threads do not survive fork(): in a child of a parent that used them, the first
// parallel region hangs (tests/test_threads.py hung so without this flag). The handler is
// installed when the library loads, so every later fork is seen.
std::atomic<bool> forked_child{false};
[[maybe_unused]] const int fork_handler =
    pthread_atfork(nullptr, nullptr, [] { forked_child.store(true); });

}  // namespace

// Read once: hardware_concurrency() reads the system's CPU list, microseconds per call.
int max_threads() {
  static const int n = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return n;
}

void parallel(int n, const std::function<void(int, int)>& fn) {
  n = std::clamp(n, 1, max_threads());
  if (n == 1) {
    fn(0, 1);
    return;
  }
  FirstError error;
  std::atomic<bool> ran{false};
  if (!forked_child.load()) {
#pragma omp parallel num_threads(n)
    if (omp_get_num_threads() == n) {  // the same answer on every thread of the team
      if (omp_get_thread_num() == 0) ran.store(true);
      error.run([&] { fn(omp_get_thread_num(), n); });
    }
  }
  if (!ran.load()) {
    // No team of n (a call from inside another parallel region, or in a forked child): the
    // parts wait on each other at barriers, so they need threads of their own.
    std::vector<std::thread> helpers;
    for (int tid = 1; tid < n; ++tid)
      helpers.emplace_back([&, tid] { error.run([&] { fn(tid, n); }); });
    error.run([&] { fn(0, n); });
    for (std::thread& t : helpers) t.join();
  }
  error.rethrow();
}

}  // namespace fastrnn::cpu
