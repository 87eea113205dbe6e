// Shared by the CUDA addon's files: weight dtype codes (the CPU addon's, kernels.h WType), the error type every
// failed CUDA or cuBLAS call becomes (the addon turns it into a JS Error naming the call), the one stream all work
// runs on, and the launchers of kernels.cu.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowbit_cuda {

enum WType : int { W_F32 = 0, W_BF16 = 1, W_F16 = 2 };

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CudaError(std::string("CUDA ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// The stream every op is queued on (created at the first use of the device; device.cc).
cudaStream_t stream();

// kernels.cu
void gemv(float* y, const float* x, const void* w, int wt, const float* bias, int64_t M, int64_t N, int64_t K);
// One GEMV launch over nOut (1-3) weights of one dtype that read the same x: ws[i] [ns[i], K] → ys[i] [M, ns[i]].
void gemv_multi(float* const* ys, const void* const* ws, const int64_t* ns, const float* const* biases, int nOut, const float* x,
                int wt, int64_t M, int64_t K);
void gemv_silu(float* y, const float* x, const void* wGate, const void* wUp, const float* bGate, const float* bUp, int wt, int64_t M,
               int64_t N, int64_t K);
void f32_to_half(void* dst, const float* src, int64_t n, bool bf16);
void bias_rows(float* y, const float* bias, int64_t rows, int64_t N);
void rmsnorm(float* y, const float* x, const float* w, int64_t rows, int64_t D, float eps);
void add_rmsnorm(float* out, float* x, const float* y, const float* w, int64_t rows, int64_t D, float eps);
void layernorm(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t D, float eps);
void rope(float* x, const int32_t* pos, const float* invFreq, int64_t rows, int nH, int hd);
void silu_mul(float* y, const float* g, const float* u, int64_t n);
void relu(float* y, const float* x, int64_t n);
void add(float* y, const float* a, const float* b, int64_t n);
void softmax(float* y, const float* x, int64_t rows, int64_t D);
void embedding(float* y, const void* table, int wt, const int32_t* ids, int64_t n, int64_t D);
// pastLenDev (a captured decode step): the cache length read from the device, replacing pastLen. keyMask [B,
// maskStride] (maskStride 0: pastLen + T) or null.
void attention(float* out, const float* q, const float* K, const float* V, int B, int T, int H, int nKV, int hd,
               int64_t S, int64_t pastLen, const int64_t* pastLenDev, const uint8_t* keyMask, int64_t maskStride,
               float scale, int64_t window);
void kv_write(float* dst, const float* src, int64_t B, int64_t T, int64_t cap, int64_t row, int64_t len, const int64_t* lenDev);
void argmax_rows(int32_t* out, const float* x, int64_t rows, int64_t D);
// sample.cu: the logits processors and the draw of src/generate (meta: sample.cu's layout); out[r] −1 for a non-finite row.
void sample_rows(int32_t* out, const float* x, const int32_t* meta, int64_t rows, int64_t V, double temperature, int topK, double topP,
                 double minP, double penalty, bool doSample);
void fill_random(void* dst, int wt, int64_t n, uint32_t seed, float stdv);
void spin(int64_t ns);
void rope_append(float* q, float* k, const float* v, const int32_t* pos, const float* invFreq, float* kc, float* vc, int64_t B,
                 int64_t T, int nH, int nKV, int hd, int64_t cap, int64_t len, const int64_t* lenDev);

// gemm.cc: y[M,N] = x[M,K]·w[N,K]ᵀ (+bias): the GEMV for M ≤ 8, else cuBLAS (x rounded to the weight's 16-bit type
// for BF16/F16 weights, as PyTorch runs a bf16 model; plain float32 for F32 weights).
void matmul(float* y, const float* x, const void* w, int wt, const float* bias, int64_t M, int64_t N, int64_t K);
// The same for 1-3 weights of one dtype that read the same x (q/k/v): one GEMV launch, or x rounded once and a GEMM
// each.
void matmul_multi(float* const* ys, const void* const* ws, const int64_t* ns, const float* const* biases, int nOut, const float* x,
                  int wt, int64_t M, int64_t K);
// y = silu(x·gateᵀ + bGate)·(x·upᵀ + bUp): the fused GEMV, or x rounded once, two GEMMs and silu_mul.
void matmul_silu(float* y, const float* x, const void* wGate, const void* wUp, const float* bGate, const float* bUp, int wt, int64_t M,
                 int64_t N, int64_t K);
// Roofline probes (timed with device events on random data): a bf16 n×n×n cuBLAS GEMM in TFLOP/s, and a
// device-to-device copy in GB/s counting bytes read plus written.
double gemm_peak_tflops(int n, int iters);
double copy_bandwidth_gbs(size_t bytes, int iters);
// Whether cuBLAS could be loaded, and why not.
bool cublas_available(std::string* why);

// GPTQ / AWQ (qg.cu): the kernels' layout built from a checkpoint's tensor (mode 0: GPTQ qweight, 1: AWQ GEMM,
// 2: AWQ GEMV), and y = x·Wᵀ (+ bias) over 1-3 weights that share x, bits, K, groups and permutation.
struct QgCall {
  int bits = 4, nOut = 1, nc = 0, G = 0, nG = 0;
  int64_t K = 0;
  const int32_t* perm = nullptr;
  const uint8_t* codes[3] = {};
  const uint16_t* scales[3] = {};
  const uint8_t* zeros[3] = {};
  float* y[3] = {};
  const float* bias[3] = {};
  int64_t n[3] = {};
  // gate/up (nOut 2, equal n) with SiLU·mul in the epilogue: y[0] = silu(x·gateᵀ)·(x·upᵀ); decode rows only.
  bool silu = false;
};
void qg_repack(uint8_t* out, const void* src, int mode, int bits, const int32_t* perm, int64_t N, int64_t K, int nc);
void qg_matmul(const QgCall& q, const float* x, int64_t M);
// Weight i of q dequantized to float16 [n[i], K] in input order (the prefill's product operand; training's dy·W).
void qg_dequant(__half* w, const QgCall& q, int i);

// bitsandbytes NF4/FP4 (bnb4.cu): y = x·Wᵀ (+ bias) over 1-3 weights that share x, block size and dtype; packed as
// the file packs it, float32 absmax per block, lut = the 16 code values (device).
struct B4Call {
  int nOut = 1, blocksize = 64, wt = W_BF16;
  int64_t K = 0;
  const float* lut = nullptr;
  const uint8_t* packed[3] = {};
  const float* absmax[3] = {};
  float* y[3] = {};
  const float* bias[3] = {};
  int64_t n[3] = {};
};
void b4_matmul(const B4Call& q, const float* x, int64_t M);
// dequantize_4bit into w [n] of WType wt.
void b4_dequant(void* w, int wt, const uint8_t* packed, const float* absmax, const float* lut, int64_t n, int blocksize);
// LLM.int8 (int8.cu): y = x·Wᵀ (+ bias) as MatMul8bitLt computes it (int8 [N, K] codes, SCB [N], outlier threshold).
void int8_matmul(float* y, const float* x, const int8_t* CB, const float* SCB, const float* bias, int64_t M, int64_t N, int64_t K,
                 float threshold);
// dequantizeInt8 into w [N, K] float32.
void int8_dequant(float* w, const int8_t* CB, const float* SCB, int64_t N, int64_t K);
// C [M, N] = CA [M, K] (row stride ldCA) · CB [N, K]ᵀ in exact int32 by cuBLAS (gemm.cc); false where cuBLAS is absent or
// K is not a multiple of 4 (the caller then uses its own kernel).
bool int8_gemm_s32(int32_t* C, const int8_t* CB, const int8_t* CA, int64_t M, int64_t N, int64_t K, int64_t ldCA);
// Row-major C [M, N] (+)= alpha·op(A) [M, K] · op(B) [K, N], op a transpose where asked (A [K, M] when ta, B [N, K] when
// tb); A float32, B of WType bt (A rounded to it when 16-bit, as matmul does); cuBLAS, float32 accumulation (gemm.cc).
void gemm_rm(float* C, const float* A, const void* B, int bt, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool accumulate, float alpha);
// Column-major BLAS for GPTQ (gemm.cc, cuBLAS): C (m×n, ldc) = alpha·op(A)·op(B) + beta·C in float32 (no TF32); the
// float64 triangular solve op(A)·X = alpha·B (left) or X·op(A) = alpha·B (right), A triangular, X over B; and the
// float64 rank-k update of C's lower triangle, C = alpha·op(A)·op(A)ᵀ + beta·C (op(A) n×k; trans: A is k×n).
void sgemm_cm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
              float beta, float* C, int64_t ldc);
void dtrsm_cm(bool right, bool lower, bool trans, int64_t m, int64_t n, double alpha, const double* A, int64_t lda, double* B, int64_t ldb);
void dsyrk_lower(bool trans, int64_t n, int64_t k, double alpha, const double* A, int64_t lda, double beta, double* C, int64_t ldc);
// GPTQ (gptq.cu, driven by src/quant/gptq-cuda.ts): weights to float32; H's diagonal; H = beta·H + alpha·XᵀX for
// X [T, K]; find_params of columns [c0, c1) of W [N, ld] into scale/zero [N]; dst [N, K] = W's columns in perm order
// with dead columns zeroed; the factorization (U [K, K] row-major upper, H⁻¹ = UᵀU; A and X: K×K float64 scratch;
// fail [2]: the first non-positive pivot of each Cholesky, or 0x7f7f7f7f); the column loop of block [i1, i1 + B) and
// its lazy update; round to nearest on given grids; d = a − b; Σ a·b in float64 partials [64].
constexpr int kGptqMaxBlock = 1024;
void gptq_to_f32(float* dst, const void* src, int wt, int64_t n);
void gptq_diag(float* out, const float* H, int64_t K);
void gptq_xtx(float* H, const float* X, int64_t T, int64_t K, float beta, float alpha);
void gptq_find_params(float* scale, float* zero, const float* W, int64_t N, int64_t ld, int64_t c0, int64_t c1, int bits, bool sym);
void gptq_columns(float* dst, const float* W, const int32_t* perm, const uint8_t* dead, int64_t N, int64_t K);
void gptq_prepare(float* U, double* A, double* X, int32_t* fail, const float* H, const int32_t* perm, const float* diag, int64_t K);
void gptq_quant_block(const float* W, int64_t N, int64_t K, int64_t i1, int B, const float* U, const float* scales, const float* zeros,
                      const int32_t* colGroup, const int32_t* perm, int bits, uint8_t* codes, float* deq, float* err, double* rowLoss);
void gptq_block_update(float* W, int64_t N, int64_t K, const float* err, int B, const float* U, int64_t i1);
void gptq_rtn(uint8_t* codes, float* deq, const float* W, const float* scales, const float* zeros, const int32_t* colGroup, int64_t N,
              int64_t K, int bits);
void gptq_sub(float* d, const float* a, const float* b, int64_t n);
void gptq_dot(double* partials, const float* a, const float* b, int64_t n);
// AWQ (awq.cu, driven by src/quant/awq-cuda.ts), the twins of src/quant/awq.ts's kernels and statistics: out = Q(W·s)/s
// (codes, scales [K/G, N], zeros when given); the per-group Gram matrices [K/G, G, G] of x [T, K]; the clip search
// (best [N, K/G]); acc[c] += Σ_t |x[t, c]|; gmax [N, K/G] = max |w| (+ add); acc[c] += Σ_r |w[r, c]| / gmax; W·diag(s)
// (mode 0) or W's last ns rows ÷ s (mode 1); rows r0, r0 + step, … of x (÷ s); W clamped to ±max per group.
void awq_pseudo_quantize_dev(float* out, uint8_t* codes, float* scales, uint8_t* zeros, const float* W, const float* s, int64_t N,
                             int64_t K, int64_t G, int bits, bool zeroPoint);
void awq_group_gram_dev(double* gram, const float* x, int64_t T, int64_t K, int64_t G);
void awq_clip_search_dev(float* best, const float* W, int64_t N, int64_t K, int64_t G, const double* gram, int64_t T, int bits,
                         bool zeroPoint, int nShrink, int nGrid);
void awq_abs_sum_dev(double* acc, const float* x, int64_t T, int64_t K);
void awq_group_absmax_dev(float* gmax, const float* W, int64_t N, int64_t K, int64_t G, double add);
void awq_weight_mean_dev(double* acc, const float* W, const float* gmax, int64_t N, int64_t K, int64_t G);
void awq_scale_dev(float* out, const float* W, const float* s, int64_t N, int64_t K, int64_t ns, int mode);
void awq_gather_rows_dev(float* out, const float* x, const float* s, int64_t r0, int64_t step, int64_t n, int64_t K);
void awq_apply_clip_dev(float* out, const float* W, const float* mx, int64_t N, int64_t K, int64_t G);
// The optimizer on the device (train.cu): AdamW as src/train/optim.ts (float64 arithmetic, float32 state) with the
// gradient first scaled by clip; Σ g² in float64, one partial per block into partials[0, kSumsqBlocks); dst = s·src.
constexpr int kSumsqBlocks = 64;
void train_adamw(float* p, const float* g, float* m, float* v, int64_t n, double lr, double b1, double b2, double eps, double decay,
                 double stepSize, double bc2s, double clip);
void train_sumsq(double* partials, const float* g, int64_t n);
void train_scale_copy(float* dst, const float* src, int64_t n, double s);
// train.cu: src/train/ops.ts's training ops on the device.
void train_rmsnorm_fwd(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t D, float eps);
void train_rmsnorm_bwd(float* dx, float* dw, const float* dy, const float* w, const float* x, const float* rstd, int64_t rows, int64_t D);
void train_layernorm_fwd(float* y, float* xhat, float* rstd, const float* x, const float* w, const float* b, int64_t rows, int64_t D, float eps);
void train_layernorm_bwd(float* dx, float* dw, float* db, const float* dy, const float* w, const float* xhat, const float* rstd, int64_t rows,
                         int64_t D);
void train_silu_mul_bwd(float* dg, float* du, const float* dy, const float* g, const float* u, int64_t n);
void train_relu_bwd(float* dx, const float* dy, const float* x, int64_t n);
void train_causal_lm_loss(float* dl, float* nll, const float* logits, const int32_t* targets, int64_t rows, int64_t V, float div);
// LoRA dropout: drop[i] = keep where hash(seed, i) ≥ p·2³², else 0 (keep = 1/(1 − p)); xd = x⊙drop.
void train_dropout(float* xd, float* drop, const float* x, int64_t n, float p, uint32_t seed);
// y += a⊙b.
void train_mul_add(float* y, const float* a, const float* b, int64_t n);
void train_attention_fwd(float* o, float* P, const float* q, const float* k, const float* v, const uint8_t* keyMask, int B, int T, int H,
                         int nKV, int hd, float scale, int window);
void train_attention_bwd(float* dq, float* dk, float* dv, float* P, const float* dO, const float* q, const float* k, const float* v, int B,
                         int T, int H, int nKV, int hd, float scale);
// Y [M, N] (+)= X [M, K] · W [N, K]ᵀ in float64 by cuBLAS (gemm.cc).
void dgemm_nt(double* Y, const double* X, const double* W, int64_t M, int64_t N, int64_t K, bool accumulate);

// Device scratch that grows and is kept (stream-ordered allocations), one per purpose (slots 0-9): 0 GEMM activations
// in bf16/f16, 1 argmax partials, 2 GPTQ/AWQ activations, 3 GPTQ/AWQ float16 weights (prefill), 4 attention partials,
// 5 attention split counters, 6 LLM.int8 activations, 7 LLM.int8 int32 products (prefill), 8 the
// sampler's work copy of the logits, 9 the up projection of a GEMM-path matmulSiluMul.
void* scratch(int slot, size_t bytes);
// The same, zero-filled when (re)allocated; its users leave it zero (5: attention split counters).
void* scratch_zeroed(int slot, size_t bytes);

}  // namespace lowbit_cuda
