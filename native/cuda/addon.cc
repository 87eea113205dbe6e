// lowbit's CUDA addon: device memory (alloc / upload / download / copy / synchronize) and the op launchers, for
// src/backend/cuda. Device addresses cross into JavaScript as plain numbers (CUDA's 48-bit virtual addresses are
// exact in a double); the allocation itself is an External whose finalizer frees it, so memory lives as long as
// some tensor holds its storage. TypeScript checks shapes and bounds before any call (src/backend/cuda/index.ts);
// this file checks argument types and every CUDA call. Memory is stream-ordered (cudaMallocAsync on the addon's one
// stream), so an allocation or a free never waits for the device.
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_common.h"

namespace lowbit_cuda {

namespace {

struct State {
  bool ready = false;
  // While a decode step is captured into a graph, frees of collected tensors wait here (a free queued on the
  // capturing stream would become part of the graph).
  bool capturing = false;
  std::vector<void*> deferred_frees;
  cudaStream_t s = nullptr;
  void* scratch[10] = {};
  size_t scratch_bytes[10] = {};
  std::vector<void*> retired;  // outgrown scratch buffers (see scratch())
};
State& st() {
  static State s;
  return s;
}

void init_device() {
  State& s = st();
  if (s.ready) return;
  int n = 0;
  cuda_check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n == 0) throw CudaError("no CUDA device");
  cuda_check(cudaSetDevice(0), "cudaSetDevice");
  cuda_check(cudaStreamCreateWithFlags(&s.s, cudaStreamNonBlocking), "cudaStreamCreate");
  // Keep freed blocks in the pool (no trimming at every synchronize): decode allocates the same sizes each step.
  cudaMemPool_t pool;
  cuda_check(cudaDeviceGetDefaultMemPool(&pool, 0), "cudaDeviceGetDefaultMemPool");
  uint64_t keep = UINT64_MAX;
  cuda_check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  s.ready = true;
}

double num(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}
int64_t integer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = num(info, i, name);
  if (!(v >= 0 && v <= 9007199254740991.0) || v != double(int64_t(v)))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be a non-negative integer, got " + std::to_string(v));
  return int64_t(v);
}
template <class T>
T* ptr(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return reinterpret_cast<T*>(uintptr_t(integer(info, i, name)));
}

struct Alloc {
  void* p;
  size_t bytes;
};

// Device bytes are reported to V8 as external memory, so that the collector runs, and frees the tensors nobody
// released, as device memory fills up. LOWBIT_CUDA_V8_EXTERNAL=0 leaves that out: on the H200, reporting every
// allocation cost 4 collections and 8 ms of host time per 512-token prefill of the 8B shape (28.0 against 20.1 ms a
// prefill; docs/cuda.md), but without it only the host heap's own collections free what the program did not release.
bool tell_v8() {
  static const bool on = [] { const char* e = getenv("LOWBIT_CUDA_V8_EXTERNAL"); return !(e && e[0] == '0'); }();
  return on;
}

}  // namespace

cudaStream_t stream() {
  init_device();
  return st().s;
}

// A slot that must grow gets a new buffer of at least twice the old size; the old one is kept, not freed: a captured
// decode graph may hold its address and replay it later. Doubling keeps the kept bytes below the live ones.
void* scratch(int slot, size_t bytes) {
  State& s = st();
  if (bytes > s.scratch_bytes[slot]) {
    if (s.capturing) throw CudaError("scratch slot " + std::to_string(slot) + " would grow during a graph capture");
    if (s.scratch[slot]) s.retired.push_back(s.scratch[slot]);
    const size_t want = bytes > 2 * s.scratch_bytes[slot] ? bytes : 2 * s.scratch_bytes[slot];
    s.scratch[slot] = nullptr;
    s.scratch_bytes[slot] = 0;
    cuda_check(cudaMallocAsync(&s.scratch[slot], want, stream()), "cudaMallocAsync (scratch)");
    s.scratch_bytes[slot] = want;
  }
  return s.scratch[slot];
}

void* scratch_zeroed(int slot, size_t bytes) {
  const size_t had = st().scratch_bytes[slot];
  void* p = scratch(slot, bytes);
  if (st().scratch_bytes[slot] != had) cuda_check(cudaMemsetAsync(p, 0, st().scratch_bytes[slot], stream()), "cudaMemsetAsync (scratch)");
  return p;
}

namespace {

#define LOWBIT_TRY try {
#define LOWBIT_CATCH(env)                                                          \
  }                                                                                \
  catch (const Napi::Error&) { throw; }                                            \
  catch (const std::exception& e) { throw Napi::Error::New(env, e.what()); }

// probe() → { ok, why, name, totalBytes, freeBytes, multiprocessors, computeCapability, l2Bytes, cublas, cublasWhy }
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    o.Set("ok", false);
    o.Set("why", e != cudaSuccess ? std::string("cudaGetDeviceCount: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")" : "no CUDA device");
    return o;
  }
  try {
    init_device();
    cudaDeviceProp p;
    cuda_check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
    size_t fr = 0, tot = 0;
    cuda_check(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    std::string why;
    const bool cb = cublas_available(&why);
    o.Set("ok", true);
    o.Set("name", p.name);
    o.Set("totalBytes", double(tot));
    o.Set("freeBytes", double(fr));
    o.Set("multiprocessors", p.multiProcessorCount);
    o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
    o.Set("l2Bytes", p.l2CacheSize);
    o.Set("cublas", cb);
    if (!cb) o.Set("cublasWhy", why);
  } catch (const std::exception& ex) {
    o.Set("ok", false);
    o.Set("why", ex.what());
  }
  return o;
}

// alloc(bytes, zero) → { handle, ptr }: device memory, zeroed when asked; freed when handle is collected.
Napi::Value AllocFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t bytes = integer(info, 0, "bytes");
  const bool zero = info.Length() > 1 && info[1].ToBoolean();
  LOWBIT_TRY
  void* p = nullptr;
  const size_t nb = size_t(bytes > 0 ? bytes : 1);
  cuda_check(cudaMallocAsync(&p, nb, stream()), ("cudaMallocAsync of " + std::to_string(bytes) + " bytes").c_str());
  if (zero) cuda_check(cudaMemsetAsync(p, 0, nb, stream()), "cudaMemsetAsync");
  if (tell_v8()) Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(nb));
  auto ext = Napi::External<Alloc>::New(env, new Alloc{p, nb}, [](Napi::Env env, Alloc* a) {
    // A failed free at collection time has no caller to report to; the next checked call reports a broken context.
    if (a->p) {
      if (st().capturing) st().deferred_frees.push_back(a->p);
      else cudaFreeAsync(a->p, stream());
      if (tell_v8()) Napi::MemoryManagement::AdjustExternalMemory(env, -int64_t(a->bytes));
    }
    delete a;
  });
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", ext);
  o.Set("ptr", double(uintptr_t(p)));
  return o;
  LOWBIT_CATCH(env)
}

// free(handle): give an allocation back now (queued after the work before it) instead of at collection; later
// use of its address is the caller's error. Idempotent.
Napi::Value Free(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "free takes an allocation handle");
  Alloc* a = info[0].As<Napi::External<Alloc>>().Data();
  if (a->p) {
    LOWBIT_TRY
    if (st().capturing) throw CudaError("free during a graph capture");
    cuda_check(cudaFreeAsync(a->p, stream()), "cudaFreeAsync");
    if (tell_v8()) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -int64_t(a->bytes));
    a->p = nullptr;
    LOWBIT_CATCH(info.Env())
  }
  return info.Env().Undefined();
}

std::pair<uint8_t*, size_t> bytes_of(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a typed array");
  auto t = info[i].As<Napi::TypedArray>();
  auto buf = t.ArrayBuffer();
  return {static_cast<uint8_t*>(buf.Data()) + t.ByteOffset(), t.ByteLength()};
}

// upload(ptr, typedArray): host → device, queued (the source is staged before this returns).
Napi::Value Upload(const Napi::CallbackInfo& info) {
  void* d = ptr<void>(info, 0, "ptr");
  auto [h, n] = bytes_of(info, 1, "src");
  LOWBIT_TRY
  if (n) cuda_check(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (upload)");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// download(ptr, typedArray): device → host after all queued work; waits.
Napi::Value Download(const Napi::CallbackInfo& info) {
  const void* d = ptr<const void>(info, 0, "ptr");
  auto [h, n] = bytes_of(info, 1, "dst");
  LOWBIT_TRY
  if (n) cuda_check(cudaMemcpyAsync(h, d, n, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (download)");
  cuda_check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (download)");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// copy(dst, src, bytes): device → device, queued.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  void* d = ptr<void>(info, 0, "dst");
  const void* s = ptr<const void>(info, 1, "src");
  const int64_t n = integer(info, 2, "bytes");
  LOWBIT_TRY
  if (n) cuda_check(cudaMemcpyAsync(d, s, size_t(n), cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync (copy)");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Value Memset0(const Napi::CallbackInfo& info) {
  void* d = ptr<void>(info, 0, "ptr");
  const int64_t n = integer(info, 1, "bytes");
  LOWBIT_TRY
  if (n) cuda_check(cudaMemsetAsync(d, 0, size_t(n), stream()), "cudaMemsetAsync");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  LOWBIT_TRY
  cuda_check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  cuda_check(cudaGetLastError(), "a kernel before synchronize");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t fr = 0, tot = 0;
  LOWBIT_TRY
  init_device();
  cuda_check(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
  LOWBIT_CATCH(env)
  Napi::Object o = Napi::Object::New(env);
  o.Set("freeBytes", double(fr));
  o.Set("totalBytes", double(tot));
  return o;
}

int wtype(const Napi::CallbackInfo& info, size_t i) {
  const int64_t wt = integer(info, i, "wtype");
  if (wt > 2) throw Napi::RangeError::New(info.Env(), "wtype must be 0 (F32), 1 (BF16) or 2 (F16)");
  return int(wt);
}

// matmul(y, x, w, wtype, bias|0, M, N, K)
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const void* w = ptr<const void>(info, 2, "w");
  const int wt = wtype(info, 3);
  const float* b = ptr<const float>(info, 4, "bias");
  const int64_t M = integer(info, 5, "M"), N = integer(info, 6, "N"), K = integer(info, 7, "K");
  LOWBIT_TRY
  matmul(y, x, w, wt, b, M, N, K);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// matmulMany(x, wtype, M, K, [y, w, bias|0, N] × 1-3): weights that read the same x: one GEMV launch (M ≤ 8), or x
// rounded once and a cuBLAS GEMM each.
Napi::Value MatmulMany(const Napi::CallbackInfo& info) {
  const float* x = ptr<const float>(info, 0, "x");
  const int wt = wtype(info, 1);
  const int64_t M = integer(info, 2, "M"), K = integer(info, 3, "K");
  if (M < 1) throw Napi::RangeError::New(info.Env(), "matmulMany takes at least 1 row of x");
  const size_t n = (info.Length() - 4) / 4;
  if (n < 1 || n > 3 || info.Length() != 4 + 4 * n) throw Napi::TypeError::New(info.Env(), "matmulMany takes 1 to 3 (y, w, bias, N) groups");
  float* ys[3];
  const void* ws[3];
  const float* bs[3];
  int64_t ns[3];
  for (size_t i = 0; i < n; i++) {
    ys[i] = ptr<float>(info, 4 + 4 * i, "y");
    ws[i] = ptr<const void>(info, 5 + 4 * i, "w");
    bs[i] = ptr<const float>(info, 6 + 4 * i, "bias");
    ns[i] = integer(info, 7 + 4 * i, "N");
  }
  LOWBIT_TRY
  matmul_multi(ys, ws, ns, bs, int(n), x, wt, M, K);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// qgRepack(out, src, mode, bits, perm|0, N, K, nc): a GPTQ/AWQ checkpoint tensor → the kernels' chunk layout.
Napi::Value QgRepack(const Napi::CallbackInfo& info) {
  uint8_t* out = ptr<uint8_t>(info, 0, "out");
  const void* src = ptr<const void>(info, 1, "src");
  const int64_t mode = integer(info, 2, "mode"), bits = integer(info, 3, "bits");
  const int32_t* perm = ptr<const int32_t>(info, 4, "perm");
  const int64_t N = integer(info, 5, "N"), K = integer(info, 6, "K"), nc = integer(info, 7, "nc");
  if (mode < 0 || mode > 2) throw Napi::RangeError::New(info.Env(), "qgRepack: mode must be 0 (GPTQ), 1 (AWQ GEMM) or 2 (AWQ GEMV)");
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) throw Napi::RangeError::New(info.Env(), "qgRepack: bits must be 2, 3, 4 or 8");
  if (mode > 0 && bits != 4) throw Napi::RangeError::New(info.Env(), "qgRepack: AWQ holds 4-bit codes");
  if (nc * 64 < K) throw Napi::RangeError::New(info.Env(), "qgRepack: nc·64 must cover K");
  LOWBIT_TRY
  qg_repack(out, src, int(mode), int(bits), perm, N, K, int(nc));
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// qgMatmul(x, M, bits, K, nc, G, nG, perm|0, [y, codes, scales, zeros, bias|0, N] × 1-3); qgMatmulSiluMul: the same
// with gate and up (2 groups, one y): y = silu(x·gateᵀ)·(x·upᵀ).
Napi::Value QgMatmulImpl(const Napi::CallbackInfo& info, bool silu) {
  QgCall q;
  q.silu = silu;
  const float* x = ptr<const float>(info, 0, "x");
  const int64_t M = integer(info, 1, "M"), bits = integer(info, 2, "bits");
  q.K = integer(info, 3, "K");
  const int64_t nc = integer(info, 4, "nc"), G = integer(info, 5, "G"), nG = integer(info, 6, "nG");
  q.perm = ptr<const int32_t>(info, 7, "perm");
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) throw Napi::RangeError::New(info.Env(), "qgMatmul: bits must be 2, 3, 4 or 8");
  if (M < 0 || nc * 64 < q.K || nc * 64 - q.K >= 64 || G < 32 || G % 32 != 0 || nG < 1 || (nG - 1) * G >= nc * 64)
    throw Napi::RangeError::New(info.Env(), "qgMatmul: inconsistent K / nc / G / nG");
  const size_t n = (info.Length() - 8) / 6;
  if (n < 1 || n > 3 || info.Length() != 8 + 6 * n) throw Napi::TypeError::New(info.Env(), "qgMatmul takes 1 to 3 (y, codes, scales, zeros, bias, N) groups");
  q.bits = int(bits);
  q.nc = int(nc);
  q.G = int(G);
  q.nG = int(nG);
  q.nOut = int(n);
  for (size_t i = 0; i < n; i++) {
    q.y[i] = ptr<float>(info, 8 + 6 * i, "y");
    q.codes[i] = ptr<const uint8_t>(info, 9 + 6 * i, "codes");
    q.scales[i] = ptr<const uint16_t>(info, 10 + 6 * i, "scales");
    q.zeros[i] = ptr<const uint8_t>(info, 11 + 6 * i, "zeros");
    q.bias[i] = ptr<const float>(info, 12 + 6 * i, "bias");
    q.n[i] = integer(info, 13 + 6 * i, "N");
  }
  LOWBIT_TRY
  qg_matmul(q, x, M);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
Napi::Value QgMatmul(const Napi::CallbackInfo& info) { return QgMatmulImpl(info, false); }
Napi::Value QgMatmulSiluMul(const Napi::CallbackInfo& info) { return QgMatmulImpl(info, true); }

// b4Matmul(x, M, K, blocksize, wtype, lut, [y, packed, absmax, bias|0, N] × 1-3): NF4/FP4 weights (bnb4.cu).
Napi::Value B4Matmul(const Napi::CallbackInfo& info) {
  B4Call q;
  const float* x = ptr<const float>(info, 0, "x");
  const int64_t M = integer(info, 1, "M");
  q.K = integer(info, 2, "K");
  const int64_t bs = integer(info, 3, "blocksize");
  q.wt = wtype(info, 4);
  q.lut = ptr<const float>(info, 5, "lut");
  if (M < 0 || bs < 1 || q.lut == nullptr) throw Napi::RangeError::New(info.Env(), "b4Matmul: bad M, block size or table");
  const size_t n = (info.Length() - 6) / 5;
  if (n < 1 || n > 3 || info.Length() != 6 + 5 * n) throw Napi::TypeError::New(info.Env(), "b4Matmul takes 1 to 3 (y, packed, absmax, bias, N) groups");
  q.blocksize = int(bs);
  q.nOut = int(n);
  for (size_t i = 0; i < n; i++) {
    q.y[i] = ptr<float>(info, 6 + 5 * i, "y");
    q.packed[i] = ptr<const uint8_t>(info, 7 + 5 * i, "packed");
    q.absmax[i] = ptr<const float>(info, 8 + 5 * i, "absmax");
    q.bias[i] = ptr<const float>(info, 9 + 5 * i, "bias");
    q.n[i] = integer(info, 10 + 5 * i, "N");
  }
  LOWBIT_TRY
  b4_matmul(q, x, M);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// int8Matmul(y, x, CB, SCB, bias|0, M, N, K, threshold): LLM.int8 weights (int8.cu).
Napi::Value Int8Matmul(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const int8_t* CB = ptr<const int8_t>(info, 2, "CB");
  const float* SCB = ptr<const float>(info, 3, "SCB");
  const float* b = ptr<const float>(info, 4, "bias");
  const int64_t M = integer(info, 5, "M"), N = integer(info, 6, "N"), K = integer(info, 7, "K");
  const float threshold = float(num(info, 8, "threshold"));
  if (M < 0 || N < 0 || K < 1 || !(threshold >= 0.f)) throw Napi::RangeError::New(info.Env(), "int8Matmul: bad M, N, K or threshold");
  LOWBIT_TRY
  int8_matmul(y, x, CB, SCB, b, M, N, K, threshold);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// matmulSiluMul(x, wtype, M, K, y, wGate, wUp, bGate|0, bUp|0, N): gate/up GEMV (M ≤ 8) with SiLU·mul in the epilogue,
// or x rounded once, two cuBLAS GEMMs and silu_mul.
Napi::Value MatmulSiluMul(const Napi::CallbackInfo& info) {
  const float* x = ptr<const float>(info, 0, "x");
  const int wt = wtype(info, 1);
  const int64_t M = integer(info, 2, "M"), K = integer(info, 3, "K");
  float* y = ptr<float>(info, 4, "y");
  const void* wg = ptr<const void>(info, 5, "wGate");
  const void* wu = ptr<const void>(info, 6, "wUp");
  const float* bg = ptr<const float>(info, 7, "bGate");
  const float* bu = ptr<const float>(info, 8, "bUp");
  const int64_t N = integer(info, 9, "N");
  if (M < 1) throw Napi::RangeError::New(info.Env(), "matmulSiluMul takes at least 1 row of x");
  LOWBIT_TRY
  matmul_silu(y, x, wg, wu, bg, bu, wt, M, N, K);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const float* w = ptr<const float>(info, 2, "w");
  const int64_t rows = integer(info, 3, "rows"), D = integer(info, 4, "dim");
  const float eps = float(num(info, 5, "eps"));
  LOWBIT_TRY
  rmsnorm(y, x, w, rows, D, eps);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// addRmsnorm(out, x, y, w, rows, dim, eps): x += y, out = rmsnorm(x)·w.
Napi::Value AddRmsnorm(const Napi::CallbackInfo& info) {
  float* o = ptr<float>(info, 0, "out");
  float* x = ptr<float>(info, 1, "x");
  const float* y = ptr<const float>(info, 2, "y");
  const float* w = ptr<const float>(info, 3, "w");
  const int64_t rows = integer(info, 4, "rows"), D = integer(info, 5, "dim");
  const float eps = float(num(info, 6, "eps"));
  LOWBIT_TRY
  add_rmsnorm(o, x, y, w, rows, D, eps);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Value Layernorm(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const float* w = ptr<const float>(info, 2, "w");
  const float* b = ptr<const float>(info, 3, "b");
  const int64_t rows = integer(info, 4, "rows"), D = integer(info, 5, "dim");
  const float eps = float(num(info, 6, "eps"));
  LOWBIT_TRY
  layernorm(y, x, w, b, rows, D, eps);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// rope(x, positions, invFreq, rows, nHeads, hd)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  float* x = ptr<float>(info, 0, "x");
  const int32_t* p = ptr<const int32_t>(info, 1, "positions");
  const float* f = ptr<const float>(info, 2, "invFreq");
  const int64_t rows = integer(info, 3, "rows"), nH = integer(info, 4, "nHeads"), hd = integer(info, 5, "hd");
  LOWBIT_TRY
  rope(x, p, f, rows, int(nH), int(hd));
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// attention(out, q, k, v, B, T, H, nKV, hd, S, pastLen, pastLenDev|0, keyMask|0, maskStride, scale, window)
Napi::Value Attention(const Napi::CallbackInfo& info) {
  float* o = ptr<float>(info, 0, "out");
  const float* q = ptr<const float>(info, 1, "q");
  const float* k = ptr<const float>(info, 2, "k");
  const float* v = ptr<const float>(info, 3, "v");
  const int64_t B = integer(info, 4, "B"), T = integer(info, 5, "T"), H = integer(info, 6, "H"), nKV = integer(info, 7, "nKV");
  const int64_t hd = integer(info, 8, "hd"), S = integer(info, 9, "S"), past = integer(info, 10, "pastLen");
  const int64_t* pastDev = ptr<const int64_t>(info, 11, "pastLenDev");
  const uint8_t* mask = ptr<const uint8_t>(info, 12, "keyMask");
  const int64_t stride = integer(info, 13, "maskStride");
  const float scale = float(num(info, 14, "scale"));
  const int64_t window = integer(info, 15, "window");
  LOWBIT_TRY
  attention(o, q, k, v, int(B), int(T), int(H), int(nKV), int(hd), S, past, pastDev, mask, stride, scale, window);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// siluMul / add: (y, a, b, n); relu: (y, x, n)
Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* g = ptr<const float>(info, 1, "gate");
  const float* u = ptr<const float>(info, 2, "up");
  const int64_t n = integer(info, 3, "n");
  LOWBIT_TRY
  silu_mul(y, g, u, n);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
Napi::Value Add(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* a = ptr<const float>(info, 1, "a");
  const float* b = ptr<const float>(info, 2, "b");
  const int64_t n = integer(info, 3, "n");
  LOWBIT_TRY
  add(y, a, b, n);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
Napi::Value Relu(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const int64_t n = integer(info, 2, "n");
  LOWBIT_TRY
  relu(y, x, n);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const float* x = ptr<const float>(info, 1, "x");
  const int64_t rows = integer(info, 2, "rows"), D = integer(info, 3, "cols");
  LOWBIT_TRY
  softmax(y, x, rows, D);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// embedding(y, table, wtype, ids, n, D)
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  float* y = ptr<float>(info, 0, "y");
  const void* t = ptr<const void>(info, 1, "table");
  const int wt = wtype(info, 2);
  const int32_t* ids = ptr<const int32_t>(info, 3, "ids");
  const int64_t n = integer(info, 4, "n"), D = integer(info, 5, "dim");
  LOWBIT_TRY
  embedding(y, t, wt, ids, n, D);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// argmax(out int32 [rows], x, rows, D)
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  int32_t* o = ptr<int32_t>(info, 0, "out");
  const float* x = ptr<const float>(info, 1, "x");
  const int64_t rows = integer(info, 2, "rows"), D = integer(info, 3, "cols");
  LOWBIT_TRY
  argmax_rows(o, x, rows, D);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// sample(out int32 [rows], x, meta int32 (sample.cu's layout), rows, V, temperature, topK, topP, minP, penalty, doSample)
Napi::Value Sample(const Napi::CallbackInfo& info) {
  int32_t* o = ptr<int32_t>(info, 0, "out");
  const float* x = ptr<const float>(info, 1, "x");
  const int32_t* meta = ptr<const int32_t>(info, 2, "meta");
  const int64_t rows = integer(info, 3, "rows"), V = integer(info, 4, "cols");
  const double temperature = num(info, 5, "temperature"), topP = num(info, 7, "topP"), minP = num(info, 8, "minP"), penalty = num(info, 9, "penalty");
  const int64_t topK = integer(info, 6, "topK");
  const bool doSample = info[10].ToBoolean();
  if (V > INT32_MAX || topK > INT32_MAX) throw Napi::RangeError::New(info.Env(), "sample: vocabulary or top_k above the int range");
  LOWBIT_TRY
  sample_rows(o, x, meta, rows, V, temperature, int(topK), topP, minP, penalty, doSample);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// train(op, …): the training ops of train.cu and gemm_rm; pointers as numbers (0 = null), sizes as integers.
//   rmsnormFwd(y, rstd, x, w, rows, D, eps)            rmsnormBwd(dx, dw|0, dy, w, x, rstd, rows, D)
//   layernormFwd(y, xhat, rstd, x, w, b, rows, D, eps) layernormBwd(dx, dw|0, db|0, dy, w, xhat, rstd, rows, D)
//   siluMulBwd(dg, du, dy, g, u, n)    reluBwd(dx, dy, x, n)    causalLmLoss(dl, nll, logits, targets, rows, V, div)
//   attentionFwd(o, P, q, k, v, keyMask|0, B, T, H, nKV, hd, scale, window)
//   attentionBwd(dq, dk, dv, P, dO, q, k, v, B, T, H, nKV, hd, scale)
//   gemm(C, A, B, btype, M, N, K, ta, tb, accumulate, alpha)
//   adamw(p, g, m, v, n, lr, beta1, beta2, eps, decay, stepSize, bc2s, clip)   sumsq(partials f64 [64], g, n)
//   scaleCopy(dst, src, n, s)    zero(ptr, bytes)
//   dropout(xd, drop, x, n, p, seed)    mulAdd(y, a, b, n)
//   b4Dequant(w, wtype, packed, absmax, lut, n, blocksize)    int8Dequant(w, CB, SCB, N, K)
//   qgDequant(w, bits, K, nc, G, nG, perm|0, codes, scales, zeros, N)
Napi::Value Train(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "train: the op name comes first");
  const std::string op = info[0].As<Napi::String>();
  auto P = [&](size_t i) { return ptr<float>(info, i, "pointer"); };
  auto I = [&](size_t i) { return integer(info, i, "size"); };
  auto F = [&](size_t i) { return float(num(info, i, "value")); };
  LOWBIT_TRY
  if (op == "rmsnormFwd") train_rmsnorm_fwd(P(1), P(2), P(3), P(4), I(5), I(6), F(7));
  else if (op == "rmsnormBwd") train_rmsnorm_bwd(P(1), P(2), P(3), P(4), P(5), P(6), I(7), I(8));
  else if (op == "layernormFwd") train_layernorm_fwd(P(1), P(2), P(3), P(4), P(5), P(6), I(7), I(8), F(9));
  else if (op == "layernormBwd") train_layernorm_bwd(P(1), P(2), P(3), P(4), P(5), P(6), P(7), I(8), I(9));
  else if (op == "siluMulBwd") train_silu_mul_bwd(P(1), P(2), P(3), P(4), P(5), I(6));
  else if (op == "reluBwd") train_relu_bwd(P(1), P(2), P(3), I(4));
  else if (op == "causalLmLoss") train_causal_lm_loss(P(1), P(2), P(3), ptr<const int32_t>(info, 4, "targets"), I(5), I(6), F(7));
  else if (op == "attentionFwd")
    train_attention_fwd(P(1), P(2), P(3), P(4), P(5), ptr<const uint8_t>(info, 6, "keyMask"), int(I(7)), int(I(8)), int(I(9)), int(I(10)),
                        int(I(11)), F(12), int(I(13)));
  else if (op == "attentionBwd")
    train_attention_bwd(P(1), P(2), P(3), P(4), P(5), P(6), P(7), P(8), int(I(9)), int(I(10)), int(I(11)), int(I(12)), int(I(13)), F(14));
  else if (op == "gemm")
    gemm_rm(P(1), P(2), ptr<const void>(info, 3, "B"), wtype(info, 4), I(5), I(6), I(7), info[8].ToBoolean(), info[9].ToBoolean(),
            info[10].ToBoolean(), F(11));
  else if (op == "adamw")
    train_adamw(P(1), P(2), P(3), P(4), I(5), num(info, 6, "lr"), num(info, 7, "beta1"), num(info, 8, "beta2"), num(info, 9, "eps"),
                num(info, 10, "decay"), num(info, 11, "stepSize"), num(info, 12, "bc2s"), num(info, 13, "clip"));
  else if (op == "sumsq") train_sumsq(ptr<double>(info, 1, "partials"), P(2), I(3));
  else if (op == "scaleCopy") train_scale_copy(P(1), P(2), I(3), num(info, 4, "scale"));
  else if (op == "zero") cuda_check(cudaMemsetAsync(ptr<void>(info, 1, "ptr"), 0, size_t(I(2)), stream()), "cudaMemsetAsync (zero)");
  else if (op == "dropout") train_dropout(P(1), P(2), P(3), I(4), F(5), uint32_t(I(6)));
  else if (op == "mulAdd") train_mul_add(P(1), P(2), P(3), I(4));
  else if (op == "b4Dequant")
    b4_dequant(ptr<void>(info, 1, "w"), wtype(info, 2), ptr<const uint8_t>(info, 3, "packed"), P(4), P(5), I(6), int(I(7)));
  else if (op == "int8Dequant") int8_dequant(P(1), ptr<const int8_t>(info, 2, "CB"), P(3), I(4), I(5));
  else if (op == "qgDequant") {
    QgCall q;
    q.bits = int(I(2));
    q.K = I(3);
    q.nc = int(I(4));
    q.G = int(I(5));
    q.nG = int(I(6));
    q.perm = ptr<const int32_t>(info, 7, "perm");
    q.codes[0] = ptr<const uint8_t>(info, 8, "codes");
    q.scales[0] = ptr<const uint16_t>(info, 9, "scales");
    q.zeros[0] = ptr<const uint8_t>(info, 10, "zeros");
    q.n[0] = I(11);
    qg_dequant(ptr<__half>(info, 1, "w"), q, 0);
  } else throw Napi::TypeError::New(info.Env(), "train: unknown op " + op);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// gptq(op, …): GPTQ on the device (gptq.cu); pointers as numbers (0 = null).
//   toF32(dst, src, wtype, n)    diag(out, H, K)    xtx(H, X, T, K, beta, alpha)
//   findParams(scale, zero, W, N, ld, c0, c1, bits, sym)    columns(dst, W, perm|0, dead|0, N, K)
//   prepare(U, A, X, fail, H, perm|0, diag, K)
//   quantBlock(W, N, K, i1, B, U, scales, zeros, colGroup, perm|0, bits, codes, deq, err, rowLoss)
//   blockUpdate(W, N, K, err, B, U, i1)    rtn(codes, deq, W, scales, zeros, colGroup, N, K, bits)
//   sub(d, a, b, n)    dot(partials f64 [64], a, b, n)
Napi::Value Gptq(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "gptq: the op name comes first");
  const std::string op = info[0].As<Napi::String>();
  auto P = [&](size_t i) { return ptr<float>(info, i, "pointer"); };
  auto I = [&](size_t i) { return integer(info, i, "size"); };
  auto I32 = [&](size_t i) { return ptr<int32_t>(info, i, "pointer"); };
  LOWBIT_TRY
  if (op == "toF32") gptq_to_f32(P(1), ptr<const void>(info, 2, "src"), wtype(info, 3), I(4));
  else if (op == "diag") gptq_diag(P(1), P(2), I(3));
  else if (op == "xtx") gptq_xtx(P(1), P(2), I(3), I(4), float(num(info, 5, "beta")), float(num(info, 6, "alpha")));
  else if (op == "findParams") gptq_find_params(P(1), P(2), P(3), I(4), I(5), I(6), I(7), int(I(8)), info[9].ToBoolean());
  else if (op == "columns") gptq_columns(P(1), P(2), I32(3), ptr<const uint8_t>(info, 4, "dead"), I(5), I(6));
  else if (op == "prepare") gptq_prepare(P(1), ptr<double>(info, 2, "A"), ptr<double>(info, 3, "X"), I32(4), P(5), I32(6), P(7), I(8));
  else if (op == "quantBlock")
    gptq_quant_block(P(1), I(2), I(3), I(4), int(I(5)), P(6), P(7), P(8), I32(9), I32(10), int(I(11)), ptr<uint8_t>(info, 12, "codes"), P(13),
                     P(14), ptr<double>(info, 15, "rowLoss"));
  else if (op == "blockUpdate") gptq_block_update(P(1), I(2), I(3), P(4), int(I(5)), P(6), I(7));
  else if (op == "rtn") gptq_rtn(ptr<uint8_t>(info, 1, "codes"), P(2), P(3), P(4), P(5), I32(6), I(7), I(8), int(I(9)));
  else if (op == "sub") gptq_sub(P(1), P(2), P(3), I(4));
  else if (op == "dot") gptq_dot(ptr<double>(info, 1, "partials"), P(2), P(3), I(4));
  else throw Napi::TypeError::New(info.Env(), "gptq: unknown op " + op);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// awq(op, …): AWQ on the device (awq.cu); pointers as numbers (0 = null).
//   pq(out, codes|0, scales|0, zeros|0, W, s|0, N, K, G, bits, zeroPoint)    gram(gram f64, x, T, K, G)
//   clip(best, W, N, K, G, gram f64, T, bits, zeroPoint, nShrink, nGrid)    absSum(acc f64, x, T, K)
//   groupAbsmax(gmax, W, N, K, G, add)    weightMean(acc f64, W, gmax, N, K, G)    scale(out, W, s, N, K, ns, mode)
//   gatherRows(out, x, s|0, r0, step, n, K)    applyClip(out, W, max, N, K, G)
Napi::Value Awq(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "awq: the op name comes first");
  const std::string op = info[0].As<Napi::String>();
  auto P = [&](size_t i) { return ptr<float>(info, i, "pointer"); };
  auto D = [&](size_t i) { return ptr<double>(info, i, "pointer"); };
  auto U8 = [&](size_t i) { return ptr<uint8_t>(info, i, "pointer"); };
  auto I = [&](size_t i) { return integer(info, i, "size"); };
  LOWBIT_TRY
  if (op == "pq") awq_pseudo_quantize_dev(P(1), U8(2), P(3), U8(4), P(5), P(6), I(7), I(8), I(9), int(I(10)), info[11].ToBoolean());
  else if (op == "gram") awq_group_gram_dev(D(1), P(2), I(3), I(4), I(5));
  else if (op == "clip") awq_clip_search_dev(P(1), P(2), I(3), I(4), I(5), D(6), I(7), int(I(8)), info[9].ToBoolean(), int(I(10)), int(I(11)));
  else if (op == "absSum") awq_abs_sum_dev(D(1), P(2), I(3), I(4));
  else if (op == "groupAbsmax") awq_group_absmax_dev(P(1), P(2), I(3), I(4), I(5), num(info, 6, "add"));
  else if (op == "weightMean") awq_weight_mean_dev(D(1), P(2), P(3), I(4), I(5), I(6));
  else if (op == "scale") awq_scale_dev(P(1), P(2), P(3), I(4), I(5), I(6), int(I(7)));
  else if (op == "gatherRows") awq_gather_rows_dev(P(1), P(2), P(3), I(4), I(5), I(6), I(7));
  else if (op == "applyClip") awq_apply_clip_dev(P(1), P(2), P(3), I(4), I(5), I(6));
  else throw Napi::TypeError::New(info.Env(), "awq: unknown op " + op);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
// fillRandom(ptr, wtype, n, seed, std)
Napi::Value FillRandom(const Napi::CallbackInfo& info) {
  void* d = ptr<void>(info, 0, "ptr");
  const int wt = wtype(info, 1);
  const int64_t n = integer(info, 2, "n"), seed = integer(info, 3, "seed");
  const float sd = float(num(info, 4, "std"));
  LOWBIT_TRY
  fill_random(d, wt, n, uint32_t(seed), sd);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// elapsed(fn-free timing): eventRecord() → handle; eventElapsed(a, b) → ms (synchronizes on b).
Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LOWBIT_TRY
  cudaEvent_t e;
  cuda_check(cudaEventCreate(&e), "cudaEventCreate");
  cuda_check(cudaEventRecord(e, stream()), "cudaEventRecord");
  return Napi::External<CUevent_st>::New(env, e, [](Napi::Env, CUevent_st* ev) { cudaEventDestroy(ev); });
  LOWBIT_CATCH(env)
}
Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsExternal()) throw Napi::TypeError::New(info.Env(), "eventElapsed takes two events");
  cudaEvent_t a = info[0].As<Napi::External<CUevent_st>>().Data(), b = info[1].As<Napi::External<CUevent_st>>().Data();
  float ms = 0;
  LOWBIT_TRY
  cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
  cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  LOWBIT_CATCH(info.Env())
  return Napi::Number::New(info.Env(), ms);
}

// gemmPeak(n, iters) → TFLOP/s; copyBandwidth(bytes, iters) → GB/s (read + written).
Napi::Value GemmPeak(const Napi::CallbackInfo& info) {
  const int64_t n = integer(info, 0, "n"), it = integer(info, 1, "iters");
  LOWBIT_TRY
  return Napi::Number::New(info.Env(), gemm_peak_tflops(int(n), int(it)));
  LOWBIT_CATCH(info.Env())
}
Napi::Value CopyBandwidth(const Napi::CallbackInfo& info) {
  const int64_t b = integer(info, 0, "bytes"), it = integer(info, 1, "iters");
  LOWBIT_TRY
  return Napi::Number::New(info.Env(), copy_bandwidth_gbs(size_t(b), int(it)));
  LOWBIT_CATCH(info.Env())
}

// kvWrite(dst, src, B, T, cap, row, len, lenDev|0): dst [B, cap, row] rows len.. ← src [B, T, row].
Napi::Value KvWrite(const Napi::CallbackInfo& info) {
  float* d = ptr<float>(info, 0, "dst");
  const float* s = ptr<const float>(info, 1, "src");
  const int64_t B = integer(info, 2, "B"), T = integer(info, 3, "T"), cap = integer(info, 4, "cap"), row = integer(info, 5, "row");
  const int64_t len = integer(info, 6, "len");
  const int64_t* lenDev = ptr<const int64_t>(info, 7, "lenDev");
  LOWBIT_TRY
  kv_write(d, s, B, T, cap, row, len, lenDev);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// ropeAppend(q, k, v, positions, invFreq, kc, vc, B, T, nH, nKV, hd, cap, len, lenDev|0)
Napi::Value RopeAppend(const Napi::CallbackInfo& info) {
  float* q = ptr<float>(info, 0, "q");
  float* k = ptr<float>(info, 1, "k");
  const float* v = ptr<const float>(info, 2, "v");
  const int32_t* pos = ptr<const int32_t>(info, 3, "positions");
  const float* inv = ptr<const float>(info, 4, "invFreq");
  float* kc = ptr<float>(info, 5, "kCache");
  float* vc = ptr<float>(info, 6, "vCache");
  const int64_t B = integer(info, 7, "B"), T = integer(info, 8, "T"), nH = integer(info, 9, "nH"), nKV = integer(info, 10, "nKV");
  const int64_t hd = integer(info, 11, "hd"), cap = integer(info, 12, "cap"), len = integer(info, 13, "len");
  const int64_t* lenDev = ptr<const int64_t>(info, 14, "lenDev");
  LOWBIT_TRY
  rope_append(q, k, v, pos, inv, kc, vc, B, T, int(nH), int(nKV), int(hd), cap, len, lenDev);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// beginCapture(): the stream's work from here on is recorded, not run. endCapture() → an instantiated graph (freed
// when collected); launchGraph(g) queues one replay.
Napi::Value BeginCapture(const Napi::CallbackInfo& info) {
  LOWBIT_TRY
  if (st().capturing) throw CudaError("beginCapture: a capture is already open");
  cuda_check(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  st().capturing = true;
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}
void flush_deferred() {
  State& s = st();
  for (void* p : s.deferred_frees) cudaFreeAsync(p, s.s);
  s.deferred_frees.clear();
}
Napi::Value EndCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool discard = info.Length() > 0 && info[0].ToBoolean();
  LOWBIT_TRY
  if (!st().capturing) throw CudaError("endCapture: no capture is open");
  cudaGraph_t g = nullptr;
  const cudaError_t e = cudaStreamEndCapture(stream(), &g);
  st().capturing = false;
  flush_deferred();
  cuda_check(e, "cudaStreamEndCapture");
  if (discard) {
    cudaGraphDestroy(g);
    return env.Undefined();
  }
  cudaGraphExec_t x = nullptr;
  const cudaError_t ie = cudaGraphInstantiate(&x, g, 0);
  cudaGraphDestroy(g);
  cuda_check(ie, "cudaGraphInstantiate");
  return Napi::External<CUgraphExec_st>::New(env, x, [](Napi::Env, CUgraphExec_st* p) { cudaGraphExecDestroy(p); });
  LOWBIT_CATCH(env)
}
Napi::Value LaunchGraph(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "launchGraph takes a graph from endCapture");
  LOWBIT_TRY
  cuda_check(cudaGraphLaunch(info[0].As<Napi::External<CUgraphExec_st>>().Data(), stream()), "cudaGraphLaunch");
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

// spin(ns): a kernel that holds the stream (benchmarks).
Napi::Value Spin(const Napi::CallbackInfo& info) {
  const int64_t ns = integer(info, 0, "ns");
  LOWBIT_TRY
  spin(ns);
  LOWBIT_CATCH(info.Env())
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("spin", Napi::Function::New(env, Spin));
  exports.Set("kvWrite", Napi::Function::New(env, KvWrite));
  exports.Set("ropeAppend", Napi::Function::New(env, RopeAppend));
  exports.Set("beginCapture", Napi::Function::New(env, BeginCapture));
  exports.Set("endCapture", Napi::Function::New(env, EndCapture));
  exports.Set("launchGraph", Napi::Function::New(env, LaunchGraph));
  exports.Set("gemmPeak", Napi::Function::New(env, GemmPeak));
  exports.Set("copyBandwidth", Napi::Function::New(env, CopyBandwidth));
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("alloc", Napi::Function::New(env, AllocFn));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("upload", Napi::Function::New(env, Upload));
  exports.Set("download", Napi::Function::New(env, Download));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("memset0", Napi::Function::New(env, Memset0));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("memInfo", Napi::Function::New(env, MemInfo));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("matmulMany", Napi::Function::New(env, MatmulMany));
  exports.Set("qgRepack", Napi::Function::New(env, QgRepack));
  exports.Set("qgMatmul", Napi::Function::New(env, QgMatmul));
  exports.Set("qgMatmulSiluMul", Napi::Function::New(env, QgMatmulSiluMul));
  exports.Set("matmulSiluMul", Napi::Function::New(env, MatmulSiluMul));
  exports.Set("b4Matmul", Napi::Function::New(env, B4Matmul));
  exports.Set("int8Matmul", Napi::Function::New(env, Int8Matmul));
  exports.Set("rmsnorm", Napi::Function::New(env, Rmsnorm));
  exports.Set("layernorm", Napi::Function::New(env, Layernorm));
  exports.Set("addRmsnorm", Napi::Function::New(env, AddRmsnorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul));
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("relu", Napi::Function::New(env, Relu));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("argmax", Napi::Function::New(env, Argmax));
  exports.Set("sample", Napi::Function::New(env, Sample));
  exports.Set("train", Napi::Function::New(env, Train));
  exports.Set("gptq", Napi::Function::New(env, Gptq));
  exports.Set("awq", Napi::Function::New(env, Awq));
  exports.Set("fillRandom", Napi::Function::New(env, FillRandom));
  exports.Set("eventRecord", Napi::Function::New(env, EventRecord));
  exports.Set("eventElapsed", Napi::Function::New(env, EventElapsed));
  return exports;
}

}  // namespace
}  // namespace lowbit_cuda

static Napi::Object InitLowbitCuda(Napi::Env env, Napi::Object exports) { return lowbit_cuda::Init(env, exports); }
NODE_API_MODULE(lowbit_cuda, InitLowbitCuda)
