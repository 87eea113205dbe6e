// matmul driver: y[M,N] = x[M,K]·w[N,K]ᵀ (+bias). Small M streams the weights once (GEMV, memory bound); larger M
// runs a BLIS-style GEMM: W is packed panel by panel into K-major [kc][NR] f32 blocks (bf16/f16 widened here, NF4/FP4
// dequantized here, so the packing cost is amortised over M), X into [kc][MR] blocks, and a register-blocked
// micro-kernel does the FMAs.
#include <algorithm>
#include <vector>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kernels.h"
#include "ops.h"
#include "pool.h"
#include "scratch.h"

namespace lowbit {
namespace {

// Up to this many rows the weight-streaming kernel wins: it reads W once from memory, re-reads it from L2 for
// each further group of 4 rows, and needs no packing.
// Measured on Zen 4 (AVX-512, K=2048, N=5632): the streaming kernel (4×4 dot-product tiles over an L2-resident
// W block) matches or beats pack+GEMM up to M≈96 for bf16 and M≈64 for f32, because packing costs a transpose
// of all of W per call.
constexpr int64_t kGemvMaxM = 64;
// NF4/FP4: up to this many rows of x the fused dequantize-GEMV runs once per row of x; above, the tiled GEMM, which
// dequantizes each weight once per call. Measured on Zen 3 (AVX2, one thread, 5632×2048, block 64, bf16 double
// quant): the GEMV costs ~1.8 ms per row of x, the GEMM ~15 ms (dequantize + pack + one micro-kernel row block)
// plus ~0.3 ms per row; M = 8: GEMV 13-15 ms, GEMM 16-18; M = 10: GEMV 18-19, GEMM 15-17.
constexpr int64_t kQ4GemvMaxM = 8;
// Weight rows per GEMV block, so the block stays in L2 while the groups of 4 x-rows pass over it.
constexpr int64_t kGemvBlockBytes = 192 * 1024;

void gemv_path(const Kernels* k, float* y, const float* x, const void* w, int wtype, int64_t M, int64_t N, int64_t K,
               const float* bias) {
  // gemv_path runs on the calling thread, so one buffer per calling thread serves every decode step.
  thread_local Scratch<float> perm;
  const float* xp = x;
  if (wtype == W_BF16 && k->xperm_block) {
    // De-interleave x (even elements, then odd, per block) to match the shift/mask widening of bf16 pairs.
    const int64_t bs = k->xperm_block, half = bs / 2, full = K / bs * bs;
    float* pd = perm.get(size_t(M * K));
    for (int64_t m = 0; m < M; m++) {
      const float* src = x + m * K;
      float* dst = pd + m * K;
      for (int64_t b = 0; b < full; b += bs)
        for (int64_t i = 0; i < half; i++) {
          dst[b + i] = src[b + 2 * i];
          dst[b + half + i] = src[b + 2 * i + 1];
        }
      for (int64_t i = full; i < K; i++) dst[i] = src[i];
    }
    xp = pd;
  }
  const int64_t rowBytes = std::max<int64_t>(1, K * wbytes(wtype));
  const int64_t nb = std::max<int64_t>(4, kGemvBlockBytes / rowBytes / 4 * 4);
  const int64_t grain = std::max<int64_t>(4, (1 << 15) / std::max<int64_t>(1, K * M));
  parallel_for(N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n0 = b; n0 < e; n0 += nb) {
      int64_t n1 = std::min(e, n0 + nb);
      for (int64_t m0 = 0; m0 < M; m0 += 4)
        k->gemv(y + m0 * N, N, xp + m0 * K, K, int(std::min<int64_t>(4, M - m0)), w, wtype, n0, n1, K, bias);
    }
  }, 4);
}

struct GemmBuffers {
  Scratch<float> a, b, tile, biasPad;
};

// The GEMM loop nest over W panels; pack(Bp, n0, nr, k0, kc) fills the packed panel (Kernels::pack_b's layout)
// for weight rows n0..n0+nr and columns k0..k0+kc: widened float weights (gemm_path) or dequantized 4-bit tiles
// (matmul_q4).
template <class PackB>
void gemm_tiles(const Kernels* k, float* y, const float* x, int64_t M, int64_t N, int64_t K, const float* bias,
                PackB&& pack) {
  const int64_t MR = k->MR, NR = k->NR, KC = k->KC;
  const int64_t mBlocks = (M + MR - 1) / MR, panels = (N + NR - 1) / NR, kcMax = std::min(KC, K);
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    thread_local GemmBuffers buf;
    // The X slab holds kc <= min(KC, K) columns: a small K must not reserve KC of them per row.
    float *A = buf.a.get(size_t(mBlocks * MR * kcMax)), *Bp = buf.b.get(size_t(kcMax * NR));
    float *tile = buf.tile.get(size_t(MR * NR)), *biasPad = buf.biasPad.get(size_t(NR));
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      // Each thread packs its own copy of this X slab (M·kc floats): cheap next to its share of W, and no barrier.
      for (int64_t mb = 0; mb < mBlocks; mb++) {
        float* dst = A + mb * MR * kc;
        for (int64_t i = 0; i < MR; i++) {
          int64_t m = mb * MR + i;
          if (m < M) {
            const float* src = x + m * K + k0;
            for (int64_t kk = 0; kk < kc; kk++) dst[kk * MR + i] = src[kk];
          } else {
            for (int64_t kk = 0; kk < kc; kk++) dst[kk * MR + i] = 0.f;
          }
        }
      }
      for (int64_t p = p0; p < p1; p++) {
        const int64_t n0 = p * NR, nr = std::min(NR, N - n0);
        pack(Bp, n0, nr, k0, kc);
        const bool acc = k0 > 0;
        const float* bp = (!acc && bias) ? bias + n0 : nullptr;
        if (bp && nr < NR) {
          std::fill(biasPad, biasPad + NR, 0.f);
          std::copy(bp, bp + nr, biasPad);
          bp = biasPad;
        }
        for (int64_t mb = 0; mb < mBlocks; mb++) {
          const int64_t mr = std::min(MR, M - mb * MR);
          float* c = y + mb * MR * N + n0;
          if (mr == MR && nr == NR) {
            k->micro(kc, A + mb * MR * kc, Bp, c, N, bp, acc);
          } else {  // edge tile: run the full micro-kernel on a staging tile
            if (acc)
              for (int64_t i = 0; i < mr; i++) std::copy(c + i * N, c + i * N + nr, tile + i * NR);
            k->micro(kc, A + mb * MR * kc, Bp, tile, NR, bp, acc);
            for (int64_t i = 0; i < mr; i++) std::copy(tile + i * NR, tile + i * NR + nr, c + i * N);
          }
        }
      }
    }
  });
}

// y[M,N] = bias broadcast over the rows (0 without one): a product over K = 0.
void bias_rows(float* y, int64_t M, int64_t N, const float* bias) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) y[m * N + n] = bias ? bias[n] : 0.f;
}

void gemm_path(const Kernels* k, float* y, const float* x, const void* w, int wtype, int64_t M, int64_t N, int64_t K,
               const float* bias) {
  gemm_tiles(k, y, x, M, N, K, bias, [&](float* Bp, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
    k->pack_b(Bp, w, wtype, K, n0, nr, k0, kc);
  });
}

}  // namespace

// One 64-element chunk of x to integers, for both int-activation decodes: q[i] = round_half_even(v[i]·(xmax/max|v|))
// clamped to ±xmax, *scale = max|v|/xmax (q and scale 0 for an all-zero chunk). False, nothing written, when some v
// is not finite. Rounding by the 1.5·2^23 trick (|v·inv| ≤ xmax + ½ < 2^22, the default rounding mode): nearbyint
// would be a libm call per element in this baseline-ISA file.
inline bool quantize_chunk(const float* v, float xmax, int16_t* q, float* scale) {
  float mx = 0.f;
  bool finite = true;
  for (int i = 0; i < 64; i++) {
    const float a = std::fabs(v[i]);
    finite &= a <= FLT_MAX;  // false for ±inf and NaN
    mx = std::max(mx, a);
  }
  if (!finite) return false;
  const float inv = mx > 0.f ? xmax / mx : 0.f;
  *scale = mx / xmax;
  for (int i = 0; i < 64; i++) {
    const float r = (v[i] * inv + 12582912.f) - 12582912.f;
    q[i] = int16_t(std::min(xmax, std::max(-xmax, r)));
  }
  return true;
}

bool q4i_prep(int16_t* xq, float* dx, const float* x, int64_t K, const uint8_t* order) {
  alignas(64) int16_t q[64];
  for (int64_t c = 0; c < K / 64; c++, x += 64, xq += 64) {
    float d;
    if (!quantize_chunk(x, kQ4iXMax, q, &d)) return false;
    dx[c] = d * (1.f / 16384.f);  // the int16 codes' scale folded in (exact: a power of two)
    for (int i = 0; i < 64; i++) xq[i] = q[order ? order[i] : i];
  }
  return true;
}

// NF4/FP4: y[M,N] = x[M,K]·dequant(w)ᵀ (+bias). Decode (M up to kQ4GemvMaxM) runs the fused dequantize-GEMV
// (Kernels::gemv_q4) per row of x, output rows split over the pool; prefill runs the float GEMM with each W tile
// dequantized once (Kernels::dequant_q4: NR rows × kc columns, round_dtype(code·s) exactly) and packed as float32
// by pack_b, so the dequantization is amortised over all rows of x as the bf16 widening is in gemm_path.
void matmul_q4(float* y, const float* x, const Q4Weight& w, int64_t M, const float* bias) {
  const int64_t N = w.N, K = w.K;
  if (M == 0 || N == 0) return;
  if (K == 0) {
    bias_rows(y, M, N, bias);
    return;
  }
  const Kernels* k = active();
  if (M > kQ4GemvMaxM) {
    const int64_t NR = k->NR, kcMax = std::min<int64_t>(k->KC, K);
    gemm_tiles(k, y, x, M, N, K, bias, [&](float* Bp, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
      thread_local Scratch<float> tile;  // [nr][kc]: the tile's weight rows, dequantized
      float* t = tile.get(size_t(NR * kcMax));
      for (int64_t j = 0; j < nr; j++) k->dequant_q4(t + j * kc, w, (n0 + j) * K + k0, kc);
      k->pack_b(Bp, t, W_F32, kc, 0, nr, 0, kc);
    });
    return;
  }
  // Decode: x quantized to int16 per 64-element chunk once (q4i_prep), then the int16-activation GEMV over up to 4
  // rows of x at a time, so the lookups of each weight chunk serve them all. Shapes it does not cover (K or the
  // block size not a multiple of 64) and x rows holding a NaN or an infinity take the exact GEMV below.
  if (K % 64 == 0 && w.blocksize % 64 == 0) {
    thread_local Scratch<int16_t> xqBuf;
    thread_local Scratch<float> dxBuf;
    int16_t* xq = xqBuf.get(size_t(M * K));
    float* dx = dxBuf.get(size_t(M * (K / 64)));
    bool finite = true;
    for (int64_t m = 0; m < M && finite; m++) finite = q4i_prep(xq + m * K, dx + m * (K / 64), x + m * K, K, k->q4i_order);
    if (finite) {
      const int64_t grain = std::max<int64_t>(4, (1 << 15) / K);
      parallel_for(N, grain, [&](int64_t b, int64_t e) {
        for (int64_t m = 0; m < M; m += 4)
          k->gemv_q4i(y + m * N, N, x + m * K, K, xq + m * K, dx + m * (K / 64), int(std::min<int64_t>(4, M - m)), w, b, e, bias);
      }, 4);
      return;
    }
  }
  // The exact GEMV, one call per thread for a single row of x; several rows re-read each L2-sized block of weight
  // rows per row of x.
  const int64_t rowBytes = std::max<int64_t>(1, (K + 1) / 2);
  const int64_t nb = M == 1 ? N : std::max<int64_t>(4, kGemvBlockBytes / rowBytes / 4 * 4);
  const int64_t grain = std::max<int64_t>(4, (1 << 15) / std::max<int64_t>(1, K * M));
  parallel_for(N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n0 = b; n0 < e; n0 += nb) {
      const int64_t n1 = std::min(e, n0 + nb);
      for (int64_t m = 0; m < M; m++) k->gemv_q4(y + m * N, x + m * K, w, n0, n1, bias);
    }
  }, 4);
}

bool qg_prep(void* xqv, float* dx, float* xbar, const float* x, const int32_t* perm, int64_t K, int64_t Kpad,
             int64_t G, int64_t nG, int bits, const uint8_t* order, bool pairs) {
  const float xmax = qg_xmax(bits);
  int8_t* xq8 = bits <= 4 ? static_cast<int8_t*>(xqv) : nullptr;
  int16_t* xq16 = bits <= 4 ? nullptr : static_cast<int16_t*>(xqv);
  alignas(64) float v[64];
  alignas(64) int16_t q[64];
  // One x scale per 64-element chunk. A scale per 32 (llama.cpp's Q8_0 block) measured 1.2e-2 against 1.5e-2
  // relative logits error on eval-llama-16m, and decode perplexity within 0.1% either way, for a slower kernel.
  for (int64_t g = 0; g < nG; g++) xbar[g] = 0.f;
  for (int64_t c = 0; c < Kpad / 64; c++) {
    for (int i = 0; i < 64; i++) {
      const int64_t j = c * 64 + i;
      v[i] = j < K ? x[perm ? perm[j] : j] : 0.f;
    }
    if (!quantize_chunk(v, xmax, q, &dx[c])) return false;
    int32_t s[2] = {0, 0};
    for (int i = 0; i < 64; i++) s[i >> 5] += q[i];
    if (xq8 && pairs && (c % 2 == 1 || c + 1 < Kpad / 64)) {  // a chunk of a pair: its halves 64 bytes apart
      int8_t* o = xq8 + (c & ~int64_t(1)) * 64 + (c & 1) * 32;
      for (int i = 0; i < 32; i++) { o[i] = int8_t(q[i]); o[64 + i] = int8_t(q[32 + i]); }
    } else if (xq8) for (int i = 0; i < 64; i++) xq8[c * 64 + i] = int8_t(q[i]);
    else for (int i = 0; i < 64; i++) xq16[c * 64 + i] = q[order ? order[i] : i];
    // The padding past K may reach past the last group: it holds zeros, so any group serves; take the last.
    for (int h = 0; h < 2; h++) xbar[std::min((c * 64 + 32 * h) / G, nG - 1)] += dx[c] * float(s[h]);
  }
  return true;
}

void qg_dequant(float* dst, const QgWeight& w, int64_t row, int64_t k0, int64_t n) {
  const int64_t cb = qg_chunk_bytes(w.bits), nc = w.Kpad / 64;
  const uint8_t* codes = w.codes + row * nc * cb;
  const uint16_t* s = w.scales + row * w.nG;
  const uint8_t* z = w.zeros + row * w.nG;
  int code[64];
  // Chunk by chunk: the 64 codes decoded with one switch, then scale·(code − zero) per half-chunk's group.
  for (int64_t k = k0, end = k0 + n; k < end;) {
    const int64_t c = k / 64, lo = k - c * 64, hi = std::min<int64_t>(64, end - c * 64);
    const uint8_t* p = codes + c * cb;
    switch (w.bits) {
      case 8: for (int i = 0; i < 64; i++) code[i] = p[i]; break;
      case 4: for (int i = 0; i < 32; i++) { code[i] = p[i] & 15; code[i + 32] = p[i] >> 4; } break;
      case 2: for (int i = 0; i < 64; i++) code[i] = (p[i & 15] >> (2 * (i >> 4))) & 3; break;
      default: for (int i = 0; i < 64; i++) code[i] = ((p[i & 15] >> (2 * (i >> 4))) & 3) | (((p[16 + (i >> 3)] >> (i & 7)) & 1) << 2); break;
    }
    for (int h = 0; h < 2; h++) {
      const int64_t i0 = std::max<int64_t>(lo, 32 * h), i1 = std::min<int64_t>(hi, 32 * h + 32);
      if (i0 >= i1) continue;
      const int64_t g = std::min((c * 64 + 32 * h) / w.G, w.nG - 1);  // the padding past K: the last group
      const float sg = f16_to_f32(s[g]);
      const int zg = z[g];
      for (int64_t i = i0; i < i1; i++) dst[c * 64 + i - k0] = sg * float(code[i] - zg);
    }
    k = c * 64 + hi;
  }
}

// GPTQ: y[M,N] = x[M,K]·dequant(w)ᵀ (+bias), inputs permuted by perm (null: identity) and padded to Kpad. Decode (M up
// to kQ4GemvMaxM) quantizes x once (qg_prep) and runs gemv_qg over up to 4 rows of x at a time; x rows that are not
// finite and prefill take the exact path: x permuted and padded once, then the float GEMM with each weight tile
// dequantized (qg_dequant, the ref's weights exactly) and packed, or the GEMM's own loop for a few rows.
void matmul_qg(float* y, const float* x, const QgWeight& w, const int32_t* perm, int64_t K, int64_t M, const float* bias) {
  const int64_t N = w.N, Kpad = w.Kpad;
  if (M == 0 || N == 0) return;
  const Kernels* k = active();
  if (M <= kQ4GemvMaxM) {
    thread_local Scratch<int16_t> xqBuf;  // int8 or int16 values (qg_prep), room for int16
    thread_local Scratch<float> dxBuf, xbarBuf;
    const int64_t xsz = w.bits <= 4 ? 1 : 2;
    char* xq = reinterpret_cast<char*>(xqBuf.get(size_t(M * Kpad)));
    const int64_t ndx = Kpad / 64;  // x scales per row
    float* dx = dxBuf.get(size_t(M * ndx + 16));  // 16 past the end: see Kernels::qg_pairs
    float* xbar = xbarBuf.get(size_t(M * w.nG));
    bool finite = true;
    for (int64_t m = 0; m < M && finite; m++)
      finite = qg_prep(xq + m * Kpad * xsz, dx + m * ndx, xbar + m * w.nG, x + m * K, perm, K, Kpad, w.G, w.nG, w.bits, k->qg_order, qg_pairs(k, w));
    if (finite) {
      const int64_t grain = std::max<int64_t>(4, (1 << 15) / Kpad);
      parallel_for(N, grain, [&](int64_t b, int64_t e) {
        for (int64_t m = 0; m < M; m += 4)
          k->gemv_qg(y + m * N, N, xq + m * Kpad * xsz, dx + m * ndx, xbar + m * w.nG, int(std::min<int64_t>(4, M - m)), w, b, e, bias);
      }, 4);
      return;
    }
  }
  thread_local Scratch<float> xpBuf;
  float* xp = xpBuf.get(size_t(M * Kpad));
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < Kpad; j++) xp[m * Kpad + j] = j < K ? x[m * K + (perm ? perm[j] : j)] : 0.f;
  const int64_t NR = k->NR, kcMax = std::min<int64_t>(k->KC, Kpad);
  gemm_tiles(k, y, xp, M, N, Kpad, bias, [&](float* Bp, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
    thread_local Scratch<float> tile;  // [nr][kc]: the tile's weight rows, dequantized
    float* t = tile.get(size_t(NR * kcMax));
    for (int64_t j = 0; j < nr; j++) qg_dequant(t + j * kc, w, n0 + j, k0, kc);
    k->pack_b(Bp, t, W_F32, kc, 0, nr, 0, kc);
  });
}

void matmul(float* y, const float* x, const void* w, int wtype, int64_t M, int64_t N, int64_t K, const float* bias) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    bias_rows(y, M, N, bias);
    return;
  }
  const Kernels* k = active();
  if (M <= kGemvMaxM) gemv_path(k, y, x, w, wtype, M, N, K, bias);
  else gemm_path(k, y, x, w, wtype, M, N, K, bias);
}

// ---- dx = dy · W: the input gradient of a frozen linear (training). The same tiled GEMM with the weight read
// transposed: output columns are W's columns, the reduction runs over W's rows. Each pack dequantizes the tile's kc
// weight rows over its nr columns (row(dst, r, c0, n) writes W[r, c0 .. c0+n)), so no full weight is ever stored.
namespace {

template <class RowFn>
void matmul_t_tiles(float* dx, const float* dy, int64_t M, int64_t N, int64_t K, RowFn&& row) {
  const Kernels* k = active();
  const int64_t NR = k->NR, kcMax = std::min<int64_t>(k->KC, N);
  gemm_tiles(k, dx, dy, M, K, N, nullptr, [&](float* Bp, int64_t c0, int64_t nr, int64_t r0, int64_t kc) {
    thread_local Scratch<float> tile, rowbuf;
    float* t = tile.get(size_t(NR * kcMax));
    float* rb = rowbuf.get(size_t(NR));
    for (int64_t i = 0; i < kc; i++) {
      row(rb, r0 + i, c0, nr);
      for (int64_t j = 0; j < nr; j++) t[j * kc + i] = rb[j];
    }
    k->pack_b(Bp, t, W_F32, kc, 0, nr, 0, kc);
  });
}

}  // namespace

void matmul_t(float* dx, const float* dy, const void* w, int wtype, int64_t M, int64_t N, int64_t K) {
  if (M == 0 || K == 0) return;
  if (N == 0) { std::fill(dx, dx + M * K, 0.f); return; }
  const Kernels* k = active();
  const int64_t esz = wtype == W_F32 ? 4 : 2;
  matmul_t_tiles(dx, dy, M, N, K, [&](float* dst, int64_t r, int64_t c0, int64_t n) {
    k->widen(dst, static_cast<const uint8_t*>(w) + (r * K + c0) * esz, wtype, n);
  });
}

void matmul_t_q4(float* dx, const float* dy, const Q4Weight& w, int64_t M) {
  if (M == 0 || w.K == 0) return;
  if (w.N == 0) { std::fill(dx, dx + M * w.K, 0.f); return; }
  const Kernels* k = active();
  matmul_t_tiles(dx, dy, M, w.N, w.K, [&](float* dst, int64_t r, int64_t c0, int64_t n) { k->dequant_q4(dst, w, r * w.K + c0, n); });
}

void matmul_t_qg(float* dx, const float* dy, const QgWeight& w, const int32_t* perm, int64_t K, int64_t M) {
  if (M == 0 || K == 0) return;
  // dy · W over the permuted, padded inputs, then back to the input order (the padding's columns are dropped).
  std::vector<float> tmp(size_t(M * w.Kpad));
  matmul_t_tiles(tmp.data(), dy, M, w.N, w.Kpad, [&](float* dst, int64_t r, int64_t c0, int64_t n) { qg_dequant(dst, w, r, c0, n); });
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < K; j++) dx[m * K + (perm ? perm[j] : j)] = tmp[size_t(m * w.Kpad + j)];
}

void matmul_t_int8(float* dx, const float* dy, const int8_t* CB, const float* SCB, int64_t M, int64_t N, int64_t K) {
  if (M == 0 || K == 0) return;
  if (N == 0) { std::fill(dx, dx + M * K, 0.f); return; }
  // bitsandbytes' int8_vectorwise_dequant: fl32(fl32(CB·SCB)·fl32(1/127)), as dequantizeInt8.
  const float inv127 = 1.f / 127.f;
  matmul_t_tiles(dx, dy, M, N, K, [&](float* dst, int64_t r, int64_t c0, int64_t n) {
    const int8_t* c = CB + r * K + c0;
    const float s = SCB[r];
    for (int64_t j = 0; j < n; j++) {
      const volatile float p = float(c[j]) * s;  // rounded to float before the second product, never fused
      dst[j] = p * inv127;
    }
  });
}

}  // namespace lowbit
