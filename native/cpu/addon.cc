// N-API surface of the CPU backend (see src/native/addon.ts, NativeAddon). Every argument is checked here —
// type, integer-ness, and array length against the dims — so the kernels can trust their inputs and a bad call
// throws a JS TypeError / RangeError naming the argument instead of reading out of bounds.
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_POSIX 1
#endif

#include "dispatch.h"
#include "ops.h"
#include "pool.h"
#include "scratch.h"
#include "train.h"

namespace {

using namespace lowbit;

struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;

  [[noreturn]] void type_error(const std::string& msg) const { throw Napi::TypeError::New(info.Env(), std::string(fn) + ": " + msg); }
  [[noreturn]] void range_error(const std::string& msg) const { throw Napi::RangeError::New(info.Env(), std::string(fn) + ": " + msg); }

  void count(size_t n) const {
    if (info.Length() < n) type_error("expected " + std::to_string(n) + " arguments, got " + std::to_string(info.Length()));
  }
  Napi::TypedArray typed(size_t i, const char* name, napi_typedarray_type type, const char* tname) const {
    Napi::Value v = info[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
      type_error(std::string(name) + " must be a " + tname);
    return v.As<Napi::TypedArray>();
  }
  float* f32(size_t i, const char* name, int64_t len) const {
    auto a = typed(i, name, napi_float32_array, "Float32Array");
    check_len(name, int64_t(a.ElementLength()), len);
    return reinterpret_cast<float*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }
  const float* f32_or_null(size_t i, const char* name, int64_t len) const {
    if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
    return f32(i, name, len);
  }
  template <class T>
  T* raw(Napi::TypedArray a) const {
    return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }
  // Weights: Float32Array for F32, Uint16Array (raw bits) for BF16/F16.
  const void* weights(size_t i, const char* name, int wtype, int64_t len) const {
    auto a = wtype == W_F32 ? typed(i, name, napi_float32_array, "Float32Array (wtype F32)")
                            : typed(i, name, napi_uint16_array, "Uint16Array (wtype BF16/F16)");
    check_len(name, int64_t(a.ElementLength()), len);
    return raw<uint8_t>(a);
  }
  void check_len(const char* name, int64_t got, int64_t want) const {
    if (got != want) range_error(std::string(name) + " has " + std::to_string(got) + " elements, expected " + std::to_string(want));
  }
  int64_t integer(size_t i, const char* name, int64_t min = 0) const {
    if (!info[i].IsNumber()) type_error(std::string(name) + " must be a number");
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d == std::floor(d)) || d < double(min) || d > 1e15)
      range_error(std::string(name) + " must be an integer >= " + std::to_string(min) + ", got " + std::to_string(d));
    return int64_t(d);
  }
  double number(size_t i, const char* name) const {
    if (!info[i].IsNumber()) type_error(std::string(name) + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  }
  // An optional trailing flag: true selects the transposed product dx = dy · W (training's input gradient).
  bool transposed(size_t i) const {
    if (info.Length() <= i || info[i].IsUndefined()) return false;
    if (!info[i].IsBoolean()) type_error("transposed must be true or false");
    return info[i].As<Napi::Boolean>().Value();
  }
  int wtype(size_t i) const {
    int64_t w = integer(i, "wtype");
    if (w > 2) range_error("wtype must be 0 (F32), 1 (BF16) or 2 (F16), got " + std::to_string(w));
    return int(w);
  }
  int64_t mul(int64_t a, int64_t b) const {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r) || r > (int64_t(1) << 50)) range_error("dimensions too large");
    return r;
  }
};

// "fn: what", unless `what` already names fn.
std::string prefixed(const char* fn, const char* what) {
  const size_t n = std::strlen(fn);
  if (std::strncmp(what, fn, n) == 0 && what[n] == ':') return what;
  return std::string(fn) + ": " + what;
}

// Every entry point runs inside this guard (see Init): a C++ exception escaping into N-API would call
// std::terminate and abort the host process, so each becomes a JS error naming the function. Exceptions thrown on
// pool threads reach here too (pool_run rethrows them on the calling thread).
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  const char* fn = static_cast<const char*>(info.Data());
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {  // includes std::bad_array_new_length
    throw Napi::RangeError::New(info.Env(), std::string(fn) + ": out of memory (a native buffer could not be allocated)");
  } catch (const std::invalid_argument& e) {
    throw Napi::RangeError::New(info.Env(), prefixed(fn, e.what()));
  } catch (const std::range_error& e) {
    throw Napi::RangeError::New(info.Env(), prefixed(fn, e.what()));
  } catch (const std::length_error& e) {
    throw Napi::RangeError::New(info.Env(), prefixed(fn, e.what()));
  } catch (const std::out_of_range& e) {
    throw Napi::RangeError::New(info.Env(), prefixed(fn, e.what()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), prefixed(fn, e.what()));
  } catch (...) {
    throw Napi::Error::New(info.Env(), std::string(fn) + ": unknown native exception");
  }
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args a{info, "matmul"};
  a.count(8);
  int wt = a.wtype(3);
  int64_t M = a.integer(4, "M"), N = a.integer(5, "N"), K = a.integer(6, "K");
  const void* w = a.weights(2, "w", wt, a.mul(N, K));
  if (a.transposed(8)) {  // y = dx [M, K] = x (dy [M, N]) · w
    if (!(info[7].IsNull() || info[7].IsUndefined())) a.type_error("bias must be null for the transposed product");
    matmul_t(a.f32(0, "dx", a.mul(M, K)), a.f32(1, "dy", a.mul(M, N)), w, wt, M, N, K);
    return info.Env().Undefined();
  }
  float* y = a.f32(0, "y", a.mul(M, N));
  const float* x = a.f32(1, "x", a.mul(M, K));
  const float* bias = a.f32_or_null(7, "bias", N);
  matmul(y, x, w, wt, M, N, K, bias);
  return info.Env().Undefined();
}

// matmulQ4(y, x, packed, absmax, qabsmax, nestedAbsmax, nestedQuantMap, nestedBlocksize, nestedOffset, M, N, K,
//           blocksize, quantType, dtype, bias): NF4/FP4 weights [N, K]. absmax (Float32Array, one per block) for plain
// scales, or absmax null and qabsmax (Uint8Array, one per block) + nestedAbsmax + nestedQuantMap (256) for double
// quantization.
Napi::Value MatmulQ4(const Napi::CallbackInfo& info) {
  Args a{info, "matmulQ4"};
  a.count(16);
  const int64_t M = a.integer(9, "M"), N = a.integer(10, "N"), K = a.integer(11, "K");
  const int64_t bs = a.integer(12, "blocksize", 1);
  const int64_t qt = a.integer(13, "quantType");
  if (qt > 1) a.range_error("quantType must be 0 (nf4) or 1 (fp4), got " + std::to_string(qt));
  const int dt = a.wtype(14);
  const int64_t numel = a.mul(N, K), nBlocks = (numel + bs - 1) / bs;
  const bool tr = a.transposed(16);  // y = dx [M, K] = x (dy [M, N]) · dequant(w)
  float* y = a.f32(0, tr ? "dx" : "y", a.mul(M, tr ? K : N));
  const float* x = a.f32(1, tr ? "dy" : "x", a.mul(M, tr ? N : K));
  auto packed = a.typed(2, "packed", napi_uint8_array, "Uint8Array");
  a.check_len("packed", int64_t(packed.ElementLength()), (numel + 1) / 2);
  Q4Weight w{};
  w.packed = a.raw<uint8_t>(packed);
  w.N = N;
  w.K = K;
  w.blocksize = bs;
  w.code = q4_code_values(int(qt));
  w.code16 = q4_code_i16(int(qt));
  w.dtype = dt;
  const bool plain = !(info[3].IsNull() || info[3].IsUndefined());
  if (plain) {
    w.absmax = a.f32(3, "absmax", nBlocks);
    for (size_t i = 4; i <= 6; i++)
      if (!(info[i].IsNull() || info[i].IsUndefined())) a.type_error("absmax and the double-quantization arrays are exclusive: pass null for qabsmax, nestedAbsmax and nestedQuantMap with a plain absmax");
  } else {
    const int64_t nb = a.integer(7, "nestedBlocksize", 1);
    auto q = a.typed(4, "qabsmax", napi_uint8_array, "Uint8Array (double quantization; absmax is null)");
    a.check_len("qabsmax", int64_t(q.ElementLength()), nBlocks);
    w.qabsmax = a.raw<uint8_t>(q);
    w.nested_absmax = a.f32(5, "nestedAbsmax", (nBlocks + nb - 1) / nb);
    w.nested_map = a.f32(6, "nestedQuantMap", 256);
    w.nested_blocksize = nb;
    w.offset = float(a.number(8, "nestedOffset"));
  }
  if (tr) {
    if (!(info[15].IsNull() || info[15].IsUndefined())) a.type_error("bias must be null for the transposed product");
    matmul_t_q4(y, x, w, M);
    return info.Env().Undefined();
  }
  const float* bias = a.f32_or_null(15, "bias", N);
  matmul_q4(y, x, w, M, bias);
  return info.Env().Undefined();
}

// matmulQg(y, x, codes, bits, N, K, Kpad, G, nG, scales, zeros, perm, M, bias): group-quantized integer weights
// (GPTQ, AWQ) in the QgWeight layout of kernels.h (src/quant/qg.ts builds it): codes a Uint8Array of N·(Kpad/64)
// chunks, scales a Uint16Array of float16 bits [N, nG], zeros a Uint8Array [N, nG], perm an Int32Array of K input
// indices or null.
Napi::Value MatmulQg(const Napi::CallbackInfo& info) {
  Args a{info, "matmulQg"};
  a.count(14);
  const int64_t bits = a.integer(3, "bits", 2);
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) a.range_error("bits must be 2, 3, 4 or 8, got " + std::to_string(bits));
  const int64_t N = a.integer(4, "N"), K = a.integer(5, "K"), Kpad = a.integer(6, "Kpad"), G = a.integer(7, "G", 32);
  const int64_t nG = a.integer(8, "nG", 1), M = a.integer(12, "M");
  if (Kpad % 64 || Kpad < K || Kpad >= K + 64) a.range_error("Kpad must be K rounded up to a multiple of 64, got K=" + std::to_string(K) + ", Kpad=" + std::to_string(Kpad));
  if (G % 32 || nG != (K + G - 1) / G) a.range_error("G must be a multiple of 32 with nG = ceil(K / G) groups, got G=" + std::to_string(G) + ", nG=" + std::to_string(nG) + ", K=" + std::to_string(K));
  const bool tr = a.transposed(14);  // y = dx [M, K] = x (dy [M, N]) · dequant(w)
  float* y = a.f32(0, tr ? "dx" : "y", a.mul(M, tr ? K : N));
  const float* x = a.f32(1, tr ? "dy" : "x", a.mul(M, tr ? N : K));
  auto codes = a.typed(2, "codes", napi_uint8_array, "Uint8Array");
  a.check_len("codes", int64_t(codes.ElementLength()), a.mul(N, Kpad / 64 * qg_chunk_bytes(int(bits))));
  QgWeight w{};
  w.codes = a.raw<uint8_t>(codes);
  w.bits = int(bits);
  w.N = N;
  w.Kpad = Kpad;
  w.G = G;
  w.nG = nG;
  auto scales = a.typed(9, "scales", napi_uint16_array, "Uint16Array (float16 bits)");
  a.check_len("scales", int64_t(scales.ElementLength()), a.mul(N, nG));
  w.scales = a.raw<uint16_t>(scales);
  auto zeros = a.typed(10, "zeros", napi_uint8_array, "Uint8Array");
  a.check_len("zeros", int64_t(zeros.ElementLength()), a.mul(N, nG));
  w.zeros = a.raw<uint8_t>(zeros);
  const int32_t* perm = nullptr;
  if (!(info[11].IsNull() || info[11].IsUndefined())) {
    auto p = a.typed(11, "perm", napi_int32_array, "Int32Array or null");
    a.check_len("perm", int64_t(p.ElementLength()), K);
    perm = a.raw<int32_t>(p);
    for (int64_t j = 0; j < K; j++)
      if (perm[j] < 0 || perm[j] >= K) a.range_error("perm[" + std::to_string(j) + "] = " + std::to_string(perm[j]) + " is outside [0, K)");
  }
  if (tr) {
    if (!(info[13].IsNull() || info[13].IsUndefined())) a.type_error("bias must be null for the transposed product");
    matmul_t_qg(y, x, w, perm, K, M);
    return info.Env().Undefined();
  }
  const float* bias = a.f32_or_null(13, "bias", N);
  matmul_qg(y, x, w, perm, K, M, bias);
  return info.Env().Undefined();
}

// matmulInt8(y, x, CB, SCB, M, N, K, threshold, bias): LLM.int8 weights [N, K], CB an Int8Array of N·K codes and
// SCB a Float32Array of N row scales; threshold ≥ 0 (llm_int8_threshold; 0 turns the outlier columns off).
Napi::Value MatmulInt8(const Napi::CallbackInfo& info) {
  Args a{info, "matmulInt8"};
  a.count(9);
  const int64_t M = a.integer(4, "M"), N = a.integer(5, "N"), K = a.integer(6, "K");
  const double threshold = a.number(7, "threshold");
  if (!(threshold >= 0)) a.range_error("threshold must be >= 0 (0 turns the outlier columns off), got " + std::to_string(threshold));
  auto cb = a.typed(2, "CB", napi_int8_array, "Int8Array");
  a.check_len("CB", int64_t(cb.ElementLength()), a.mul(N, K));
  const float* scb = a.f32(3, "SCB", N);
  if (a.transposed(9)) {  // y = dx [M, K] = x (dy [M, N]) · dequant(CB)
    if (!(info[8].IsNull() || info[8].IsUndefined())) a.type_error("bias must be null for the transposed product");
    matmul_t_int8(a.f32(0, "dx", a.mul(M, K)), a.f32(1, "dy", a.mul(M, N)), a.raw<int8_t>(cb), scb, M, N, K);
    return info.Env().Undefined();
  }
  float* y = a.f32(0, "y", a.mul(M, N));
  const float* x = a.f32(1, "x", a.mul(M, K));
  const float* bias = a.f32_or_null(8, "bias", N);
  matmul_int8(y, x, a.raw<int8_t>(cb), scb, M, N, K, threshold, bias);
  return info.Env().Undefined();
}

// gptqXtx(H, x, T, K, beta, alpha): H[K,K] = beta·H + (√alpha·x)ᵀ(√alpha·x) for x [T,K]; alpha ≥ 0.
Napi::Value GptqXtx(const Napi::CallbackInfo& info) {
  Args a{info, "gptqXtx"};
  a.count(6);
  const int64_t T = a.integer(2, "T"), K = a.integer(3, "K");
  const double beta = a.number(4, "beta"), alpha = a.number(5, "alpha");
  if (!std::isfinite(beta)) a.range_error("beta must be finite, got " + std::to_string(beta));
  if (!(alpha >= 0) || !std::isfinite(alpha)) a.range_error("alpha must be finite and >= 0, got " + std::to_string(alpha));
  float* H = a.f32(0, "H", a.mul(K, K));
  const float* x = a.f32(1, "x", a.mul(T, K));
  gptq_xtx(H, x, T, K, beta, alpha);
  return info.Env().Undefined();
}

// gptqCholesky(A, n, upper): A[n,n] symmetric positive definite → its Cholesky factor in place: lower L (A = L·Lᵀ)
// with zeros above, or with upper = true U = Lᵀ (A = Uᵀ·U) with zeros below. Returns -1, or the first column whose
// pivot is not positive (A then holds partial results).
Napi::Value GptqCholesky(const Napi::CallbackInfo& info) {
  Args a{info, "gptqCholesky"};
  a.count(3);
  const int64_t n = a.integer(1, "n");
  if (!info[2].IsBoolean()) a.type_error("upper must be a boolean");
  float* A = a.f32(0, "A", a.mul(n, n));
  const int64_t fail = cholesky_lower(A, n);
  if (fail < 0 && info[2].As<Napi::Boolean>().Value()) transpose_square(A, n);
  return Napi::Number::New(info.Env(), double(fail));
}

// gptqCholeskyInverse(A, n): A holds a lower Cholesky factor L (upper triangle ignored) → (L·Lᵀ)⁻¹ in place.
Napi::Value GptqCholeskyInverse(const Napi::CallbackInfo& info) {
  Args a{info, "gptqCholeskyInverse"};
  a.count(2);
  const int64_t n = a.integer(1, "n");
  cholesky_inverse(a.f32(0, "A", a.mul(n, n)), n);
  return info.Env().Undefined();
}

// gptqQuantizeBlock(W, N, K, i1, B, U, scale, zero, maxq, codes, deq, err, rowLoss): GPTQ's column loop over
// W[:, i1:i1+B] (see ops.h); scale/zero Float32Array [B,N], codes Uint8Array [N,B], deq/err Float32Array [N,B],
// rowLoss Float64Array [N].
Napi::Value GptqQuantizeBlock(const Napi::CallbackInfo& info) {
  Args a{info, "gptqQuantizeBlock"};
  a.count(13);
  const int64_t N = a.integer(1, "N"), K = a.integer(2, "K"), i1 = a.integer(3, "i1"), B = a.integer(4, "B");
  const int64_t maxq = a.integer(8, "maxq", 1);
  if (maxq > 255) a.range_error("maxq must be at most 255, got " + std::to_string(maxq));
  if (i1 + B > K) a.range_error("i1 + B = " + std::to_string(i1 + B) + " exceeds K = " + std::to_string(K));
  const float* W = a.f32(0, "W", a.mul(N, K));
  const float* U = a.f32(5, "U", a.mul(K, K));
  const float* scale = a.f32(6, "scale", a.mul(B, N));
  const float* zero = a.f32(7, "zero", a.mul(B, N));
  auto codes = a.typed(9, "codes", napi_uint8_array, "Uint8Array");
  a.check_len("codes", int64_t(codes.ElementLength()), a.mul(N, B));
  float* deq = a.f32(10, "deq", a.mul(N, B));
  float* err = a.f32(11, "err", a.mul(N, B));
  auto loss = a.typed(12, "rowLoss", napi_float64_array, "Float64Array");
  a.check_len("rowLoss", int64_t(loss.ElementLength()), N);
  gptq_quantize_block(W, N, K, i1, B, U, scale, zero, int(maxq), a.raw<uint8_t>(codes), deq, err, a.raw<double>(loss));
  return info.Env().Undefined();
}

// gptqBlockUpdate(W, N, K, err, B, U, i1): W[N,K]: W[:, i1+B:] -= err[N,B]·U[i1:i1+B, i1+B:], U [K,K].
Napi::Value GptqBlockUpdate(const Napi::CallbackInfo& info) {
  Args a{info, "gptqBlockUpdate"};
  a.count(7);
  const int64_t N = a.integer(1, "N"), K = a.integer(2, "K"), B = a.integer(4, "B"), i1 = a.integer(6, "i1");
  if (i1 + B > K) a.range_error("i1 + B = " + std::to_string(i1 + B) + " exceeds K = " + std::to_string(K));
  float* W = a.f32(0, "W", a.mul(N, K));
  const float* err = a.f32(3, "err", a.mul(N, B));
  const float* U = a.f32(5, "U", a.mul(K, K));
  gptq_block_update(W, N, K, err, B, U, i1);
  return info.Env().Undefined();
}

// AWQ (awq.cc). Shared checks: bits in {2,3,4,8}, G ≥ 1 dividing K.
void awq_check_grid(const Args& a, int64_t bits, int64_t K, int64_t G) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) a.range_error("bits must be 2, 3, 4 or 8, got " + std::to_string(bits));
  if (G < 1 || K % G != 0) a.range_error("group size G = " + std::to_string(G) + " must divide K = " + std::to_string(K));
}

// awqPseudoQuantize(W, N, K, s, bits, G, zeroPoint, out, codes, scales, zeros): out[N,K] = Q(W·diag(s))/s (s
// Float32Array [K] or null); codes Uint8Array [N,K], scales Float32Array [K/G, N], zeros Uint8Array [K/G, N], each
// or null.
Napi::Value AwqPseudoQuantize(const Napi::CallbackInfo& info) {
  Args a{info, "awqPseudoQuantize"};
  a.count(11);
  const int64_t N = a.integer(1, "N"), K = a.integer(2, "K", 1), bits = a.integer(4, "bits"), G = a.integer(5, "G", 1);
  awq_check_grid(a, bits, K, G);
  if (!info[6].IsBoolean()) a.type_error("zeroPoint must be a boolean");
  const float* W = a.f32(0, "W", a.mul(N, K));
  const float* s = a.f32_or_null(3, "s", K);
  float* out = a.f32(7, "out", a.mul(N, K));
  uint8_t* codes = nullptr;
  uint8_t* zeros = nullptr;
  if (!info[8].IsNull() && !info[8].IsUndefined()) {
    auto c = a.typed(8, "codes", napi_uint8_array, "Uint8Array");
    a.check_len("codes", int64_t(c.ElementLength()), a.mul(N, K));
    codes = a.raw<uint8_t>(c);
  }
  float* scales = const_cast<float*>(a.f32_or_null(9, "scales", a.mul(K / G, N)));
  if (!info[10].IsNull() && !info[10].IsUndefined()) {
    auto z = a.typed(10, "zeros", napi_uint8_array, "Uint8Array");
    a.check_len("zeros", int64_t(z.ElementLength()), a.mul(K / G, N));
    zeros = a.raw<uint8_t>(z);
  }
  awq_pseudo_quantize(W, N, K, s, int(bits), G, info[6].As<Napi::Boolean>().Value(), out, codes, scales, zeros);
  return info.Env().Undefined();
}

// awqGroupGram(x, T, K, G, gram): gram Float64Array [K/G, G, G] = per group Σ_t x[t, group]ᵀ·x[t, group], x [T,K].
Napi::Value AwqGroupGram(const Napi::CallbackInfo& info) {
  Args a{info, "awqGroupGram"};
  a.count(5);
  const int64_t T = a.integer(1, "T"), K = a.integer(2, "K", 1), G = a.integer(3, "G", 1);
  if (K % G != 0) a.range_error("group size G = " + std::to_string(G) + " must divide K = " + std::to_string(K));
  const float* x = a.f32(0, "x", a.mul(T, K));
  auto g = a.typed(4, "gram", napi_float64_array, "Float64Array");
  a.check_len("gram", int64_t(g.ElementLength()), a.mul(K, G));
  awq_group_gram(x, T, K, G, a.raw<double>(g));
  return info.Env().Undefined();
}

// awqClipSearch(W, N, K, G, gram, T, bits, zeroPoint, nShrink, nGrid, best): best Float32Array [N, K/G] = the
// clipping max |w| per (row, group) with the smallest error dᵀ·gram_g·d / T among max|w|·(1 − i/nGrid), i < nShrink.
Napi::Value AwqClipSearch(const Napi::CallbackInfo& info) {
  Args a{info, "awqClipSearch"};
  a.count(11);
  const int64_t N = a.integer(1, "N"), K = a.integer(2, "K", 1), G = a.integer(3, "G", 1), T = a.integer(5, "T", 1);
  const int64_t bits = a.integer(6, "bits"), nShrink = a.integer(8, "nShrink", 1), nGrid = a.integer(9, "nGrid", 1);
  awq_check_grid(a, bits, K, G);
  if (nShrink > nGrid) a.range_error("nShrink = " + std::to_string(nShrink) + " must be at most nGrid = " + std::to_string(nGrid));
  if (!info[7].IsBoolean()) a.type_error("zeroPoint must be a boolean");
  const float* W = a.f32(0, "W", a.mul(N, K));
  auto g = a.typed(4, "gram", napi_float64_array, "Float64Array");
  a.check_len("gram", int64_t(g.ElementLength()), a.mul(K, G));
  float* best = a.f32(10, "best", a.mul(N, K / G));
  awq_clip_search(W, N, K, G, a.raw<double>(g), T, int(bits), info[7].As<Napi::Boolean>().Value(), int(nShrink),
                  int(nGrid), best);
  return info.Env().Undefined();
}

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  Args a{info, "rmsnorm"};
  a.count(6);
  int64_t rows = a.integer(3, "rows"), dim = a.integer(4, "dim", 1);
  float* y = a.f32(0, "y", a.mul(rows, dim));
  const float* x = a.f32(1, "x", a.mul(rows, dim));
  const float* w = a.f32(2, "w", dim);
  rmsnorm(y, x, w, rows, dim, float(a.number(5, "eps")));
  return info.Env().Undefined();
}

Napi::Value Layernorm(const Napi::CallbackInfo& info) {
  Args a{info, "layernorm"};
  a.count(7);
  int64_t rows = a.integer(4, "rows"), dim = a.integer(5, "dim", 1);
  float* y = a.f32(0, "y", a.mul(rows, dim));
  const float* x = a.f32(1, "x", a.mul(rows, dim));
  const float* w = a.f32(2, "w", dim);
  const float* b = a.f32(3, "b", dim);
  layernorm(y, x, w, b, rows, dim, float(a.number(6, "eps")));
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a{info, "rope"};
  a.count(6);
  int64_t rows = a.integer(1, "rows"), nHeads = a.integer(2, "nHeads"), hd = a.integer(3, "hd");
  if (hd % 2) a.range_error("hd must be even, got " + std::to_string(hd));
  float* x = a.f32(0, "x", a.mul(a.mul(rows, nHeads), hd));
  auto pos = a.typed(4, "positions", napi_int32_array, "Int32Array");
  a.check_len("positions", int64_t(pos.ElementLength()), rows);
  const float* inv = a.f32(5, "invFreq", hd / 2);
  rope(x, rows, nHeads, hd, a.raw<int32_t>(pos), inv);
  return info.Env().Undefined();
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Args a{info, "attention"};
  a.count(14);
  int64_t B = a.integer(4, "B"), T = a.integer(5, "T"), H = a.integer(6, "H"), nKV = a.integer(7, "nKV", 1);
  int64_t hd = a.integer(8, "hd"), S = a.integer(9, "S"), pastLen = a.integer(10, "pastLen");
  if (H % nKV) a.range_error("H (" + std::to_string(H) + ") must be a multiple of nKV (" + std::to_string(nKV) + ")");
  if (pastLen + T > S)
    a.range_error("pastLen + T = " + std::to_string(pastLen + T) + " exceeds the cache capacity S = " + std::to_string(S));
  const int64_t qn = a.mul(a.mul(a.mul(B, T), H), hd), kn = a.mul(a.mul(a.mul(B, S), nKV), hd);
  float* out = a.f32(0, "out", qn);
  const float* q = a.f32(1, "q", qn);
  const float* k = a.f32(2, "k", kn);
  const float* v = a.f32(3, "v", kn);
  const uint8_t* mask = nullptr;
  if (!info[11].IsNull() && !info[11].IsUndefined()) {
    auto m = a.typed(11, "keyMask", napi_uint8_array, "Uint8Array or null");
    a.check_len("keyMask", int64_t(m.ElementLength()), a.mul(B, pastLen + T));
    mask = a.raw<uint8_t>(m);
  }
  attention(out, q, k, v, B, T, H, nKV, hd, S, pastLen, mask, float(a.number(12, "scale")), a.integer(13, "window"));
  return info.Env().Undefined();
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  Args a{info, "siluMul"};
  a.count(4);
  int64_t n = a.integer(3, "n");
  silu_mul(a.f32(0, "y", n), a.f32(1, "gate", n), a.f32(2, "up", n), n);
  return info.Env().Undefined();
}

Napi::Value Relu(const Napi::CallbackInfo& info) {
  Args a{info, "relu"};
  a.count(3);
  int64_t n = a.integer(2, "n");
  relu(a.f32(0, "y", n), a.f32(1, "x", n), n);
  return info.Env().Undefined();
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args a{info, "softmax"};
  a.count(4);
  int64_t rows = a.integer(2, "rows"), cols = a.integer(3, "cols", 1);
  softmax(a.f32(0, "y", a.mul(rows, cols)), a.f32(1, "x", a.mul(rows, cols)), rows, cols);
  return info.Env().Undefined();
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Args a{info, "embedding"};
  a.count(5);
  int wt = a.wtype(2);
  int64_t dim = a.integer(4, "dim", 1);
  auto ids = a.typed(3, "ids", napi_int32_array, "Int32Array");
  const int64_t nIds = int64_t(ids.ElementLength());
  auto table = wt == W_F32 ? a.typed(1, "table", napi_float32_array, "Float32Array (wtype F32)")
                           : a.typed(1, "table", napi_uint16_array, "Uint16Array (wtype BF16/F16)");
  const int64_t tlen = int64_t(table.ElementLength());
  if (tlen % dim) a.range_error("table has " + std::to_string(tlen) + " elements, not a multiple of dim " + std::to_string(dim));
  const int64_t V = tlen / dim;
  const int32_t* id = a.raw<int32_t>(ids);
  for (int64_t i = 0; i < nIds; i++)
    if (id[i] < 0 || id[i] >= V)
      a.range_error("token id " + std::to_string(id[i]) + " at ids[" + std::to_string(i) + "] outside [0, " + std::to_string(V) + ")");
  float* y = a.f32(0, "y", a.mul(nIds, dim));
  embedding(y, a.raw<uint8_t>(table), wt, id, nIds, dim);
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  Args a{info, "add"};
  a.count(4);
  int64_t n = a.integer(3, "n");
  add(a.f32(0, "y", n), a.f32(1, "a", n), a.f32(2, "b", n), n);
  return info.Env().Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a{info, "setThreads"};
  a.count(1);
  int64_t n = a.integer(0, "n", 1);
  if (n > 1024) a.range_error("n must be at most 1024, got " + std::to_string(n));
  pool_set_threads(int(n));
  return info.Env().Undefined();
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool_threads()); }

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  CpuFeatures f = cpu_features();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("avx2", f.avx2);
  o.Set("fma", f.fma);
  o.Set("f16c", f.f16c);
  o.Set("avx512f", f.avx512f);
  o.Set("avx512bf16", f.avx512bf16);
  o.Set("avx512vnni", f.avx512vnni);
  o.Set("neon", f.neon);
  o.Set("level", active()->name);
  o.Set("best", best_kernels()->name);
  o.Set("hardwareThreads", double(std::thread::hardware_concurrency()));
  o.Set("physicalCores", double(physical_cores()));
  o.Set("defaultThreads", double(default_threads()));
  o.Set("threads", double(pool_threads()));
  o.Set("activeThreads", double(pool_width()));
  return o;
}

Napi::Value PoolStatsFn(const Napi::CallbackInfo& info) {
  const PoolStats st = pool_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("jobs", double(st.jobs));
  o.Set("chunksOnWorkers", double(st.chunks_on_workers));
  o.Set("chunksOnCaller", double(st.chunks_on_caller));
  o.Set("errorsOnWorkers", double(st.errors_on_workers));
  o.Set("stalls", double(st.stalls));
  return o;
}

// poolConfig({adaptive?, workerFirst?}): sets the given switches (booleans), returns both as they are now.
Napi::Value PoolConfigFn(const Napi::CallbackInfo& info) {
  Args a{info, "poolConfig"};
  PoolConfig c = pool_config();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsObject()) a.type_error("options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto flag = [&](const char* key, bool& dst) {
      if (!o.Has(key) || o.Get(key).IsUndefined()) return;
      if (!o.Get(key).IsBoolean()) a.type_error(std::string(key) + " must be a boolean");
      dst = o.Get(key).As<Napi::Boolean>().Value();
    };
    flag("adaptive", c.adaptive);
    flag("workerFirst", c.worker_first);
    pool_set_config(c);
  }
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("adaptive", c.adaptive);
  r.Set("workerFirst", c.worker_first);
  return r;
}

Napi::Value ScratchStatsFn(const Napi::CallbackInfo& info) {
  const ScratchStats st = scratch_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("grows", double(st.grows));
  o.Set("bytes", double(st.bytes));
  return o;
}

Napi::Value SetLevel(const Napi::CallbackInfo& info) {
  Args a{info, "setLevel"};
  a.count(1);
  if (!info[0].IsString()) a.type_error("level must be a string");
  return Napi::String::New(info.Env(), set_level(info[0].As<Napi::String>().Utf8Value()));
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Args a{info, "mmap"};
  a.count(1);
  if (!info[0].IsString()) a.type_error("path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
#ifdef LOWBIT_POSIX
  auto fail = [&](const char* what, int err) {
    throw Napi::Error::New(info.Env(), "mmap: cannot " + std::string(what) + " '" + path + "': " + std::strerror(err));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) { int e = errno; ::close(fd); fail("stat", e); }
  if (!S_ISREG(st.st_mode)) { ::close(fd); fail("map (not a regular file)", EINVAL); }
  size_t size = size_t(st.st_size);
  if (size == 0) { ::close(fd); return Napi::ArrayBuffer::New(info.Env(), 0); }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED) fail("map", e);
  return Napi::ArrayBuffer::New(info.Env(), p, size, [](Napi::Env, void* data, size_t* len) {
    ::munmap(data, *len);
    delete len;
  }, new size_t(size));
#else
  throw Napi::Error::New(info.Env(), "mmap: not supported on this platform ('" + path + "')");
#endif
}

// attentionTrainForward(o, p, q, k, v, mask, B, T, H, nKV, hd, scale, window): train.h; mask a Uint8Array [B·T] or null.
Napi::Value AttentionTrainForward(const Napi::CallbackInfo& info) {
  Args a{info, "attentionTrainForward"};
  a.count(13);
  const int64_t B = a.integer(6, "B", 1), T = a.integer(7, "T", 1), H = a.integer(8, "H", 1), nKV = a.integer(9, "nKV", 1), hd = a.integer(10, "hd", 1);
  if (H % nKV) a.range_error("H must be a multiple of nKV, got H=" + std::to_string(H) + ", nKV=" + std::to_string(nKV));
  const double scale = a.number(11, "scale");
  const int64_t window = a.integer(12, "window");
  float* o = a.f32(0, "o", a.mul(a.mul(B * T, H), hd));
  float* p = a.f32(1, "p", a.mul(a.mul(B * H, T), T));
  const float* q = a.f32(2, "q", a.mul(a.mul(B * T, H), hd));
  const float* k = a.f32(3, "k", a.mul(a.mul(B * T, nKV), hd));
  const float* v = a.f32(4, "v", a.mul(a.mul(B * T, nKV), hd));
  const uint8_t* mask = nullptr;
  if (!(info[5].IsNull() || info[5].IsUndefined())) {
    auto m = a.typed(5, "mask", napi_uint8_array, "Uint8Array or null");
    a.check_len("mask", int64_t(m.ElementLength()), B * T);
    mask = a.raw<uint8_t>(m);
  }
  attn_train_fwd(o, p, q, k, v, mask, B, T, H, nKV, hd, float(scale), window);
  return info.Env().Undefined();
}

// attentionTrainBackward(dq, dk, dv, dO, q, k, v, p, B, T, H, nKV, hd, scale): train.h.
Napi::Value AttentionTrainBackward(const Napi::CallbackInfo& info) {
  Args a{info, "attentionTrainBackward"};
  a.count(14);
  const int64_t B = a.integer(8, "B", 1), T = a.integer(9, "T", 1), H = a.integer(10, "H", 1), nKV = a.integer(11, "nKV", 1), hd = a.integer(12, "hd", 1);
  if (H % nKV) a.range_error("H must be a multiple of nKV, got H=" + std::to_string(H) + ", nKV=" + std::to_string(nKV));
  const double scale = a.number(13, "scale");
  const int64_t nq = a.mul(a.mul(B * T, H), hd), nk = a.mul(a.mul(B * T, nKV), hd);
  attn_train_bwd(a.f32(0, "dq", nq), a.f32(1, "dk", nk), a.f32(2, "dv", nk), a.f32(3, "dO", nq), a.f32(4, "q", nq), a.f32(5, "k", nk),
                 a.f32(6, "v", nk), a.f32(7, "p", a.mul(a.mul(B * H, T), T)), B, T, H, nKV, hd, float(scale));
  return info.Env().Undefined();
}

// siluMulBackward(dg, du, dy, g, u): train.h.
Napi::Value SiluMulBackward(const Napi::CallbackInfo& info) {
  Args a{info, "siluMulBackward"};
  a.count(5);
  auto g = a.typed(3, "g", napi_float32_array, "Float32Array");
  const int64_t n = int64_t(g.ElementLength());
  silu_mul_bwd(a.f32(0, "dg", n), a.f32(1, "du", n), a.f32(2, "dy", n), a.f32(3, "g", n), a.f32(4, "u", n), n);
  return info.Env().Undefined();
}

Napi::Value MemBandwidth(const Napi::CallbackInfo& info) {
  Args a{info, "memBandwidth"};
  a.count(2);
  int64_t bytes = a.integer(0, "bytes"), iters = a.integer(1, "iters", 1);
  return Napi::Number::New(info.Env(), mem_bandwidth(bytes, int(iters)));
}

Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  Args a{info, "fmaPeak"};
  a.count(1);
  double ms = a.number(0, "ms");
  return Napi::Number::New(info.Env(), fma_peak(ms));
}

template <Napi::Value (*F)(const Napi::CallbackInfo&)>
void add(Napi::Env env, Napi::Object exports, const char* name) {
  exports.Set(name, Napi::Function::New(env, Guarded<F>, name, const_cast<char*>(name)));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  add<Matmul>(env, exports, "matmul");
  add<MatmulQ4>(env, exports, "matmulQ4");
  add<MatmulQg>(env, exports, "matmulQg");
  add<MatmulInt8>(env, exports, "matmulInt8");
  add<GptqXtx>(env, exports, "gptqXtx");
  add<GptqCholesky>(env, exports, "gptqCholesky");
  add<GptqCholeskyInverse>(env, exports, "gptqCholeskyInverse");
  add<GptqQuantizeBlock>(env, exports, "gptqQuantizeBlock");
  add<GptqBlockUpdate>(env, exports, "gptqBlockUpdate");
  add<AwqPseudoQuantize>(env, exports, "awqPseudoQuantize");
  add<AwqGroupGram>(env, exports, "awqGroupGram");
  add<AwqClipSearch>(env, exports, "awqClipSearch");
  add<Rmsnorm>(env, exports, "rmsnorm");
  add<Layernorm>(env, exports, "layernorm");
  add<Rope>(env, exports, "rope");
  add<Attention>(env, exports, "attention");
  add<SiluMul>(env, exports, "siluMul");
  add<Relu>(env, exports, "relu");
  add<Softmax>(env, exports, "softmax");
  add<Embedding>(env, exports, "embedding");
  add<Add>(env, exports, "add");
  add<SetThreads>(env, exports, "setThreads");
  add<GetThreads>(env, exports, "getThreads");
  add<CpuInfo>(env, exports, "cpuInfo");
  add<SetLevel>(env, exports, "setLevel");
  add<Mmap>(env, exports, "mmap");
  add<MemBandwidth>(env, exports, "memBandwidth");
  add<AttentionTrainForward>(env, exports, "attentionTrainForward");
  add<AttentionTrainBackward>(env, exports, "attentionTrainBackward");
  add<SiluMulBackward>(env, exports, "siluMulBackward");
  add<FmaPeak>(env, exports, "fmaPeak");
  add<ScratchStatsFn>(env, exports, "scratchStats");
  add<PoolStatsFn>(env, exports, "poolStats");
  add<PoolConfigFn>(env, exports, "poolConfig");
  return exports;
}

}  // namespace

NODE_API_MODULE(lowbit_cpu, Init)
