#include "pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif
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
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Wait stages (see pool.h). An idle worker spins long enough to bridge the JS glue between two ops of a layer,
// then yields for a while (a cheap syscall on an idle core, a handover on a busy one), then sleeps.
constexpr auto kWorkerSpin = microseconds(50);
constexpr auto kWorkerYield = microseconds(500);
// The caller waits only for chunks already running on other threads; if one is slow to finish, its thread has
// most likely been preempted, so the caller gives its core away early.
constexpr auto kCallerSpin = microseconds(20);
constexpr auto kCallerYield = microseconds(200);
constexpr int kMaxDefaultThreads = 16;
// Adaptive width: a wait this much longer than the caller's own share is a stall (a preempted worker); the width
// then halves for a backoff that doubles on each repeat, and a stall this long after the previous one starts the
// backoff afresh.
constexpr auto kStallSlack = microseconds(250);
constexpr auto kMinBackoff = milliseconds(10);
constexpr auto kMaxBackoff = milliseconds(1000);
constexpr auto kForget = milliseconds(2000);

int64_t ticks(Clock::time_point t) { return int64_t(t.time_since_epoch().count()); }

// Job word: generation (32 bits) | chunk count (16) | next unclaimed chunk (16). Claims are a CAS on the whole word,
// so a worker that read a stale generation can never claim a chunk of the next job (see Pool::work).
constexpr uint64_t pack(uint32_t gen, int n, int next) { return uint64_t(gen) << 32 | uint64_t(n) << 16 | uint64_t(next); }
constexpr uint32_t gen_of(uint64_t s) { return uint32_t(s >> 32); }
constexpr int count_of(uint64_t s) { return int((s >> 16) & 0xffff); }
constexpr int next_of(uint64_t s) { return int(s & 0xffff); }

// Spin, then yield, then (once `sleep_after` has passed) return false so the caller can block.
class Backoff {
 public:
  Backoff(Clock::duration spin, Clock::duration yield) : t0_(Clock::now()), spin_(spin), yield_(yield) {}
  bool pause() {
    if (++n_ % 32 != 0) { LOWBIT_RELAX(); return true; }
    auto dt = Clock::now() - t0_;
    if (dt < spin_) { LOWBIT_RELAX(); return true; }
    if (dt < yield_) { std::this_thread::yield(); return true; }
    return false;
  }

 private:
  Clock::time_point t0_;
  Clock::duration spin_, yield_;
  unsigned n_ = 0;
};

struct Pool {
  std::vector<std::thread> workers;
  std::atomic<uint64_t> state{0};
  std::atomic<void (*)(void*, int)> fn{nullptr};
  std::atomic<void*> ctx{nullptr};
  std::atomic<int> done{0};
  std::atomic<int> sleepers{0};
  std::atomic<bool> caller_asleep{false};
  std::atomic<bool> stop{false};
  uint32_t gen = 0;  // written by the job's caller only (under `busy`)
  std::atomic<bool> started{false};
  std::atomic<int> width{1};             // see pool_width()
  std::atomic<int64_t> grow_at{0};       // Clock ticks after which a reduced width may double again
  Clock::duration backoff{0};            // caller only (under `busy`)
  Clock::time_point last_stall{};

  void on_stall(Clock::time_point now) {
    backoff = (backoff == Clock::duration(0) || now - last_stall > kForget) ? Clock::duration(kMinBackoff)
                                                                            : std::min<Clock::duration>(2 * backoff, kMaxBackoff);
    last_stall = now;
    width.store(std::max(1, width.load(std::memory_order_relaxed) / 2), std::memory_order_relaxed);
    grow_at.store(ticks(now + backoff), std::memory_order_relaxed);
  }
  std::mutex m;  // idle workers sleep on cv
  std::condition_variable cv;
  std::mutex dm;  // the caller sleeps on dcv while chunks are in flight
  std::condition_variable dcv;
  std::mutex busy;  // one job at a time; a second caller (another JS worker thread) runs its job inline
  std::mutex err_m;
  std::exception_ptr err;

  void run_chunk(void (*f)(void*, int), void* c, int i, int n) {
    try {
      f(c, i);
    } catch (...) {
      std::lock_guard<std::mutex> lk(err_m);
      if (!err) err = std::current_exception();
    }
    // seq_cst pairs with the caller's caller_asleep store / done load in wait_done.
    if (done.fetch_add(1) + 1 == n && caller_asleep.load()) {
      { std::lock_guard<std::mutex> lk(dm); }
      dcv.notify_one();
    }
  }

  // Claims and runs chunks of the job in `s` until none is left. fn/ctx are read before the claim: a successful CAS
  // proves the job was still unfinished, so the caller had not yet replaced them with the next job's.
  void work(uint64_t s) {
    for (;;) {
      if (next_of(s) >= count_of(s)) return;
      auto f = fn.load(std::memory_order_relaxed);
      void* c = ctx.load(std::memory_order_relaxed);
      if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        run_chunk(f, c, next_of(s), count_of(s));
        s = state.load(std::memory_order_acquire);
      }
      // on failure s holds the current word: another thread claimed the chunk, or a new job began
    }
  }

  void worker(uint32_t seen) {
    for (;;) {
      uint64_t s = state.load(std::memory_order_acquire);
      Backoff b(kWorkerSpin, kWorkerYield);
      while (gen_of(s) == seen && !stop.load(std::memory_order_relaxed)) {
        if (!b.pause()) {
          std::unique_lock<std::mutex> lk(m);
          sleepers.fetch_add(1);  // seq_cst: pairs with the state store + sleepers load in pool_run
          while (gen_of(s = state.load()) == seen && !stop.load()) cv.wait(lk);
          sleepers.fetch_sub(1);
          break;
        }
        s = state.load(std::memory_order_acquire);
      }
      if (stop.load()) return;
      seen = gen_of(s);
      work(s);
    }
  }

  void wait_done(int n) {
    Backoff b(kCallerSpin, kCallerYield);
    while (done.load(std::memory_order_acquire) != n) {
      if (!b.pause()) {
        std::unique_lock<std::mutex> lk(dm);
        caller_asleep.store(true);  // seq_cst: pairs with done.fetch_add + caller_asleep load in run_chunk
        while (done.load() != n) dcv.wait(lk);
        caller_asleep.store(false);
        return;
      }
    }
  }

  void start(int n) {
    stop = false;
    const uint32_t g = gen_of(state.load());
    for (int i = 1; i < n; i++) workers.emplace_back([this, g] { worker(g); });
    width = n;
    backoff = Clock::duration(0);
    grow_at = 0;
    started = true;
  }
  void shutdown() {
    { std::lock_guard<std::mutex> lk(m); stop = true; }
    cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  }
  int threads() const { return int(workers.size()) + 1; }
};

// The pool object, created on first use and leaked on purpose: joining threads from a static destructor at process
// exit can deadlock.
Pool& instance() {
  static Pool* p = new Pool;
  return *p;
}

// The pool with its threads started; the first use starts default_threads() of them (which throws on a bad
// LOWBIT_THREADS, every time until it is fixed or setThreads is called).
Pool& pool() {
  Pool& p = instance();
  if (!p.started.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> b(p.busy);
    if (!p.started.load()) p.start(default_threads());
  }
  return p;
}

#if defined(__linux__)
long read_long(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return -1;
  long v = -1;
  if (std::fscanf(f, "%ld", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

// CPUs granted by a cgroup v2 quota ("max 100000" = none; "200000 100000" = 2), or 0 when there is none.
int cgroup_cpus() {
  FILE* f = std::fopen("/sys/fs/cgroup/cpu.max", "r");
  if (!f) return 0;
  char quota[32] = {0};
  long period = 0;
  int got = std::fscanf(f, "%31s %ld", quota, &period);
  std::fclose(f);
  if (got != 2 || std::string(quota) == "max" || period <= 0) return 0;
  long q = std::strtol(quota, nullptr, 10);
  return q > 0 ? int((q + period - 1) / period) : 0;
}
#endif

}  // namespace

int physical_cores() {
  const unsigned hc = std::thread::hardware_concurrency();
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::pair<long, long>> cores;
    int cpus = 0;
    bool topology = true;
    for (int c = 0; c < CPU_SETSIZE; c++) {
      if (!CPU_ISSET(c, &set)) continue;
      cpus++;
      const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
      long core = read_long(dir + "core_id"), pkg = read_long(dir + "physical_package_id");
      if (core < 0 || pkg < 0) topology = false;
      cores.insert({pkg, core});
    }
    if (cpus > 0) return topology ? int(cores.size()) : cpus;
  }
#endif
  return hc ? int(hc) : 1;
}

int default_threads() {
  if (const char* env = std::getenv("LOWBIT_THREADS"); env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1 || v > 1024)
      throw std::invalid_argument(std::string("LOWBIT_THREADS must be an integer from 1 to 1024, got '") + env + "'");
    return int(v);
  }
  int n = physical_cores();
#if defined(__linux__)
  if (int q = cgroup_cpus(); q > 0) n = std::min(n, q);
#endif
  return std::max(1, std::min(n, kMaxDefaultThreads));
}

void pool_set_threads(int n) {
  Pool& p = instance();  // not pool(): setThreads must work even when LOWBIT_THREADS is malformed
  std::lock_guard<std::mutex> lk(p.busy);
  if (n < 1) n = 1;
  if (p.started.load() && n == p.threads()) return;
  p.shutdown();
  p.start(n);
}

int pool_threads() { return pool().threads(); }

int pool_width() {
  Pool& p = pool();
  int w = p.width.load(std::memory_order_relaxed);
  const int t = p.threads();
  if (w < t && ticks(Clock::now()) >= p.grow_at.load(std::memory_order_relaxed)) {
    w = std::min(t, 2 * w);  // probe: a stall will halve it again, with a longer backoff
    p.width.store(w, std::memory_order_relaxed);
  }
  return w;
}

void pool_run(int nchunks, void (*fn)(void*, int), void* ctx) {
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.busy, std::try_to_lock);
  if (!lk.owns_lock() || nchunks <= 1 || p.workers.empty() || nchunks > 0xffff) {
    for (int i = 0; i < nchunks; i++) fn(ctx, i);
    return;
  }
  p.fn.store(fn, std::memory_order_relaxed);
  p.ctx.store(ctx, std::memory_order_relaxed);
  p.done.store(0, std::memory_order_relaxed);
  const uint64_t s = pack(++p.gen, nchunks, 0);
  const auto t0 = Clock::now();
  p.state.store(s);  // seq_cst: publishes fn/ctx/done and pairs with the sleepers increment in worker()
  if (p.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> g(p.m); }
    p.cv.notify_all();
  }
  p.work(s);
  const auto t1 = Clock::now();
  p.wait_done(nchunks);
  const auto t2 = Clock::now();
  if (t2 - t1 > (t1 - t0) + kStallSlack) p.on_stall(t2);
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> g(p.err_m);
    std::swap(e, p.err);
  }
  if (e) std::rethrow_exception(e);
}

}  // namespace lowbit
