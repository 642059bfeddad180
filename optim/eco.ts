/**
 * ECO, the error-compensating optimizer (Nikdan et al., "ECO: Quantized
 * Training without Full-Precision Master Weights", arXiv 2601.22101):
 * weights live only in the quantized format; after each step the weights are
 * rounded and the rounding error is folded into the first moment, so no f32
 * master copy is kept.
 *
 * SGD with EMA momentum (paper, Algorithm 2; ALGORITHMS.md "ECO"), with the
 * decoupled decay of ALGORITHMS.md:
 * ```
 * M̃ = β·M_t + (1-β)·G                          // Algorithm 2
 * W̃ = (1-η·λ)·Ŵ_t − η·M̃                        // Algorithm 2; (1-η·λ): ALGORITHMS.md
 * Ŵ_{t+1} = q(W̃),  E = W̃ − Ŵ_{t+1}              // Algorithm 2
 * M_{t+1} = M̃ + (1-η·λ)·(1/η)·(1 − 1/β)·E        // Algorithm 2; (1-η·λ): ALGORITHMS.md
 * ```
 * Adam (paper, Algorithm 3): W̃, M̃, Ṽ are AdamW's step from Ŵ_t (the
 * `adamwUpdate` kernel itself), then, t counted from 1 (the paper's t+1):
 * ```
 * M_{t+1} = M̃ + (1-η·λ)·((1−β1^t)/η)·(1 − 1/β1)·(sqrt(Ṽ/(1−β2^t)) + ε) ⊙ E   // Algorithm 3; (1-η·λ): ALGORITHMS.md
 * ```
 * Why: with the master weights W* = Ŵ + E, keeping W̃ on the master
 * trajectory needs `M_{t+1} = M̃ + K·(E_t − E_{t+1}/β)` (K = (1-η·λ)/η for
 * SGD, times (1−β1^t)·(sqrt(Ṽ/(1−β2^t)) + ε) for Adam); ECO takes
 * E_t ≈ E_{t+1}. `exact: true` keeps E_t in one extra buffer per parameter
 * and applies the full term (ALGORITHMS.md's ablation): with a constant
 * learning rate, EcoSGD's W̃ then follows the master-weight trajectory up to
 * f32 rounding. K is taken at the current step for both errors, so under a
 * changing η (or Adam's changing denominator) the variant is exact only to
 * first order. On the toy least-squares problem of `eco_quality_test.ts`
 * (e4m3, seed 1) it matches master weights for SGD at a constant η (final
 * loss 13.8645 vs 13.8688), but with Adam and a cosine decay it ends behind
 * plain ECO (0.165 vs 0.098; master 0.085): the K mismatch between steps
 * leaves part of each large injected error in the momentum.
 *
 * The 1/η guard: steps with η < {@link ECO_MIN_LR} (1e-12) skip the
 * correction (M = M̃; the exact variant resets its error buffer to 0). At
 * η = 0 this is exact: W̃ = Ŵ·1 − 0 = Ŵ, already in the format, so E = 0 and
 * the paper's term is 0·∞. For 0 < η < 1e-12 the factor 1/η > 1e12 would
 * make one rounding error (up to a quantization step) a momentum entry
 * twelve orders of magnitude above the gradients' scale, wiping out the
 * moment's f32 mantissa; schedules reach such η only where they end at 0
 * (the last step of a decay to 0, or a warm-up that starts at 0), where the
 * error would barely be applied again. Skipping loses at most that step's
 * rounding error, which is what the naive method loses every step.
 *
 * Rounding: stochastic by default (the paper's recommendation), Philox keyed
 * by (seed, a stream hashed from the parameter's name, offset (t−1)·size),
 * so a run resumed from a checkpoint draws the same words.
 *
 * @module
 */
import { type Tensor, zeros } from "@lowp/core";
import { ecoCorrection } from "./eco_kernels.ts";
import type { ParamList } from "./optimizer.ts";
import {
  type QuantizedParam,
  QuantizedWeightOptimizer,
  type QuantizedWeightOptions,
  type WeightUpdate,
} from "./quantized_weights.ts";

/** Below this learning rate ECO skips its 1/η correction (see the module doc for why). */
export const ECO_MIN_LR = 1e-12;

/** Options of {@link EcoAdam} and {@link EcoSGD}. */
export interface EcoOptions extends QuantizedWeightOptions {
  /** Keep the previous step's rounding error in one extra buffer and apply the exact correction (ablation). */
  readonly exact?: boolean;
}

/** ECO with either update; use {@link EcoAdam} or {@link EcoSGD}. State: moments (+ `error` for the exact variant). */
export class EcoOptimizer extends QuantizedWeightOptimizer {
  /**
   * Creates an ECO optimizer and rounds the quantized parameters into the format.
   * @param who class name for messages
   * @param params parameters to train
   * @param opts format, rounding, update options and `exact`
   * @param update Adam or SGD-EMA
   */
  constructor(who: string, params: ParamList, override readonly opts: EcoOptions, update: WeightUpdate) {
    super(who, params, opts, update, "stochastic");
  }

  /** The exact variant keeps `error` (E_t) per quantized parameter. */
  protected override extraSlots(): string[] {
    return this.opts.exact ? ["error"] : [];
  }

  /** W̃, M̃, Ṽ from the plain update; Ŵ = q(W̃); M = M̃ + correction (module doc). */
  protected stepParam(e: QuantizedParam, t: number, lr: number, gradScale: Tensor | undefined): void {
    const { weight, m, v } = this.updateMoments(e, e.param, t, lr, gradScale);
    if (!e.quantized) {
      e.param.assign(weight);
      this.storeMoments(e, m, v);
      return;
    }
    const rounded = this.round(e, weight, t);
    e.param.assign(rounded);
    if (lr < ECO_MIN_LR) {
      this.storeMoments(e, m, v);
      if (this.opts.exact) this.slot(e, "error").assign(zeros(e.param.shape, { backend: e.param.backend }));
      return;
    }
    const beta = this.beta, adam = this.update === "adamw";
    // K = (1-η·λ)·(1-β1^t)/η (Adam) or (1-η·λ)/η (SGD); ECO multiplies by (1 - 1/β) (Algorithms 2 and 3).
    const k = (1 - lr * this.decayOf(e)) * (adam ? 1 - Math.pow(beta, t) : 1) / lr;
    const [mNew, error] = ecoCorrection(weight, rounded, m, v, {
      factor: this.opts.exact ? k : k * (1 - 1 / beta),
      adam: adam ? { beta2: (this.opts.betas ?? [0.9, 0.999])[1], eps: this.opts.eps ?? 1e-8, step: t } : undefined,
      exact: this.opts.exact ? { beta, previousError: this.slot(e, "error") } : undefined,
    });
    this.storeMoments(e, mNew, v);
    if (error) this.slot(e, "error").assign(error);
  }
}

/**
 * ECO-Adam (arXiv 2601.22101, Algorithm 3): AdamW's update on quantized weights with the rounding
 * error folded into the first moment. Defaults as AdamW (β = (0.9, 0.999), ε = 1e-8, λ = 0.01) and
 * stochastic rounding. State: `exp_avg`, `exp_avg_sq` (+ `error` when `exact`).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { EcoAdam } from "@lowp/optim";
 * const w = tensor([[0.3, -1.1]], { requiresGrad: true });
 * const opt = new EcoAdam([["w", w]], { format: "e4m3" }); // w is now [[0.3125, -1.125]]
 * w.grad = tensor([[0.5, -0.5]]).keep();
 * opt.step(1e-3); // w stays on the e4m3 grid; the rounding error goes into the momentum
 * console.assert(opt.bytesPerParameter() === 9); // 1-byte weights + two f32 moments
 * ```
 */
export class EcoAdam extends EcoOptimizer {
  /**
   * Creates an ECO-Adam and rounds the quantized parameters (rank ≥ 2 by default) into the format.
   * @param params parameters to train
   * @param opts format (required), granularity, rounding, seed, betas, eps, weightDecay, exact
   */
  constructor(params: ParamList, opts: EcoOptions) {
    super("EcoAdam", params, opts, "adamw");
  }
}

/**
 * ECO-SGD (arXiv 2601.22101, Algorithm 2): SGD with EMA momentum `m ← β·m + (1-β)·g` on quantized
 * weights, the rounding error folded into the momentum. Defaults: β = 0.9, λ = 0, stochastic rounding.
 * State: `momentum` (+ `error` when `exact`).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { EcoSGD } from "@lowp/optim";
 * const w = tensor([[0.3, -1.1]], { requiresGrad: true });
 * const opt = new EcoSGD([["w", w]], { format: "int4", granularity: "group:2" });
 * w.grad = tensor([[0.5, -0.5]]).keep();
 * opt.step(0.01);
 * ```
 */
export class EcoSGD extends EcoOptimizer {
  /**
   * Creates an ECO-SGD and rounds the quantized parameters (rank ≥ 2 by default) into the format.
   * @param params parameters to train
   * @param opts format (required), granularity, rounding, seed, momentum, weightDecay, exact
   */
  constructor(params: ParamList, opts: EcoOptions) {
    super("EcoSGD", params, opts, "sgd");
  }
}
