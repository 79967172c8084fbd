#include "cpu/threads.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <pthread.h>

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

class Pool {
 public:
  void run(int n, const std::function<void(int, int)>& fn) {
    std::lock_guard<std::mutex> one_job_at_a_time(run_mutex_);
    ensure_workers(n - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_threads_ = n;
      pending_ = n - 1;
      first_error_ = nullptr;
      ++job_id_;
    }
    wake_.notify_all();
    try {
      fn(0, n);
    } catch (...) {
      record_error(std::current_exception());
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (first_error_) std::rethrow_exception(first_error_);
  }


 private:
  // Workers are detached: the pool lives for the whole process.
  void ensure_workers(int count) {
    while (workers_ < count) {
      const int tid = ++workers_;
      std::thread([this, tid] { worker_loop(tid); }).detach();
    }
  }

  [[noreturn]] void worker_loop(int tid) {
    unsigned long seen = 0;
    for (;;) {
      const std::function<void(int, int)>* job;
      int n;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return job_id_ != seen; });
        seen = job_id_;
        job = job_;
        n = job_threads_;
      }
      if (tid >= n) continue;  // this job uses fewer threads
      try {
        (*job)(tid, n);
      } catch (...) {
        record_error(std::current_exception());
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  void record_error(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!first_error_) first_error_ = e;
  }

  std::mutex run_mutex_, mutex_, error_mutex_;
  std::condition_variable wake_, done_;
  int workers_ = 0;
  const std::function<void(int, int)>* job_ = nullptr;
  int job_threads_ = 0;
  int pending_ = 0;
  unsigned long job_id_ = 0;
  std::exception_ptr first_error_;
};

// The process's pool. Never destroyed: joining workers during interpreter shutdown can deadlock.
// After fork() the child has none of the parent's workers, so it starts a fresh pool (the old
// one, whose mutexes may be held by threads that no longer exist, is abandoned).
Pool*& current_pool() {
  static Pool* pool = [] {
    pthread_atfork(nullptr, nullptr, [] { current_pool() = new Pool; });
    return new Pool;
  }();
  return pool;
}

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
  current_pool()->run(n, fn);
}

}  // namespace fastrnn::cpu
