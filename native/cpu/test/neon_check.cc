// NEON vs scalar, kernel by kernel, without Node: built for AArch64 and run under qemu by run_neon_check.sh.
// Links the kernel files plus the level-agnostic drivers (dispatch, gemm, ops, pool), so it checks every entry of
// the Kernels table directly and then the matmul / softmax / attention / silu / embedding drivers at both levels.
// Inputs are fresh random numbers each run (seed printed; NEON_CHECK_SEED=<n> repeats a run). Exit 1 on any mismatch.
//
// Error measures: elementwise ops use |got − want| / |want| (|want| floored at FLT_MIN, so subnormal results are
// judged in absolute terms); reductions (dot, GEMV, GEMM, dots, wsum, axpy, exp_sum's sum) use |got − want| / Σ|terms|,
// the scale of the standard rounding-error bound, since both levels legitimately sum in different orders.
#include <cfloat>
#include <cstdarg>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../dispatch.h"
#include "../kernels.h"
#include "../ops.h"
#include "../pool.h"

using namespace lowbit;

namespace {

constexpr double kTol = 1e-5;
std::mt19937_64 rng;
int failures = 0, checks = 0;

float uni(float lo = -1.f, float hi = 1.f) { return std::uniform_real_distribution<float>(lo, hi)(rng); }
std::vector<float> rnd(size_t n, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  for (auto& x : v) x = uni(lo, hi);
  return v;
}
uint32_t bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
uint16_t to_bf16(float f) { return uint16_t((bits(f) + 0x7fff + ((bits(f) >> 16) & 1)) >> 16); }
uint16_t rnd_f16() {  // finite, |x| in [2^-6, 2^3): sign, exponent 9..17, random mantissa
  uint16_t e = uint16_t(9 + rng() % 9), m = uint16_t(rng() & 0x3ff), s = uint16_t(rng() & 1);
  return uint16_t(s << 15 | e << 10 | m);
}

// Weights of type wtype, N×K, returned as raw bytes.
std::vector<uint8_t> rnd_w(int wtype, int64_t n) {
  std::vector<uint8_t> w(size_t(n * wbytes(wtype)));
  for (int64_t i = 0; i < n; i++) {
    if (wtype == W_F32) { float f = uni(); std::memcpy(&w[size_t(i * 4)], &f, 4); }
    else { uint16_t h = wtype == W_BF16 ? to_bf16(uni()) : rnd_f16(); std::memcpy(&w[size_t(i * 2)], &h, 2); }
  }
  return w;
}
const char* wname(int t) { return t == W_F32 ? "f32" : t == W_BF16 ? "bf16" : "f16"; }

struct Stat {
  std::string name;
  double maxErr = 0;
  int64_t n = 0, bad = 0;
  std::string firstBad;
};
std::vector<Stat> stats;
Stat& stat(const std::string& name) {
  for (auto& s : stats)
    if (s.name == name) return s;
  stats.push_back(Stat{name, 0, 0, 0, ""});
  return stats.back();
}

// got vs want, error normalised by `scale` (|want| for elementwise, Σ|terms| for reductions). Non-finite values must
// match in class (NaN ↔ NaN, ±inf exactly); zeros must match in sign when want is an exact zero from an elementwise op.
void cmp(const std::string& kernel, const std::string& what, float got, float want, double scale, double tol = kTol) {
  Stat& s = stat(kernel);
  s.n++;
  checks++;
  bool ok;
  double err = 0;
  if (std::isnan(want) || std::isnan(got)) ok = std::isnan(want) && std::isnan(got);
  else if (std::isinf(want) || std::isinf(got)) ok = got == want;
  else {
    err = std::fabs(double(got) - double(want)) / std::max(scale, double(FLT_MIN));
    ok = err <= tol;
    if (err > s.maxErr) s.maxErr = err;
  }
  if (!ok) {
    if (!s.bad++) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: neon %.9g (0x%08x) vs scalar %.9g (0x%08x), err %.3g", what.c_str(), got,
                    bits(got), want, bits(want), err);
      s.firstBad = buf;
    }
    failures++;
  }
}
void cmp_exact(const std::string& kernel, const std::string& what, float got, float want) {
  Stat& s = stat(kernel);
  s.n++;
  checks++;
  if (bits(got) != bits(want)) {
    if (!s.bad++) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: neon 0x%08x vs want 0x%08x", what.c_str(), bits(got), bits(want));
      s.firstBad = buf;
    }
    failures++;
  }
}
void cmp_int(const std::string& kernel, const std::string& what, int64_t got, int64_t want) {
  Stat& s = stat(kernel);
  s.n++;
  checks++;
  if (got != want) {
    if (!s.bad++) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: neon %" PRId64 " vs want %" PRId64, what.c_str(), got, want);
      s.firstBad = buf;
    }
    failures++;
  }
}
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

const Kernels *S, *N;  // scalar oracle, NEON under test

// ---------------------------------------------------------------- kernels
void check_widen() {
  // Every bf16 and f16 bit pattern: bf16 bit-exact; f16 bit-exact except NaNs, which FCVTL quiets (bit 22 set,
  // payload kept) where the scalar conversion keeps a signalling NaN's bits as they are.
  std::vector<uint16_t> all(65536 + 8);
  for (int i = 0; i < 65536 + 8; i++) all[size_t(i)] = uint16_t(i);
  for (int t : {W_BF16, W_F16}) {
    for (int64_t off : {0, 1, 3}) {  // unaligned starts and lengths that leave 8/4/1-element tails
      const int64_t n = 65536 - off + (off ? 5 : 0);
      std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
      S->widen(a.data(), all.data() + off, t, n);
      N->widen(b.data(), all.data() + off, t, n);
      for (int64_t i = 0; i < n; i++) {
        const std::string what = fmt("%s 0x%04x", wname(t), unsigned(all[size_t(i + off)]));
        if (t == W_F16 && std::isnan(a[size_t(i)])) cmp_exact("widen", what, b[size_t(i)], [&] {
            uint32_t u = bits(a[size_t(i)]) | 0x00400000u; float f; std::memcpy(&f, &u, 4); return f; }());
        else cmp_exact("widen", what, b[size_t(i)], a[size_t(i)]);
      }
    }
  }
  for (int64_t n : {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 172}) {
    auto x = rnd(size_t(n) + 1);
    std::vector<float> a(size_t(n) + 1, 7.f), b(size_t(n) + 1, 7.f);
    S->widen(a.data(), x.data(), W_F32, n);
    N->widen(b.data(), x.data(), W_F32, n);
    for (int64_t i = 0; i <= n; i++) cmp_exact("widen", fmt("f32 n=%" PRId64 " i=%" PRId64, n, i), b[size_t(i)], a[size_t(i)]);
  }
}

const std::vector<int64_t> kLens = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 172, 173, 1000, 4099};

void check_vec() {
  for (int64_t n : kLens) {
    auto a = rnd(size_t(n)), b = rnd(size_t(n));
    double mag = 0;
    for (int64_t i = 0; i < n; i++) mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    cmp("dot", fmt("n=%" PRId64, n), N->dot(a.data(), b.data(), n), S->dot(a.data(), b.data(), n), mag);

    const float al = uni();
    auto y1 = rnd(size_t(n)), y2 = y1;
    S->axpy(y1.data(), al, a.data(), n);
    N->axpy(y2.data(), al, a.data(), n);
    for (int64_t i = 0; i < n; i++)
      cmp("axpy", fmt("n=%" PRId64 " i=%" PRId64, n, i), y2[size_t(i)], y1[size_t(i)],
          std::fabs(double(y1[size_t(i)])) + std::fabs(double(al) * a[size_t(i)]));

    std::vector<float> r1(size_t(n) + 1, 5.f), r2(size_t(n) + 1, 5.f);  // +1: the element past the end is untouched
    S->add(r1.data(), a.data(), b.data(), n);
    N->add(r2.data(), a.data(), b.data(), n);
    for (int64_t i = 0; i <= n; i++) cmp_exact("add", fmt("n=%" PRId64 " i=%" PRId64, n, i), r2[size_t(i)], r1[size_t(i)]);
    S->scale(r1.data(), a.data(), al, n);
    N->scale(r2.data(), a.data(), al, n);
    for (int64_t i = 0; i <= n; i++) cmp_exact("scale", fmt("n=%" PRId64 " i=%" PRId64, n, i), r2[size_t(i)], r1[size_t(i)]);

    // max: exact; NaNs (skipped by the scalar loop), -inf and an all-NaN input.
    auto m = rnd(size_t(n), -50.f, 50.f);
    for (int64_t i = 0; i < n; i++)
      if (rng() % 7 == 0) m[size_t(i)] = rng() % 2 ? NAN : -INFINITY;
    cmp_exact("max", fmt("n=%" PRId64, n), N->max(m.data(), n), S->max(m.data(), n));
    std::vector<float> nan(size_t(n), NAN);
    cmp_exact("max", fmt("all-NaN n=%" PRId64, n), N->max(nan.data(), n), S->max(nan.data(), n));

    // exp_sum: softmax-like (x − max ≤ 0) and a spread that reaches both overflow and subnormal results.
    for (int pass = 0; pass < 2; pass++) {
      auto x = pass ? rnd(size_t(n), -110.f, 95.f) : rnd(size_t(n), -30.f, 10.f);
      const float sub = pass ? 0.f : S->max(x.data(), n);
      std::vector<float> e1(size_t(n) + 1, 3.f), e2(size_t(n) + 1, 3.f);
      const float s1 = S->exp_sum(e1.data(), x.data(), sub, n), s2 = N->exp_sum(e2.data(), x.data(), sub, n);
      double mag = 0;
      for (int64_t i = 0; i < n; i++) {
        cmp("exp_sum", fmt("y pass %d n=%" PRId64 " x=%g", pass, n, double(x[size_t(i)] - sub)), e2[size_t(i)],
            e1[size_t(i)], std::fabs(double(e1[size_t(i)])));
        mag += std::fabs(double(e1[size_t(i)]));
      }
      cmp_exact("exp_sum", fmt("pass %d n=%" PRId64 " past end", pass, n), e2[size_t(n)], e1[size_t(n)]);
      cmp("exp_sum", fmt("sum pass %d n=%" PRId64, pass, n), s2, s1, mag);
    }

    // silu_mul over a wide range.
    auto g = rnd(size_t(n), -30.f, 30.f), u = rnd(size_t(n), -3.f, 3.f);
    std::vector<float> o1(size_t(n) + 1, 1.f), o2(size_t(n) + 1, 1.f);
    S->silu_mul(o1.data(), g.data(), u.data(), n);
    N->silu_mul(o2.data(), g.data(), u.data(), n);
    for (int64_t i = 0; i <= n; i++)
      cmp("silu_mul", fmt("n=%" PRId64 " g=%g", n, double(i < n ? g[size_t(i)] : 0.f)), o2[size_t(i)], o1[size_t(i)],
          std::fabs(double(o1[size_t(i)])));
  }
  // Special values through exp_sum and silu_mul, in every lane position (n = 17: 4 full vectors + 1 tail element).
  const float sp[] = {NAN, INFINITY, -INFINITY, 0.f, -0.f, 88.3f, 88.5f, 88.72f, 88.73f, 89.f, 100.f, -87.3f, -87.4f,
                      -95.f, -103.f, -103.9f, -103.98f, -104.f, -104.5f, -200.f, 1e-30f, -1e-30f, 20.f, -20.f};
  for (size_t sh = 0; sh < 17; sh++) {
    std::vector<float> x(17);
    for (size_t i = 0; i < 17; i++) x[i] = sp[(i + sh) % (sizeof sp / 4)];
    std::vector<float> e1(17), e2(17), g1(17), g2(17), ones(17, 1.f);
    const float s1 = S->exp_sum(e1.data(), x.data(), 0.f, 17), s2 = N->exp_sum(e2.data(), x.data(), 0.f, 17);
    cmp("exp_sum", "specials sum", s2, s1, std::fabs(double(s1)));
    S->silu_mul(g1.data(), x.data(), ones.data(), 17);
    N->silu_mul(g2.data(), x.data(), ones.data(), 17);
    for (size_t i = 0; i < 17; i++) {
      cmp("exp_sum", fmt("special x=%g", double(x[i])), e2[i], e1[i], std::fabs(double(e1[i])));
      if (e1[i] == 0.f) cmp_exact("exp_sum", fmt("special zero x=%g", double(x[i])), e2[i], e1[i]);
      cmp("silu_mul", fmt("special g=%g", double(x[i])), g2[i], g1[i], std::fabs(double(g1[i])));
      if (g1[i] == 0.f) cmp_exact("silu_mul", fmt("special zero g=%g", double(x[i])), g2[i], g1[i]);
    }
  }
}

void check_gemv() {
  if (N->xperm_block != 0) { std::printf("FAIL: neon xperm_block %d, harness expects 0\n", N->xperm_block); failures++; }
  for (int t : {W_F32, W_BF16, W_F16})
    for (int64_t K : {1, 3, 4, 7, 8, 9, 15, 16, 17, 172, 173, 300, 1027})
      for (int M = 1; M <= 4; M++)
        for (int useBias = 0; useBias < 2; useBias++) {
          const int64_t Nn = 33, ldx = K + 3, ldy = Nn + 2;
          auto w = rnd_w(t, Nn * K);
          auto x = rnd(size_t(M * ldx));
          auto bias = rnd(size_t(Nn));
          const float* bp = useBias ? bias.data() : nullptr;
          for (auto rng2 : {std::pair<int64_t, int64_t>{0, Nn}, {3, 30}, {5, 6}, {32, 33}}) {
            std::vector<float> y1(size_t(M * ldy), -9.f), y2 = y1;
            S->gemv(y1.data(), ldy, x.data(), ldx, M, w.data(), t, rng2.first, rng2.second, K, bp);
            N->gemv(y2.data(), ldy, x.data(), ldx, M, w.data(), t, rng2.first, rng2.second, K, bp);
            for (int m = 0; m < M; m++)
              for (int64_t n = 0; n < ldy; n++) {
                const size_t i = size_t(m * ldy + n);
                double mag = bp && n < Nn ? std::fabs(double(bp[n])) : 0;
                for (int64_t k = 0; k < K && n < Nn; k++) mag += std::fabs(double(x[size_t(m * ldx + k)]) * widen1(w.data(), t, n * K + k));
                cmp(std::string("gemv ") + wname(t), fmt("K=%" PRId64 " M=%d n=%" PRId64 " [%" PRId64 ",%" PRId64 ") bias=%d", K, M, n, rng2.first, rng2.second, useBias),
                    y2[i], y1[i], mag > 0 ? mag : 1.0);
              }
          }
        }
}

void check_pack_micro() {
  const int MR = N->MR, NR = N->NR, KC = N->KC;
  std::printf("neon GEMM shape: MR=%d NR=%d KC=%d\n", MR, NR, KC);
  // pack_b against its contract, bit-exact.
  for (int t : {W_F32, W_BF16, W_F16})
    for (int64_t nr = 1; nr <= NR; nr++)
      for (auto kk : {std::pair<int64_t, int64_t>{0, 1}, {0, 7}, {0, 8}, {3, 9}, {0, 172}, {5, 172}, {44, 256}, {256, 44}}) {
        const int64_t K = 300, n0 = 2, k0 = kk.first, kc = kk.second;
        auto w = rnd_w(t, (n0 + NR) * K);
        std::vector<float> b(size_t(kc * NR + 1), 123.f);
        N->pack_b(b.data(), w.data(), t, K, n0, nr, k0, kc);
        for (int64_t k = 0; k < kc; k++)
          for (int64_t j = 0; j < NR; j++)
            cmp_exact(std::string("pack_b ") + wname(t), fmt("nr=%" PRId64 " k0=%" PRId64 " kc=%" PRId64 " k=%" PRId64 " j=%" PRId64, nr, k0, kc, k, j),
                      b[size_t(k * NR + j)], j < nr ? widen1(w.data(), t, (n0 + j) * K + k0 + k) : 0.f);
        cmp_exact(std::string("pack_b ") + wname(t), "past end untouched", b[size_t(kc * NR)], 123.f);
      }
  // micro against the scalar micro-kernel's loop (same definition, the scalar table's own MR×NR differs).
  for (int64_t kc : {1, 2, 3, 7, 8, 172, 256})
    for (int mode = 0; mode < 3; mode++) {  // 0: zero init, 1: bias init, 2: accumulate
      const int64_t ldc = NR + 5;
      auto a = rnd(size_t(kc * MR)), b = rnd(size_t(kc * NR)), bias = rnd(size_t(NR));
      auto c0 = rnd(size_t(MR * ldc)), c = c0;
      N->micro(kc, a.data(), b.data(), c.data(), ldc, mode == 1 ? bias.data() : nullptr, mode == 2);
      for (int i = 0; i < MR; i++)
        for (int64_t j = 0; j < ldc; j++) {
          const size_t ci = size_t(i * ldc + j);
          if (j >= NR) { cmp_exact("micro", "outside tile untouched", c[ci], c0[ci]); continue; }
          float acc = mode == 2 ? c0[ci] : mode == 1 ? bias[size_t(j)] : 0.f;
          double mag = std::fabs(double(acc));
          for (int64_t k = 0; k < kc; k++) {
            acc += a[size_t(k * MR + i)] * b[size_t(k * NR + j)];
            mag += std::fabs(double(a[size_t(k * MR + i)]) * b[size_t(k * NR + j)]);
          }
          cmp("micro", fmt("kc=%" PRId64 " mode=%d i=%d j=%" PRId64, kc, mode, i, j), c[ci], acc, mag);
        }
    }
}

void check_attention_kernels() {
  for (int64_t hd : {1, 3, 4, 8, 12, 16, 32, 64, 80, 128, 172})
    for (int64_t n : {1, 2, 7, 33}) {
      const int64_t ld = hd * 3 + 1;  // rows spaced like a KV cache with 3 heads, plus an odd pad
      auto q = rnd(size_t(hd)), k = rnd(size_t(n * ld));
      const float sc = 1.f / std::sqrt(float(hd));
      std::vector<float> d1(size_t(n) + 1, 2.f), d2 = d1;
      S->dots(d1.data(), q.data(), k.data(), ld, n, hd, sc);
      N->dots(d2.data(), q.data(), k.data(), ld, n, hd, sc);
      for (int64_t s = 0; s <= n; s++) {
        double mag = 0;
        for (int64_t i = 0; i < hd && s < n; i++) mag += std::fabs(double(q[size_t(i)]) * k[size_t(s * ld + i)]) * sc;
        cmp("dots", fmt("hd=%" PRId64 " n=%" PRId64 " s=%" PRId64, hd, n, s), d2[size_t(s)], d1[size_t(s)], mag > 0 ? mag : 1.0);
      }
      // wsum: p has zeros whose v rows hold NaN/inf, which must be skipped, not multiplied by 0.
      auto p = rnd(size_t(n), 0.f, 1.f), v = rnd(size_t(n * ld));
      for (int64_t s = 0; s < n; s++)
        if (s % 3 == 1) {
          p[size_t(s)] = 0.f;
          for (int64_t i = 0; i < hd; i++) v[size_t(s * ld + i)] = i % 2 ? NAN : INFINITY;
        }
      auto o1 = rnd(size_t(hd) + 1), o2 = o1;
      S->wsum(o1.data(), p.data(), v.data(), ld, n, hd);
      N->wsum(o2.data(), p.data(), v.data(), ld, n, hd);
      for (int64_t i = 0; i <= hd; i++) {
        double mag = std::fabs(double(o1[size_t(i)]));
        for (int64_t s = 0; s < n && i < hd; s++)
          if (p[size_t(s)] != 0.f) mag += std::fabs(double(p[size_t(s)]) * v[size_t(s * ld + i)]);
        cmp("wsum", fmt("hd=%" PRId64 " n=%" PRId64 " i=%" PRId64, hd, n, i), o2[size_t(i)], o1[size_t(i)], mag);
      }
    }
}

// NF4/FP4 fused dequantize-GEMV: random packed codes and scales (plain and double-quantized), f32/bf16/f16 rounding,
// blocks that straddle rows (K odd: rows start at a low nibble), block sizes 32..4096, output ranges inside N.
struct Q4Case {
  std::vector<uint8_t> packed, qabsmax;
  std::vector<float> absmax, nested, map;
  Q4Weight w{};
};
Q4Case make_q4(int64_t Nn, int64_t K, int64_t bs, int qt, bool dq, int dtype) {
  Q4Case c;
  const int64_t numel = Nn * K, nBlocks = (numel + bs - 1) / bs;
  c.packed.resize(size_t((numel + 1) / 2));
  for (auto& b : c.packed) b = uint8_t(rng());
  c.w.packed = c.packed.data();
  c.w.N = Nn;
  c.w.K = K;
  c.w.blocksize = bs;
  c.w.code = q4_code_values(qt);
  c.w.code16 = q4_code_i16(qt);
  c.w.dtype = dtype;
  if (dq) {
    c.qabsmax.resize(size_t(nBlocks));
    for (auto& q : c.qabsmax) q = uint8_t(rng());
    c.nested = rnd(size_t((nBlocks + 255) / 256), 0.01f, 0.1f);
    c.map = rnd(256);
    c.w.qabsmax = c.qabsmax.data();
    c.w.nested_absmax = c.nested.data();
    c.w.nested_map = c.map.data();
    c.w.nested_blocksize = 256;
    c.w.offset = uni(0.05f, 0.2f);
  } else {
    c.absmax = rnd(size_t(nBlocks), 0.f, 0.2f);
    c.w.absmax = c.absmax.data();
  }
  return c;
}
// Σ|x·w| over row n: the scale of the rounding-error bound.
double q4_mag(const Q4Weight& w, const float* x, int64_t n) {
  double mag = 0;
  float lut[16];
  for (int64_t k = 0; k < w.K; k++) {
    const int64_t i = n * w.K + k;
    q4_block_lut(w, i / w.blocksize, lut);
    const uint8_t b = w.packed[i >> 1];
    mag += std::fabs(double(x[k]) * lut[i & 1 ? b & 15 : b >> 4]);
  }
  return mag;
}

void check_q4() {
  const int64_t shapes[][3] = {{172, 65, 64}, {33, 4160, 64}, {33, 4160, 4096}, {9, 33, 32}, {40, 256, 128}, {5, 1027, 128}, {3, 31, 4096}};
  for (const auto& sh : shapes)
    for (int qt : {Q4_NF4, Q4_FP4})
      for (int dq = 0; dq < 2; dq++)
        for (int dtype : {W_F32, W_BF16, W_F16}) {
          const int64_t Nn = sh[0], K = sh[1], bs = sh[2];
          Q4Case c = make_q4(Nn, K, bs, qt, dq, dtype);
          auto x = rnd(size_t(K)), bias = rnd(size_t(Nn));
          for (int useBias = 0; useBias < 2; useBias++)
            for (auto r : {std::pair<int64_t, int64_t>{0, Nn}, {1, Nn - 1}, {Nn - 1, Nn}}) {
              if (r.first >= r.second) continue;
              std::vector<float> y1(size_t(Nn) + 1, -9.f), y2 = y1;
              const float* bp = useBias ? bias.data() : nullptr;
              S->gemv_q4(y1.data(), x.data(), c.w, r.first, r.second, bp);
              N->gemv_q4(y2.data(), x.data(), c.w, r.first, r.second, bp);
              for (int64_t n = 0; n <= Nn; n++) {
                const std::string what = fmt("%s dq=%d %s N=%" PRId64 " K=%" PRId64 " bs=%" PRId64 " [%" PRId64 ",%" PRId64 ") bias=%d n=%" PRId64,
                                             qt ? "fp4" : "nf4", dq, wname(dtype), Nn, K, bs, r.first, r.second, useBias, n);
                if (n < r.first || n >= r.second) { cmp_exact("gemv_q4", what + " untouched", y2[size_t(n)], y1[size_t(n)]); continue; }
                const double mag = q4_mag(c.w, x.data(), n) + (bp ? std::fabs(double(bp[n])) : 0);
                cmp("gemv_q4", what, y2[size_t(n)], y1[size_t(n)], mag > 0 ? mag : 1.0);
              }
            }
        }
  // gemv_q4i (the int16-activation decode): x quantized by q4i_prep in each level's order, 1..4 rows at once; both
  // levels sum the same exact int32 per chunk, so only the float32 sums across chunks differ. Blocks of 4096 over
  // K = 4160 span rows. A non-finite scale sends its row to the exact walk at both levels.
  {
    const int64_t dshapes[][3] = {{33, 4160, 64}, {40, 256, 128}, {33, 4160, 4096}, {7, 1024, 64}};
    for (const auto& sh : dshapes)
      for (int qt : {Q4_NF4, Q4_FP4})
        for (int dq = 0; dq < 2; dq++)
          for (int M = 1; M <= 4; M++) {
            const int64_t Nn = sh[0], K = sh[1], bs = sh[2];
            Q4Case c = make_q4(Nn, K, bs, qt, dq, W_BF16);
            if (!dq && Nn == 7) c.absmax[size_t(3 * K / bs)] = INFINITY;  // row 3's first block
            auto x = rnd(size_t(M * K)), bias = rnd(size_t(Nn));
            std::vector<int16_t> q1(size_t(M * K)), q2(size_t(M * K));
            std::vector<float> d1(size_t(M * K / 64)), d2(size_t(M * K / 64));
            for (int m = 0; m < M; m++) {
              cmp_int("q4i_prep", "scalar order, finite x", q4i_prep(q1.data() + m * K, d1.data() + m * (K / 64), x.data() + m * K, K, S->q4i_order), 1);
              cmp_int("q4i_prep", "neon order, finite x", q4i_prep(q2.data() + m * K, d2.data() + m * (K / 64), x.data() + m * K, K, N->q4i_order), 1);
            }
            for (auto r : {std::pair<int64_t, int64_t>{0, Nn}, {1, Nn - 1}}) {
              if (r.first >= r.second) continue;
              std::vector<float> y1(size_t(M * Nn), -9.f), y2 = y1;
              S->gemv_q4i(y1.data(), Nn, x.data(), K, q1.data(), d1.data(), M, c.w, r.first, r.second, bias.data());
              N->gemv_q4i(y2.data(), Nn, x.data(), K, q2.data(), d2.data(), M, c.w, r.first, r.second, bias.data());
              for (int m = 0; m < M; m++)
                for (int64_t n = 0; n < Nn; n++) {
                  const size_t i = size_t(m * Nn + n);
                  const std::string what = fmt("%s dq=%d N=%" PRId64 " K=%" PRId64 " bs=%" PRId64 " M=%d [%" PRId64 ",%" PRId64 ") m=%d n=%" PRId64,
                                               qt ? "fp4" : "nf4", dq, Nn, K, bs, M, r.first, r.second, m, n);
                  if (n < r.first || n >= r.second) { cmp_exact("gemv_q4i", what + " untouched", y2[i], y1[i]); continue; }
                  cmp("gemv_q4i", what, y2[i], y1[i], q4_mag(c.w, x.data() + m * K, n) + std::fabs(double(bias[size_t(n)])));
                }
            }
          }
  }
  // dequant_q4 (the prefill GEMM's tiles): every element bit for bit q4_block_lut's value at both levels, over ranges
  // that start at a low nibble, inside a block, on a block edge, and cross block and row edges.
  for (const auto& sh : shapes)
    for (int qt : {Q4_NF4, Q4_FP4})
      for (int dq = 0; dq < 2; dq++)
        for (int dtype : {W_F32, W_BF16, W_F16}) {
          const int64_t Nn = sh[0], K = sh[1], bs = sh[2], numel = Nn * K;
          Q4Case c = make_q4(Nn, K, bs, qt, dq, dtype);
          for (int64_t i0 : {int64_t(0), int64_t(1), int64_t(31), bs, bs + 3, numel / 2 + 1})
            for (int64_t n : {int64_t(1), int64_t(2), int64_t(33), int64_t(64), int64_t(257), numel}) {
              if (i0 + n > numel || (n == numel && numel > 20000)) continue;  // whole weights: the small shapes
              std::vector<float> d1(size_t(n) + 1, -9.f), d2 = d1;
              S->dequant_q4(d1.data(), c.w, i0, n);
              N->dequant_q4(d2.data(), c.w, i0, n);
              float lut[16];
              for (int64_t i = 0; i <= n; i++) {
                const std::string what = fmt("%s dq=%d %s N=%" PRId64 " K=%" PRId64 " bs=%" PRId64 " i0=%" PRId64 " n=%" PRId64 " i=%" PRId64,
                                             qt ? "fp4" : "nf4", dq, wname(dtype), Nn, K, bs, i0, n, i);
                float want = -9.f;
                if (i < n) {
                  const int64_t e = i0 + i;
                  q4_block_lut(c.w, e / bs, lut);
                  const uint8_t b = c.packed[size_t(e >> 1)];
                  want = lut[e & 1 ? b & 15 : b >> 4];
                }
                cmp_exact("dequant_q4", what + " scalar", d1[size_t(i)], want);
                cmp_exact("dequant_q4", what + " neon", d2[size_t(i)], want);
              }
            }
        }
  // Bit-exact LUT values: a straddling row in which only one code is non-zero picks out lut[c] · 1 at both levels.
  for (int qt : {Q4_NF4, Q4_FP4})
    for (int64_t pos : {0, 1, 2, 31, 32, 62, 63, 64}) {  // row 1 = elements 65..129: blocks 1 and 2
      Q4Case c = make_q4(2, 65, 64, qt, true, W_BF16);
      for (int code = 0; code < 16; code++) {
        std::vector<float> x(65, 0.f);
        x[size_t(pos)] = 1.f;
        const int64_t i = 65 + pos;  // row 1
        c.packed[size_t(i >> 1)] = uint8_t(i & 1 ? (c.packed[size_t(i >> 1)] & 0xf0) | code : (c.packed[size_t(i >> 1)] & 0x0f) | code << 4);
        float y1[2], y2[2], lut[16];
        S->gemv_q4(y1, x.data(), c.w, 1, 2, nullptr);
        N->gemv_q4(y2, x.data(), c.w, 1, 2, nullptr);
        q4_block_lut(c.w, i / 64, lut);
        cmp_exact("gemv_q4 lut", fmt("%s pos=%" PRId64 " code=%d scalar", qt ? "fp4" : "nf4", pos, code), y1[1], lut[code] + 0.f);
        cmp_exact("gemv_q4 lut", fmt("%s pos=%" PRId64 " code=%d neon", qt ? "fp4" : "nf4", pos, code), y2[1], lut[code] + 0.f);
      }
    }
}

// LLM.int8 integer products: exact integer arithmetic, so NEON must give the exact sums. Weight codes over the whole
// int8 range (-128 included), activation codes in [-127, 127] as the driver makes them; strided rows, every tail
// length mod 16, M = 1..4, output ranges inside N; then the extremes (-128 · -127 in every lane) for overflow.
void check_dot_i8() {
  for (int64_t K : {1, 7, 15, 16, 17, 31, 33, 65, 256, 4160})
    for (int M = 1; M <= 4; M++) {
      const int64_t Nn = 13, lda = K + 5, ldb = K + 3, ldacc = Nn + 2;
      std::vector<int8_t> a(size_t(M * lda)), b(size_t(Nn * ldb));
      for (auto& v : a) v = int8_t(int(rng() % 255) - 127);
      for (auto& v : b) v = int8_t(rng() & 0xff);
      if (K == 4160 && M == 4) {  // extremes: |Σ| = 4160 · 127 · 128 in rows 0-1, products of -128 and ±127 in every lane
        std::fill(b.begin(), b.begin() + 2 * ldb, int8_t(-128));
        std::fill(a.begin(), a.begin() + lda, int8_t(-127));
        std::fill(a.begin() + lda, a.begin() + 2 * lda, int8_t(127));
      }
      for (auto r : {std::pair<int64_t, int64_t>{0, Nn}, {1, Nn - 1}, {Nn - 1, Nn}, {2, 7}}) {
        std::vector<int32_t> acc(size_t(4 * ldacc), -7);
        N->dot_i8(acc.data(), ldacc, a.data(), lda, M, b.data(), ldb, r.first, r.second, K);
        for (int m = 0; m < 4; m++)
          for (int64_t j = 0; j < ldacc; j++) {
            const int64_t n = r.first + j;
            const std::string what = fmt("K=%" PRId64 " M=%d [%" PRId64 ",%" PRId64 ") m=%d j=%" PRId64, K, M, r.first, r.second, m, j);
            if (m >= M || n >= r.second) { cmp_int("dot_i8", what + " untouched", acc[size_t(m * ldacc + j)], -7); continue; }
            int64_t want = 0;
            for (int64_t k = 0; k < K; k++) want += int64_t(a[size_t(m * lda + k)]) * b[size_t(n * ldb + k)];
            cmp_int("dot_i8", what, acc[size_t(m * ldacc + j)], want);
          }
      }
    }
}

// LLM.int8 activation passes, NEON vs scalar exactly: the float16 round trip (ties, subnormals, overflow to ∞, NaN),
// outlier flags at thresholds 6, 0.5, ∞ and none (NaN), the absmax with its NaN rule, and the half-to-even codes.
void check_i8_act() {
  const float specials[] = {NAN, INFINITY, -INFINITY, 65504.f, 65519.f, 65520.f, -70000.f, 6.f, -6.f, 5.99f, 6.001f,
                            1e-6f, 3e-8f, 2.98023224e-8f, 1e-9f, -0.f, 0.f, 1.00048828125f, 1.000732421875f};
  for (int64_t n : {1, 3, 4, 5, 15, 16, 17, 33, 100, 1000})
    for (float tf : {6.f, 0.5f, INFINITY, NAN})
      for (int withSpecials = 0; withSpecials < 3; withSpecials++) {  // 0: none, 1: some, 2: some but no NaN
        auto x = rnd(size_t(n), -8.f, 8.f);
        if (withSpecials)
          for (int64_t i = 0; i < n; i += 3) {
            const float v = specials[rng() % (sizeof specials / sizeof *specials)];
            x[size_t(i)] = withSpecials == 2 && std::isnan(v) ? 1.f : v;
          }
        std::vector<float> h1(static_cast<size_t>(n)), h2(static_cast<size_t>(n));
        std::vector<uint8_t> f1(size_t(n), 0), f2(size_t(n), 0);
        const float m1 = S->i8_absmax_f16(h1.data(), f1.data(), x.data(), n, tf);
        const float m2 = N->i8_absmax_f16(h2.data(), f2.data(), x.data(), n, tf);
        const std::string what = fmt("n=%" PRId64 " tf=%g specials=%d", n, tf, withSpecials);
        if (std::isnan(m1) || std::isnan(m2)) cmp_int("i8_absmax_f16", what + " NaN absmax", std::isnan(m2), std::isnan(m1));
        else cmp_exact("i8_absmax_f16", what + " absmax", m2, m1);
        for (int64_t i = 0; i < n; i++) {
          if (std::isnan(h1[size_t(i)])) cmp_int("i8_absmax_f16", what + fmt(" h[%" PRId64 "] NaN", i), std::isnan(h2[size_t(i)]), 1);
          else cmp_exact("i8_absmax_f16", what + fmt(" h[%" PRId64 "]", i), h2[size_t(i)], h1[size_t(i)]);
          cmp_int("i8_absmax_f16", what + fmt(" flag[%" PRId64 "]", i), f2[size_t(i)], f1[size_t(i)]);
        }
        // Codes of these h at a scale from their absmax (or ∞ / 0 / NaN), with the flags plus a few random ones.
        for (float sc : {std::isfinite(m1) && m1 > 0 ? 127.f / m1 : 1.f, 0.f, INFINITY, NAN, 15.875f}) {
          for (int64_t i = 0; i < n; i++) f1[size_t(i)] |= uint8_t(rng() % 7 == 0);
          std::vector<int8_t> q1(size_t(n) + 1, 99), q2(size_t(n) + 1, 99);
          std::vector<float> hc = h1;
          // The driver's invariant: every product is NaN (code 0) or within [-127.5, 127.5] (s = ∞ only when all kept h are 0).
          for (auto& v : hc) {
            const float p = std::fabs(v) * sc;
            if (!std::isnan(p) && !(p < 127.4f)) v = 0.f;
          }
          S->i8_quant(q1.data(), hc.data(), f1.data(), sc, n);
          N->i8_quant(q2.data(), hc.data(), f1.data(), sc, n);
          for (int64_t i = 0; i <= n; i++) cmp_int("i8_quant", what + fmt(" s=%g q[%" PRId64 "]", sc, i), q2[size_t(i)], q1[size_t(i)]);
        }
      }
}

// GPTQ (gemv_qg): random chunk bytes (every byte pattern decodes to valid codes), zeros and scales; bits 2/3/4/8,
// groups of 32 (half-chunk scales), 64 and one group, an input permutation or none, K a multiple of 64 or padded,
// 1..4 x rows. Both levels sum the same exact int32 per chunk; only the float32 sums differ.
struct QgCase {
  std::vector<uint8_t> codes, zeros;
  std::vector<uint16_t> scales;  // float16 bits
  std::vector<float> sz;
  std::vector<int32_t> perm;
  QgWeight w{};
  int64_t K;
};
QgCase make_qg(int64_t Nn, int64_t K, int bits, int64_t G, bool permute) {
  QgCase c;
  c.K = K;
  const int64_t Kpad = (K + 63) / 64 * 64, g = G ? G : Kpad, nG = G ? (K + G - 1) / G : 1;
  c.codes.resize(size_t(Nn * Kpad / 64 * qg_chunk_bytes(bits)));
  for (auto& b : c.codes) b = uint8_t(rng());
  c.zeros.resize(size_t(Nn * nG));
  for (auto& z : c.zeros) z = uint8_t(rng() % (1u << bits));
  for (float v : rnd(size_t(Nn * nG), 0.001f, 0.02f)) c.scales.push_back(f32_to_f16(v));
  c.sz.resize(c.scales.size());
  for (size_t i = 0; i < c.sz.size(); i++) c.sz[i] = f16_to_f32(c.scales[i]) * float(c.zeros[i]);
  if (permute) {
    c.perm.resize(size_t(K));
    for (int64_t j = 0; j < K; j++) c.perm[size_t(j)] = int32_t(j);
    for (int64_t j = K - 1; j > 0; j--) std::swap(c.perm[size_t(j)], c.perm[size_t(rng() % uint64_t(j + 1))]);
  }
  c.w = QgWeight{c.codes.data(), bits, Nn, Kpad, g, nG, c.scales.data(), c.zeros.data()};
  return c;
}
// Σ|x|·(|s·q| + |s·z|) over row n: the scale of the rounding-error bound (x in the permuted order).
double qg_mag(const QgCase& c, const float* x, int64_t n) {
  std::vector<float> d(size_t(c.w.Kpad));
  double mag = 0;
  for (int64_t k = 0; k < c.w.Kpad; k++) {
    const int64_t g = std::min(k / c.w.G, c.w.nG - 1);
    qg_dequant(d.data() + k, c.w, n, k, 1);
    const float xv = k < c.K ? x[c.perm.empty() ? k : c.perm[size_t(k)]] : 0.f;
    mag += std::fabs(double(xv)) * (std::fabs(double(d[size_t(k)])) + 2 * std::fabs(double(c.sz[size_t(n * c.w.nG + g)])));
  }
  return mag;
}
void check_qg() {
  for (int bits : {2, 3, 4, 8})
    for (int64_t G : {int64_t(32), int64_t(64), int64_t(0)})
      for (int64_t K : {int64_t(256), int64_t(200)})
        for (int permute = 0; permute < 2; permute++)
          for (int M = 1; M <= 4; M++) {
            const int64_t Nn = 13;
            QgCase c = make_qg(Nn, K, bits, G, permute);
            const int64_t Kpad = c.w.Kpad;
            auto x = rnd(size_t(M * K)), bias = rnd(size_t(Nn));
            std::vector<int16_t> q1(size_t(M * Kpad)), q2(q1.size());  // int8 or int16 values (room for int16)
            const int64_t xs = bits <= 4 ? 1 : 2;
            char *x1 = reinterpret_cast<char*>(q1.data()), *x2 = reinterpret_cast<char*>(q2.data());
            const int64_t ndx = Kpad / 64;
            std::vector<float> d1(size_t(M * ndx)), d2(d1.size()), b1(size_t(M * c.w.nG)), b2(b1.size());
            const int32_t* perm = c.perm.empty() ? nullptr : c.perm.data();
            for (int m = 0; m < M; m++) {
              cmp_int("qg_prep", "scalar order, finite x", qg_prep(x1 + m * Kpad * xs, d1.data() + m * ndx, b1.data() + m * c.w.nG, x.data() + m * K, perm, K, Kpad, c.w.G, c.w.nG, bits, S->qg_order), 1);
              cmp_int("qg_prep", "neon order, finite x", qg_prep(x2 + m * Kpad * xs, d2.data() + m * ndx, b2.data() + m * c.w.nG, x.data() + m * K, perm, K, Kpad, c.w.G, c.w.nG, bits, N->qg_order), 1);
            }
            std::vector<float> y1(size_t(M * Nn), -9.f), y2 = y1;
            S->gemv_qg(y1.data(), Nn, x1, d1.data(), b1.data(), M, c.w, 1, Nn, bias.data());
            N->gemv_qg(y2.data(), Nn, x2, d2.data(), b2.data(), M, c.w, 1, Nn, bias.data());
            for (int m = 0; m < M; m++)
              for (int64_t n = 0; n < Nn; n++) {
                const size_t i = size_t(m * Nn + n);
                const std::string what = fmt("%d-bit G=%" PRId64 " K=%" PRId64 " perm=%d M=%d m=%d n=%" PRId64, bits, G, K, permute, M, m, n);
                if (n == 0) { cmp_exact("gemv_qg", what + " untouched", y2[i], y1[i]); continue; }
                cmp("gemv_qg", what, y2[i], y1[i], qg_mag(c, x.data() + m * K, n) + std::fabs(double(bias[size_t(n)])));
              }
          }
}

// ---------------------------------------------------------------- drivers (ops.cc / gemm.cc) at both levels
template <class F>
std::vector<float> at_level(const char* level, size_t n, F&& f) {
  set_level(level);
  std::vector<float> out(n, -7.f);
  f(out.data());
  return out;
}

void check_drivers() {
  for (int threads : {1, 2}) {
    pool_set_threads(threads);
    for (int t : {W_F32, W_BF16, W_F16})
      for (int64_t M : {1, 4, 5, 64, 65, 128})
        for (int64_t K : {172, 300})
          for (int useBias = 0; useBias < 2; useBias++) {
            const int64_t Nn = 33;
            auto w = rnd_w(t, Nn * K);
            auto x = rnd(size_t(M * K)), bias = rnd(size_t(Nn));
            const float* bp = useBias ? bias.data() : nullptr;
            auto run = [&](float* y) { matmul(y, x.data(), w.data(), t, M, Nn, K, bp); };
            auto want = at_level("scalar", size_t(M * Nn), run), got = at_level("neon", size_t(M * Nn), run);
            for (int64_t m = 0; m < M; m++)
              for (int64_t n = 0; n < Nn; n++) {
                double mag = bp ? std::fabs(double(bp[n])) : 0;
                for (int64_t k = 0; k < K; k++) mag += std::fabs(double(x[size_t(m * K + k)]) * widen1(w.data(), t, n * K + k));
                cmp(std::string("matmul driver ") + wname(t),
                    fmt("threads=%d M=%" PRId64 " K=%" PRId64 " bias=%d m=%" PRId64 " n=%" PRId64, threads, M, K, useBias, m, n),
                    got[size_t(m * Nn + n)], want[size_t(m * Nn + n)], mag);
              }
          }
    for (int64_t M : {1, 3, 8, 9, 17, 65})  // the GEMV up to 8 rows of x (K = 256: the int16 decode), the GEMM above
      for (int dq = 0; dq < 4; dq++) {
        const int64_t Nn = 172, K = dq < 2 ? 65 : 256;
        Q4Case c = make_q4(Nn, K, 64, dq & 1 ? Q4_NF4 : Q4_FP4, dq & 1, dq & 1 ? W_BF16 : W_F32);
        auto x = rnd(size_t(M * K)), bias = rnd(size_t(Nn));
        auto run = [&](float* y) { matmul_q4(y, x.data(), c.w, M, bias.data()); };
        auto want = at_level("scalar", size_t(M * Nn), run), got = at_level("neon", size_t(M * Nn), run);
        for (int64_t m = 0; m < M; m++)
          for (int64_t n = 0; n < Nn; n++)
            cmp("matmul_q4 driver", fmt("threads=%d M=%" PRId64 " dq=%d m=%" PRId64 " n=%" PRId64, threads, M, dq, m, n),
                got[size_t(m * Nn + n)], want[size_t(m * Nn + n)], q4_mag(c.w, x.data() + m * K, n) + std::fabs(double(bias[size_t(n)])));
      }
    // matmul_qg: the int16 decode up to 8 rows, the dequantize GEMM above (exact weights at both levels).
    for (int64_t M : {1, 3, 9, 33})
      for (int bits : {3, 4}) {
        const int64_t Nn = 40, K = 200;
        QgCase c = make_qg(Nn, K, bits, 32, true);
        auto x = rnd(size_t(M * K)), bias = rnd(size_t(Nn));
        auto run = [&](float* y) { matmul_qg(y, x.data(), c.w, c.perm.data(), K, M, bias.data()); };
        auto want = at_level("scalar", size_t(M * Nn), run), got = at_level("neon", size_t(M * Nn), run);
        for (int64_t m = 0; m < M; m++)
          for (int64_t n = 0; n < Nn; n++)
            cmp("matmul_qg driver", fmt("threads=%d M=%" PRId64 " bits=%d m=%" PRId64 " n=%" PRId64, threads, M, bits, m, n),
                got[size_t(m * Nn + n)], want[size_t(m * Nn + n)], qg_mag(c, x.data() + m * K, n) + std::fabs(double(bias[size_t(n)])));
      }
    // matmul_int8: the same driver at both levels (activation quantization, outlier columns, float64 epilogue), so
    // the outputs must match bit for bit. Outliers planted at 9.5 and exactly -6.0 (5.99 is below the threshold),
    // K = 4160 spans several weight blocks.
    for (int64_t M : {1, 3, 17})
      for (int64_t K : {65, 4160})
        for (double threshold : {6.0, 0.0}) {
          const int64_t Nn = 172;
          std::vector<int8_t> cb(size_t(Nn * K));
          for (auto& v : cb) v = int8_t(int(rng() % 255) - 127);
          auto scb = rnd(size_t(Nn), 0.01f, 0.2f), x = rnd(size_t(M * K), -3.f, 3.f), bias = rnd(size_t(Nn));
          x[5] = 9.5f;
          x[size_t((M - 1) * K + 17)] = -6.0f;
          x[size_t(30 % K)] = 5.99f;
          auto run = [&](float* y) { matmul_int8(y, x.data(), cb.data(), scb.data(), M, Nn, K, threshold, bias.data()); };
          auto want = at_level("scalar", size_t(M * Nn), run), got = at_level("neon", size_t(M * Nn), run);
          for (size_t i = 0; i < want.size(); i++)
            cmp_exact("matmul_int8 driver", fmt("threads=%d M=%" PRId64 " K=%" PRId64 " t=%g i=%zu", threads, M, K, threshold, i), got[i], want[i]);
        }
    for (int64_t cols : {1, 5, 33, 172}) {
      const int64_t rows = 5;
      auto x = rnd(size_t(rows * cols), -20.f, 20.f);
      auto run = [&](float* y) { softmax(y, x.data(), rows, cols); };
      auto want = at_level("scalar", size_t(rows * cols), run), got = at_level("neon", size_t(rows * cols), run);
      for (size_t i = 0; i < want.size(); i++)
        cmp("softmax driver", fmt("cols=%" PRId64 " i=%zu", cols, i), got[i], want[i], std::fabs(double(want[i])));
    }
    for (int64_t n : {1, 17, 4099}) {
      auto g = rnd(size_t(n), -10.f, 10.f), u = rnd(size_t(n));
      auto run = [&](float* y) { lowbit::silu_mul(y, g.data(), u.data(), n); };
      auto want = at_level("scalar", size_t(n), run), got = at_level("neon", size_t(n), run);
      for (size_t i = 0; i < want.size(); i++)
        cmp("silu_mul driver", fmt("n=%" PRId64 " i=%zu", n, i), got[i], want[i], std::fabs(double(want[i])));
    }
    for (int t : {W_F32, W_BF16, W_F16}) {
      const int64_t dim = 172, rowsT = 50, nIds = 9;
      auto table = rnd_w(t, rowsT * dim);
      std::vector<int32_t> ids(nIds);
      for (auto& id : ids) id = int32_t(rng() % rowsT);
      auto run = [&](float* y) { embedding(y, table.data(), t, ids.data(), nIds, dim); };
      auto want = at_level("scalar", size_t(nIds * dim), run), got = at_level("neon", size_t(nIds * dim), run);
      for (size_t i = 0; i < want.size(); i++) cmp_exact(std::string("embedding driver ") + wname(t), fmt("i=%zu", i), got[i], want[i]);
    }
    // attention with GQA, a KV cache longer than needed, a padding mask (incl. a fully masked batch row).
    for (int64_t hd : {16, 64, 80, 128})
    for (int64_t window : {0, 7}) {  // 0: full causal attention; 7: a sliding window
      const int64_t B = 2, T = 3, H = 4, nKV = 2, S_ = 40, past = 29, kvLen = past + T;
      auto q = rnd(size_t(B * T * H * hd)), kc = rnd(size_t(B * S_ * nKV * hd)), vc = rnd(size_t(B * S_ * nKV * hd));
      std::vector<uint8_t> mask(size_t(B * kvLen), 1);
      for (int64_t s = 0; s < kvLen; s += 3) mask[size_t(s)] = 0;
      for (int64_t s = 0; s < kvLen; s++) mask[size_t(kvLen + s)] = s >= 20 ? 1 : 0;
      auto run = [&](float* o) { attention(o, q.data(), kc.data(), vc.data(), B, T, H, nKV, hd, S_, past, mask.data(), 1.f / std::sqrt(float(hd)), window); };
      auto want = at_level("scalar", size_t(B * T * H * hd), run), got = at_level("neon", size_t(B * T * H * hd), run);
      for (size_t i = 0; i < want.size(); i++)
        cmp("attention driver", fmt("hd=%" PRId64 " window=%" PRId64 " i=%zu", hd, window, i), got[i], want[i], 1.0);  // outputs are convex mixes of v ∈ [-1,1]
    }
  }
  set_level("best");
}

void check_dispatch() {
  const bool ok = best_kernels() == N && active() == N && std::string(active()->name) == "neon";
  std::printf("dispatch: cpu_features().neon=%d best=%s active=%s -> %s\n", int(cpu_features().neon),
              best_kernels()->name, active()->name, ok ? "ok" : "FAIL");
  if (!ok) failures++;
  for (const char* lv : {"scalar", "neon", "best"}) {
    try { set_level(lv); } catch (const std::exception& e) { std::printf("FAIL: setLevel(%s) threw %s\n", lv, e.what()); failures++; }
  }
  for (const char* lv : {"avx2", "avx512"}) {
    bool threw = false;
    try { set_level(lv); } catch (const std::invalid_argument&) { threw = true; }
    if (!threw) { std::printf("FAIL: setLevel(%s) accepted on aarch64\n", lv); failures++; }
  }
  set_level("best");
}

}  // namespace

int main() {
  uint64_t seed = std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
  if (const char* s = std::getenv("NEON_CHECK_SEED")) seed = std::strtoull(s, nullptr, 10);
  rng.seed(seed);
  std::printf("neon_check seed=%" PRIu64 " (NEON_CHECK_SEED=%" PRIu64 " repeats this run)\n", seed, seed);
  S = kernels_scalar();
  N = kernels_neon();
  if (!N) {
    std::printf("kernels_neon() is nullptr: not an AArch64 build, nothing to check\n");
    return 2;
  }
  pool_set_threads(1);
  check_dispatch();
  check_widen();
  check_vec();
  check_gemv();
  check_pack_micro();
  check_attention_kernels();
  check_q4();
  check_qg();
  check_dot_i8();
  check_i8_act();
  check_drivers();
  std::printf("%-24s %10s %12s %6s\n", "kernel", "checks", "max err", "bad");
  for (const auto& s : stats) {
    std::printf("%-24s %10" PRId64 " %12.3g %6" PRId64 "%s\n", s.name.c_str(), s.n, s.maxErr, s.bad, s.bad ? "  FAIL" : "");
    if (s.bad) std::printf("    first: %s\n", s.firstBad.c_str());
  }
  std::printf("%s: %d checks, %d failures (tolerance %.0e; exact where the table says exact)\n",
              failures ? "FAIL" : "PASS", checks, failures, kTol);
  return failures ? 1 : 0;
}
