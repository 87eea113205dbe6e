// A persistent thread pool. Workers spin briefly after each job (decode issues ~10 small ops per layer, and a
// futex wake per op would cost more than many of the ops), then sleep on a condition variable. The calling (JS)
// thread always runs chunk 0 itself, so one thread means no synchronisation at all.
#pragma once
#include <algorithm>
#include <cstdint>

namespace lowbit {

void pool_set_threads(int n);   // n >= 1; rebuilds the workers
int pool_threads();
// Runs fn(ctx, i) for i in [0, nchunks) with nchunks <= pool_threads(); chunk i on thread i; returns when all are done.
void pool_run(int nchunks, void (*fn)(void*, int), void* ctx);

// Static split of [0, n) into at most pool_threads() contiguous ranges of at least `grain` items (aligned to
// `align`), fn(begin, end) on each.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn, int64_t align = 1) {
  if (n <= 0) return;
  int64_t t = std::min<int64_t>(pool_threads(), std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
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

}  // namespace lowbit
