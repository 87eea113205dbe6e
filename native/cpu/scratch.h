// Grow-only scratch buffers. Drivers that need temporary space (the bf16 GEMV's de-interleaved x, the GEMM packing
// panels, attention scores, RoPE tables) keep one thread_local Scratch per purpose, so a decode loop allocates
// nothing once its first token has run. Growth is geometric (attention scores grow by one key per token) and is
// counted, so tests can check that steady-state calls do not allocate (scratchStats in addon.cc).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

namespace lowbit {

struct ScratchStats {
  uint64_t grows;  // allocations made by any Scratch since the process started
  uint64_t bytes;  // bytes held by live Scratch buffers, all threads together
};

inline std::atomic<uint64_t> g_scratch_grows{0};
inline std::atomic<uint64_t> g_scratch_bytes{0};

inline ScratchStats scratch_stats() { return {g_scratch_grows.load(), g_scratch_bytes.load()}; }

template <class T>
class Scratch {
  static_assert(std::is_trivial<T>::value, "Scratch holds plain values (allocated raw, never constructed)");
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { g_scratch_bytes.fetch_sub(cap_ * sizeof(T)); }

  // At least n elements, contents unspecified. Throws std::bad_alloc (the addon turns it into a JS RangeError).
  T* get(size_t n) {
    if (n > cap_) grow(n);
    return data_.get();
  }

 private:
  void grow(size_t n) {
    const size_t want = n < cap_ + cap_ / 2 ? cap_ + cap_ / 2 : n;
    data_.reset();  // free first: the old contents are not needed, and peak memory stays at one buffer
    g_scratch_bytes.fetch_sub(cap_ * sizeof(T));
    cap_ = 0;
    // 64-byte aligned: kernels load 32- and 64-byte vectors from these buffers, and a vector split across two cache
    // lines costs a second access (int16 x from a 16-byte aligned buffer split every other load of the NF4 GEMV).
    void* p = std::aligned_alloc(64, (want * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    data_.reset(static_cast<T*>(p));
    cap_ = want;
    g_scratch_bytes.fetch_add(cap_ * sizeof(T));
    g_scratch_grows.fetch_add(1);
  }

  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t cap_ = 0;
};

}  // namespace lowbit
