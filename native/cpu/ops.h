// Level-agnostic op drivers: threading, blocking, edges. Arguments are already validated by addon.cc.
#pragma once
#include <cstdint>

namespace lowbit {

void matmul(float* y, const float* x, const void* w, int wtype, int64_t M, int64_t N, int64_t K, const float* bias);
struct Q4Weight;
struct QgWeight;
// NF4/FP4 weights (kernels.h Q4Weight, [N, K]): y[M,N] = x[M,K]·dequant(w)ᵀ (+bias[N]).
void matmul_q4(float* y, const float* x, const Q4Weight& w, int64_t M, const float* bias);
// GPTQ (QgWeight, kernels.h): x [M, K], inputs read through perm (null = identity) and zero-padded to w.Kpad.
void matmul_qg(float* y, const float* x, const QgWeight& w, const int32_t* perm, int64_t K, int64_t M, const float* bias);
// Input gradients of frozen linears (training): dx[M, K] = dy[M, N] · W[N, K], the weight read tile by tile
// (widened, or dequantized as the forward's GEMM does), never whole. GPTQ/AWQ: K inputs in the caller's order.
void matmul_t(float* dx, const float* dy, const void* w, int wtype, int64_t M, int64_t N, int64_t K);
void matmul_t_q4(float* dx, const float* dy, const Q4Weight& w, int64_t M);
void matmul_t_qg(float* dx, const float* dy, const QgWeight& w, const int32_t* perm, int64_t K, int64_t M);
void matmul_t_int8(float* dx, const float* dy, const int8_t* CB, const float* SCB, int64_t M, int64_t N, int64_t K);
// LLM.int8 (int8.cc): y[M,N] = x[M,K]·W[N,K]ᵀ (+bias[N]) with W = int8 codes CB [N,K] and row scales SCB [N];
// activations quantized per row, columns with |x| ≥ threshold (float16) as outliers (threshold 0: none).
void matmul_int8(float* y, const float* x, const int8_t* CB, const float* SCB, int64_t M, int64_t N, int64_t K,
                 double threshold, const float* bias);
void rmsnorm(float* y, const float* x, const float* w, int64_t rows, int64_t dim, float eps);
void layernorm(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps);
void rope(float* x, int64_t rows, int64_t nHeads, int64_t hd, const int32_t* pos, const float* invFreq);
void attention(float* out, const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t H,
               int64_t nKV, int64_t hd, int64_t S, int64_t pastLen, const uint8_t* keyMask, float scale,
               int64_t window);
void silu_mul(float* y, const float* g, const float* u, int64_t n);
void relu(float* y, const float* x, int64_t n);
void softmax(float* y, const float* x, int64_t rows, int64_t cols);
void embedding(float* y, const void* table, int wtype, const int32_t* ids, int64_t nIds, int64_t dim);
void add(float* y, const float* a, const float* b, int64_t n);

// GPTQ linear algebra (linalg.cc; float64 ref twins in src/quant/linalg.ts). Matrices are row-major float32.
// H[K,K] = beta·H + (√alpha·X)ᵀ(√alpha·X) for X [T,K] (symmetric, both triangles written).
void gptq_xtx(float* H, const float* x, int64_t T, int64_t K, double beta, double alpha);
// A[n,n] = L·Lᵀ in place (L lower, zeros above); -1, or the first column whose pivot is not positive (A then holds
// partial results).
int64_t cholesky_lower(float* A, int64_t n);
void transpose_square(float* A, int64_t n);
// A holds a lower Cholesky factor L (the upper triangle is ignored); A ← (L·Lᵀ)⁻¹, both triangles.
void cholesky_inverse(float* A, int64_t n);
// GPTQ's column loop over W[:, i1:i1+B] (W [N,K] read only, U [K,K]); scale/zero [B,N] each column's grid per row;
// outputs [N,B]: codes, dequantized values, err = (w − q)/U[c,c]; row_loss[N] = Σ (w − q)²/U[c,c]²/2.
void gptq_quantize_block(const float* W, int64_t N, int64_t K, int64_t i1, int64_t B, const float* U, const float* scale,
                         const float* zero, int maxq, uint8_t* codes, float* deq, float* err, double* row_loss);
// W[N,K]: W[:, i1+B:] -= err[N,B]·U[i1:i1+B, i1+B:] with U [K,K].
void gptq_block_update(float* W, int64_t N, int64_t K, const float* err, int64_t B, const float* U, int64_t i1);

// AWQ (awq.cc; TypeScript twins in src/quant/awq.ts). W [N,K] row-major float32, groups of G consecutive inputs (G
// divides K). out = Q(W·diag(s))/s (s [K] or null: Q(W)); codes [N,K], scales [K/G, N], zeros [K/G, N] or null.
void awq_pseudo_quantize(const float* W, int64_t N, int64_t K, const float* s, int bits, int64_t G, bool zero_point,
                         float* out, uint8_t* codes, float* scales, uint8_t* zeros);
// gram [K/G, G, G] = per group Σ_t x[t, group]ᵀ·x[t, group] in double, x [T,K].
void awq_group_gram(const float* x, int64_t T, int64_t K, int64_t G, double* gram);
// best [N, K/G]: the clipping max |w| of each (row, group) with the smallest mean output error over the T tokens
// whose Gram matrices gram holds, among max|w|·(1 − i/n_grid), i < n_shrink (strictly smaller wins).
void awq_clip_search(const float* W, int64_t N, int64_t K, int64_t G, const double* gram, int64_t T, int bits,
                     bool zero_point, int n_shrink, int n_grid, float* best);

// Roofline probes (roofline.cc).
double mem_bandwidth(int64_t bytes, int iters);
double fma_peak(double ms);

}  // namespace lowbit
