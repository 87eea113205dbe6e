// A persistent thread pool that degrades gracefully when other processes hold the cores.
//  - Chunks are claimed, not assigned: the calling (JS) thread runs chunks too and takes any chunk that no worker
//    has started, so a descheduled worker costs nothing unless it was preempted in the middle of a chunk.
//  - Every wait (an idle worker waiting for the next job, the caller waiting for chunks in flight) spins briefly,
//    then yields the CPU, then sleeps on a condition variable. Decode issues ~10 small ops per layer, so the short
//    spin keeps wake-ups off the fast path on an idle machine; the yield and the sleep hand the core back when it
//    is contended.
//  - The split width adapts: when the caller, done with its own share, waits on a chunk whose thread was off its
//    core for 250 µs or more meanwhile (its wall time against its CPU time, read with pthread_getcpuclockid once the
//    wait passes 50 µs), that thread was preempted, so later splits use half as many threads (and leave the other
//    workers asleep). After a backoff (10 ms, doubling on each repeat up to 1 s) the width doubles again to probe.
//    Chunks of unequal cost or a worker slow to wake are not stalls, so on an idle machine every op uses every
//    thread. LOWBIT_POOL_ADAPT=0 (read at the first start) or pool_set_config pins the width at the thread count.
//  - An exception thrown by a chunk on any thread is caught there and rethrown on the caller once every chunk has
//    finished (chunks may point into the caller's stack), so a kernel's std::bad_alloc becomes a JS error.
#pragma once
#include <algorithm>
#include <cstdint>

namespace lowbit {

void pool_set_threads(int n);  // n >= 1; rebuilds the workers
int pool_threads();
// Threads parallel_for splits over now: pool_threads(), or fewer while the pool backs off after stalls (see above).
int pool_width();
// The thread count the pool starts with: LOWBIT_THREADS when set (a positive integer, else std::invalid_argument),
// otherwise the physical cores this process may run on (affinity mask and cgroup CPU quota), at most 16.
int default_threads();
int physical_cores();  // distinct cores in this process's affinity mask (hardware threads where unknown)

// What the pool did since the process started (poolStats in the addon; tests read it): split jobs, chunks run on
// workers and on the calling thread (inline runs included), exceptions thrown on workers, stalls detected.
struct PoolStats {
  uint64_t jobs = 0, chunks_on_workers = 0, chunks_on_caller = 0, errors_on_workers = 0, stalls = 0;
};
PoolStats pool_stats();
// adaptive: the width follows stalls (default; LOWBIT_POOL_ADAPT=0 starts it off). worker_first (a test hook): the
// caller waits, up to 2 s, until a worker has claimed a chunk of each split job before it takes any itself, so a
// test can make an op's chunk run on a worker thread.
struct PoolConfig {
  bool adaptive = true, worker_first = false;
};
PoolConfig pool_config();
void pool_set_config(const PoolConfig& c);

// Runs fn(ctx, i) for i in [0, nchunks), each chunk exactly once on some pool thread (the caller included); returns
// when all are done. Rethrows the first exception a chunk threw.
void pool_run(int nchunks, void (*fn)(void*, int), void* ctx);

// Split of [0, n) into t contiguous ranges (edges aligned to `align`), fn(begin, end) on each, spread over the pool.
template <class F>
void parallel_for_n(int64_t t, int64_t n, F&& fn, int64_t align = 1) {
  if (n <= 0) return;
  if (t <= 1) { fn(int64_t(0), n); return; }
  struct Ctx { F* f; int64_t n, t, align; } ctx{&fn, n, t, align};
  pool_run(int(t), [](void* p, int i) {
    Ctx* c = static_cast<Ctx*>(p);
    auto edge = [c](int64_t j) {
      int64_t units = (c->n + c->align - 1) / c->align;
      return std::min(c->n, (units * j / c->t) * c->align);
    };
    int64_t b = edge(i), e = edge(i + 1);
    if (b < e) (*c->f)(b, e);
  }, &ctx);
}

// Static split of [0, n) into at most pool_width() contiguous ranges of at least `grain` items (aligned to
// `align`), fn(begin, end) on each. Every op computes each output element the same way whatever the split, so
// results do not depend on the thread count or on which thread runs a range.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn, int64_t align = 1) {
  if (n <= 0) return;
  const int64_t t = std::min<int64_t>(pool_width(), std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  parallel_for_n(t, n, static_cast<F&&>(fn), align);
}

}  // namespace lowbit
