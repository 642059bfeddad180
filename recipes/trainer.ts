/**
 * The language-model training loop behind LM recipes: builds the model and
 * optimizer from a resolved recipe, trains with no readback inside a step,
 * evaluates on held-out bytes, and (given a run folder) appends metrics and
 * writes checkpoints so an interrupted run loses at most the steps since the
 * last checkpoint and can be resumed bit-exactly.
 *
 * @module
 */
import { assignByName, backward, GPT, loadTensors, noGrad, saveTensors, type Tensor, tensor, tidy } from "@lowp/core";
import { AdamW, cosineSchedule, gradClip, type Optimizer, SGD } from "@lowp/optim";
import { type Corpus, sampleBatch, TRAIN_STREAM, VAL_STREAM } from "./data.ts";
import type { LMRecipe } from "./schema.ts";

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
  /** Called after each step with the step count (progress display). */
  onStep?: (step: number, latest: MetricsRecord) => void;
  /** Checkpoint path; written atomically at `checkpoint_every` and at the end. */
  checkpointPath?: string;
  /** Resume from this checkpoint (model, optimizer state, step). */
  resumeFrom?: string;
  /** Polled between steps; when it returns true the loop checkpoints and stops. */
  shouldStop?: () => boolean;
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
}

/** Builds the GPT a recipe describes. */
export function buildModel(r: LMRecipe): GPT {
  const m = r.model;
  return new GPT({
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
}

function buildOptimizer(r: LMRecipe, model: GPT): Optimizer & { load?: AdamW["load"] } {
  const t = r.train;
  if (t.optimizer === "sgd") {
    return new SGD(model.namedParameters(), { momentum: t.momentum, weightDecay: t.weight_decay });
  }
  return new AdamW(model.namedParameters(), { betas: [t.beta1, t.beta2], weightDecay: t.weight_decay });
}

/** Mean validation loss over `eval_batches` fixed batches. */
export async function evaluate(model: GPT, r: LMRecipe, val: Uint8Array): Promise<number> {
  const losses: Tensor[] = [];
  for (let i = 0; i < r.train.eval_batches; i++) {
    const { inputs, targets } = sampleBatch(val, r.train.batch_size, r.model.context, r.seed, VAL_STREAM, i);
    const shape = [r.train.batch_size, r.model.context];
    losses.push(noGrad(() => tidy(() => model.loss(tensor(inputs, { shape }), tensor(targets, { shape })))));
  }
  let total = 0;
  for (const l of losses) {
    total += await l.item();
    l.dispose();
  }
  return total / losses.length;
}

const OPTIM_PREFIX = "optimizer.";

async function saveCheckpoint(path: string, model: GPT, opt: Optimizer, step: number): Promise<void> {
  const state = opt.state().map(([n, t]) => [OPTIM_PREFIX + n, t] as const);
  await saveTensors(path, [...model.namedParameters(), ...state], {
    step: String(step),
    optimizer_steps: String(opt.steps),
  });
}

async function resume(path: string, model: GPT, opt: Optimizer & { load?: AdamW["load"] }): Promise<number> {
  const { tensors, metadata } = await loadTensors(path);
  assignByName(model.namedParameters(), tensors, path, true);
  const state = new Map(
    [...tensors].filter(([n]) => n.startsWith(OPTIM_PREFIX)).map(([n, t]) => [n.slice(OPTIM_PREFIX.length), t]),
  );
  if (!opt.load) throw new Error(`${path}: resuming is supported for the adamw optimizer only`);
  opt.load(state, Number(metadata.optimizer_steps ?? metadata.step));
  const step = Number(metadata.step);
  if (!Number.isInteger(step)) throw new Error(`${path}: checkpoint metadata has no integer 'step'`);
  return step;
}

/**
 * Trains the model a recipe describes on `corpus`.
 * The loss is read back only every `log_every` steps.
 */
export async function trainLM(r: LMRecipe, corpus: Corpus, hooks: TrainHooks = {}): Promise<TrainResult> {
  const t = r.train;
  const model = buildModel(r);
  const opt = buildOptimizer(r, model);
  const schedule = cosineSchedule({ lr: t.lr, warmup: t.warmup, total: t.steps, minLr: t.min_lr });
  const shape = [t.batch_size, r.model.context];
  const metrics: MetricsRecord[] = [];
  const emit = async (m: MetricsRecord) => {
    metrics.push(m);
    await hooks.onMetrics?.(m);
  };
  let step = hooks.resumeFrom ? await resume(hooks.resumeFrom, model, opt) : 0;
  let clock = performance.now(), tokensSince = 0;
  let latest: MetricsRecord = { step };
  while (step < t.steps) {
    if (hooks.shouldStop?.()) break;
    const lr = schedule(step);
    const { inputs, targets } = sampleBatch(corpus.train, t.batch_size, r.model.context, r.seed, TRAIN_STREAM, step);
    const loss = tidy(() => {
      const loss = model.loss(tensor(inputs, { shape }), tensor(targets, { shape }));
      backward(loss);
      // The clipping factor goes to the optimizer, which applies it inside its update (AdamW: in its kernel).
      opt.step(lr, t.grad_clip > 0 ? { gradScale: gradClip(model.parameters(), t.grad_clip).scale } : {});
      model.zeroGrad();
      return loss;
    });
    step++;
    tokensSince += inputs.length;
    if (step % t.log_every === 0 || step === t.steps) {
      const value = await loss.item();
      const now = performance.now();
      latest = { step, loss: value, lr, tokens_per_s: (tokensSince * 1000) / (now - clock) };
      clock = now;
      tokensSince = 0;
      await emit(latest);
    }
    loss.dispose();
    if (step % t.eval_every === 0 && step !== t.steps) {
      await emit({ step, val_loss: await evaluate(model, r, corpus.val) });
    }
    if (hooks.checkpointPath && t.checkpoint_every && step % t.checkpoint_every === 0) {
      await saveCheckpoint(hooks.checkpointPath, model, opt, step);
    }
    hooks.onStep?.(step, latest);
  }
  const finalValLoss = await evaluate(model, r, corpus.val);
  await emit({ step, val_loss: finalValLoss });
  if (hooks.checkpointPath) await saveCheckpoint(hooks.checkpointPath, model, opt, step);
  return { model, metrics, finalValLoss, steps: step };
}
