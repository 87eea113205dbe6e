#include "pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <time.h>
// Other threads' CPU clocks (pthread_getcpuclockid) tell a preempted worker from one with a longer chunk.
#define LOWBIT_THREAD_CLOCKS 1
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
// Adaptive width: a worker that was off its core for this long while the caller waited on its chunk was preempted
// (a stall); the width then halves for a backoff that doubles on each repeat, and a stall this long after the
// previous one starts the backoff afresh. The caller reads the CPU clocks of the workers it waits on once it has
// waited kSnapAfter, so a job that ends sooner pays nothing for the check.
constexpr auto kStallSlack = microseconds(250);
constexpr auto kSnapAfter = microseconds(50);
// poolConfig workerFirst (a test hook): how long the caller waits for a worker to claim a chunk.
constexpr auto kWorkerFirstLimit = milliseconds(2000);
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

// Spin, then yield, then (once `yield` has passed) return false so the caller can block.
class Backoff {
 public:
  Backoff(Clock::duration spin, Clock::duration yield) : t0_(Clock::now()), spin_(spin), yield_(yield) {}
  bool pause() {
    if (++n_ % 32 != 0) { LOWBIT_RELAX(); return true; }
    dt_ = Clock::now() - t0_;
    if (dt_ < spin_) { LOWBIT_RELAX(); return true; }
    if (dt_ < yield_) { std::this_thread::yield(); return true; }
    return false;
  }
  Clock::duration elapsed() const { return dt_; }  // as of the last clock read

 private:
  Clock::time_point t0_;
  Clock::duration spin_, yield_, dt_{0};
  unsigned n_ = 0;
};

// Per-thread state of a started pool (slot 0: the caller; 1..n-1: the workers), each on its own cache line. A worker
// writes its slot; the caller reads the workers' slots while it holds `busy`.
struct alignas(64) Slot {
  std::atomic<bool> in_chunk{false};  // a chunk claimed and not yet finished
  std::atomic<int64_t> end{0};        // Clock ticks when its last chunk finished
  std::atomic<uint64_t> chunks{0}, errors{0};
#ifdef LOWBIT_THREAD_CLOCKS
  clockid_t clock{};
  std::atomic<bool> has_clock{false};
#endif
};

#ifdef LOWBIT_THREAD_CLOCKS
int64_t cpu_ns(clockid_t c) {
  timespec ts;
  if (clock_gettime(c, &ts) != 0) return -1;
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
#endif

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
  std::atomic<bool> adaptive{true};      // false: the width stays at threads() (LOWBIT_POOL_ADAPT=0, poolConfig)
  std::atomic<bool> worker_first{false}; // debug: the caller lets a worker claim the first chunk (poolConfig)
  bool env_read = false;                 // LOWBIT_POOL_ADAPT is read at the first start (under `busy`)
  std::unique_ptr<Slot[]> slots;         // nslots of them: one per thread of the last start()
  int nslots = 0;
  // Counters (poolStats): chunks of split jobs run inline or on the caller; totals of slots of earlier pools.
  std::atomic<uint64_t> caller_chunks{0};
  uint64_t jobs = 0, stalls = 0, old_worker_chunks = 0, old_worker_errors = 0;  // under `busy`
  // The caller's view of one wait (under `busy`): which workers were in a chunk when it looked, their CPU clocks.
  std::vector<int64_t> snap_cpu;

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

  // Runs chunk i of n on the thread of `slot` (0: the caller).
  void run_chunk(void (*f)(void*, int), void* c, int i, int n, int slot) {
    Slot& me = slots[size_t(slot)];
    if (slot == 0) caller_chunks.fetch_add(1, std::memory_order_relaxed);
    else me.chunks.fetch_add(1, std::memory_order_relaxed);
    try {
      f(c, i);
    } catch (...) {
      if (slot != 0) me.errors.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard<std::mutex> lk(err_m);
      if (!err) err = std::current_exception();
    }
    if (slot != 0) {  // read by the caller once done == n (the fetch_add below orders these stores before it)
      me.end.store(ticks(Clock::now()), std::memory_order_relaxed);
      me.in_chunk.store(false, std::memory_order_relaxed);
    }
    // seq_cst pairs with the caller's caller_asleep store / done load in wait_done.
    if (done.fetch_add(1) + 1 == n && caller_asleep.load()) {
      { std::lock_guard<std::mutex> lk(dm); }
      dcv.notify_one();
    }
  }

  // Claims and runs chunks of the job in `s` until none is left. fn/ctx are read before the claim: a successful CAS
  // proves the job was still unfinished, so the caller had not yet replaced them with the next job's.
  void work(uint64_t s, int slot) {
    for (;;) {
      if (next_of(s) >= count_of(s)) return;
      auto f = fn.load(std::memory_order_relaxed);
      void* c = ctx.load(std::memory_order_relaxed);
      if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (slot != 0) slots[size_t(slot)].in_chunk.store(true, std::memory_order_release);
        run_chunk(f, c, next_of(s), count_of(s), slot);
        s = state.load(std::memory_order_acquire);
      }
      // on failure s holds the current word: another thread claimed the chunk, or a new job began
    }
  }

  void worker(uint32_t seen, int slot) {
#ifdef LOWBIT_THREAD_CLOCKS
    Slot& me = slots[size_t(slot)];
    if (pthread_getcpuclockid(pthread_self(), &me.clock) == 0) me.has_clock.store(true, std::memory_order_release);
#endif
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
      work(s, slot);
    }
  }

  // Waits until all n chunks are done. Returns true when the wait was a stall: a worker whose chunk the caller
  // waited on was off its core for kStallSlack or more meanwhile. Its wall time against its CPU time says so, not
  // how long the wait was: chunks may differ in cost (an idle machine must never look busy), and a worker that is
  // merely slow to wake costs nothing, since the caller takes every chunk no worker has claimed. (A chunk blocked
  // on a page fault of a freshly mapped file also counts: rare, and it narrows the width for 10 ms.)
  bool wait_done(int n, Clock::duration own) {
#ifndef LOWBIT_THREAD_CLOCKS
    const auto w0 = Clock::now();
#endif
    Backoff b(kCallerSpin, kCallerYield);
    bool looked = false;
    Clock::time_point snap{};
    auto look = [&] {  // which workers are in a chunk now, and their CPU clocks; snap is read after the clocks
      looked = true;
#ifdef LOWBIT_THREAD_CLOCKS
      for (int w = 1; w < threads(); w++) {
        Slot& sl = slots[size_t(w)];
        snap_cpu[size_t(w)] = sl.in_chunk.load(std::memory_order_acquire) && sl.has_clock.load(std::memory_order_acquire) ? cpu_ns(sl.clock) : -1;
      }
#endif
      snap = Clock::now();
    };
    while (done.load(std::memory_order_acquire) != n) {
      if (!looked && b.elapsed() >= kSnapAfter) look();
      if (!b.pause()) {
        if (!looked) look();
        std::unique_lock<std::mutex> lk(dm);
        caller_asleep.store(true);  // seq_cst: pairs with done.fetch_add + caller_asleep load in run_chunk
        while (done.load() != n) dcv.wait(lk);
        caller_asleep.store(false);
        break;
      }
    }
    if (!looked) return false;  // done within kSnapAfter: nothing worth adapting to
#ifdef LOWBIT_THREAD_CLOCKS
    (void)own;
    for (int w = 1; w < threads(); w++) {
      if (snap_cpu[size_t(w)] < 0) continue;
      Slot& sl = slots[size_t(w)];
      const int64_t cpu = cpu_ns(sl.clock) - snap_cpu[size_t(w)];  // includes any spinning after its chunk: a lower bound
      const int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
          Clock::duration(sl.end.load(std::memory_order_relaxed) - ticks(snap))).count();
      if (wall - cpu >= std::chrono::duration_cast<std::chrono::nanoseconds>(kStallSlack).count()) return true;
    }
    return false;
#else
    // No per-thread CPU clocks: a wait much longer than the caller's own share stands for a preempted worker.
    return Clock::now() - w0 > own + kStallSlack;
#endif
  }

  // LOWBIT_POOL_ADAPT: "0" pins the split width at the thread count, "1" (the default) adapts it. Read once, at the
  // first start; poolConfig changes it later.
  void read_env() {
    if (env_read) return;
    if (const char* env = std::getenv("LOWBIT_POOL_ADAPT"); env && *env) {
      if (std::string(env) != "0" && std::string(env) != "1")
        throw std::invalid_argument(std::string("LOWBIT_POOL_ADAPT must be 0 or 1, got '") + env + "'");
      adaptive = env[0] == '1';
    }
    env_read = true;
  }

  void start(int n) {
    stop = false;
    const uint32_t g = gen_of(state.load());
    slots.reset(new Slot[size_t(n)]);
    nslots = n;
    snap_cpu.assign(size_t(n), -1);
    for (int i = 1; i < n; i++) workers.emplace_back([this, g, i] { worker(g, i); });
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
    if (slots) {
      for (int w = 1; w < nslots; w++) {
        old_worker_chunks += slots[size_t(w)].chunks.load();
        old_worker_errors += slots[size_t(w)].errors.load();
      }
    }
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
    if (!p.started.load()) {
      p.read_env();
      p.start(default_threads());
    }
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
  p.read_env();
  p.shutdown();
  p.start(n);
}

int pool_threads() { return pool().threads(); }

int pool_width() {
  Pool& p = pool();
  int w = p.width.load(std::memory_order_relaxed);
  const int t = p.threads();
  if (!p.adaptive.load(std::memory_order_relaxed)) return t;
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
    if (nchunks > 0) p.caller_chunks.fetch_add(uint64_t(nchunks), std::memory_order_relaxed);
    for (int i = 0; i < nchunks; i++) fn(ctx, i);
    return;
  }
  p.jobs++;
  p.fn.store(fn, std::memory_order_relaxed);
  p.ctx.store(ctx, std::memory_order_relaxed);
  p.done.store(0, std::memory_order_relaxed);
  const uint64_t s = pack(++p.gen, nchunks, 0);
  p.state.store(s);  // seq_cst: publishes fn/ctx/done and pairs with the sleepers increment in worker()
  if (p.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> g(p.m); }
    p.cv.notify_all();
  }
  if (p.worker_first.load(std::memory_order_relaxed)) {  // debug: wait (bounded) until a worker claimed a chunk
    Backoff b(kCallerSpin, kCallerYield);
    const auto limit = Clock::now() + kWorkerFirstLimit;
    while (next_of(p.state.load(std::memory_order_acquire)) == 0 && Clock::now() < limit)
      if (!b.pause()) std::this_thread::sleep_for(microseconds(50));
  }
  const auto t0 = Clock::now();
  p.work(p.state.load(std::memory_order_acquire), 0);
  const bool stalled = p.wait_done(nchunks, Clock::now() - t0);
  if (stalled) {
    p.stalls++;
    if (p.adaptive.load(std::memory_order_relaxed)) p.on_stall(Clock::now());
  }
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> g(p.err_m);
    std::swap(e, p.err);
  }
  if (e) std::rethrow_exception(e);
}

PoolStats pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.busy);
  PoolStats st;
  st.jobs = p.jobs;
  st.stalls = p.stalls;
  st.chunks_on_caller = p.caller_chunks.load();
  st.chunks_on_workers = p.old_worker_chunks;
  st.errors_on_workers = p.old_worker_errors;
  for (int w = 1; w < p.threads(); w++) {
    st.chunks_on_workers += p.slots[size_t(w)].chunks.load();
    st.errors_on_workers += p.slots[size_t(w)].errors.load();
  }
  return st;
}

PoolConfig pool_config() {
  Pool& p = pool();
  return {p.adaptive.load(), p.worker_first.load()};
}

void pool_set_config(const PoolConfig& c) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.busy);
  p.adaptive = c.adaptive;
  p.worker_first = c.worker_first;
  if (!c.adaptive) {  // pinned: every op splits over every thread from now on
    p.width = p.threads();
    p.backoff = Clock::duration(0);
    p.grow_at = 0;
  }
}

}  // namespace lowbit
