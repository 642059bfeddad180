/**
 * The shape shared by the optimizers: parameters (optionally named), a step
 * that updates them in place from their `.grad`, and per-parameter state kept
 * on the parameters' backend.
 *
 * @module
 */
import { type Tensor, zeros } from "@lowp/core";

/** Parameters as a list, or as [name, tensor] pairs (names let rules such as weight decay pick parameters). */
export type ParamList = readonly Tensor[] | readonly (readonly [string, Tensor])[];

/** Normalises a {@link ParamList} to named pairs (unnamed parameters get their tensor name or index). */
export function namedParams(params: ParamList): [string, Tensor][] {
  return params.map((p, i) => Array.isArray(p) ? [p[0], p[1]] : [(p as Tensor).name ?? `param${i}`, p as Tensor]);
}

/** Decides which parameters get weight decay; default: tensors of rank ≥ 2 (not biases or norm scales). */
export type DecayRule = (name: string, param: Tensor) => boolean;

/** Default {@link DecayRule}: decay matrices, not vectors. */
export function decayMatrices(_name: string, p: Tensor): boolean {
  return p.rank >= 2;
}

/** A zero tensor shaped like `p` that outlives scopes (optimizer state). */
export function stateLike(p: Tensor): Tensor {
  return zeros(p.shape, { backend: p.backend }).keep();
}

/** Options of {@link Optimizer.step}. */
export interface StepOptions {
  /** A 1-element tensor every gradient is multiplied by first (the clipping factor of `gradClip`). */
  readonly gradScale?: Tensor;
}

/** What every optimizer offers. */
export interface Optimizer {
  /** Updates every parameter that has a gradient, using learning rate `lr`. */
  step(lr: number, opts?: StepOptions): void;
  /** Number of steps taken. */
  readonly steps: number;
  /** State tensors by `name/slot`, for checkpoints (empty when the optimizer keeps none, e.g. plain SGD). */
  state(): [string, Tensor][];
  /**
   * Restores what {@link Optimizer.state} returned (matched by name; parameters without saved state start
   * fresh) and the step count, so that the next `step` continues the saved run bit for bit.
   */
  load(state: ReadonlyMap<string, Tensor>, steps: number): void;
}

/**
 * Copies `saved` into the state tensor of `p` in `slots`, creating it first; shapes must match. Without
 * `saved`, drops the slot, so that `p` starts fresh as if never stepped.
 */
export function loadSlot(slots: Map<Tensor, Tensor>, p: Tensor, saved: Tensor | undefined, name: string): void {
  if (!saved) {
    slots.get(p)?.dispose();
    slots.delete(p);
    return;
  }
  if (saved.shape.join() !== p.shape.join()) {
    throw new Error(`optimizer state ${name}: shape [${saved.shape}] does not match the parameter's [${p.shape}]`);
  }
  (slots.get(p) ?? slots.set(p, stateLike(p)).get(p)!).assign(saved);
}

/** Throws unless `scale` (when given) is a 1-element f32 tensor. */
export function checkGradScale(scale: Tensor | undefined): void {
  if (scale && (scale.size !== 1 || scale.dtype !== "f32")) {
    throw new Error(`step: gradScale must be a 1-element f32 tensor, got ${scale.describe()}`);
  }
}
