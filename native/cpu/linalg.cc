// Dense linear algebra for GPTQ (../shared/spec/FORMATS.md §4.2-4.3; src/quant/linalg.ts holds the float64 ref twins):
//   gptq_xtx            H = beta·H + (√alpha·X)ᵀ(√alpha·X)          (AutoGPTQ add_batch)
//   cholesky_lower      A = L·Lᵀ in place (blocked, right-looking)   (torch.linalg.cholesky)
//   cholesky_inverse    L → (L·Lᵀ)⁻¹ in place: L⁻¹ (blocked, LAPACK strtri order), then L⁻ᵀ·L⁻¹ (slauum order)
//   gptq_quantize_block fasterquant's column loop over one block, rows in parallel (double arithmetic rounded to
//                       float32 exactly as the TypeScript twin, so the two agree bit for bit)
//   gptq_block_update   W[:, i2:] -= Err·U[i1:i2, i2:]              (fasterquant's lazy batch update)
// The O(n³) parts run through one strided GEMM (gemm_acc) built on the kernel table's micro-kernel, so every SIMD
// level runs them; the O(n²·nb) panel steps are plain loops accumulating in double. Everything is float32 storage, as
// torch's float32 Hessian; products accumulate in float32 inside the micro-kernel. Work is split over the pool in
// fixed tiles, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels.h"
#include "ops.h"
#include "pool.h"
#include "scratch.h"

// gptq_quantize_block mirrors its TypeScript twin operation by operation; a fused multiply-add would round differently.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace lowbit {
namespace {

// A(i, k) = p[i·rs + k·cs]: a matrix or its transpose anywhere in a row-major buffer.
struct View {
  const float* p;
  int64_t rs, cs;
  float at(int64_t i, int64_t k) const { return p[i * rs + k * cs]; }
};

// Rows and columns of C per task (multiples of MR and NR are taken from the kernel table).
constexpr int64_t kMC = 128, kNC = 256;
// Columns per panel of the blocked factorizations.
constexpr int64_t kNB = 128;

// a: MR-row panels, a[p·MR·kc + k·MR + i] = alpha·A(i0 + p·MR + i, k0 + k); rows past mc are zero. The loops follow
// the source's contiguous direction (a strided walk down 8 KB rows would thrash L1 on every element).
void pack_a(float* a, View A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float alpha, int64_t MR) {
  for (int64_t p = 0; p * MR < mc; p++) {
    float* dst = a + p * MR * kc;
    const int64_t mr = std::min(MR, mc - p * MR);
    if (mr < MR)
      for (int64_t k = 0; k < kc; k++)
        for (int64_t i = mr; i < MR; i++) dst[k * MR + i] = 0.f;
    if (A.cs == 1) {
      for (int64_t i = 0; i < mr; i++) {
        const float* src = A.p + (i0 + p * MR + i) * A.rs + k0;
        for (int64_t k = 0; k < kc; k++) dst[k * MR + i] = alpha * src[k];
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = A.p + (k0 + k) * A.cs + (i0 + p * MR) * A.rs;
        for (int64_t i = 0; i < mr; i++) dst[k * MR + i] = alpha * src[i * A.rs];
      }
    }
  }
}

// b: NR-column panels, b[q·NR·kc + k·NR + j] = B(k0 + k, j0 + q·NR + j); columns past nc are zero.
void pack_b(float* b, View B, int64_t j0, int64_t nc, int64_t k0, int64_t kc, int64_t NR) {
  for (int64_t q = 0; q * NR < nc; q++) {
    float* dst = b + q * NR * kc;
    const int64_t nr = std::min(NR, nc - q * NR);
    if (B.cs == 1) {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = B.p + (k0 + k) * B.rs + j0 + q * NR;
        float* d = dst + k * NR;
        for (int64_t j = 0; j < nr; j++) d[j] = src[j];
        for (int64_t j = nr; j < NR; j++) d[j] = 0.f;
      }
    } else {
      if (nr < NR)
        for (int64_t k = 0; k < kc; k++)
          for (int64_t j = nr; j < NR; j++) dst[k * NR + j] = 0.f;
      for (int64_t j = 0; j < nr; j++) {
        const float* src = B.p + (j0 + q * NR + j) * B.cs + k0 * B.rs;
        for (int64_t k = 0; k < kc; k++) dst[k * NR + j] = src[k * B.rs];
      }
    }
  }
}

struct GemmScratch {
  Scratch<float> a, b, tile;
};

// C[i·ldc + j] += alpha · Σ_k A(i,k)·B(k,j) for i < M, j < N, k < K.
//  lowerC: tiles lying wholly above the diagonal (every i < j) are skipped; a tile that crosses it is computed whole,
//          so some elements above the diagonal change too (callers treat the upper triangle as scratch).
//  triA:   A(i,k) = 0 for k > i (a lower-triangular A): k-chunks wholly past a tile's rows are skipped.
void gemm_acc(float* C, int64_t ldc, View A, View B, int64_t M, int64_t N, int64_t K, float alpha, bool lowerC,
              bool triA) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  const Kernels* kt = active();
  const int64_t MR = kt->MR, NR = kt->NR, KC = kt->KC;
  const int64_t MC = std::max<int64_t>(MR, kMC / MR * MR), NC = std::max<int64_t>(NR, kNC / NR * NR);
  const int64_t mTasks = (M + MC - 1) / MC, nTasks = (N + NC - 1) / NC;
  std::vector<int64_t> tasks;  // mi·nTasks + nj
  for (int64_t mi = 0; mi < mTasks; mi++)
    for (int64_t nj = 0; nj < nTasks; nj++) {
      if (lowerC && mi * MC + std::min(MC, M - mi * MC) - 1 < nj * NC) continue;  // every row above every column
      tasks.push_back(mi * nTasks + nj);
    }
  parallel_for(int64_t(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    thread_local GemmScratch buf;
    const int64_t kcMax = std::min(KC, K);
    float* ap = buf.a.get(size_t(MC * kcMax));
    float* bp = buf.b.get(size_t(NC * kcMax));
    float* tile = buf.tile.get(size_t(MR * NR));
    for (int64_t t = t0; t < t1; t++) {
      const int64_t mi = tasks[size_t(t)] / nTasks, nj = tasks[size_t(t)] % nTasks;
      const int64_t i0 = mi * MC, mc = std::min(MC, M - i0), j0 = nj * NC, nc = std::min(NC, N - j0);
      const int64_t kEnd = triA ? std::min(K, i0 + mc) : K;
      for (int64_t k0 = 0; k0 < kEnd; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0);
        pack_a(ap, A, i0, mc, k0, kc, alpha, MR);
        pack_b(bp, B, j0, nc, k0, kc, NR);
        for (int64_t p = 0; p * MR < mc; p++) {
          const int64_t r0 = i0 + p * MR, mr = std::min(MR, mc - p * MR);
          if (triA && k0 > r0 + mr - 1) continue;  // A is zero on this chunk for these rows
          for (int64_t q = 0; q * NR < nc; q++) {
            const int64_t c0 = j0 + q * NR, nr = std::min(NR, nc - q * NR);
            if (lowerC && r0 + mr - 1 < c0) continue;
            float* c = C + r0 * ldc + c0;
            const float* a = ap + p * MR * kc;
            const float* b = bp + q * NR * kc;
            if (mr == MR && nr == NR) {
              kt->micro(kc, a, b, c, ldc, nullptr, true);
            } else {  // edge tile: through a staging tile
              for (int64_t i = 0; i < mr; i++) std::copy(c + i * ldc, c + i * ldc + nr, tile + i * NR);
              kt->micro(kc, a, b, tile, NR, nullptr, true);
              for (int64_t i = 0; i < mr; i++) std::copy(tile + i * NR, tile + i * NR + nr, c + i * ldc);
            }
          }
        }
      }
    }
  });
}

// Row-parallel split with at least `grain` rows per thread.
template <class F>
void rows_parallel(int64_t n, int64_t work_per_row, F fn) {
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, work_per_row));
  parallel_for(n, grain, std::move(fn));
}

void mirror_lower(float* A, int64_t n) {
  rows_parallel(n, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      for (int64_t j = i + 1; j < n; j++) A[i * n + j] = A[j * n + i];
  });
}

// In-place inverse of the lower-triangular diagonal block A[j0:j0+jb, j0:j0+jb] (row stride n), in double.
void invert_diag_block(float* A, int64_t n, int64_t j0, int64_t jb) {
  std::vector<double> L(size_t(jb * jb)), X(size_t(jb * jb), 0.0);
  for (int64_t i = 0; i < jb; i++)
    for (int64_t j = 0; j <= i; j++) L[size_t(i * jb + j)] = A[(j0 + i) * n + j0 + j];
  for (int64_t c = 0; c < jb; c++) {  // column c of L⁻¹ by forward substitution
    X[size_t(c * jb + c)] = 1.0 / L[size_t(c * jb + c)];
    for (int64_t i = c + 1; i < jb; i++) {
      double s = 0;
      for (int64_t p = c; p < i; p++) s += L[size_t(i * jb + p)] * X[size_t(p * jb + c)];
      X[size_t(i * jb + c)] = -s / L[size_t(i * jb + i)];
    }
  }
  for (int64_t i = 0; i < jb; i++)
    for (int64_t j = 0; j <= i; j++) A[(j0 + i) * n + j0 + j] = float(X[size_t(i * jb + j)]);
}

}  // namespace

void gptq_xtx(float* H, const float* x, int64_t T, int64_t K, double beta, double alpha) {
  if (K == 0) return;
  const float b = float(beta);
  rows_parallel(K, K, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++)
      for (int64_t j = 0; j <= i; j++) H[i * K + j] *= b;
  });
  // (√alpha·X)ᵀ(√alpha·X): X is [T, K], so A(i, t) = x[t·K + i] and B(t, j) = x[t·K + j]; √alpha enters each factor
  // as AutoGPTQ scales the inputs (alpha·(x_i·x_j) would round differently only in the last bit).
  const float s = float(std::sqrt(alpha));
  std::vector<float> xs;
  const float* xp = x;
  if (s != 1.f) {
    xs.resize(size_t(T * K));
    rows_parallel(T, K, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0 * K; i < b1 * K; i++) xs[size_t(i)] = x[i] * s;
    });
    xp = xs.data();
  }
  gemm_acc(H, K, View{xp, 1, K}, View{xp, K, 1}, K, K, T, 1.f, true, false);
  mirror_lower(H, K);
}

int64_t cholesky_lower(float* A, int64_t n) {
  for (int64_t k0 = 0; k0 < n; k0 += kNB) {
    const int64_t k1 = std::min(n, k0 + kNB), m = n - k1;
    // Diagonal block, unblocked (its trailing updates from earlier panels are already in).
    for (int64_t j = k0; j < k1; j++) {
      double d = A[j * n + j];
      for (int64_t p = k0; p < j; p++) d -= double(A[j * n + p]) * A[j * n + p];
      if (!(d > 0)) return j;  // not positive definite (or NaN)
      const float ljj = float(std::sqrt(d));
      A[j * n + j] = ljj;
      for (int64_t i = j + 1; i < k1; i++) {
        double s = A[i * n + j];
        for (int64_t p = k0; p < j; p++) s -= double(A[i * n + p]) * A[j * n + p];
        A[i * n + j] = float(s / ljj);
      }
    }
    if (m == 0) break;
    // Panel below: A[k1:, k0:k1] ← A[k1:, k0:k1]·L11⁻ᵀ, row by row.
    rows_parallel(m, (k1 - k0) * (k1 - k0), [&](int64_t b, int64_t e) {
      for (int64_t i = k1 + b; i < k1 + e; i++) {
        float* row = A + i * n;
        for (int64_t j = k0; j < k1; j++) {
          double s = row[j];
          for (int64_t p = k0; p < j; p++) s -= double(row[p]) * A[j * n + p];
          row[j] = float(s / A[j * n + j]);
        }
      }
    });
    // Trailing matrix: A[k1:, k1:] -= P·Pᵀ with P = A[k1:, k0:k1] (lower tiles).
    const float* P = A + k1 * n + k0;
    gemm_acc(A + k1 * n + k1, n, View{P, n, 1}, View{P, 1, n}, m, m, k1 - k0, -1.f, true, false);
  }
  rows_parallel(n, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) std::fill(A + i * n + i + 1, A + (i + 1) * n, 0.f);
  });
  return -1;
}

void transpose_square(float* A, int64_t n) {
  rows_parallel(n, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      for (int64_t j = i + 1; j < n; j++) std::swap(A[i * n + j], A[j * n + i]);
  });
}

void cholesky_inverse(float* A, int64_t n) {
  if (n == 0) return;
  // The triangular products below rely on zeros above the diagonal.
  rows_parallel(n, n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) std::fill(A + i * n + i + 1, A + (i + 1) * n, 0.f);
  });
  // 1. L⁻¹ in place (LAPACK strtri, lower, blocked from the last panel up): for each panel column j0..j1,
  //    A21 ← −(L22⁻¹·A21)·L11⁻¹ with L22⁻¹ already in place, then L11 ← L11⁻¹.
  thread_local Scratch<float> s21;
  for (int64_t j0 = (n - 1) / kNB * kNB; j0 >= 0; j0 -= kNB) {
    const int64_t jb = std::min(kNB, n - j0), j1 = j0 + jb, m = n - j1;
    if (m > 0) {
      float* S = s21.get(size_t(m * jb));
      float* A21 = A + j1 * n + j0;
      for (int64_t i = 0; i < m; i++) {
        std::copy(A21 + i * n, A21 + i * n + jb, S + i * jb);
        std::fill(A21 + i * n, A21 + i * n + jb, 0.f);
      }
      gemm_acc(A21, n, View{A + j1 * n + j1, n, 1}, View{S, jb, 1}, m, jb, m, 1.f, false, true);
      // A21 ← −A21·L11⁻¹: each row y solves y·L11 = −a, from the last column back (LT = L11ᵀ, contiguous).
      std::vector<double> LT(static_cast<size_t>(jb * jb));
      for (int64_t p = 0; p < jb; p++)
        for (int64_t c = 0; c <= p; c++) LT[size_t(c * jb + p)] = A[(j0 + p) * n + j0 + c];
      rows_parallel(m, jb * jb, [&](int64_t b, int64_t e) {
        std::vector<double> y(static_cast<size_t>(jb));
        for (int64_t i = b; i < e; i++) {
          float* row = A21 + i * n;
          for (int64_t c = jb - 1; c >= 0; c--) {
            const double* lt = LT.data() + c * jb;
            double s = -double(row[c]);
            for (int64_t p = c + 1; p < jb; p++) s -= y[size_t(p)] * lt[p];
            y[size_t(c)] = s / lt[c];
          }
          for (int64_t c = 0; c < jb; c++) row[c] = float(y[size_t(c)]);
        }
      });
    }
    invert_diag_block(A, n, j0, jb);
  }
  // 2. A ← L⁻ᵀ·L⁻¹ in place, lower triangle (LAPACK slauum, lower, blocked from the first panel down):
  //    A10 ← L11ᵀ·A10; A11 ← L11ᵀ·L11; A10 += A21ᵀ·A20; A11 += A21ᵀ·A21.
  for (int64_t i0 = 0; i0 < n; i0 += kNB) {
    const int64_t ib = std::min(kNB, n - i0), i1 = i0 + ib, m = n - i1;
    if (i0 > 0) {  // A[i0:i1, 0:i0] ← L11ᵀ·A[i0:i1, 0:i0]: a copy, then the product (L11ᵀ(r, p) = L11[p, r], 0 for p < r)
      float* S = s21.get(size_t(ib * i0));
      float* A10 = A + i0 * n;
      for (int64_t r = 0; r < ib; r++) {
        std::copy(A10 + r * n, A10 + r * n + i0, S + r * i0);
        std::fill(A10 + r * n, A10 + r * n + i0, 0.f);
      }
      gemm_acc(A10, n, View{A + i0 * n + i0, 1, n}, View{S, i0, 1}, ib, i0, ib, 1.f, false, false);
    }
    {  // A11 ← L11ᵀ·L11 (lower), in double
      std::vector<double> L(size_t(ib * ib));
      for (int64_t i = 0; i < ib; i++)
        for (int64_t j = 0; j <= i; j++) L[size_t(i * ib + j)] = A[(i0 + i) * n + i0 + j];
      for (int64_t i = 0; i < ib; i++)
        for (int64_t j = 0; j <= i; j++) {
          double s = 0;
          for (int64_t p = i; p < ib; p++) s += L[size_t(p * ib + i)] * L[size_t(p * ib + j)];
          A[(i0 + i) * n + i0 + j] = float(s);
        }
    }
    if (m > 0) {
      const float* A21 = A + i1 * n + i0;  // [m, ib]
      if (i0 > 0) gemm_acc(A + i0 * n, n, View{A21, 1, n}, View{A + i1 * n, n, 1}, ib, i0, m, 1.f, false, false);
      gemm_acc(A + i0 * n + i0, n, View{A21, 1, n}, View{A21, n, 1}, ib, ib, m, 1.f, true, false);
    }
  }
  mirror_lower(A, n);
}

void gptq_quantize_block(const float* W, int64_t N, int64_t K, int64_t i1, int64_t B, const float* U, const float* scale,
                         const float* zero, int maxq, uint8_t* codes, float* deq, float* err, double* row_loss) {
  rows_parallel(N, B * B, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(B));
    for (int64_t n = r0; n < r1; n++) {
      std::copy(W + n * K + i1, W + n * K + i1 + B, row.begin());
      double loss = 0;
      for (int64_t i = 0; i < B; i++) {
        const float s = scale[i * N + n], z = zero[i * N + n], x = row[size_t(i)];
        float q = std::nearbyint(float(double(x) / double(s))) + z;   // ties to even (the default rounding mode)
        q = q < 0.f ? 0.f : q > float(maxq) ? float(maxq) : q;
        const float v = float(double(s) * double(q - z));
        const float* u = U + (i1 + i) * K + i1;
        const double d = u[i], dx = double(x) - double(v);
        const float e = float(dx / d);
        loss += dx * dx / (d * d) / 2;
        codes[n * B + i] = uint8_t(q);
        deq[n * B + i] = v;
        err[n * B + i] = e;
        for (int64_t j = i + 1; j < B; j++) row[size_t(j)] = float(double(row[size_t(j)]) - double(e) * double(u[j]));
      }
      row_loss[n] = loss;
    }
  });
}

void gptq_block_update(float* W, int64_t N, int64_t K, const float* err, int64_t B, const float* U, int64_t i1) {
  const int64_t i2 = i1 + B;
  if (i2 >= K) return;
  gemm_acc(W + i2, K, View{err, B, 1}, View{U + i1 * K + i2, K, 1}, N, K - i2, B, -1.f, false, false);
}

}  // namespace lowbit
