/**
 * AdamW (Loshchilov & Hutter) with PyTorch's `torch.optim.AdamW` update:
 * decoupled decay `p ← p·(1 − lr·λ)`, then `p ← p − lr·m̂/(√v̂ + ε)` with
 * bias-corrected moments.
 *
 * @module
 */
import { type Tensor, tidy } from "@lowp/core";
import { adamwUpdate } from "./adamw_kernel.ts";
import {
  checkGradScale,
  decayMatrices,
  type DecayRule,
  loadSlot,
  namedParams,
  type Optimizer,
  type ParamList,
  stateLike,
  type StepOptions,
} from "./optimizer.ts";

/** Options for {@link AdamW}. */
export interface AdamWOptions {
  /** (β1, β2), default (0.9, 0.999). */
  betas?: readonly [number, number];
  /** ε, default 1e-8. */
  eps?: number;
  /** Decoupled weight decay λ, default 0.01 (PyTorch's default). */
  weightDecay?: number;
  /** Which parameters get weight decay (default: rank ≥ 2). */
  decay?: DecayRule;
}

/**
 * The optimizer. State: first and second moments per parameter, in f32.
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { AdamW } from "@lowp/optim";
 * const p = tensor([1], { requiresGrad: true });
 * p.grad = tensor([0.5]).keep();
 * new AdamW([p], { weightDecay: 0 }).step(0.1); // p ≈ 0.9
 * ```
 */
export class AdamW implements Optimizer {
  readonly #params: [string, Tensor][];
  readonly #m = new Map<Tensor, Tensor>();
  readonly #v = new Map<Tensor, Tensor>();
  #steps = 0;
  /**
   * Creates a AdamW.
   * @param params parameters to train
   * @param opts betas, eps and decay
   */
  constructor(params: ParamList, readonly opts: AdamWOptions = {}) {
    this.#params = namedParams(params);
  }
  /** Steps taken. */
  get steps(): number {
    return this.#steps;
  }
  /** Moments by `name/exp_avg` and `name/exp_avg_sq` (PyTorch's names). */
  state(): [string, Tensor][] {
    return this.#params.filter(([, p]) => this.#m.has(p)).flatMap(([n, p]) => [
      [`${n}/exp_avg`, this.#m.get(p)!] as [string, Tensor],
      [`${n}/exp_avg_sq`, this.#v.get(p)!] as [string, Tensor],
    ]);
  }
  /** Restores moments saved by {@link AdamW.state} and the step count. */
  load(state: ReadonlyMap<string, Tensor>, steps: number): void {
    for (const [n, p] of this.#params) {
      const m = state.get(`${n}/exp_avg`), v = state.get(`${n}/exp_avg_sq`);
      const both = m !== undefined && v !== undefined; // a parameter missing either moment starts fresh
      loadSlot(this.#m, p, both ? m : undefined, `${n}/exp_avg`);
      loadSlot(this.#v, p, both ? v : undefined, `${n}/exp_avg_sq`);
    }
    this.#steps = steps;
  }
  /** One update with learning rate `lr`; gradients are multiplied by `opts.gradScale` first (in the kernel) when given. */
  step(lr: number, opts: StepOptions = {}): void {
    checkGradScale(opts.gradScale);
    const [b1, b2] = this.opts.betas ?? [0.9, 0.999];
    const { eps = 1e-8, weightDecay = 0.01, decay = decayMatrices } = this.opts;
    const t = this.#steps + 1;
    const betas: [number, number] = [b1, b2];
    tidy(() => {
      for (const [name, p] of this.#params) {
        if (!p.grad) continue;
        const m = this.#m.get(p) ?? this.#m.set(p, stateLike(p)).get(p)!;
        const v = this.#v.get(p) ?? this.#v.set(p, stateLike(p)).get(p)!;
        const lambda = weightDecay && decay(name, p) ? weightDecay : 0;
        const constants = { betas, eps, step: t, lr, weightDecay: lambda, gradScale: opts.gradScale };
        const [pNew, mNew, vNew] = adamwUpdate(p, p.grad, m, v, constants);
        p.assign(pNew);
        m.assign(mNew);
        v.assign(vNew);
      }
    });
    this.#steps = t;
  }
}
