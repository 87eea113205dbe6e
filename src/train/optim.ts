// AdamW (torch.optim.AdamW: decoupled weight decay, bias correction, fp32 state), gradient clipping by global norm
// (torch.nn.utils.clip_grad_norm_), and transformers' learning-rate schedules (get_scheduler: linear, cosine,
// constant_with_warmup, constant).

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** One trainable tensor: its values, its gradient, and whether weight decay applies (not to norms and biases). */
export interface Param { name: string; p: Float32Array; g: Float32Array; decay: boolean }

export class AdamW {
  readonly m: Float32Array[];
  readonly v: Float32Array[];
  t = 0;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;

  constructor(readonly params: Param[], opts: AdamWOptions = {}) {
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    this.m = params.map((x) => new Float32Array(x.p.length));
    this.v = params.map((x) => new Float32Array(x.p.length));
  }

  /** One update at learning rate lr (torch's order: decay, moments, bias-corrected step). */
  step(lr: number): void {
    this.t++;
    const [b1, b2] = this.betas, bc1 = 1 - b1 ** this.t, bc2s = Math.sqrt(1 - b2 ** this.t), stepSize = lr / bc1;
    this.params.forEach((x, i) => {
      const { p, g } = x, m = this.m[i], v = this.v[i];
      const decay = x.decay && this.weightDecay > 0 ? 1 - lr * this.weightDecay : 1;
      for (let j = 0; j < p.length; j++) {
        if (decay !== 1) p[j] *= decay;
        m[j] = b1 * m[j] + (1 - b1) * g[j];
        v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
        p[j] -= stepSize * m[j] / (Math.sqrt(v[j]) / bc2s + this.eps);
      }
    });
  }
}

/** The global L2 norm of the gradients; when above maxNorm (> 0), every gradient is scaled by maxNorm / (norm + 1e-6). */
export function clipGradNorm(params: Param[], maxNorm: number): number {
  let s = 0;
  for (const { g } of params) for (let j = 0; j < g.length; j++) s += g[j] * g[j];
  const norm = Math.sqrt(s);
  if (maxNorm > 0 && norm > maxNorm) {
    const c = maxNorm / (norm + 1e-6);
    for (const { g } of params) for (let j = 0; j < g.length; j++) g[j] *= c;
  }
  return norm;
}

export type SchedulerType = 'linear' | 'cosine' | 'constant_with_warmup' | 'constant';
export const SCHEDULERS: readonly SchedulerType[] = ['linear', 'cosine', 'constant_with_warmup', 'constant'];

/** The multiplier of the base learning rate at optimizer step `step` (0-based), as transformers' lr_lambda. */
export function lrLambda(type: SchedulerType, step: number, warmup: number, total: number): number {
  if (type === 'constant') return 1;
  if (step < warmup) return step / Math.max(1, warmup);
  if (type === 'constant_with_warmup') return 1;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (type === 'linear') return Math.max(0, (total - step) / Math.max(1, total - warmup));
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
