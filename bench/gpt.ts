/**
 * One training step of the tiny GPT (vocab 256, d_model 128, 4 layers, 4
 * heads, context 64, batch 16; AdamW, grad clip 1.0), as `recipes/trainer.ts`
 * takes it: upload the batch, forward, backward, clip, update, zero grads, with
 * no readback inside the loop.
 *
 * @module
 */
import { applyPrecision, frozenStateBytes, type LinearPrecision } from "@lowp/formats";
import { type Backend, GPT } from "@lowp/core";
import { AdamW, optimizerMemory, trainStep } from "@lowp/optim";

/** The benchmarked architecture (shared with the PyTorch peer in peers.py). */
export const TINY_GPT = { vocab: 256, dModel: 128, nLayers: 4, nHeads: 4, context: 64, batch: 16 } as const;
/** Optimizer settings (the recipe defaults). */
export const TINY_OPT = { lr: 3e-3, betas: [0.9, 0.99] as [number, number], weightDecay: 0.1, clip: 1.0 } as const;

/** How many steps to time. */
export interface StepTiming {
  /** Fixed step count; when absent it is chosen from the second warm-up step's time. */
  steps?: number;
  /** Seconds the timed steps should take together (when `steps` is absent). */
  targetS: number;
  /** Bounds on the chosen step count. */
  minSteps: number;
  /** Bounds on the chosen step count. */
  maxSteps: number;
}

/** The outcome of {@link benchGptStep}. */
export interface StepResult {
  /** N·batch·context / seconds. */
  tokensPerS: number;
  /** Milliseconds per step. */
  msPerStep: number;
  /** Timed steps N. */
  steps: number;
  /** Loss after the last timed step (the one readback). */
  finalLoss: number;
  /** Trainable parameters. */
  params: number;
  /** WebGPU dispatches per step (WebGPU only). */
  dispatchesPerStep?: number;
  /** Trainable parameters (all of them unless `adapt` froze some). */
  trainableParams: number;
  /** Bytes of frozen state: frozen f32 parameters and packed bases (formats' `frozenStateBytes`). */
  frozenBytes: number;
  /** Bytes of trainable weights and optimizer state (optim's `optimizerMemory`, after the timed steps). */
  trainableBytes: number;
}

/** Deterministic byte-like tokens for step `i` (contents do not affect speed). */
function batch(i: number): { x: Int32Array; y: Int32Array } {
  const { batch: b, context: t, vocab } = TINY_GPT;
  const x = new Int32Array(b * t), y = new Int32Array(b * t);
  let s = (0x9e3779b9 ^ i) >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24; // top byte of an LCG
  for (let k = 0; k < b * t; k++) x[k] = next() % vocab;
  for (let k = 0; k < b * t; k++) y[k] = k % t === t - 1 ? next() % vocab : x[k + 1];
  return { x, y };
}

/**
 * Times training steps of the tiny GPT on `backend` (which must be the active backend) under a precision (a preset
 * name or a record); `adapt` changes the model before the optimizer is built over its trainable parameters.
 */
export async function benchGptStep(
  backend: Backend,
  timing: StepTiming,
  precision: string | LinearPrecision = "f32",
  adapt?: (model: GPT) => void,
): Promise<StepResult> {
  const { vocab, dModel, nLayers, nHeads, context, batch: b } = TINY_GPT;
  const model = new GPT({ vocabSize: vocab, contextLength: context, dModel, nLayers, nHeads }, { seed: 1234 });
  if (precision !== "f32") applyPrecision(model, precision);
  adapt?.(model); // e.g. LoRA / QLoRA adapters, which freeze the rest
  let stepIndex = 0;
  const trainable = model.namedParameters({ trainable: true });
  const opt = new AdamW(trainable, { betas: TINY_OPT.betas, weightDecay: TINY_OPT.weightDecay });
  const shape = [b, context];
  const ctx = (backend as Backend & { context?: { dispatchCount: number } }).context;
  try {
    const step = ({ x, y }: { x: Int32Array; y: Int32Array }) =>
      trainStep({
        model,
        optimizer: opt,
        inputs: x,
        targets: y,
        shape,
        lr: TINY_OPT.lr,
        gradClip: TINY_OPT.clip,
        ctx: { step: stepIndex++, training: true },
      });
    let warmS = 0;
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      step(batch(i)).dispose();
      await backend.sync();
      warmS = (performance.now() - t0) / 1000;
    }
    const n = timing.steps ??
      Math.min(timing.maxSteps, Math.max(timing.minSteps, Math.round(timing.targetS / Math.max(warmS, 1e-4))));
    const batches = Array.from({ length: n }, (_, i) => batch(i + 2)); // host data prepared outside the clock
    const dispatches0 = ctx?.dispatchCount ?? 0;
    const t0 = performance.now();
    let last = step(batches[0]);
    for (let i = 1; i < n; i++) {
      last.dispose();
      last = step(batches[i]);
    }
    await backend.sync();
    const seconds = (performance.now() - t0) / 1000;
    const dispatches = (ctx?.dispatchCount ?? 0) - dispatches0;
    const finalLoss = await last.item();
    last.dispose();
    const result: StepResult = {
      tokensPerS: (n * b * context) / seconds,
      msPerStep: (seconds * 1000) / n,
      steps: n,
      finalLoss,
      params: model.parameterCount(),
      trainableParams: model.parameterCount({ trainable: true }),
      frozenBytes: frozenStateBytes(model),
      trainableBytes: (({ weightBytes, stateBytes }) => weightBytes + stateBytes)(optimizerMemory(opt, trainable)),
    };
    if (ctx) result.dispatchesPerStep = dispatches / n;
    return result;
  } finally {
    for (const [, t] of opt.state()) t.dispose();
    model.dispose();
  }
}
