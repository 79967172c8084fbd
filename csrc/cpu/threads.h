// Threads for the CPU kernels: jobs run on the OpenMP runtime's team (in a torch process, the
// libgomp that torch loaded, so our jobs and torch's ops share one set of threads instead of two
// pools competing for the cores), and a spinning barrier for the per-step synchronization inside
// a recurrence (a step can take under a microsecond, far less than a condition-variable
// wake-up, which the barrier only falls back to when a party is late).
//
// parallel(n, fn) runs fn(tid, n) on n threads (the caller is tid 0) and returns when all are
// done. Work is split statically by tid, so which thread computes which output never depends on
// timing: results are bitwise reproducible (and, because each output element is reduced in a
// fixed order by one thread, identical for any thread count).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace fastrnn::cpu {

// Waiters spin first (a step is short), then yield, then sleep on a condition variable: on an
// oversubscribed machine a descheduled party can take a whole time slice to arrive, and a waiter
// that only yields may keep its core from it. The last arriver only touches the mutex when
// someone sleeps, so the fast path stays two atomic operations.
class SpinBarrier {
 public:
  explicit SpinBarrier(int parties) : parties_(parties) {}
  // Every party calls wait(); all return once the last has arrived. Reusable.
  void wait();

 private:
  const int parties_;
  std::atomic<int> arrived_{0};
  std::atomic<unsigned> generation_{0};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// Runs fn(tid, n) for tid in [0, n) concurrently (the parts may wait on each other); n is
// clamped to [1, max_threads()]. Exceptions thrown by fn are rethrown in the caller (the first).
void parallel(int n, const std::function<void(int tid, int n)>& fn);

// Upper bound on the threads of a job: the machine's hardware threads.
int max_threads();

}  // namespace fastrnn::cpu
