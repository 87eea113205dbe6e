// GPTQ and AWQ on the GPU: the CPU kernels' layout (src/quant/qg.ts, QgPacked) built on the device, and its decode
// twin qgDecodeRef computed with integer dot products.
//
// Layout (per weight [N, K], the input order permuted so that groups are contiguous, K padded to Kpad = 64·nc):
// codes [N, nc, cb] (one 64-code chunk is cb bytes: 2-bit 16, 3-bit 24, 4-bit 32, 8-bit 64, packed as packChunk),
// scales [N, nG] float16 bits, zeros [N, nG] uint8. qg_repack builds the codes from a checkpoint's own tensors
// (AutoGPTQ's qweight [K·bits/32, N], AutoAWQ's GEMM [K, N/8] in AWQ_ORDER or GEMV [N, K/8]) and the permutation.
//
// Decode (≤ 16 rows of x), exactly qgDecodeRef's arithmetic but for the order of float32 sums: qg_prep quantizes each
// x row per 64-element chunk (permuted order) to int8 (int16 against 8-bit codes) with its scale dx and the exact
// half-chunk sums of the codes (the GEMV forms the per-group sums xbar from them); qg_gemv takes one warp per 2
// weight rows and one lane per chunk: Σ code·xq exact (dp4a), times
// fl(scale·dx) (per half-chunk where a group edge falls mid-chunk), float32 across chunks and lanes, minus
// Σ_g fl(scale·zero)·xbar[g], plus bias. 4-bit codes at 6-16 rows (LOWBIT_QG_MMA_ROWS) take the same arithmetic on
// the tensor cores instead (qg_mma_kernel: int8 MMA, one instruction a half-chunk of 16 rows × 8 weight rows).
// A row of x that is not finite gives NaN outputs (the CPU takes an exact path
// there; on the GPU a non-finite activation is an error either way, and generate() stops on non-finite logits).
// Prefill (more rows): qg_dequant writes the float16 weight W[n, k] = fl(scale·(q − z)) (float32, then rounded to
// float16, as AutoGPTQ's kernels compute in float16), and cuBLAS multiplies.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kQgRows = 2;  // weight rows a warp
constexpr int64_t kQgDecodeMaxRows = 16;  // rows of x the integer GEMV takes (batch-16 decode); more: dequantize + cuBLAS

__host__ __device__ constexpr int chunk_bytes(int bits) { return bits == 3 ? 24 : 8 * bits; }

// Code k (input order) of output row n in a checkpoint's tensor. mode 0: GPTQ qweight [K·bits/32, N] (fields may
// cross words at 3 bits); 1: AWQ GEMM [K, N/8], output 8c+j in nibble AWQ_REVERSE_ORDER[j]; 2: AWQ GEMV [N, K/8].
__device__ __forceinline__ uint32_t source_code(const uint32_t* src, int mode, int bits, int64_t N, int64_t K, int64_t n, int64_t k) {
  if (mode == 0) {
    const int64_t p = int64_t(bits) * k, w = p >> 5;
    const int off = int(p & 31);
    uint32_t v = src[w * N + n] >> off;
    if (off + bits > 32) v |= src[(w + 1) * N + n] << (32 - off);
    return v & ((1u << bits) - 1);
  }
  if (mode == 1) {
    const int rev = (0x73625140 >> (4 * (n & 7))) & 15;  // AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]
    return (src[k * (N / 8) + n / 8] >> (4 * rev)) & 15;
  }
  return (src[n * (K / 8) + k / 8] >> (4 * (k & 7))) & 15;
}

// One thread per (chunk, row): the chunk's 64 codes gathered through the permutation and packed as packChunk does.
__global__ void qg_repack_kernel(uint8_t* out, const uint32_t* src, int mode, int bits, const int32_t* perm, int64_t N, int64_t K, int nc) {
  pdl_wait();
  pdl_trigger();
  const int cb = chunk_bytes(bits);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < N * nc; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = t % N, c = t / N;  // neighbouring threads: neighbouring rows (GPTQ's qweight reads coalesce)
    uint8_t code[64];
    for (int p = 0; p < 64; p++) {
      const int64_t j = c * 64 + p;
      code[p] = j < K ? uint8_t(source_code(src, mode, bits, N, K, n, perm ? perm[j] : j)) : 0;
    }
    uint8_t* o = out + (n * nc + c) * cb;
    if (bits == 8) {
      for (int p = 0; p < 64; p++) o[p] = code[p];
    } else if (bits == 4) {
      for (int i = 0; i < 32; i++) o[i] = code[i] | (code[i + 32] << 4);
    } else {
      for (int i = 0; i < 16; i++) o[i] = (code[i] & 3) | ((code[i + 16] & 3) << 2) | ((code[i + 32] & 3) << 4) | ((code[i + 48] & 3) << 6);
      if (bits == 3) {
        for (int i = 0; i < 8; i++) o[16 + i] = 0;
        for (int p = 0; p < 64; p++) o[16 + (p >> 3)] |= ((code[p] >> 2) & 1) << (p & 7);
      }
    }
  }
}

// One warp's part of qg_prep: the 64-element chunk c of x row m (permuted order), 2 elements a lane quantized to
// q0, q1; lane 0 and 16 write the half-chunk sums hs (or, with dh, fl(dx·hs) as float bits: the terms of xbar) and
// the chunk's scale dx (NaN where a value is not finite).
__device__ __forceinline__ void prep_row(const float* x, const int32_t* perm, int64_t K, int nc, int xmax, float* dx, int* hs, int64_t m, int c,
                                         int lane, int& q0, int& q1, bool dh = false) {
  const float* xr = x + m * K;
  const int64_t j = int64_t(c) * 64 + 2 * lane;
  const float v0 = j < K ? xr[perm ? perm[j] : j] : 0.f, v1 = j + 1 < K ? xr[perm ? perm[j + 1] : j + 1] : 0.f;
  const bool bad = __any_sync(0xffffffffu, !isfinite(v0) || !isfinite(v1));
  const float mx = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
  const float inv = mx > 0.f ? __fdiv_rn(float(xmax), mx) : 0.f;
  const float fx = float(xmax);
  q0 = bad ? 0 : int(fminf(fmaxf(rintf(__fmul_rn(v0, inv)), -fx), fx));
  q1 = bad ? 0 : int(fminf(fmaxf(rintf(__fmul_rn(v1, inv)), -fx), fx));
  int s = q0 + q1;  // lanes 0-15 hold the chunk's first 32 positions, 16-31 the last 32
  for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float d = bad ? __int_as_float(0x7fc00000) : __fdiv_rn(mx, float(xmax));
  if (lane == 0) dx[m * nc + c] = d;
  if (lane == 0 || lane == 16) hs[m * 2 * nc + 2 * c + (lane >> 4)] = dh ? __float_as_int(__fmul_rn(d, float(s))) : s;
}

// One warp per 64-element chunk of an x row (grid: chunks / 8 × rows; 16 rows with frag), 2 elements a lane:
// xq [M, Kpad] (int8, or int16 when wide), dx [M, nc] (NaN for a chunk holding a value that is not finite),
// hs [M, 2·nc]: the exact sums of xq over each half-chunk. The GEMV forms xbar[g] = Σ fl(dx·hs) over a group's
// half-chunks in order from these, as qgQuantizeX sums it.
__global__ void qg_prep_kernel(void* xq, float* dx, int* hs, const float* x, const int32_t* perm, int64_t K, int nc, int xmax, bool wide,
                               int mRows, bool frag) {
  pdl_wait();
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int c = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (c >= nc) return;
  const int64_t m = blockIdx.y, Kpad = int64_t(nc) * 64;
  if (frag) {
    // The MMA kernel's operand (16 rows, those past mRows zero) in its A-fragment order, 512 bytes a half-chunk:
    // lane 4·(m mod 8) + t holds positions 8t..8t+3 of rows m and m + 8, then 8t+4..8t+7 of both (qg_mma_kernel);
    // hs holds the float terms fl(dx·hs) of xbar instead of the integer sums.
    int q0 = 0, q1 = 0;
    if (m < mRows) prep_row(x, perm, K, nc, xmax, dx, hs, m, c, lane, q0, q1, true);
    const int k = 2 * lane, kk = k & 31, reg = (m >= 8 ? 1 : 0) + 2 * ((kk >> 2) & 1);
    const int64_t off = (int64_t(c) * 2 + (k >> 5)) * 512 + ((m & 7) * 4 + (kk >> 3)) * 16 + reg * 4 + (kk & 3);
    *reinterpret_cast<uint16_t*>(static_cast<uint8_t*>(xq) + off) = uint16_t((q0 & 255) | ((q1 & 255) << 8));
    return;
  }
  int q0, q1;
  prep_row(x, perm, K, nc, xmax, dx, hs, m, c, lane, q0, q1);
  const int64_t j = int64_t(c) * 64 + 2 * lane;
  if (wide) {
    reinterpret_cast<int16_t*>(xq)[m * Kpad + j] = int16_t(q0);
    reinterpret_cast<int16_t*>(xq)[m * Kpad + j + 1] = int16_t(q1);
  } else {
    reinterpret_cast<int8_t*>(xq)[m * Kpad + j] = int8_t(q0);
    reinterpret_cast<int8_t*>(xq)[m * Kpad + j + 1] = int8_t(q1);
  }
}

// Up to 3 weights that read the same x (q/k/v, gate/up) with the same bits, K, groups and permutation.
struct QgOut {
  const uint8_t* codes[3];
  const uint16_t* scales[3];
  const uint8_t* zeros[3];
  OutSegs out;
};

__device__ __forceinline__ int dp4a(uint32_t a, uint32_t b, int c) { return __dp4a(int(a), int(b), c); }

// Σ code·xq over the two halves of one chunk: raw = the chunk's bytes as words, xw = its xq (int8 quads; int16 pairs
// for 8-bit codes).
template <int BITS> struct Chunk {
  static constexpr int CB = chunk_bytes(BITS), WORDS = CB / 4, XW = BITS == 8 ? 32 : 16;
  __device__ __forceinline__ static void dot(const uint32_t (&raw)[WORDS], const uint32_t (&xw)[XW], int& s0, int& s1) {
    s0 = 0;
    s1 = 0;
    if constexpr (BITS == 4) {
#pragma unroll
      for (int j = 0; j < 8; j++) {
        s0 = dp4a(raw[j] & 0x0f0f0f0fu, xw[j], s0);
        s1 = dp4a((raw[j] >> 4) & 0x0f0f0f0fu, xw[8 + j], s1);
      }
    } else if constexpr (BITS == 2 || BITS == 3) {
#pragma unroll
      for (int q = 0; q < 4; q++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          uint32_t c = (raw[j] >> (2 * q)) & 0x03030303u;
          if constexpr (BITS == 3) {
            const uint32_t hb = raw[4 + (2 * q + (j >> 1)) / 4] >> (8 * ((2 * q + (j >> 1)) & 3));
            const uint32_t h = (hb >> (4 * (j & 1))) & 15u;
            c |= ((h & 1u) | ((h & 2u) << 7) | ((h & 4u) << 14) | ((h & 8u) << 21)) << 2;
          }
          if (q < 2) s0 = dp4a(c, xw[4 * q + j], s0);
          else s1 = dp4a(c, xw[4 * q + j], s1);
        }
    } else {  // 8-bit codes against int16 x
#pragma unroll
      for (int j = 0; j < 16; j++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
          const int p = 4 * j + b;
          const int code = int((raw[j] >> (8 * b)) & 255u);
          const int xv = int(int16_t(xw[p >> 1] >> (16 * (p & 1))));
          if (p < 32) s0 += code * xv;
          else s1 += code * xv;
        }
    }
  }
};

template <int BITS>
__device__ __forceinline__ void load_chunk(uint32_t (&raw)[Chunk<BITS>::WORDS], const uint8_t* p) {
  if constexpr (Chunk<BITS>::CB % 16 == 0) {
#pragma unroll
    for (int i = 0; i < Chunk<BITS>::CB / 16; i++) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p) + i);
      raw[4 * i] = u.x; raw[4 * i + 1] = u.y; raw[4 * i + 2] = u.z; raw[4 * i + 3] = u.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < Chunk<BITS>::CB / 8; i++) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p) + i);
      raw[2 * i] = u.x; raw[2 * i + 1] = u.y;
    }
  }
}

__device__ __forceinline__ float f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <int BITS, int M>
__global__ void __launch_bounds__(256, BITS <= 4 && M <= 2 ? 2 : 1) qg_gemv_kernel(QgOut o, const void* __restrict__ xq, const float* __restrict__ dx, const int* __restrict__ hs,
                               int64_t N, int nc, int G, int gShift, int nG, int mRows) {
  using C = Chunk<BITS>;
  constexpr int R = kQgRows;
  const int lane = threadIdx.x & 31;
  const int64_t warpId = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int64_t n0 = o.out.silu ? warpId : warpId * R;
  if (n0 >= N) return;
  const bool halves = G % 64 != 0;
  int seg[R];
  int64_t r[R];
  warp_rows(o.out, n0, N, seg, r);
  const uint8_t* codes[R];
  const uint16_t* sc[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    codes[i] = pick3(o.codes, seg[i]) + r[i] * nc * C::CB;
    sc[i] = pick3(o.scales, seg[i]) + r[i] * nG;
  }
  float acc[R][M];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = 0.f;
  const int64_t xrow = int64_t(nc) * 64 * (BITS == 8 ? 2 : 1);  // bytes of one x row's codes
  if constexpr (BITS == 4) {
    // 4-bit: a lane takes half a chunk a step (16 bytes: codes 16p..16p+15 in the low nibbles, 32+16p.. in the high
    // ones), so a warp's code loads are 512 contiguous bytes and its int8 x loads 32-byte runs 64 bytes apart (with a
    // lane a whole chunk they were 64 bytes per lane apart: 16 cache lines a load instruction). U half-chunks in flight.
    constexpr int U = 4;
    const int64_t steps = 2 * int64_t(nc);
    int64_t h = lane;
    uint4 hr[U][R];
    bool full = h + (U - 1) * kWarp < steps;
    if (full) {
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int i = 0; i < R; i++) hr[u][i] = __ldg(reinterpret_cast<const uint4*>(codes[i]) + h + u * kWarp);
    }
    pdl_wait();  // xq, dx and hs come from qg_prep, just before
    pdl_trigger();
    auto half_step = [&](const uint4 (&w)[R], int64_t hh) {
      const int64_t cc = hh >> 1;
      const int p = int(hh & 1);
      const int k0 = int(cc) * 64, g0 = min(gShift >= 0 ? k0 >> gShift : k0 / G, nG - 1), g1 = min(gShift >= 0 ? (k0 + 32) >> gShift : (k0 + 32) / G, nG - 1);
      float s0f[R], s1f[R];
#pragma unroll
      for (int i = 0; i < R; i++) { s0f[i] = f16(sc[i][g0]); s1f[i] = f16(sc[i][g1]); }
#pragma unroll
      for (int m = 0; m < M; m++) {
        if (m >= mRows) break;
        const uint8_t* xb = static_cast<const uint8_t*>(xq) + m * xrow + cc * 64 + 16 * p;
        const uint4 xl = __ldg(reinterpret_cast<const uint4*>(xb)), xh = __ldg(reinterpret_cast<const uint4*>(xb + 32));
        const float d = dx[int64_t(m) * nc + cc];
#pragma unroll
        for (int i = 0; i < R; i++) {
          int s0 = 0, s1 = 0;
          s0 = dp4a(w[i].x & 0x0f0f0f0fu, xl.x, s0); s1 = dp4a((w[i].x >> 4) & 0x0f0f0f0fu, xh.x, s1);
          s0 = dp4a(w[i].y & 0x0f0f0f0fu, xl.y, s0); s1 = dp4a((w[i].y >> 4) & 0x0f0f0f0fu, xh.y, s1);
          s0 = dp4a(w[i].z & 0x0f0f0f0fu, xl.z, s0); s1 = dp4a((w[i].z >> 4) & 0x0f0f0f0fu, xh.z, s1);
          s0 = dp4a(w[i].w & 0x0f0f0f0fu, xl.w, s0); s1 = dp4a((w[i].w >> 4) & 0x0f0f0f0fu, xh.w, s1);
          if (halves) acc[i][m] += float(s0) * __fmul_rn(s0f[i], d) + float(s1) * __fmul_rn(s1f[i], d);
          else acc[i][m] += float(s0 + s1) * __fmul_rn(s0f[i], d);
        }
      }
    };
    while (full) {
#pragma unroll
      for (int u = 0; u < U; u++) half_step(hr[u], h + u * kWarp);
      h += U * kWarp;
      full = h + (U - 1) * kWarp < steps;
      if (full) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
          for (int i = 0; i < R; i++) hr[u][i] = __ldg(reinterpret_cast<const uint4*>(codes[i]) + h + u * kWarp);
      }
    }
    for (; h < steps; h += kWarp) {
      uint4 one[R];
#pragma unroll
      for (int i = 0; i < R; i++) one[i] = __ldg(reinterpret_cast<const uint4*>(codes[i]) + h);
      half_step(one, h);
    }
  } else {
  uint32_t raw[R][C::WORDS];
  int c = lane;
  if (c < nc) {
#pragma unroll
    for (int i = 0; i < R; i++) load_chunk<BITS>(raw[i], codes[i] + int64_t(c) * C::CB);
  }
  pdl_wait();  // xq, dx and hs come from qg_prep, just before
  pdl_trigger();
  for (; c < nc; c += kWarp) {
    // The next chunk's codes are requested before this one is used: two DRAM round trips overlap.
    const bool more = c + kWarp < nc;
    uint32_t nxt[R][C::WORDS];
    if (more) {
#pragma unroll
      for (int i = 0; i < R; i++) load_chunk<BITS>(nxt[i], codes[i] + int64_t(c + kWarp) * C::CB);
    }
    float s0f[R], s1f[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int k0 = c * 64, g0 = min(gShift >= 0 ? k0 >> gShift : k0 / G, nG - 1), g1 = min(gShift >= 0 ? (k0 + 32) >> gShift : (k0 + 32) / G, nG - 1);
      s0f[i] = f16(sc[i][g0]);
      s1f[i] = f16(sc[i][g1]);
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
      if (m >= mRows) break;
      uint32_t xw[C::XW];
      const uint4* xp = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(xq) + m * xrow + int64_t(c) * 64 * (BITS == 8 ? 2 : 1));
#pragma unroll
      for (int i = 0; i < C::XW / 4; i++) {
        const uint4 u = __ldg(xp + i);
        xw[4 * i] = u.x; xw[4 * i + 1] = u.y; xw[4 * i + 2] = u.z; xw[4 * i + 3] = u.w;
      }
      const float d = dx[int64_t(m) * nc + c];
#pragma unroll
      for (int i = 0; i < R; i++) {
        int s0, s1;
        C::dot(raw[i], xw, s0, s1);
        if (halves) acc[i][m] += float(s0) * __fmul_rn(s0f[i], d) + float(s1) * __fmul_rn(s1f[i], d);
        else acc[i][m] += float(s0 + s1) * __fmul_rn(s0f[i], d);
      }
    }
    if (more) {
#pragma unroll
      for (int i = 0; i < R; i++)
#pragma unroll
        for (int w = 0; w < C::WORDS; w++) raw[i][w] = nxt[i][w];
    }
  }
  }
  // Σ_g fl(scale·zero)·xbar[g], lanes over the groups; xbar[g] = Σ fl(dx·hs) over the group's half-chunks in order
  // (the last group also takes the padding's).
  float corr[R][M];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) corr[i][m] = 0.f;
  const int hpg = G / 32;
  for (int g = lane; g < nG; g += kWarp) {
    const int lo = g * hpg, hi = g == nG - 1 ? 2 * nc : lo + hpg;
    float sz[R];
#pragma unroll
    for (int i = 0; i < R; i++) sz[i] = __fmul_rn(f16(sc[i][g]), float(pick3(o.zeros, seg[i])[r[i] * nG + g]));
#pragma unroll
    for (int m = 0; m < M; m++) {
      if (m >= mRows) break;
      float xb = 0.f;
      for (int h = lo; h < hi; h++) xb = __fadd_rn(xb, __fmul_rn(dx[int64_t(m) * nc + (h >> 1)], float(hs[int64_t(m) * 2 * nc + h])));
#pragma unroll
      for (int i = 0; i < R; i++) corr[i][m] += sz[i] * xb;
    }
  }
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = warp_sum(acc[i][m]) - warp_sum(corr[i][m]);
  store_rows(o.out, seg, r, n0, N, mRows, acc);
}

// 4-bit codes at 6-16 rows of x (batch-16 decode) on the tensor cores: mma.m16n8k32 (s8 × s8 → s32), one
// half-chunk (32 codes, the low or the high nibbles of the chunk's 32 bytes) an instruction. The k order inside an
// instruction is free as long as A and B agree (the int32 sums are exact): lane t of a column takes the chunk's
// bytes 8t..8t+7 (one 8-byte load; 4 lanes read the column's 32 bytes), so B's k = 4t + i is byte 8t + i and
// k = 16 + 4t + i is byte 8t + 4 + i, and qg_prep writes x's A fragments in that order. Each chunk's int32 products
// are scaled by fl(scale·dx) as qg_gemv does; the zero correction and the sums over chunks, warps and groups are
// float32 in another order. A block: kMmaCols columns of the launch (kMmaTiles n8 tiles a warp), its kMmaWarps warps
// splitting the chunks, their sums reduced in shared memory; the block's scales and zeros are read into shared
// memory first. With silu the columns alternate gate row r, up row r, so a thread's C columns 2t, 2t + 1 are one
// output's gate and up.
constexpr int kMmaWarps = 16, kMmaTiles = 4, kMmaCols = 8 * kMmaTiles, kMmaU = 4;  // chunks a warp loads at once: kMmaU

__device__ __forceinline__ void mma_s8(int (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

// Column c of the launch: its weight slot and row (with silu: gate row c/2 for even c, up row c/2 for odd).
__device__ __forceinline__ void mma_col(const OutSegs& o, int64_t c, int& seg, int64_t& r) {
  if (o.silu) {
    seg = int(c & 1);
    r = c >> 1;
    return;
  }
  seg = c >= o.start[2] ? 2 : c >= o.start[1] ? 1 : 0;
  r = c - pick3(o.start, seg);
}

__global__ void __launch_bounds__(kMmaWarps * kWarp, 1) qg_mma_kernel(QgOut o, const uint4* __restrict__ xf, const float* __restrict__ dx,
                                                                      const int* __restrict__ hs, int64_t cols, int nc, int G, int gShift, int nG,
                                                                      int mRows) {
  constexpr int U = kMmaU, T = kMmaTiles;
  // Shared: the warps' sums [kMmaWarps][16][kMmaCols], the terms of xbar [16][2·nc] (fl(dx·hs) a half-chunk), the
  // block's scales [kMmaCols][nG] (f16) and zeros [kMmaCols][nG].
  extern __shared__ float red[];
  float* sdh = red + kMmaWarps * 16 * kMmaCols;
  uint16_t* ssc = reinterpret_cast<uint16_t*>(sdh + 16 * 2 * nc);
  uint8_t* szr = reinterpret_cast<uint8_t*>(ssc + kMmaCols * nG);
  const int lane = threadIdx.x & 31, warp = threadIdx.x / kWarp, gq = lane >> 2, tq = lane & 3;
  const int64_t col0 = int64_t(blockIdx.x) * kMmaCols;
  const bool halves = G % 64 != 0;
  // This lane's B column of each n8 tile (gq): its bytes 8t..8t+7 of each chunk; columns past the launch read
  // column col0's and are not written.
  const uint2* bw[T];
#pragma unroll
  for (int j = 0; j < T; j++) {
    int seg;
    int64_t r;
    const int64_t c = col0 + 8 * j + gq;
    mma_col(o.out, c < cols ? c : col0, seg, r);
    bw[j] = reinterpret_cast<const uint2*>(pick3(o.codes, seg) + r * nc * 32) + tq;
  }
  const int per = (nc + kMmaWarps - 1) / kMmaWarps, cBeg = min(nc, warp * per), cEnd = min(nc, cBeg + per);
  uint2 wb[U][T];  // this lane's 8 bytes of U chunks, each tile
  auto fetch = [&](int c) {
#pragma unroll
    for (int u = 0; u < U; u++)
      if (c + u < cEnd) {
#pragma unroll
        for (int j = 0; j < T; j++) wb[u][j] = __ldg(bw[j] + (c + u) * 4);
      }
  };
  fetch(cBeg);
  // P loads a thread in flight at once (a loop that used each load before the next waited a round trip per item).
  constexpr int P = 8;
  for (int i0 = threadIdx.x; i0 < kMmaCols * nG; i0 += P * blockDim.x) {
    uint16_t sv[P];
    uint8_t zv[P];
#pragma unroll
    for (int p = 0; p < P; p++) {
      const int i = i0 + p * blockDim.x;
      if (i >= kMmaCols * nG) break;
      const int cl = i / nG, g = i - cl * nG;
      int seg;
      int64_t r;
      const int64_t c = col0 + cl;
      mma_col(o.out, c < cols ? c : col0, seg, r);
      sv[p] = __ldg(pick3(o.scales, seg) + r * nG + g);
      zv[p] = __ldg(pick3(o.zeros, seg) + r * nG + g);
    }
#pragma unroll
    for (int p = 0; p < P; p++) {
      const int i = i0 + p * blockDim.x;
      if (i >= kMmaCols * nG) break;
      ssc[i] = sv[p];
      szr[i] = zv[p];
    }
  }
  pdl_wait();  // xf, dx and hs come from qg_prep, just before
  pdl_trigger();
  const float* dhg = reinterpret_cast<const float*>(hs);
  for (int i0 = threadIdx.x; i0 < mRows * 2 * nc; i0 += P * blockDim.x) {
    float v[P];
#pragma unroll
    for (int p = 0; p < P; p++) {
      const int i = i0 + p * blockDim.x;
      if (i < mRows * 2 * nc) v[p] = __ldg(dhg + i);
    }
#pragma unroll
    for (int p = 0; p < P; p++) {
      const int i = i0 + p * blockDim.x;
      if (i < mRows * 2 * nc) sdh[i] = v[p];
    }
  }
  __syncthreads();
  float acc[T][4];
#pragma unroll
  for (int j = 0; j < T; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[j][i] = 0.f;
  const bool lo = gq < mRows, hi = gq + 8 < mRows;
  const uint16_t* mysc = ssc + (2 * tq) * nG;  // C column 8j + 2t + e: mysc[(8j + e)·nG + g]
  for (int c = cBeg; c < cEnd; c += U) {
    uint4 xa[U][2];
    float dl[U], dh[U];
    if (c > cBeg) fetch(c);
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (c + u >= cEnd) break;
      xa[u][0] = __ldg(xf + int64_t(2 * (c + u)) * kWarp + lane);
      xa[u][1] = __ldg(xf + int64_t(2 * (c + u) + 1) * kWarp + lane);
      dl[u] = lo ? __ldg(dx + int64_t(gq) * nc + c + u) : 0.f;
      dh[u] = hi ? __ldg(dx + int64_t(gq + 8) * nc + c + u) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (c + u >= cEnd) break;
      const int k0 = (c + u) * 64;
      const int g0 = min(gShift >= 0 ? k0 >> gShift : k0 / G, nG - 1), g1 = min(gShift >= 0 ? (k0 + 32) >> gShift : (k0 + 32) / G, nG - 1);
#pragma unroll
      for (int j = 0; j < T; j++) {
        int d0[4] = {0, 0, 0, 0}, d1[4] = {0, 0, 0, 0};
        const uint2 w = wb[u][j];
        mma_s8(d0, xa[u][0], w.x & 0x0f0f0f0fu, w.y & 0x0f0f0f0fu);
        if (halves) mma_s8(d1, xa[u][1], (w.x >> 4) & 0x0f0f0f0fu, (w.y >> 4) & 0x0f0f0f0fu);
        else mma_s8(d0, xa[u][1], (w.x >> 4) & 0x0f0f0f0fu, (w.y >> 4) & 0x0f0f0f0fu);
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float s0 = f16(mysc[(8 * j + e) * nG + g0]);
          acc[j][e] += float(d0[e]) * __fmul_rn(s0, dl[u]);
          acc[j][2 + e] += float(d0[2 + e]) * __fmul_rn(s0, dh[u]);
          if (halves) {
            const float s1 = f16(mysc[(8 * j + e) * nG + g1]);
            acc[j][e] += float(d1[e]) * __fmul_rn(s1, dl[u]);
            acc[j][2 + e] += float(d1[2 + e]) * __fmul_rn(s1, dh[u]);
          }
        }
      }
    }
  }
  // Minus Σ_g fl(scale·zero)·xbar[g], the groups spread over the warps; xbar as qg_gemv forms it.
  const int hpg = G / 32;
  for (int g = warp; g < nG; g += kMmaWarps) {
    const int h0 = g * hpg, h1 = g == nG - 1 ? 2 * nc : h0 + hpg;
    float xl = 0.f, xh = 0.f;
    for (int h = h0; h < h1; h++) {
      if (lo) xl = __fadd_rn(xl, sdh[gq * 2 * nc + h]);
      if (hi) xh = __fadd_rn(xh, sdh[(gq + 8) * 2 * nc + h]);
    }
#pragma unroll
    for (int j = 0; j < T; j++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int i = (8 * j + 2 * tq + e) * nG + g;
        const float sz = __fmul_rn(f16(ssc[i]), float(szr[i]));
        acc[j][e] -= sz * xl;
        acc[j][2 + e] -= sz * xh;
      }
  }
  float (*part)[16][kMmaCols] = reinterpret_cast<float (*)[16][kMmaCols]>(red);
#pragma unroll
  for (int j = 0; j < T; j++)
#pragma unroll
    for (int e = 0; e < 2; e++) {
      part[warp][gq][8 * j + 2 * tq + e] = acc[j][e];
      part[warp][gq + 8][8 * j + 2 * tq + e] = acc[j][2 + e];
    }
  __syncthreads();
  // 16 rows × kMmaCols outputs over the block's threads.
  for (int idx = threadIdx.x; idx < 16 * kMmaCols; idx += blockDim.x) {
    const int m = idx / kMmaCols, cl = idx % kMmaCols;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; w++) v += part[w][m][cl];
    const int64_t c = col0 + cl;
    const OutSegs& out = o.out;
    if (out.silu) {
      const float up = __shfl_down_sync(0xffffffffu, v, 1);  // the odd column next to this even one
      if (m < mRows && c < cols && (cl & 1) == 0) {
        const int64_t r = c >> 1, N = cols >> 1;
        const float gt = v + (out.bias[0] ? out.bias[0][r] : 0.f), u = up + (out.bias[1] ? out.bias[1][r] : 0.f);
        out.y[0][m * N + r] = gt / (1.f + expf(-gt)) * u;
      }
      continue;
    }
    if (m >= mRows || c >= cols) continue;
    int seg;
    int64_t r;
    mma_col(out, c, seg, r);
    const float* bias = pick3(out.bias, seg);
    pick3(out.y, seg)[m * pick3(out.n, seg) + r] = v + (bias ? bias[r] : 0.f);
  }
}

// Dynamic shared memory of qg_mma_kernel for nc chunks and nG groups; more than kMmaMaxSmem takes qg_gemv.
constexpr size_t mma_smem(int nc, int nG) {
  return size_t(kMmaWarps) * 16 * kMmaCols * 4 + size_t(16) * 2 * nc * 4 + size_t(kMmaCols) * nG * 3;
}
constexpr int kMmaMaxSmem = 227 * 1024;

// W [N, K] float16 in input order: W[n, perm[j]] = fl(scale·(q − z)) rounded to float16.
__global__ void qg_dequant_kernel(__half* w, const uint8_t* codes, const uint16_t* scales, const uint8_t* zeros, const int32_t* perm,
                                  int bits, int64_t N, int64_t K, int nc, int G, int nG) {
  pdl_wait();
  pdl_trigger();
  const int cb = chunk_bytes(bits);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < N * K; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = t / K, j = t % K;
    const uint8_t* b = codes + (n * nc + j / 64) * cb;
    const int p = int(j % 64);
    int q;
    if (bits == 8) q = b[p];
    else if (bits == 4) q = p < 32 ? b[p] & 15 : b[p - 32] >> 4;
    else {
      q = (b[p & 15] >> (2 * (p >> 4))) & 3;
      if (bits == 3) q |= ((b[16 + (p >> 3)] >> (p & 7)) & 1) << 2;
    }
    const int g = min(int(j / G), nG - 1);
    const float v = __fmul_rn(f16(scales[n * nG + g]), float(q - int(zeros[n * nG + g])));
    w[n * K + (perm ? perm[j] : j)] = __float2half_rn(v);
  }
}

// The fewest rows of x that take the 4-bit MMA kernel (LOWBIT_QG_MMA_ROWS, 1-17: 17 turns it off); fewer take qg_gemv.
// 8B gptq4 decode (session 11): batch 4 GEMV 831.9 vs MMA 768.5 tok/s, batch 8 1050.5 vs 1365.6, batch 16 891 vs 2520;
// the MMA kernel's time hardly depends on the rows, the GEMV's grows with them: 6 lies between the measured points.
int qg_mma_rows() {
  static const int rows = [] {
    const char* e = getenv("LOWBIT_QG_MMA_ROWS");
    const int v = e ? atoi(e) : 6;
    return v < 1 ? 1 : v > 17 ? 17 : v;
  }();
  return rows;
}

template <int BITS>
void qg_gemv_launch(const QgOut& o, const void* xq, const float* dx, const int* hs, int64_t M, int64_t N, int nc, int G, int nG) {
  const int gShift = (G & (G - 1)) == 0 ? __builtin_ctz(unsigned(G)) : -1;
  // 9-12 rows run the 12-row kernel, 13-16 the 16-row one, over the rows there are (Mk ≥ M; the rest of xq is
  // never read: acc rows past M are not written).
  const int threads = 256, rowsPerBlock = threads / kWarp * (o.out.silu ? 1 : kQgRows);
  const dim3 grid(unsigned((N + rowsPerBlock - 1) / rowsPerBlock));
  switch (M <= 8 ? M : M <= 12 ? 12 : 16) {
#define LOWBIT_QG(MM) case MM: launch(qg_gemv_kernel<BITS, MM>, grid, threads, 0, o, xq, dx, hs, N, nc, G, gShift, nG, int(M)); break;
    LOWBIT_QG(1) LOWBIT_QG(2) LOWBIT_QG(3) LOWBIT_QG(4) LOWBIT_QG(5) LOWBIT_QG(6) LOWBIT_QG(7) LOWBIT_QG(8)
    LOWBIT_QG(12) LOWBIT_QG(16)
#undef LOWBIT_QG
  }
}

}  // namespace

void qg_repack(uint8_t* out, const void* src, int mode, int bits, const int32_t* perm, int64_t N, int64_t K, int nc) {
  if (N * nc == 0) return;
  launch(qg_repack_kernel, grid_for(N * nc), 256, 0, out, static_cast<const uint32_t*>(src), mode, bits, perm, N, K, nc);
}

void qg_dequant(__half* w, const QgCall& q, int i) {
  if (q.n[i] * q.K) launch(qg_dequant_kernel, grid_for(q.n[i] * q.K), 256, 0, w, q.codes[i], q.scales[i], q.zeros[i], q.perm, q.bits, q.n[i], q.K, q.nc, q.G, q.nG);
}

void qg_matmul(const QgCall& q, const float* x, int64_t M) {
  int64_t N = 0;
  for (int i = 0; i < q.nOut; i++) N += q.n[i];
  if (M == 0 || N == 0) return;
  if (q.silu && (M > kQgDecodeMaxRows || q.nOut != 2 || q.n[0] != q.n[1])) throw CudaError("qg_matmul: SiLU·mul takes gate and up of equal rows, at most 16 rows of x");
  if (M > kQgDecodeMaxRows) {
    // Prefill: each weight dequantized to float16 (one at a time, in one scratch), then cuBLAS.
    for (int i = 0; i < q.nOut; i++) {
      __half* w = static_cast<__half*>(scratch(3, size_t(q.n[i]) * size_t(q.K) * 2));
      launch(qg_dequant_kernel, grid_for(q.n[i] * q.K), 256, 0, w, q.codes[i], q.scales[i], q.zeros[i], q.perm, q.bits, q.n[i], q.K, q.nc, q.G, q.nG);
      matmul(q.y[i], x, w, W_F16, q.bias[i], M, q.n[i], q.K);
    }
    return;
  }
  const bool wide = q.bits == 8, mma = q.bits == 4 && M >= qg_mma_rows() && mma_smem(q.nc, q.nG) <= size_t(kMmaMaxSmem);
  const int64_t Kpad = int64_t(q.nc) * 64, xRows = mma ? 16 : M;
  const size_t xqBytes = (size_t(xRows) * Kpad * (wide ? 2 : 1) + 255) / 256 * 256, dxBytes = (size_t(M) * q.nc * 4 + 255) / 256 * 256;
  uint8_t* buf = static_cast<uint8_t*>(scratch(2, xqBytes + 3 * dxBytes));
  float* dx = reinterpret_cast<float*>(buf + xqBytes);
  int* hs = reinterpret_cast<int*>(buf + xqBytes + dxBytes);
  launch(qg_prep_kernel, dim3(unsigned((q.nc + 7) / 8), unsigned(xRows)), 256, 0, buf, dx, hs, x, q.perm, q.K, q.nc, wide ? 8191 : 127, wide,
         int(M), mma);
  QgOut o{};
  for (int i = 0; i < 3; i++) {
    const int j = i < q.nOut ? i : q.nOut - 1;
    o.codes[i] = q.codes[j];
    o.scales[i] = q.scales[j];
    o.zeros[i] = q.zeros[j];
  }
  N = o.out.set(q.nOut, q.y, q.bias, q.n, q.silu);
  if (mma) {
    const int gShift = (q.G & (q.G - 1)) == 0 ? __builtin_ctz(unsigned(q.G)) : -1;
    const int64_t cols = q.silu ? 2 * N : N;
    static int smemSet = 0;
    const int smem = int(mma_smem(q.nc, q.nG));
    if (smem > smemSet) {
      cuda_check(cudaFuncSetAttribute(qg_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "qg_mma_kernel shared memory");
      smemSet = smem;
    }
    launch(qg_mma_kernel, dim3(unsigned((cols + kMmaCols - 1) / kMmaCols)), kMmaWarps * kWarp, size_t(smem), o, reinterpret_cast<const uint4*>(buf), dx, hs,
           cols, q.nc, q.G, gShift, q.nG, int(M));
    return;
  }
  switch (q.bits) {
    case 2: qg_gemv_launch<2>(o, buf, dx, hs, M, N, q.nc, q.G, q.nG); break;
    case 3: qg_gemv_launch<3>(o, buf, dx, hs, M, N, q.nc, q.G, q.nG); break;
    case 4: qg_gemv_launch<4>(o, buf, dx, hs, M, N, q.nc, q.G, q.nG); break;
    default: qg_gemv_launch<8>(o, buf, dx, hs, M, N, q.nc, q.G, q.nG); break;
  }
}

}  // namespace lowbit_cuda
