#pragma once
#include <cstdint>

namespace lowbit {

// Training attention (src/train/ops.ts attentionForward / attentionBackward are the twins): q [B,T,H,hd], k/v
// [B,T,nKV,hd] (the whole context, no cache), causal, optional key padding mask [B,T] (1 = real) and sliding window
// (query t sees keys s with t − s < window; 0 = none), GQA heads h → h / (H / nKV). The forward writes o [B,T,H,hd]
// and the softmax probabilities p [B,H,T,T] (0 where masked; a query with no visible key gets o = 0, p = 0); the
// backward takes them and writes dq, dk, dv (overwritten, not accumulated). Threads over (b, h), and over (b, kv head)
// in the backward so that the query heads sharing a kv head add into dk / dv in one thread.
void attn_train_fwd(float* o, float* p, const float* q, const float* k, const float* v, const uint8_t* mask, int64_t B,
                    int64_t T, int64_t H, int64_t nKV, int64_t hd, float scale, int64_t window);
void attn_train_bwd(float* dq, float* dk, float* dv, const float* dO, const float* q, const float* k, const float* v,
                    const float* p, int64_t B, int64_t T, int64_t H, int64_t nKV, int64_t hd, float scale);

// silu·mul's backward (src/train/ops.ts siluMulBackward): dg = dy·u·σ(g)·(1 + g·(1 − σ(g))), du = dy·g·σ(g).
void silu_mul_bwd(float* dg, float* du, const float* dy, const float* g, const float* u, int64_t n);

}  // namespace lowbit
