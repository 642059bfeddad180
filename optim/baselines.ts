/**
 * The two baselines ECO is measured against (arXiv 2601.22101; ALGORITHMS.md
 * "ECO"), under the same interface and options as {@link EcoAdam}:
 *
 * - {@link MasterWeights}: an f32 master copy trained by AdamW (or SGD with EMA
 *   momentum); after each step the model's parameter gets `q(master)`, the
 *   quantized view the forward uses. State: the moments and `master`.
 * - {@link NaiveQuantized}: no master copy, no feedback:
 *   `Ŵ_{t+1} = q(Ŵ_t − η·update)`, round to nearest or stochastic. Updates
 *   below half a quantization step vanish under round to nearest; the paper
 *   shows the error of this method can grow like 1/η.
 *
 * @module
 */
import type { Tensor } from "@lowp/core";
import type { ParamList } from "./optimizer.ts";
import {
  type QuantizedParam,
  QuantizedWeightOptimizer,
  type QuantizedWeightOptions,
  type WeightUpdate,
} from "./quantized_weights.ts";

/** Options of the baselines: the shared options plus the update rule. */
export interface BaselineOptions extends QuantizedWeightOptions {
  /** `adamw` (default) or `sgd` (EMA momentum, as ECO-SGD). */
  readonly update?: WeightUpdate;
}

/**
 * Master weights: AdamW (or SGD-EMA) on an f32 copy; the parameter holds `q(master)` for the forward.
 * Rounding of the view: round to nearest by default. Constructing it copies each quantized parameter
 * into its master and rounds the parameter. Bytes per parameter count the master (+4).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { MasterWeights } from "@lowp/optim";
 * const w = tensor([[0.3, -1.1]], { requiresGrad: true });
 * const opt = new MasterWeights([["w", w]], { format: "e4m3" });
 * console.assert(opt.bytesPerParameter() === 13); // 1-byte view + f32 master + two f32 moments
 * ```
 */
export class MasterWeights extends QuantizedWeightOptimizer {
  /**
   * Creates the optimizer, copying every quantized parameter into an f32 master.
   * @param params parameters to train
   * @param opts format (required), update, granularity, rounding of the view, and the update's options
   */
  constructor(params: ParamList, opts: BaselineOptions) {
    super("MasterWeights", params, opts, opts.update ?? "adamw", "nearest");
  }

  /** Keeps the f32 value as the master, then shows the rounded one. */
  protected override initParam(e: QuantizedParam, rounded: Tensor): void {
    this.setSlot(e, "master", e.param);
    e.param.assign(rounded);
  }

  /** The master copy of each quantized parameter. */
  protected override extraSlots(): string[] {
    return ["master"];
  }

  /** A checkpoint without the master cannot resume this optimizer. */
  protected override missingOnLoad(e: QuantizedParam, slot: string): void {
    if (slot === "master") throw new Error(`${this.who}.load: the state has no '${e.name}/master'`);
    super.missingOnLoad(e, slot);
  }

  /** master ← update(master); parameter ← q(master). */
  protected stepParam(e: QuantizedParam, t: number, lr: number, gradScale: Tensor | undefined): void {
    if (!e.quantized) {
      const { weight, m, v } = this.updateMoments(e, e.param, t, lr, gradScale);
      e.param.assign(weight);
      this.storeMoments(e, m, v);
      return;
    }
    const master = this.slot(e, "master");
    const { weight, m, v } = this.updateMoments(e, master, t, lr, gradScale);
    master.assign(weight);
    e.param.assign(this.round(e, weight, t));
    this.storeMoments(e, m, v);
  }
}

/**
 * Naive quantized weights: `Ŵ ← q(Ŵ − η·update)` with no master and no error feedback. Rounding: to
 * nearest by default (the plain cast); `rounding: "stochastic"` for naive+SR.
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { NaiveQuantized } from "@lowp/optim";
 * const w = tensor([[1, -1]], { requiresGrad: true });
 * const opt = new NaiveQuantized([["w", w]], { format: "e4m3", weightDecay: 0 });
 * w.grad = tensor([[0.5, -0.5]]).keep();
 * opt.step(1e-3); // an update of 1e-3 is below half an e4m3 step at 1: w stays [[1, -1]]
 * ```
 */
export class NaiveQuantized extends QuantizedWeightOptimizer {
  /**
   * Creates the optimizer and rounds the quantized parameters into the format.
   * @param params parameters to train
   * @param opts format (required), update, granularity, rounding, and the update's options
   */
  constructor(params: ParamList, opts: BaselineOptions) {
    super("NaiveQuantized", params, opts, opts.update ?? "adamw", "nearest");
  }

  /** parameter ← q(update(parameter)). */
  protected stepParam(e: QuantizedParam, t: number, lr: number, gradScale: Tensor | undefined): void {
    const { weight, m, v } = this.updateMoments(e, e.param, t, lr, gradScale);
    e.param.assign(e.quantized ? this.round(e, weight, t) : weight);
    this.storeMoments(e, m, v);
  }
}
