// The training ops on the device (issue 12, step 6): the forward ops that keep what their backward needs, and the
// backward ops, as src/train/ops.ts defines them (its functions are the reference twins: test/cuda.test.ts compares
// them). Float32 throughout; reductions over a row run in one block, so their order differs from the host's loop only.
//   RMSNorm   y = w·(x·rstd), rstd = 1/sqrt(mean(x²) + eps);  dx = rstd·(w⊙dy) − x·rstd³·Σ(w⊙dy⊙x)/D;  dw += Σ_rows dy⊙x·rstd
//   LayerNorm y = x̂·w + b;  dx = rstd·(g − mean(g) − x̂·mean(g⊙x̂)), g = dy⊙w;  dw += Σ dy⊙x̂;  db += Σ dy
//   SiLU·mul, ReLU backward; the causal-LM cross-entropy (HF's shift, −100 ignored) with its dlogits;
//   attention forward keeping the probabilities P [B, H, T, T] and its backward (GQA: a kv head sums its query heads).
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

__global__ void rmsnorm_fwd_kernel(float* y, float* rstd, const float* x, const float* w, int64_t D, float eps) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const float* xr = x + int64_t(blockIdx.x) * D;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xr[i] * xr[i];
  const float inv = 1.f / sqrtf(block_sum(s, sh) / float(D) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = inv;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) y[int64_t(blockIdx.x) * D + i] = w[i] * (xr[i] * inv);
}

__global__ void rmsnorm_bwd_kernel(float* dx, const float* dy, const float* w, const float* x, const float* rstd, int64_t D) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * D;
  const float inv = rstd[blockIdx.x];
  float dot = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dot += w[i] * dy[o + i] * x[o + i];
  const float c = block_sum(dot, sh) * inv * inv * inv / float(D);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dx[o + i] = inv * w[i] * dy[o + i] - c * x[o + i];
}

// dw[i] += Σ_rows dy[r, i]·a[r, i]·(s ? s[r] : 1), and db[i] += Σ_rows dy[r, i] when db: a thread a column.
__global__ void colsum_kernel(float* dw, float* db, const float* dy, const float* a, const float* s, int64_t rows, int64_t D) {
  pdl_wait();
  pdl_trigger();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= D) return;
  float accw = 0.f, accb = 0.f;
  for (int64_t r = 0; r < rows; r++) {
    const float g = dy[r * D + i];
    accw += g * a[r * D + i] * (s ? s[r] : 1.f);
    accb += g;
  }
  dw[i] += accw;
  if (db) db[i] += accb;
}

__global__ void layernorm_fwd_kernel(float* y, float* xhat, float* rstd, const float* x, const float* w, const float* b, int64_t D, float eps) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * D;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += x[o + i];
  const float mean = block_sum(s, sh) / float(D);
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) v += (x[o + i] - mean) * (x[o + i] - mean);
  const float inv = 1.f / sqrtf(block_sum(v, sh) / float(D) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = inv;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float xh = (x[o + i] - mean) * inv;
    xhat[o + i] = xh;
    y[o + i] = xh * w[i] + b[i];
  }
}

__global__ void layernorm_bwd_kernel(float* dx, const float* dy, const float* w, const float* xhat, const float* rstd, int64_t D) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * D;
  float mg = 0.f, mgx = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float g = dy[o + i] * w[i];
    mg += g;
    mgx += g * xhat[o + i];
  }
  mg = block_sum(mg, sh) / float(D);
  mgx = block_sum(mgx, sh) / float(D);
  const float inv = rstd[blockIdx.x];
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dx[o + i] = inv * (dy[o + i] * w[i] - mg - xhat[o + i] * mgx);
}

__global__ void silu_mul_bwd_kernel(float* dg, float* du, const float* dy, const float* g, const float* u, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = 1.f / (1.f + expf(-g[i]));
    dg[i] = dy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
    du[i] = dy[i] * g[i] * s;
  }
}

__global__ void relu_bwd_kernel(float* dx, const float* dy, const float* x, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) dx[i] = x[i] > 0.f ? dy[i] : 0.f;
}

// One block per logits row: targets[row] is the label the row predicts (−100: none); nll[row] = lse − logit[label];
// dl = (softmax − onehot)/div on scored rows, 0 elsewhere (in place of the logits when dl == logits).
__global__ void causal_lm_loss_kernel(float* dl, float* nll, const float* logits, const int32_t* targets, int64_t V, float div) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const int64_t o = int64_t(blockIdx.x) * V;
  const int y = targets[blockIdx.x];
  if (y < 0) {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) dl[o + i] = 0.f;
    if (threadIdx.x == 0) nll[blockIdx.x] = 0.f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, logits[o + i]);
  mx = block_max(mx, sh);
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += expf(logits[o + i] - mx);
  const float lse = mx + logf(block_sum(s, sh));
  const float ly = logits[o + y];
  __syncthreads();  // every thread has read logits[o + y] before dl (maybe the same array) is written
  if (threadIdx.x == 0) nll[blockIdx.x] = lse - ly;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float p = div > 0.f ? expf(logits[o + i] - lse) / div : 0.f;
    dl[o + i] = i == y && div > 0.f ? p - 1.f / div : p;
  }
}

// Attention forward, one block per (b, h, t): P[b, h, t, s] for s ≤ t (0 where masked, outside the window, or after t),
// o[b, t, h] = Σ_s P·v. A query with no visible key gets zeros.
__global__ void att_fwd_kernel(float* o, float* P, const float* q, const float* k, const float* v, const uint8_t* keyMask, int B, int T, int H,
                               int nKV, int hd, float scale, int window) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sh[32];
  const int t = blockIdx.x % T, h = (blockIdx.x / T) % H, b = blockIdx.x / (T * H);
  const int kh = h / (H / nKV);
  const float* qr = q + ((int64_t(b) * T + t) * H + h) * hd;
  float* pr = P + ((int64_t(b) * H + h) * T + t) * T;
  const int first = window ? max(0, t - window + 1) : 0;
  // Scores: a warp a key.
  const int lane = threadIdx.x & 31, wid = threadIdx.x / 32, nw = blockDim.x / 32;
  for (int s = wid; s < T; s += nw) {
    float d = 0.f;
    const bool vis = s >= first && s <= t && (!keyMask || keyMask[int64_t(b) * T + s]);
    if (vis) {
      const float* kr = k + ((int64_t(b) * T + s) * nKV + kh) * hd;
      for (int i = lane; i < hd; i += 32) d += qr[i] * kr[i];
      d = warp_sum(d) * scale;
    }
    if (lane == 0) pr[s] = vis ? d : -INFINITY;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < T; s += blockDim.x) mx = fmaxf(mx, pr[s]);
  mx = block_max(mx, sh);
  float sum = 0.f;
  for (int s = threadIdx.x; s < T; s += blockDim.x) {
    const float e = mx == -INFINITY || pr[s] == -INFINITY ? 0.f : expf(pr[s] - mx);
    pr[s] = e;
    sum += e;
  }
  sum = block_sum(sum, sh);
  for (int s = threadIdx.x; s < T; s += blockDim.x) pr[s] = sum > 0.f ? pr[s] / sum : 0.f;
  __syncthreads();
  float* orow = o + ((int64_t(b) * T + t) * H + h) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0.f;
    for (int s = first; s <= t; s++) {
      const float p = pr[s];
      if (p != 0.f) acc += p * v[((int64_t(b) * T + s) * nKV + kh) * hd + i];
    }
    orow[i] = acc;
  }
}

// The gradient of a kv head's row s: out[b, s, kh] = Σ_{h of kh} Σ_{t ≥ s} A[b, h, t, s]·src[b, t, h] (dv: A = P,
// src = dO; dk: A = dS, src = q). One block per (b, kh, s), a thread per element of hd.
__global__ void att_bwd_kv_kernel(float* out, const float* A, const float* src, int B, int T, int H, int nKV, int hd) {
  pdl_wait();
  pdl_trigger();
  const int s = blockIdx.x % T, kh = (blockIdx.x / T) % nKV, b = blockIdx.x / (T * nKV), group = H / nKV;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0.f;
    for (int h = kh * group; h < (kh + 1) * group; h++)
      for (int t = s; t < T; t++) {
        const float a = A[((int64_t(b) * H + h) * T + t) * T + s];
        if (a != 0.f) acc += a * src[((int64_t(b) * T + t) * H + h) * hd + i];
      }
    out[((int64_t(b) * T + s) * nKV + kh) * hd + i] = acc;
  }
}

// In place: P[b, h, t, s] → dS = scale·P⊙(dP − Σ_s P⊙dP), dP[s] = dO[t]·v[s]. One block per (b, h, t), a warp a key.
__global__ void att_bwd_ds_kernel(float* P, const float* dO, const float* v, int B, int T, int H, int nKV, int hd, float scale) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ float dp[];
  __shared__ float sh[32];
  const int t = blockIdx.x % T, h = (blockIdx.x / T) % H, b = blockIdx.x / (T * H), kh = h / (H / nKV);
  float* pr = P + ((int64_t(b) * H + h) * T + t) * T;
  const float* dor = dO + ((int64_t(b) * T + t) * H + h) * hd;
  const int lane = threadIdx.x & 31, wid = threadIdx.x / 32, nw = blockDim.x / 32;
  for (int s = wid; s <= t; s += nw) {
    float d = 0.f;
    if (pr[s] != 0.f) {
      const float* vr = v + ((int64_t(b) * T + s) * nKV + kh) * hd;
      for (int i = lane; i < hd; i += 32) d += dor[i] * vr[i];
      d = warp_sum(d);
    }
    if (lane == 0) dp[s] = d;
  }
  __syncthreads();
  float dot = 0.f;
  for (int s = threadIdx.x; s <= t; s += blockDim.x) dot += pr[s] * dp[s];
  dot = block_sum(dot, sh);
  for (int s = threadIdx.x; s <= t; s += blockDim.x) pr[s] = pr[s] * (dp[s] - dot) * scale;
}

// dq[b, t, h] = Σ_s dS[t, s]·k[s]: one block per (b, h, t).
__global__ void att_bwd_dq_kernel(float* dq, const float* dS, const float* k, int B, int T, int H, int nKV, int hd) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x % T, h = (blockIdx.x / T) % H, b = blockIdx.x / (T * H), kh = h / (H / nKV);
  const float* dr = dS + ((int64_t(b) * H + h) * T + t) * T;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s <= t; s++) {
      const float d = dr[s];
      if (d != 0.f) acc += d * k[((int64_t(b) * T + s) * nKV + kh) * hd + i];
    }
    dq[((int64_t(b) * T + t) * H + h) * hd + i] = acc;
  }
}

__global__ void dropout_kernel(float* xd, float* drop, const float* x, int64_t n, float p, uint32_t seed) {
  pdl_wait();
  pdl_trigger();
  const float keep = 1.f / (1.f - p);
  const double cut = double(p) * 4294967296.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    // A counter-based hash (splitmix-style) of (seed, i): any thread draws any element's mask.
    uint64_t z = (uint64_t(seed) << 32) ^ uint64_t(i);
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    const uint32_t r = uint32_t((z ^ (z >> 31)) >> 32);
    const float d = double(r) >= cut ? keep : 0.f;
    drop[i] = d;
    xd[i] = x[i] * d;
  }
}

__global__ void mul_add_kernel(float* y, const float* a, const float* b, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] += a[i] * b[i];
}

// AdamW, torch's order (decay, moments, bias-corrected step) in float64 as the host's loop computes it.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, double lr, double b1, double b2, double eps,
                             double decay, double stepSize, double bc2s, double clip) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double gi = clip != 1.0 ? double(float(double(g[i]) * clip)) : double(g[i]);
    double pi = p[i];
    if (decay != 1.0) pi = double(float(pi * decay));
    const float mi = float(b1 * double(m[i]) + (1.0 - b1) * gi);
    const float vi = float(b2 * double(v[i]) + (1.0 - b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = float(pi - stepSize * double(mi) / (sqrt(double(vi)) / bc2s + eps));
  }
}

__global__ void sumsq_kernel(double* partials, const float* g, int64_t n) {
  pdl_wait();
  pdl_trigger();
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) s += double(g[i]) * double(g[i]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < int(blockDim.x / 32); w++) t += sh[w];
    partials[blockIdx.x] = t;
  }
}

__global__ void scale_copy_kernel(float* dst, const float* src, int64_t n, double s) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) dst[i] = float(s * double(src[i]));
}

unsigned row_threads(int64_t D) { return D >= 4096 ? 1024 : D >= 1024 ? 512 : 256; }

}  // namespace

void train_rmsnorm_fwd(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t D, float eps) {
  if (rows) launch(rmsnorm_fwd_kernel, unsigned(rows), row_threads(D), 0, y, rstd, x, w, D, eps);
}
void train_rmsnorm_bwd(float* dx, float* dw, const float* dy, const float* w, const float* x, const float* rstd, int64_t rows, int64_t D) {
  if (!rows) return;
  launch(rmsnorm_bwd_kernel, unsigned(rows), row_threads(D), 0, dx, dy, w, x, rstd, D);
  if (dw) launch(colsum_kernel, unsigned((D + 255) / 256), 256, 0, dw, static_cast<float*>(nullptr), dy, x, rstd, rows, D);
}
void train_layernorm_fwd(float* y, float* xhat, float* rstd, const float* x, const float* w, const float* b, int64_t rows, int64_t D, float eps) {
  if (rows) launch(layernorm_fwd_kernel, unsigned(rows), row_threads(D), 0, y, xhat, rstd, x, w, b, D, eps);
}
void train_layernorm_bwd(float* dx, float* dw, float* db, const float* dy, const float* w, const float* xhat, const float* rstd, int64_t rows,
                         int64_t D) {
  if (!rows) return;
  launch(layernorm_bwd_kernel, unsigned(rows), row_threads(D), 0, dx, dy, w, xhat, rstd, D);
  if (dw) launch(colsum_kernel, unsigned((D + 255) / 256), 256, 0, dw, db, dy, xhat, static_cast<const float*>(nullptr), rows, D);
}
void train_silu_mul_bwd(float* dg, float* du, const float* dy, const float* g, const float* u, int64_t n) {
  if (n) launch(silu_mul_bwd_kernel, grid_for(n), 256, 0, dg, du, dy, g, u, n);
}
void train_relu_bwd(float* dx, const float* dy, const float* x, int64_t n) {
  if (n) launch(relu_bwd_kernel, grid_for(n), 256, 0, dx, dy, x, n);
}
void train_causal_lm_loss(float* dl, float* nll, const float* logits, const int32_t* targets, int64_t rows, int64_t V, float div) {
  if (rows) launch(causal_lm_loss_kernel, unsigned(rows), 1024, 0, dl, nll, logits, targets, V, div);
}
void train_dropout(float* xd, float* drop, const float* x, int64_t n, float p, uint32_t seed) {
  if (n) launch(dropout_kernel, grid_for(n), 256, 0, xd, drop, x, n, p, seed);
}
void train_mul_add(float* y, const float* a, const float* b, int64_t n) {
  if (n) launch(mul_add_kernel, grid_for(n), 256, 0, y, a, b, n);
}
void train_adamw(float* p, const float* g, float* m, float* v, int64_t n, double lr, double b1, double b2, double eps, double decay,
                 double stepSize, double bc2s, double clip) {
  if (n) launch(adamw_kernel, grid_for(n), 256, 0, p, g, m, v, n, lr, b1, b2, eps, decay, stepSize, bc2s, clip);
}
void train_sumsq(double* partials, const float* g, int64_t n) {
  launch(sumsq_kernel, unsigned(kSumsqBlocks), 256, 0, partials, g, n);
}
void train_scale_copy(float* dst, const float* src, int64_t n, double s) {
  if (n) launch(scale_copy_kernel, grid_for(n), 256, 0, dst, src, n, s);
}
void train_attention_fwd(float* o, float* P, const float* q, const float* k, const float* v, const uint8_t* keyMask, int B, int T, int H,
                         int nKV, int hd, float scale, int window) {
  if (B && T) launch(att_fwd_kernel, unsigned(int64_t(B) * H * T), 256, 0, o, P, q, k, v, keyMask, B, T, H, nKV, hd, scale, window);
}
// P is overwritten (it becomes dS).
void train_attention_bwd(float* dq, float* dk, float* dv, float* P, const float* dO, const float* q, const float* k, const float* v, int B,
                         int T, int H, int nKV, int hd, float scale) {
  if (!B || !T) return;
  const unsigned ht = unsigned(hd < 128 ? hd : 128);
  launch(att_bwd_kv_kernel, unsigned(int64_t(B) * nKV * T), ht, 0, dv, static_cast<const float*>(P), dO, B, T, H, nKV, hd);
  if (size_t(T) * 4 > 48 * 1024) throw CudaError("training attention: T above 12288 needs more shared memory than the backward kernel takes");
  launch(att_bwd_ds_kernel, unsigned(int64_t(B) * H * T), 256, size_t(T) * 4, P, dO, v, B, T, H, nKV, hd, scale);
  launch(att_bwd_dq_kernel, unsigned(int64_t(B) * H * T), ht, 0, dq, static_cast<const float*>(P), k, B, T, H, nKV, hd);
  launch(att_bwd_kv_kernel, unsigned(int64_t(B) * nKV * T), ht, 0, dk, static_cast<const float*>(P), q, B, T, H, nKV, hd);
}

}  // namespace lowbit_cuda
