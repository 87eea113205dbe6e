#include "pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LOWBIT_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LOWBIT_RELAX() asm volatile("yield")
#else
#define LOWBIT_RELAX() ((void)0)
#endif

namespace lowbit {
namespace {

using Clock = std::chrono::steady_clock;
// How long an idle worker polls before sleeping: long enough to bridge the JS glue between two ops of a layer.
constexpr auto kSpin = std::chrono::microseconds(200);

struct Pool {
  std::vector<std::thread> workers;
  std::atomic<uint64_t> gen{0};
  std::atomic<int> pending{0};
  std::atomic<int> sleeping{0};
  std::atomic<bool> stop{false};
  void (*fn)(void*, int) = nullptr;
  void* ctx = nullptr;
  int nchunks = 0;
  std::mutex m;
  std::condition_variable cv;
  std::mutex busy;  // one job at a time; a second caller (another JS worker thread) runs its job inline

  // `seen` is the generation at creation time, read by the creating thread: a worker that starts running only
  // after the next job was posted must still see that job as new.
  void worker(int id, uint64_t seen) {
    for (;;) {
      uint64_t g;
      auto t0 = Clock::now();
      int spins = 0;
      while ((g = gen.load(std::memory_order_acquire)) == seen && !stop.load(std::memory_order_relaxed)) {
        LOWBIT_RELAX();
        if (++spins % 128 == 0 && Clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lk(m);
          sleeping.fetch_add(1);
          while ((g = gen.load()) == seen && !stop.load()) cv.wait(lk);
          sleeping.fetch_sub(1);
          break;
        }
      }
      if (stop.load()) return;
      seen = g;
      if (id < nchunks) fn(ctx, id);
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start(int n) {
    stop = false;
    const uint64_t g = gen.load();
    for (int i = 1; i < n; i++) workers.emplace_back([this, i, g] { worker(i, g); });
  }
  void shutdown() {
    { std::lock_guard<std::mutex> lk(m); stop = true; }
    cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  }
  int threads() const { return int(workers.size()) + 1; }
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at process exit can deadlock.
  static Pool* p = [] {
    Pool* q = new Pool;
    unsigned hc = std::thread::hardware_concurrency();
    q->start(hc ? int(hc) : 1);
    return q;
  }();
  return *p;
}

}  // namespace

void pool_set_threads(int n) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.busy);
  if (n < 1) n = 1;
  if (n == p.threads()) return;
  p.shutdown();
  p.start(n);
}

int pool_threads() { return pool().threads(); }

void pool_run(int nchunks, void (*fn)(void*, int), void* ctx) {
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.busy, std::try_to_lock);
  if (!lk.owns_lock() || nchunks <= 1 || p.workers.empty()) {
    for (int i = 0; i < nchunks; i++) fn(ctx, i);
    return;
  }
  p.fn = fn;
  p.ctx = ctx;
  p.nchunks = nchunks;
  p.pending.store(int(p.workers.size()), std::memory_order_relaxed);
  p.gen.fetch_add(1);  // seq_cst: pairs with the sleeping check below (see worker)
  if (p.sleeping.load() > 0) {
    { std::lock_guard<std::mutex> g(p.m); }
    p.cv.notify_all();
  }
  fn(ctx, 0);
  int spins = 0;
  while (p.pending.load(std::memory_order_acquire) != 0) {
    LOWBIT_RELAX();
    if (++spins > (1 << 20)) std::this_thread::yield();
  }
}

}  // namespace lowbit
