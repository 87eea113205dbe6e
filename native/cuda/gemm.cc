// Matrix products on the device: the GEMV of kernels.cu for decode (up to 8 rows of x), cuBLAS for the rest.
// cuBLAS is loaded at run time (dlopen), not linked: the addon then builds where CUDA's compiler and runtime exist
// without cuBLAS (the CI machine), and loads wherever the GPU machine keeps libcublas (LOWBIT_CUBLAS names the file;
// otherwise the loader's search path, CUDA's lib64 and PyTorch's nvidia-cublas wheel). The few declarations we call
// are written out here with cuBLAS's documented values.
#include <dlfcn.h>

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <mutex>
#include <vector>

#include "cuda_common.h"

namespace lowbit_cuda {

namespace {

typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;  // CUBLAS_STATUS_SUCCESS = 0
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
constexpr int CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_8I = 3, CUDA_R_32I = 10, CUDA_R_16BF = 14;
constexpr int CUBLAS_COMPUTE_32F = 68;  // float32 accumulation, no TF32 (CUBLAS_COMPUTE_32F_FAST_TF32 is 77)
constexpr int CUBLAS_COMPUTE_32I = 72;  // int32 accumulation: exact int8 products
constexpr int CUBLAS_COMPUTE_64F = 70;
constexpr int CUBLAS_GEMM_DEFAULT = -1;

struct Cublas {
  void* lib = nullptr;
  cublasHandle_t handle = nullptr;
  std::string why;
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*set_workspace)(cublasHandle_t, void*, size_t) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                            const void*, void*, int, int, int, int) = nullptr;
  const char* (*status_name)(cublasStatus_t) = nullptr;
  // GPTQ's factorization (gptq.cu): float64 triangular solve and rank-k update.
  cublasStatus_t (*dtrsm)(cublasHandle_t, int, int, int, int, int, int, const double*, const double*, int, double*, int) = nullptr;
  cublasStatus_t (*dsyrk)(cublasHandle_t, int, int, int, int, const double*, const double*, int, const double*, double*, int) = nullptr;
};

Cublas& cublas() {
  static Cublas c;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> names;
    if (const char* p = std::getenv("LOWBIT_CUBLAS")) names.push_back(p);
    for (const char* n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) names.push_back(n);
    for (const char* d : {"/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/",
                          "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas/lib/",
                          "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/"})
      for (const char* n : {"libcublas.so.13", "libcublas.so.12"}) names.push_back(std::string(d) + n);
    std::string tried;
    for (const std::string& n : names) {
      c.lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (c.lib) break;
      tried += (tried.empty() ? "" : ", ") + n;
    }
    if (!c.lib) {
      c.why = "libcublas not found (tried " + tried + "); set LOWBIT_CUBLAS to its path";
      return;
    }
    c.create = reinterpret_cast<decltype(c.create)>(dlsym(c.lib, "cublasCreate_v2"));
    c.set_stream = reinterpret_cast<decltype(c.set_stream)>(dlsym(c.lib, "cublasSetStream_v2"));
    c.gemm_ex = reinterpret_cast<decltype(c.gemm_ex)>(dlsym(c.lib, "cublasGemmEx"));
    c.status_name = reinterpret_cast<decltype(c.status_name)>(dlsym(c.lib, "cublasGetStatusName"));
    c.set_workspace = reinterpret_cast<decltype(c.set_workspace)>(dlsym(c.lib, "cublasSetWorkspace_v2"));
    c.dtrsm = reinterpret_cast<decltype(c.dtrsm)>(dlsym(c.lib, "cublasDtrsm_v2"));
    c.dsyrk = reinterpret_cast<decltype(c.dsyrk)>(dlsym(c.lib, "cublasDsyrk_v2"));
    if (!c.create || !c.set_stream || !c.gemm_ex) {
      c.why = "libcublas lacks cublasCreate_v2 / cublasSetStream_v2 / cublasGemmEx";
      c.lib = nullptr;
      return;
    }
    if (c.create(&c.handle) != 0) {
      c.why = "cublasCreate failed";
      c.lib = nullptr;
      return;
    }
    // A workspace of our own, so that a GEMM captured into a graph never allocates.
    if (c.set_workspace) {
      void* ws = nullptr;
      constexpr size_t kWorkspace = size_t(32) << 20;
      if (cudaMalloc(&ws, kWorkspace) == cudaSuccess && c.set_workspace(c.handle, ws, kWorkspace) != 0) cudaFree(ws);
    }
  });
  return c;
}

void check(cublasStatus_t s, const char* what) {
  if (s == 0) return;
  const Cublas& c = cublas();
  throw CudaError(std::string("cuBLAS ") + what + ": " + (c.status_name ? c.status_name(s) : "status " + std::to_string(s)));
}

}  // namespace

bool cublas_available(std::string* why) {
  Cublas& c = cublas();
  if (why) *why = c.why;
  return c.lib != nullptr;
}

// y [M, N] = xin [M, K] · w [N, K]ᵀ (+ bias) by cuBLAS; xin is x already rounded to w's 16-bit type (or float32 x
// for F32 weights).
static void gemm_rows(float* y, const void* xin, const void* w, int wt, const float* bias, int64_t M, int64_t N, int64_t K) {
  Cublas& c = cublas();
  check(c.set_stream(c.handle, stream()), "SetStream");
  const float one = 1.f, zero = 0.f;
  const int t = wt == W_F32 ? CUDA_R_32F : wt == W_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  // Column-major: yᵀ [N, M] = w [N, K] (row-major, i.e. column-major [K, N], transposed) · xᵀ [K, M].
  check(c.gemm_ex(c.handle, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, w, t, int(K), xin, t, int(K), &zero, y, CUDA_R_32F,
                  int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        wt == W_F32 ? "GemmEx (f32)" : wt == W_BF16 ? "GemmEx (bf16)" : "GemmEx (f16)");
  if (bias) bias_rows(y, bias, M, N);
}

// x as the GEMM reads it: rounded once to the weight's 16-bit type (scratch slot 0), or x itself for F32 weights.
static const void* gemm_input(const float* x, int wt, int64_t M, int64_t N, int64_t K) {
  Cublas& c = cublas();
  if (!c.lib) throw CudaError("matmul of " + std::to_string(M) + " rows needs cuBLAS: " + c.why);
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) throw CudaError("matmul: a dimension is above cuBLAS's int range");
  if (wt == W_F32) return x;
  void* xh = scratch(0, size_t(M) * size_t(K) * 2);
  f32_to_half(xh, x, M * K, wt == W_BF16);
  return xh;
}

void matmul(float* y, const float* x, const void* w, int wt, const float* bias, int64_t M, int64_t N, int64_t K) {
  if (N == 0) return;
  matmul_multi(&y, &w, &N, &bias, 1, x, wt, M, K);
}

void matmul_multi(float* const* ys, const void* const* ws, const int64_t* ns, const float* const* biases, int nOut, const float* x,
                  int wt, int64_t M, int64_t K) {
  if (M == 0) return;
  if (M <= 8) {
    gemv_multi(ys, ws, ns, biases, nOut, x, wt, M, K);
    return;
  }
  int64_t maxN = 0;
  for (int i = 0; i < nOut; i++) maxN = ns[i] > maxN ? ns[i] : maxN;
  const void* xin = gemm_input(x, wt, M, maxN, K);
  for (int i = 0; i < nOut; i++)
    if (ns[i] > 0) gemm_rows(ys[i], xin, ws[i], wt, biases[i], M, ns[i], K);
}

void matmul_silu(float* y, const float* x, const void* wGate, const void* wUp, const float* bGate, const float* bUp, int wt, int64_t M,
                 int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  if (M <= 8) {
    gemv_silu(y, x, wGate, wUp, bGate, bUp, wt, M, N, K);
    return;
  }
  const void* xin = gemm_input(x, wt, M, N, K);
  float* u = static_cast<float*>(scratch(9, size_t(M) * size_t(N) * sizeof(float)));
  gemm_rows(y, xin, wGate, wt, bGate, M, N, K);
  gemm_rows(u, xin, wUp, wt, bUp, M, N, K);
  silu_mul(y, y, u, M * N);
}

void gemm_rm(float* C, const float* A, const void* B, int bt, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool accumulate, float alpha) {
  if (M == 0 || N == 0) return;
  Cublas& c = cublas();
  if (!c.lib) throw CudaError("gemm needs cuBLAS: " + c.why);
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) throw CudaError("gemm: a dimension is above cuBLAS's int range");
  check(c.set_stream(c.handle, stream()), "SetStream");
  const float beta = accumulate ? 1.f : 0.f;
  // Row-major C = op(A)·op(B) is column-major Cᵀ [N, M] = op(B)ᵀ·op(A)ᵀ; a row-major [R, C] array is column-major [C, R].
  const int opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int ldb = int(tb ? K : N), lda = int(ta ? M : K);
  const void* a = A;
  int t = CUDA_R_32F;
  if (bt != W_F32) {
    const bool bf = bt == W_BF16;
    void* ah = scratch(0, size_t(M) * size_t(K) * 2);
    f32_to_half(ah, A, M * K, bf);
    a = ah;
    t = bf ? CUDA_R_16BF : CUDA_R_16F;
  }
  check(c.gemm_ex(c.handle, opB, opA, int(N), int(M), int(K), &alpha, B, t, ldb, a, t, lda, &beta, C, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F,
                  CUBLAS_GEMM_DEFAULT), "GemmEx (training)");
}

bool int8_gemm_s32(int32_t* C, const int8_t* CB, const int8_t* CA, int64_t M, int64_t N, int64_t K, int64_t ldCA) {
  Cublas& c = cublas();
  // cuBLAS's int8 GEMM wants leading dimensions (and so K) in multiples of 4.
  if (!c.lib || K % 4 != 0 || ldCA % 4 != 0 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return false;
  check(c.set_stream(c.handle, stream()), "SetStream");
  const int32_t one = 1, zero = 0;
  // Column-major: Cᵀ [N, M] = CB [N, K] (row-major, so transposed) · CAᵀ [K, M] (CA row-major [M, ldCA]).
  check(c.gemm_ex(c.handle, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, CB, CUDA_R_8I, int(K), CA, CUDA_R_8I, int(ldCA),
                  &zero, C, CUDA_R_32I, int(N), CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT), "GemmEx (int8)");
  return true;
}

void dgemm_nt(double* Y, const double* X, const double* W, int64_t M, int64_t N, int64_t K, bool accumulate) {
  Cublas& c = cublas();
  if (!c.lib) throw CudaError("dgemm needs cuBLAS: " + c.why);
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) throw CudaError("dgemm: a dimension is above cuBLAS's int range");
  check(c.set_stream(c.handle, stream()), "SetStream");
  const double one = 1.0, beta = accumulate ? 1.0 : 0.0;
  check(c.gemm_ex(c.handle, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, W, CUDA_R_64F, int(K), X, CUDA_R_64F, int(K), &beta, Y,
                  CUDA_R_64F, int(N), CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT), "GemmEx (f64)");
}

static Cublas& blas_for(const char* what) {
  Cublas& c = cublas();
  if (!c.lib) throw CudaError(std::string(what) + " needs cuBLAS: " + c.why);
  check(c.set_stream(c.handle, stream()), "SetStream");
  return c;
}

static void check_int_range(const char* what, std::initializer_list<int64_t> dims) {
  for (int64_t d : dims)
    if (d > INT32_MAX) throw CudaError(std::string(what) + ": a dimension is above cuBLAS's int range");
}

void sgemm_cm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
              float beta, float* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  Cublas& c = blas_for("sgemm");
  check_int_range("sgemm", {m, n, k, lda, ldb, ldc});
  check(c.gemm_ex(c.handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, int(m), int(n), int(k), &alpha, A, CUDA_R_32F,
                  int(lda), B, CUDA_R_32F, int(ldb), &beta, C, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "GemmEx (sgemm)");
}

void dtrsm_cm(bool right, bool lower, bool trans, int64_t m, int64_t n, double alpha, const double* A, int64_t lda, double* B, int64_t ldb) {
  if (m == 0 || n == 0) return;
  Cublas& c = blas_for("dtrsm");
  if (!c.dtrsm) throw CudaError("libcublas lacks cublasDtrsm_v2");
  check_int_range("dtrsm", {m, n, lda, ldb});
  // cublasSideMode_t LEFT 0 / RIGHT 1, cublasFillMode_t LOWER 0 / UPPER 1, CUBLAS_DIAG_NON_UNIT 0.
  check(c.dtrsm(c.handle, right ? 1 : 0, lower ? 0 : 1, trans ? CUBLAS_OP_T : CUBLAS_OP_N, 0, int(m), int(n), &alpha, A, int(lda), B, int(ldb)),
        "Dtrsm");
}

void dsyrk_lower(bool trans, int64_t n, int64_t k, double alpha, const double* A, int64_t lda, double beta, double* C, int64_t ldc) {
  if (n == 0) return;
  Cublas& c = blas_for("dsyrk");
  if (!c.dsyrk) throw CudaError("libcublas lacks cublasDsyrk_v2");
  check_int_range("dsyrk", {n, k, lda, ldc});
  check(c.dsyrk(c.handle, 0, trans ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(k), &alpha, A, int(lda), &beta, C, int(ldc)), "Dsyrk");
}

// Device milliseconds of `iters` calls of f, timed with events on the stream.
template <class F>
float time_ms(int iters, F f) {
  cudaEvent_t e0, e1;
  cuda_check(cudaEventCreate(&e0), "cudaEventCreate");
  cuda_check(cudaEventCreate(&e1), "cudaEventCreate");
  cuda_check(cudaEventRecord(e0, stream()), "cudaEventRecord");
  for (int i = 0; i < iters; i++) f(i);
  cuda_check(cudaEventRecord(e1, stream()), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(e1), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms;
}

double gemm_peak_tflops(int n, int iters) {
  Cublas& c = cublas();
  if (!c.lib) throw CudaError("gemmPeak needs cuBLAS: " + c.why);
  check(c.set_stream(c.handle, stream()), "SetStream");
  void *a = nullptr, *b = nullptr, *y = nullptr;
  const size_t nn = size_t(n) * size_t(n);
  cuda_check(cudaMallocAsync(&a, nn * 2, stream()), "cudaMallocAsync (gemmPeak)");
  cuda_check(cudaMallocAsync(&b, nn * 2, stream()), "cudaMallocAsync (gemmPeak)");
  cuda_check(cudaMallocAsync(&y, nn * 4, stream()), "cudaMallocAsync (gemmPeak)");
  fill_random(a, W_BF16, int64_t(nn), 1, 0.02f);  // random data: zeros run faster than real weights
  fill_random(b, W_BF16, int64_t(nn), 2, 1.f);
  const float one = 1.f, zero = 0.f;
  auto run = [&] {
    check(c.gemm_ex(c.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, y, CUDA_R_32F, n,
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), "GemmEx (gemmPeak)");
  };
  for (int i = 0; i < 3; i++) run();
  const float ms = time_ms(iters, [&](int) { run(); });
  cuda_check(cudaFreeAsync(a, stream()), "cudaFreeAsync");
  cuda_check(cudaFreeAsync(b, stream()), "cudaFreeAsync");
  cuda_check(cudaFreeAsync(y, stream()), "cudaFreeAsync");
  return 2.0 * double(n) * n * n * iters / (double(ms) * 1e-3) / 1e12;
}

double copy_bandwidth_gbs(size_t bytes, int iters) {
  void *a = nullptr, *b = nullptr;
  cuda_check(cudaMallocAsync(&a, bytes, stream()), "cudaMallocAsync (copyBandwidth)");
  cuda_check(cudaMallocAsync(&b, bytes, stream()), "cudaMallocAsync (copyBandwidth)");
  cuda_check(cudaMemsetAsync(a, 1, bytes, stream()), "cudaMemsetAsync");
  cuda_check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync");
  const float ms = time_ms(iters, [&](int i) {
    cuda_check(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync");
  });
  cuda_check(cudaFreeAsync(a, stream()), "cudaFreeAsync");
  cuda_check(cudaFreeAsync(b, stream()), "cudaFreeAsync");
  return 2.0 * double(bytes) * iters / (double(ms) * 1e-3) / 1e9;  // bytes read + bytes written
}

}  // namespace lowbit_cuda
