/**
 * One training step, written once for the trainer, the benchmarks and the
 * tests: forward, loss, backward, gradient clipping, optimizer update and
 * zeroed gradients, with no readback.
 *
 * @module
 */
import { backward, type ForwardContext, type ParameterFilter, type Tensor, tensor, tidy } from "@lowp/core";
import { gradClip } from "./clip.ts";
import type { Optimizer } from "./optimizer.ts";

/** The part of a model that {@link trainStep} uses (a `GPT` is one). */
export interface TrainableModel {
  /** Mean loss of `inputs` predicting `targets`, recorded for backward. */
  loss(inputs: Tensor, targets: Tensor, ctx?: ForwardContext): Tensor;
  /** The parameters as [name, tensor] pairs, in a fixed order; `{ trainable: true }` skips frozen ones. */
  namedParameters(filter?: ParameterFilter): [string, Tensor][];
  /** Drops every parameter's gradient. */
  zeroGrad(): void;
}

/** Options of {@link trainStep}. */
export interface TrainStepOptions {
  /** The model to train. */
  readonly model: TrainableModel;
  /** The optimizer holding the model's (trainable) parameters. */
  readonly optimizer: Optimizer;
  /** Token ids: a tensor, or host ids uploaded (and freed) inside the step, shaped by `shape`. */
  readonly inputs: Tensor | Int32Array;
  /** Targets, like `inputs`. */
  readonly targets: Tensor | Int32Array;
  /** Shape of host `inputs`/`targets` (e.g. [batch, context]); needed only for arrays. */
  readonly shape?: readonly number[];
  /** Learning rate of this step. */
  readonly lr: number;
  /** Clip the global gradient norm to this value (0 or absent: no clipping). */
  readonly gradClip?: number;
  /** Parameters whose gradients the clip norm covers (default: every trainable model parameter, in order). */
  readonly params?: readonly Tensor[];
  /** Passed to the model's loss (the step index, the seed of its random draws, training). */
  readonly ctx?: ForwardContext;
}

function upload(x: Tensor | Int32Array, shape: readonly number[] | undefined, what: string): Tensor {
  if (!(x instanceof Int32Array)) return x;
  if (!shape) throw new Error(`trainStep: ${what} is an Int32Array, so shape is required`);
  return tensor(x, { shape: [...shape] });
}

/**
 * Takes one optimizer step and returns the loss as a tensor that outlives the
 * step's memory scope (read it with `await loss.item()` when logging, then
 * dispose it). The clipping factor is computed on the device and handed to the
 * optimizer, which applies it inside its update (AdamW: in its kernel).
 *
 * @example
 * ```ts
 * import { GPT } from "@lowp/core";
 * import { AdamW, trainStep } from "@lowp/optim";
 * const model = new GPT({ vocabSize: 16, contextLength: 4, dModel: 8, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * const optimizer = new AdamW(model.namedParameters());
 * const ids = Int32Array.from([1, 2, 3, 4]);
 * const loss = trainStep({ model, optimizer, inputs: ids, targets: ids, shape: [1, 4], lr: 1e-3, gradClip: 1 });
 * console.assert(Number.isFinite(await loss.item()));
 * loss.dispose();
 * ```
 */
export function trainStep(o: TrainStepOptions): Tensor {
  return tidy(() => {
    const loss = o.model.loss(upload(o.inputs, o.shape, "inputs"), upload(o.targets, o.shape, "targets"), o.ctx);
    backward(loss);
    const clip = o.gradClip ?? 0;
    const params = clip > 0 ? o.params ?? o.model.namedParameters({ trainable: true }).map(([, p]) => p) : [];
    o.optimizer.step(o.lr, clip > 0 ? { gradScale: gradClip(params, clip).scale } : {});
    o.model.zeroGrad();
    return loss;
  });
}
