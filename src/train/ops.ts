// Forward/backward pairs of every op the decoder forwards use, for training (issue 11). In the manner of llm.c: each
// forward returns what its backward needs (an explicit activation record), each backward takes the upstream gradient
// and returns the gradients of its inputs, and nothing is written in place. Arrays are row-major. Every op is generic
// over Float32Array and Float64Array: training runs float32, and the tests run the same code in float64 against
// central finite differences (test/train-ops.test.ts). These are the reference twins of the native training kernels.
//
// Conventions follow the inference ops in src/backend/ref (the same formulas, so a training forward in float32 gives the
// inference logits): RMSNorm y = w·(x·rstd), LayerNorm y = (x − mean)·rstd·w + b, RoPE in HF's rotate-half layout
// with angle fl32(pos·invFreq), attention causal with an optional key padding mask and sliding window, GQA heads
// h → h / (H / nKV).

export type Vec = Float32Array | Float64Array;

/** A zeroed array of n elements of x's kind. */
export function like(x: Vec, n: number = x.length): Vec {
  return x instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
}

// ---- linear: y[M,N] = x[M,K] · w[N,K]ᵀ + b[N]

export function linearForward(x: Vec, w: Vec, b: Vec | null, M: number, N: number, K: number): Vec {
  const y = like(x, M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** dx[M,K] = dy · w. */
export function linearBackwardInput(dy: Vec, w: Vec, M: number, N: number, K: number): Vec {
  const dx = like(dy, M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n];
      if (g === 0) continue;
      for (let k = 0; k < K; k++) dx[m * K + k] += g * w[n * K + k];
    }
  }
  return dx;
}

/** dw[N,K] = dyᵀ · x, db[N] = Σ_m dy (db only when asked). */
export function linearBackwardWeight(dy: Vec, x: Vec, M: number, N: number, K: number, withBias: boolean): { dw: Vec; db: Vec | null } {
  const dw = like(dy, N * K), db = withBias ? like(dy, N) : null;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n];
      if (db) db[n] += g;
      if (g === 0) continue;
      for (let k = 0; k < K; k++) dw[n * K + k] += g * x[m * K + k];
    }
  }
  return { dw, db };
}

// ---- embedding: y[n] = table[ids[n]]

/** dtable[V,D] += dy rows at their ids (a row used twice gets both). */
export function embeddingBackward(dy: Vec, ids: ArrayLike<number>, V: number, D: number): Vec {
  const dt = like(dy, V * D);
  for (let n = 0; n < ids.length; n++) {
    const o = ids[n] * D;
    for (let i = 0; i < D; i++) dt[o + i] += dy[n * D + i];
  }
  return dt;
}

// ---- RMSNorm (Llama, Mistral, Qwen2)

export interface RmsNormAct { x: Vec; rstd: Vec }

export function rmsnormForward(x: Vec, w: Vec, eps: number, rows: number, D: number): { y: Vec; act: RmsNormAct } {
  const y = like(x, rows * D), rstd = like(x, rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[r * D + i] * x[r * D + i];
    const inv = 1 / Math.sqrt(ss / D + eps);
    rstd[r] = inv;
    for (let i = 0; i < D; i++) y[r * D + i] = w[i] * (x[r * D + i] * inv);
  }
  return { y, act: { x, rstd } };
}

/** dx = rstd·(w⊙dy) − x·rstd³·Σ(w⊙dy⊙x)/D;  dw = Σ_rows dy⊙x·rstd. */
export function rmsnormBackward(dy: Vec, w: Vec, a: RmsNormAct, rows: number, D: number): { dx: Vec; dw: Vec } {
  const dx = like(dy, rows * D), dw = like(dy, D), { x, rstd } = a;
  for (let r = 0; r < rows; r++) {
    const o = r * D, inv = rstd[r];
    let dot = 0;
    for (let i = 0; i < D; i++) {
      dot += w[i] * dy[o + i] * x[o + i];
      dw[i] += dy[o + i] * x[o + i] * inv;
    }
    const c = (dot * inv * inv * inv) / D;
    for (let i = 0; i < D; i++) dx[o + i] = inv * w[i] * dy[o + i] - c * x[o + i];
  }
  return { dx, dw };
}

// ---- LayerNorm (OPT)

export interface LayerNormAct { xhat: Vec; rstd: Vec }

export function layernormForward(x: Vec, w: Vec, b: Vec, eps: number, rows: number, D: number): { y: Vec; act: LayerNormAct } {
  const y = like(x, rows * D), xhat = like(x, rows * D), rstd = like(x, rows);
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[o + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) { const d = x[o + i] - mean; v += d * d; }
    const inv = 1 / Math.sqrt(v / D + eps);
    rstd[r] = inv;
    for (let i = 0; i < D; i++) {
      xhat[o + i] = (x[o + i] - mean) * inv;
      y[o + i] = xhat[o + i] * w[i] + b[i];
    }
  }
  return { y, act: { xhat, rstd } };
}

/** dx = rstd·(g − mean(g) − x̂·mean(g⊙x̂)) with g = dy⊙w;  dw = Σ dy⊙x̂;  db = Σ dy. */
export function layernormBackward(dy: Vec, w: Vec, a: LayerNormAct, rows: number, D: number): { dx: Vec; dw: Vec; db: Vec } {
  const dx = like(dy, rows * D), dw = like(dy, D), db = like(dy, D), { xhat, rstd } = a;
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let mg = 0, mgx = 0;
    for (let i = 0; i < D; i++) {
      const g = dy[o + i] * w[i];
      mg += g;
      mgx += g * xhat[o + i];
      dw[i] += dy[o + i] * xhat[o + i];
      db[i] += dy[o + i];
    }
    mg /= D;
    mgx /= D;
    for (let i = 0; i < D; i++) dx[o + i] = rstd[r] * (dy[o + i] * w[i] - mg - xhat[o + i] * mgx);
  }
  return { dx, dw, db };
}

// ---- RoPE, rotate-half: [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin] per (row, head), pair (i, i + hd/2)

function rope(x: Vec, positions: ArrayLike<number>, invFreq: ArrayLike<number>, nHeads: number, hd: number, sign: 1 | -1): Vec {
  const half = hd / 2, rows = positions.length, y = like(x, x.length);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(positions[r] * invFreq[i]);
      const c = Math.fround(Math.cos(ang)), s = sign * Math.fround(Math.sin(ang));
      for (let h = 0; h < nHeads; h++) {
        const o = (r * nHeads + h) * hd, a = x[o + i], b = x[o + i + half];
        y[o + i] = a * c - b * s;
        y[o + i + half] = b * c + a * s;
      }
    }
  }
  return y;
}

/** x [rows, nHeads, hd] with one position per row → rotated copy. */
export function ropeForward(x: Vec, positions: ArrayLike<number>, invFreq: ArrayLike<number>, nHeads: number, hd: number): Vec {
  return rope(x, positions, invFreq, nHeads, hd, 1);
}

/** The rotation is orthogonal: its gradient is the inverse rotation (sin negated). */
export function ropeBackward(dy: Vec, positions: ArrayLike<number>, invFreq: ArrayLike<number>, nHeads: number, hd: number): Vec {
  return rope(dy, positions, invFreq, nHeads, hd, -1);
}

// ---- attention: q [B,T,H,hd], k/v [B,T,nKV,hd] (the whole context: no cache in training) → o [B,T,H,hd]

export interface AttentionShape {
  B: number; T: number; H: number; nKV: number; hd: number;
  /** Score scale, usually 1/sqrt(hd). */
  scale: number;
  /** Key padding mask [B, T] (1 = a real token), or null. */
  keyMask: Uint8Array | null;
  /** Sliding window (query t sees keys s with t − s < window); 0 = none. */
  window: number;
}

export interface AttentionAct { q: Vec; k: Vec; v: Vec; /** softmax probabilities [B, H, T, T] (0 where masked). */ p: Vec }

export function attentionForward(q: Vec, k: Vec, v: Vec, sh: AttentionShape): { o: Vec; act: AttentionAct } {
  const { B, T, H, nKV, hd, scale, keyMask, window } = sh, group = H / nKV;
  const o = like(q, B * T * H * hd), p = like(q, B * H * T * T);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const qo = ((b * T + t) * H + h) * hd, po = ((b * H + h) * T + t) * T;
      const first = window ? Math.max(0, t - window + 1) : 0;
      let max = -Infinity;
      for (let s = first; s <= t; s++) {
        if (keyMask && !keyMask[b * T + s]) continue;
        const ko = ((b * T + s) * nKV + kh) * hd;
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[qo + i] * k[ko + i];
        p[po + s] = dot * scale;
        if (p[po + s] > max) max = p[po + s];
      }
      if (max === -Infinity) continue;                     // a padding query with no visible key: output 0
      let sum = 0;
      for (let s = first; s <= t; s++) {
        if (keyMask && !keyMask[b * T + s]) continue;
        p[po + s] = Math.exp(p[po + s] - max);
        sum += p[po + s];
      }
      for (let s = first; s <= t; s++) {
        if (keyMask && !keyMask[b * T + s]) continue;
        p[po + s] /= sum;
        const vo = ((b * T + s) * nKV + kh) * hd, ps = p[po + s];
        for (let i = 0; i < hd; i++) o[qo + i] += ps * v[vo + i];
      }
    }
  }
  return { o, act: { q, k, v, p } };
}

/**
 * dV[s] += Σ_t P[t,s]·dO[t];  dP[t,s] = dO[t]·V[s];  dS = P⊙(dP − Σ_s P⊙dP);  dQ[t] = scale·Σ_s dS[t,s]·K[s];
 * dK[s] += scale·Σ_t dS[t,s]·Q[t]. The kv heads sum over the query heads they serve.
 */
export function attentionBackward(dO: Vec, a: AttentionAct, sh: AttentionShape): { dq: Vec; dk: Vec; dv: Vec } {
  const { B, T, H, nKV, hd, scale } = sh, group = H / nKV, { q, k, v, p } = a;
  const dq = like(dO, q.length), dk = like(dO, k.length), dv = like(dO, v.length);
  const dp = like(dO, T);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const qo = ((b * T + t) * H + h) * hd, po = ((b * H + h) * T + t) * T;
      let dot = 0;
      for (let s = 0; s <= t; s++) {
        const ps = p[po + s];
        if (ps === 0) { dp[s] = 0; continue; }
        const vo = ((b * T + s) * nKV + kh) * hd;
        let d = 0;
        for (let i = 0; i < hd; i++) {
          d += dO[qo + i] * v[vo + i];
          dv[vo + i] += ps * dO[qo + i];
        }
        dp[s] = d;
        dot += ps * d;
      }
      for (let s = 0; s <= t; s++) {
        const ps = p[po + s];
        if (ps === 0) continue;
        const ds = ps * (dp[s] - dot) * scale, ko = ((b * T + s) * nKV + kh) * hd;
        for (let i = 0; i < hd; i++) {
          dq[qo + i] += ds * k[ko + i];
          dk[ko + i] += ds * q[qo + i];
        }
      }
    }
  }
  return { dq, dk, dv };
}

// ---- activations

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** y = silu(g)·u. */
export function siluMulForward(g: Vec, u: Vec): Vec {
  const y = like(g);
  for (let i = 0; i < g.length; i++) y[i] = g[i] * sigmoid(g[i]) * u[i];
  return y;
}

/** dg = dy·u·σ(g)·(1 + g·(1 − σ(g))), du = dy·silu(g). */
export function siluMulBackward(dy: Vec, g: Vec, u: Vec): { dg: Vec; du: Vec } {
  const dg = like(dy), du = like(dy);
  for (let i = 0; i < g.length; i++) {
    const s = sigmoid(g[i]);
    dg[i] = dy[i] * u[i] * s * (1 + g[i] * (1 - s));
    du[i] = dy[i] * g[i] * s;
  }
  return { dg, du };
}

export function reluForward(x: Vec): Vec {
  const y = like(x);
  for (let i = 0; i < x.length; i++) y[i] = x[i] > 0 ? x[i] : 0;
  return y;
}

/** The gradient passes where x > 0 (0 at x = 0, as torch's). */
export function reluBackward(dy: Vec, x: Vec): Vec {
  const dx = like(dy);
  for (let i = 0; i < x.length; i++) dx[i] = x[i] > 0 ? dy[i] : 0;
  return dx;
}

// ---- causal-LM cross-entropy

export const IGNORE_INDEX = -100;

/**
 * HF's causal-LM loss: logits [B, T, V] at position t predict labels[t + 1] (the shift), labels of IGNORE_INDEX count
 * for nothing. loss = Σ −log softmax(logits)[label] / divisor, divisor = the number of scored targets unless given
 * (transformers' num_items_in_batch, which gradient accumulation passes so that every token weighs the same).
 * Returns the loss, the scored count, and dlogits = (softmax − onehot) / divisor on scored rows (0 elsewhere).
 */
export function causalLmLoss(logits: Vec, labels: ArrayLike<number>, B: number, T: number, V: number, divisor?: number): { loss: number; count: number; dlogits: Vec } {
  const { targets, count } = shiftedTargets(labels, B, T, V);
  const div = divisor ?? count;
  const dl = like(logits, logits.length);
  let nll = 0;
  for (let row = 0; row < B * T; row++) {
    const y = targets[row];
    if (y === IGNORE_INDEX) continue;
    const o = row * V;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[o + i] > max) max = logits[o + i];
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[o + i] - max);
    const lse = max + Math.log(sum);
    nll += lse - logits[o + y];
    if (div > 0) {
      for (let i = 0; i < V; i++) dl[o + i] = Math.exp(logits[o + i] - lse) / div;
      dl[o + y] -= 1 / div;
    }
  }
  return { loss: div > 0 ? nll / div : 0, count, dlogits: dl };
}

/**
 * The label each logits row [B·T] predicts, HF's shift: row (b, t) gets labels[b, t + 1], IGNORE_INDEX on the last
 * position and where the label is; each checked against the vocabulary. count: the scored rows.
 */
export function shiftedTargets(labels: ArrayLike<number>, B: number, T: number, V: number): { targets: Int32Array; count: number } {
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  let count = 0;
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) {
    const y = labels[b * T + t + 1];
    if (y === IGNORE_INDEX) continue;
    if (!(Number.isInteger(y) && y >= 0 && y < V)) throw new RangeError(`causalLmLoss: label ${y} at [${b}, ${t + 1}] is outside the vocabulary [0, ${V}) and is not ${IGNORE_INDEX}`);
    targets[b * T + t] = y;
    count++;
  }
  return { targets, count };
}

/**
 * Knowledge distillation on the causal-LM positions (those causalLmLoss scores: labels[t + 1] ≠ −100):
 * loss = τ²·Σ KL(softmax(teacher/τ) ‖ softmax(student/τ)) / divisor (default: the scored count), the soft-target loss
 * of Hinton et al. (τ² keeps its gradient's scale independent of τ). dlogits = τ·(softmax(student/τ) − softmax(teacher/τ)) / divisor.
 */
export function distillLoss(student: Vec, teacher: ArrayLike<number>, labels: ArrayLike<number>, B: number, T: number, V: number, tau: number, divisor?: number): { loss: number; count: number; dlogits: Vec } {
  let count = 0;
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) if (labels[b * T + t + 1] !== IGNORE_INDEX) count++;
  const div = divisor ?? count;
  const dl = like(student, student.length);
  const ps = new Float64Array(V), pt = new Float64Array(V);
  const soft = (x: ArrayLike<number>, o: number, out: Float64Array) => {
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, x[o + i] / tau);
    let sum = 0;
    for (let i = 0; i < V; i++) { out[i] = Math.exp(x[o + i] / tau - max); sum += out[i]; }
    for (let i = 0; i < V; i++) out[i] /= sum;
  };
  let kl = 0;
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) {
    if (labels[b * T + t + 1] === IGNORE_INDEX) continue;
    const o = (b * T + t) * V;
    soft(student, o, ps);
    soft(teacher, o, pt);
    for (let i = 0; i < V; i++) {
      if (pt[i] > 0) kl += pt[i] * (Math.log(pt[i]) - Math.log(ps[i]));
      if (div > 0) dl[o + i] = (tau * (ps[i] - pt[i])) / div;
    }
  }
  return { loss: div > 0 ? (tau * tau * kl) / div : 0, count, dlogits: dl };
}

/** Elementwise a + b (a new array). */
export function addVec(a: Vec, b: Vec): Vec {
  const y = like(a);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}

/** a += b in place (gradient accumulation). */
export function accumulate(a: Vec, b: Vec): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}
