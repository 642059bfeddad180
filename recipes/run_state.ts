/**
 * A training run's state (parameters, optimizer state, module buffers) as
 * named tensors: what a checkpoint holds, an in-memory snapshot of it, and
 * the diagnosis of a non-finite loss (the first tensor that held one).
 *
 * @module
 */
import { clone, type GPT, noGrad, type Tensor, tensor, tidy } from "@lowp/core";
import type { Optimizer } from "@lowp/optim";

/** Checkpoint names of optimizer state. */
export const OPTIM_PREFIX = "optimizer.";
/** Checkpoint names of module buffers (e.g. delayed scaling's amax histories). */
export const BUFFER_PREFIX = "buffer.";

/** Every tensor of a run's state under its checkpoint name: parameters, `optimizer.*`, `buffer.*`. */
export function stateTensors(model: GPT, opt: Optimizer): [string, Tensor][] {
  return [
    ...model.namedParameters(),
    ...opt.state().map(([n, t]): [string, Tensor] => [OPTIM_PREFIX + n, t]),
    ...model.namedBuffers().map(([n, t]): [string, Tensor] => [BUFFER_PREFIX + n, t]),
  ];
}

/**
 * Puts checkpoint tensors (by name) back into the model and optimizer. Parameters and buffers take copies;
 * `Optimizer.load` shares the saved tensors' storage, which the optimizers' updates replace (`assign`) rather
 * than write into. Either way the source stays unchanged while training goes on (a snapshot can be restored
 * twice).
 */
export function restoreState(model: GPT, opt: Optimizer, tensors: ReadonlyMap<string, Tensor>, optSteps: number) {
  for (const [name, p] of model.namedParameters()) {
    const t = tensors.get(name);
    if (t) p.assign(noGrad(() => clone(t)).keep());
  }
  for (const [n, t] of tensors) {
    if (n.startsWith(BUFFER_PREFIX)) model.setBuffer(n.slice(BUFFER_PREFIX.length), noGrad(() => clone(t)));
  }
  const state = new Map(
    [...tensors].filter(([n]) => n.startsWith(OPTIM_PREFIX)).map(([n, t]) => [n.slice(OPTIM_PREFIX.length), t]),
  );
  opt.load(state, optSteps);
}

/** A run's state in memory after `step` steps: copies of every checkpoint tensor. */
export class RunSnapshot {
  /** Steps completed when it was taken. */
  readonly step: number;
  /** The optimizer's own step count then. */
  readonly optimizerSteps: number;
  /** The copies, by checkpoint name. */
  readonly tensors: ReadonlyMap<string, Tensor>;

  /** Copies the state of `model` and `opt` after `step` steps. */
  constructor(model: GPT, opt: Optimizer, step: number) {
    this.step = step;
    this.optimizerSteps = opt.steps;
    this.tensors = new Map(noGrad(() => stateTensors(model, opt).map(([n, t]) => [n, clone(t).keep()])));
  }

  /** Puts the state back into `model` and `opt`. */
  restore(model: GPT, opt: Optimizer): void {
    restoreState(model, opt, this.tensors, this.optimizerSteps);
  }

  /** Frees the copies. */
  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
  }
}

/** The first non-finite element of `values`, or -1. */
function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/** "transformer.h.0.attn.c_attn output [8,32,384] holds NaN at element 17". */
async function nonFiniteIn(what: string, t: Tensor): Promise<string | null> {
  const values = await t.data() as Float32Array;
  const i = firstNonFinite(values);
  return i < 0 ? null : `${what} [${t.shape}] holds ${values[i]} at element ${i}`;
}

/**
 * Names the first tensor holding a non-finite value when `model` computes the loss of one batch: a parameter,
 * else the first module output in the order the forward produced them, else the loss itself.
 */
export async function diagnoseNonFinite(
  model: GPT,
  batch: { inputs: Int32Array; targets: Int32Array; shape: number[] },
  ctx: { step: number; seed: number; training: boolean },
): Promise<string> {
  for (const [name, p] of model.namedParameters()) {
    const found = await nonFiniteIn(`parameter ${name}`, p);
    if (found) return found;
  }
  const outputs: [string, Tensor][] = [];
  // In the order the forward finished them: a module's input is checked before its output, so a NaN born
  // between two modules (in attention's softmax, say) shows as the next module's input.
  const removers = model.namedModules().map(([name, m]) =>
    m.onForward((_, x, y) => outputs.push([`${name || "model"} input`, x], [`${name || "model"} output`, y]))
  );
  let loss: Tensor;
  try {
    loss = noGrad(() =>
      tidy(() => {
        const l = model.loss(
          tensor(batch.inputs, { shape: batch.shape }),
          tensor(batch.targets, { shape: batch.shape }),
          ctx,
        );
        return [l, outputs.map(([, t]) => t)] as const;
      })
    )[0];
  } finally {
    removers.forEach((remove) => remove());
  }
  try {
    for (const [what, y] of outputs) {
      const found = await nonFiniteIn(what, y);
      if (found) return found;
    }
    return (await nonFiniteIn("the loss", loss)) ?? "no tensor (the loss is finite on a recomputation)";
  } finally {
    loss.dispose();
    for (const t of new Set(outputs.map(([, t]) => t))) t.dispose();
  }
}
