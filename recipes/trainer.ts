/**
 * The language-model training loop behind LM recipes: builds the model and
 * optimizer from a resolved recipe, trains with no readback inside a step,
 * evaluates on held-out bytes, and (given a run folder) appends metrics and
 * writes checkpoints so an interrupted run loses at most the steps since the
 * last checkpoint and can be resumed bit-exactly.
 *
 * @module
 */
import { GPT, loadTensors, noGrad, saveTensors, type Tensor, tensor, tidy } from "@lowp/core";
import { applyPrecision } from "@lowp/formats";
import {
  AdamW,
  checkPeakLearningRate,
  cosineSchedule,
  EcoAdam,
  EcoSGD,
  MasterWeights,
  NaiveQuantized,
  type Optimizer,
  optimizerMemory,
  SGD,
  trainStep,
} from "@lowp/optim";
import { type Corpus, sampleBatch, TRAIN_STREAM, VAL_STREAM } from "./data.ts";
import { precisionName, precisionOf } from "./precision.ts";
import { diagnoseNonFinite, restoreState, RunSnapshot, stateTensors } from "./run_state.ts";
import type { LMRecipe } from "./schema.ts";
import { firstMismatch } from "./run_dir.ts";
import {
  BASE_DIGEST_KEY,
  buildFinetuneModel,
  checkBaseDigest,
  isFinetune,
  type StateReport,
  stateReport,
} from "./finetune.ts";

/** One metrics record, as written to `metrics.jsonl`. */
export interface MetricsRecord {
  /** Steps completed. */
  step: number;
  /** Training loss of the step just taken (when read back). */
  loss?: number;
  /** Validation loss (at evaluations). */
  val_loss?: number;
  /** Learning rate used. */
  lr?: number;
  /** Training throughput since the previous record. */
  tokens_per_s?: number;
}

/** Hooks and options for {@link trainLM}. */
export interface TrainHooks {
  /** Called with every metrics record (the CLI appends it to metrics.jsonl). */
  onMetrics?: (m: MetricsRecord) => void | Promise<void>;
  /** Called once before the first step with the step the run starts at (0, or the checkpoint's step). */
  onStart?: (step: number) => void | Promise<void>;
  /** Called after each step with the step count (progress display). */
  onStep?: (step: number, latest: MetricsRecord) => void;
  /** Checkpoint path; written atomically at `checkpoint_every` and at the end. */
  checkpointPath?: string;
  /** Resume from this checkpoint (model, optimizer state, step). */
  resumeFrom?: string;
  /**
   * Polled after every step; when it returns true the loop checkpoints and stops. When given, the loop lets the
   * event loop run between steps (a signal handler can set the flag) at a cost of microseconds per step.
   */
  shouldStop?: () => boolean;
}

/**
 * A training loss that was NaN or ±Inf: the run stops with the step that gave it and the first tensor that
 * held a non-finite value, after checkpointing the state the last finite loss was computed on (the state
 * after `step − 2` steps), so a resumed run retakes the last good step under the changed settings.
 */
export class NonFiniteLossError extends Error {
  /** The step (1-based, as in metrics.jsonl) whose loss was not finite. */
  readonly step: number;
  /** The first tensor that held a non-finite value, e.g. "transformer.h.0.mlp.c_fc output [8,32,512] holds NaN…". */
  readonly tensor: string;
  /** The checkpoint written (path and steps it holds), or null when the run has no checkpoint path. */
  readonly checkpoint: { path: string; step: number } | null;

  /** Builds the error and its one-line message. */
  constructor(step: number, tensor: string, checkpoint: { path: string; step: number } | null) {
    super(
      `the training loss is not finite at step ${step}; first non-finite tensor: ${tensor}` +
        (checkpoint
          ? `; the checkpoint holds the state after step ${checkpoint.step}, which gave the last finite loss`
          : ""),
    );
    this.name = "NonFiniteLossError";
    this.step = step;
    this.tensor = tensor;
    this.checkpoint = checkpoint;
  }
}

/** What a training run returns. */
export interface TrainResult {
  /** The trained model. */
  model: GPT;
  /** Every metrics record in order. */
  metrics: MetricsRecord[];
  /** Validation loss at the end. */
  finalValLoss: number;
  /** Steps completed (less than requested when stopped early). */
  steps: number;
  /** Wall-clock seconds of the whole run: this part plus the parts before a resume (from the checkpoint). */
  seconds: number;
  /** Bytes of weights + optimizer state per trainable parameter, as if packed (f32 AdamW: 12). */
  bytesPerParameter: number;
  /** Trainable and frozen parameters and the bytes of their state (weights + optimizer state). */
  state: StateReport;
}

/** Builds the GPT a recipe describes. */
export function buildModel(r: LMRecipe): GPT {
  const m = r.model;
  const model = new GPT({
    vocabSize: 256,
    contextLength: m.context,
    dModel: m.d_model,
    nLayers: m.n_layers,
    nHeads: m.n_heads,
    mlpRatio: m.mlp_ratio,
    norm: m.norm,
    mlp: m.mlp,
    position: m.position,
    tieEmbeddings: m.tie_embeddings,
  }, { seed: r.seed });
  applyRecipePrecision(model, r);
  return model;
}

/**
 * Switches the model's linear layers to the recipe's `precision:` (nothing for `f32`); throws one error naming
 * every layer and role the record does not fit.
 */
export function applyRecipePrecision(model: GPT, r: LMRecipe): void {
  const p = r.precision;
  if (p.preset === "f32" && precisionName(p) === "f32") return;
  applyPrecision(model, precisionOf(p), p.skip ? { skip: p.skip } : {});
}

/** The optimizer a recipe names, over the model's trainable parameters. */
export function buildOptimizer(r: LMRecipe, model: GPT): Optimizer {
  const t = r.train, params = model.namedParameters({ trainable: true });
  const adam = { betas: [t.beta1, t.beta2] as [number, number], weightDecay: t.weight_decay };
  if (t.optimizer === "sgd") return new SGD(params, { momentum: t.momentum, weightDecay: t.weight_decay });
  if (t.optimizer === "adamw") return new AdamW(params, adam);
  const [family, update] = t.optimizer.split("-") as ["eco" | "master" | "naive", "adam" | "sgd"];
  const quantized = {
    format: t.weight_format,
    granularity: t.weight_granularity || undefined,
    rounding: (t.weight_rounding || undefined) as "nearest" | "stochastic" | undefined,
    seed: r.seed,
    ...(update === "adam" ? adam : { momentum: t.momentum, weightDecay: t.weight_decay }),
  };
  if (family === "eco") {
    checkPeakLearningRate(t.lr, `train.optimizer ${t.optimizer}`);
    const opts = { ...quantized, exact: t.eco_exact };
    return update === "adam" ? new EcoAdam(params, opts) : new EcoSGD(params, opts);
  }
  const baseline = { ...quantized, update: update === "adam" ? "adamw" as const : "sgd" as const };
  return family === "master" ? new MasterWeights(params, baseline) : new NaiveQuantized(params, baseline);
}

/** Mean validation loss over `eval_batches` fixed batches. */
export async function evaluate(model: GPT, r: LMRecipe, val: Uint8Array): Promise<number> {
  const losses: Tensor[] = [];
  for (let i = 0; i < r.train.eval_batches; i++) {
    const { inputs, targets } = sampleBatch(val, r.train.batch_size, r.model.context, r.seed, VAL_STREAM, i);
    const shape = [r.train.batch_size, r.model.context];
    const ctx = { seed: r.seed, training: false };
    losses.push(noGrad(() => tidy(() => model.loss(tensor(inputs, { shape }), tensor(targets, { shape }), ctx))));
    await nextEventTurn(); // a second Ctrl-C during a long evaluation aborts at once
  }
  let total = 0;
  for (const l of losses) {
    total += await l.item();
    l.dispose();
  }
  return total / losses.length;
}

/** Where a run stands when it is checkpointed. */
interface RunPosition {
  /** Steps completed. */
  step: number;
  /** Wall-clock seconds of the run so far (all parts). */
  seconds: number;
}

async function saveCheckpoint(
  path: string,
  model: GPT,
  opt: Optimizer,
  r: LMRecipe,
  at: RunPosition,
  baseDigest: string,
): Promise<void> {
  await saveTensors(path, stateTensors(model, opt), {
    step: String(at.step),
    optimizer: r.train.optimizer,
    optimizer_steps: String(opt.steps),
    seconds: String(at.seconds),
    ...(baseDigest ? { [BASE_DIGEST_KEY]: baseDigest } : {}),
  });
}

async function resume(path: string, model: GPT, opt: Optimizer, r: LMRecipe, baseDigest: string): Promise<RunPosition> {
  const { tensors, metadata } = await loadTensors(path);
  const mismatch = firstMismatch(model.namedParameters(), tensors);
  if (mismatch) throw new Error(`${path}: checkpoint does not match the recipe's model: ${mismatch}`);
  if (baseDigest) checkBaseDigest(metadata, baseDigest, path);
  if (metadata.optimizer && metadata.optimizer !== r.train.optimizer) {
    throw new Error(
      `${path}: checkpoint was written by ${metadata.optimizer}, the recipe asks for ${r.train.optimizer}`,
    );
  }
  restoreState(model, opt, tensors, Number(metadata.optimizer_steps ?? metadata.step));
  const step = Number(metadata.step);
  if (!Number.isInteger(step)) throw new Error(`${path}: checkpoint metadata has no integer 'step'`);
  if (step > r.train.steps) {
    throw new Error(`${path}: checkpoint is at step ${step}, past train.steps (${r.train.steps})`);
  }
  return { step, seconds: Number(metadata.seconds ?? 0) || 0 };
}

/** Lets pending events (a Ctrl-C handler) run; a message round trip, not a timer, so it costs microseconds. */
function nextEventTurn(): Promise<void> {
  const { port1, port2 } = new MessageChannel();
  return new Promise<void>((resolve) => {
    port1.onmessage = () => {
      port1.close();
      port2.close();
      resolve();
    };
    port2.postMessage(null);
  });
}

/**
 * Trains the model a recipe describes on `corpus`.
 * The loss is read back only every `log_every` steps.
 */
export async function trainLM(r: LMRecipe, corpus: Corpus, hooks: TrainHooks = {}): Promise<TrainResult> {
  const t = r.train;
  // A fine-tune starts from another run's checkpoint (recipes/finetune.ts); the main path is unchanged.
  const { model, baseDigest } = isFinetune(r) ? await buildFinetuneModel(r) : { model: buildModel(r), baseDigest: "" };
  const opt = buildOptimizer(r, model);
  const schedule = cosineSchedule({ lr: t.lr, warmup: t.warmup, total: t.steps, minLr: t.min_lr });
  const shape = [t.batch_size, r.model.context];
  const metrics: MetricsRecord[] = [];
  const emit = async (m: MetricsRecord) => {
    metrics.push(m);
    await hooks.onMetrics?.(m);
  };
  const started = performance.now();
  const before = hooks.resumeFrom ? await resume(hooks.resumeFrom, model, opt, r, baseDigest) : { step: 0, seconds: 0 };
  // A fine-tune records where it starts: the validation loss of its model before the first step.
  if (baseDigest && !hooks.resumeFrom) await emit({ step: 0, val_loss: await evaluate(model, r, corpus.val) });
  const seconds = () => before.seconds + (performance.now() - started) / 1000;
  let step = before.step;
  await hooks.onStart?.(step);
  const batchOf = (at: number) => ({
    ...sampleBatch(corpus.train, t.batch_size, r.model.context, r.seed, TRAIN_STREAM, at),
    ctx: { step: at, seed: r.seed, training: true },
  });
  const takeStep = (at: number) => {
    const { inputs, targets, ctx } = batchOf(at);
    return trainStep({ model, optimizer: opt, inputs, targets, shape, lr: schedule(at), gradClip: t.grad_clip, ctx });
  };
  // The state before the latest step whose loss was read back finite: a NaN found later is replayed from here.
  let good = new RunSnapshot(model, opt, step);
  let clock = performance.now(), tokensSince = 0;
  let latest: MetricsRecord = { step };
  try {
    while (step < t.steps) {
      if (hooks.shouldStop?.()) break;
      const lr = schedule(step);
      const logged = (step + 1) % t.log_every === 0 || step + 1 === t.steps;
      const preStep = logged ? new RunSnapshot(model, opt, step) : null;
      const loss = takeStep(step);
      step++;
      tokensSince += t.batch_size * r.model.context;
      if (preStep) {
        const value = await loss.item();
        loss.dispose();
        if (!Number.isFinite(value)) {
          preStep.dispose();
          throw await nonFiniteStop(good, step - 1);
        }
        good.dispose();
        good = preStep;
        const now = performance.now();
        latest = { step, loss: value, lr, tokens_per_s: (tokensSince * 1000) / (now - clock) };
        clock = now;
        tokensSince = 0;
        await emit(latest);
      } else loss.dispose();
      if (step % t.eval_every === 0 && step !== t.steps) {
        await emit({ step, val_loss: await evaluate(model, r, corpus.val) });
      }
      if (hooks.checkpointPath && t.checkpoint_every && step % t.checkpoint_every === 0) {
        await saveCheckpoint(hooks.checkpointPath, model, opt, r, { step, seconds: seconds() }, baseDigest);
      }
      hooks.onStep?.(step, latest);
      if (hooks.shouldStop) await nextEventTurn();
    }
  } finally {
    good.dispose();
  }

  /**
   * The loss of step `failed` (0-based) was not finite: replays from `from` one step at a time, reading every
   * loss, to the first step that gives one; names the first tensor that held a non-finite value; checkpoints
   * the state the last finite loss was computed on, so that a resumed run (with a lower learning rate, say)
   * retakes that step.
   */
  async function nonFiniteStop(from: RunSnapshot, failed: number): Promise<NonFiniteLossError> {
    from.restore(model, opt);
    // `current` is the state before step `at`, `previous` the one before step `at - 1` (when replayed).
    let previous: RunSnapshot | null = null, current = new RunSnapshot(model, opt, from.step), value = 0;
    for (let at = from.step; at <= failed; at++) {
      const loss = takeStep(at);
      value = await loss.item();
      loss.dispose();
      if (!Number.isFinite(value)) break;
      previous?.dispose();
      previous = current;
      current = new RunSnapshot(model, opt, at + 1);
    }
    try {
      if (Number.isFinite(value)) {
        return new NonFiniteLossError(failed + 1, "none: a replay from the last good state gave finite losses", null);
      }
      current.restore(model, opt);
      const { inputs, targets, ctx } = batchOf(current.step);
      const where = await diagnoseNonFinite(model, { inputs, targets, shape }, ctx);
      const keep = previous ?? current;
      if (!hooks.checkpointPath) return new NonFiniteLossError(current.step + 1, where, null);
      keep.restore(model, opt);
      await saveCheckpoint(hooks.checkpointPath, model, opt, r, { step: keep.step, seconds: seconds() }, baseDigest);
      return new NonFiniteLossError(current.step + 1, where, { path: hooks.checkpointPath, step: keep.step });
    } finally {
      previous?.dispose();
      current.dispose();
    }
  }

  const finalValLoss = await evaluate(model, r, corpus.val);
  // Resuming a finished run takes no step: its final validation loss is already on record.
  if (step !== before.step || !hooks.resumeFrom) await emit({ step, val_loss: finalValLoss });
  const total = seconds();
  if (hooks.checkpointPath) {
    await saveCheckpoint(hooks.checkpointPath, model, opt, r, { step, seconds: total }, baseDigest);
  }
  const bytesPerParameter = optimizerMemory(opt, model.namedParameters({ trainable: true })).bytesPerParameter;
  const state = stateReport(model, opt);
  return { model, metrics, finalValLoss, steps: step, seconds: total, bytesPerParameter, state };
}
