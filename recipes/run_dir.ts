/**
 * A finished (or stopped) run folder read back: its recipe, its model with
 * the checkpoint's weights, and calibration batches from its training split.
 * What resuming, post-training quantization and fine-tuning from a run share.
 *
 * @module
 */
import { join } from "node:path";
import { clone, type GPT, loadTensors, noGrad, type Tensor, tensor, tidy } from "@lowp/core";
import { AWQ_INPUT_SCALE, mergeAdapters, restoreAwqInputScales } from "@lowp/formats";
import { ConfigError } from "./config.ts";
import { type AnyRecipe, parseAnyRecipe } from "./kinds.ts";
import { type Corpus, loadCorpus, sampleBatch } from "./data.ts";
import type { LMRecipe } from "./schema.ts";
import { BUFFER_PREFIX, OPTIM_PREFIX } from "./run_state.ts";
import { buildModel } from "./trainer.ts";
import { buildFinetuneModel, checkBaseDigest, isFinetune } from "./finetune.ts";

/** The checkpoint file of a run folder. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";

/**
 * Checks that `dir` is a run folder with a checkpoint, before anything is
 * loaded or written; `what` names the option that gave it (`--resume`,
 * `finetune.from`, ...).
 */
export async function checkRunDir(dir: string, what: string): Promise<void> {
  const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
  if (!(await exists(dir))) throw new ConfigError(`${what} ${dir}: no such run folder`);
  if (!(await exists(join(dir, CHECKPOINT_FILE)))) {
    throw new ConfigError(`${what} ${dir}: no ${CHECKPOINT_FILE} there (the run stopped before writing one)`);
  }
}

/**
 * The recipe a run last ran with: from its newest `config.resumed-*.json`,
 * else `config.json`; checked like a recipe file (with `overrides` applied).
 */
export async function recipeOfRun(dir: string, overrides: Record<string, string> = {}): Promise<AnyRecipe> {
  const resumed: string[] = [];
  for await (const e of Deno.readDir(dir)) if (/^config\.resumed-.*\.json$/.test(e.name)) resumed.push(e.name);
  const path = join(dir, resumed.sort().at(-1) ?? "config.json");
  let recipe: unknown;
  try {
    recipe = JSON.parse(await Deno.readTextFile(path)).recipe;
  } catch (e) {
    throw new ConfigError(`${path}: cannot read the run's recipe: ${e instanceof Error ? e.message : e}`);
  }
  if (!recipe || typeof recipe !== "object") throw new ConfigError(`${path}: has no 'recipe' object`);
  return parseAnyRecipe(JSON.stringify(recipe, null, 2), path, overrides); // JSON is YAML
}

/**
 * One short line naming the first parameter the checkpoint lacks or holds
 * with another shape or dtype, or null when all fit.
 */
export function firstMismatch(params: [string, Tensor][], tensors: ReadonlyMap<string, Tensor>): string | null {
  const problems: string[] = [];
  for (const [name, p] of params) {
    const t = tensors.get(name);
    if (!t) problems.push(`${name} [${p.shape}] is missing from the checkpoint`);
    else if (t.shape.join() !== p.shape.join()) {
      problems.push(`${name} is [${t.shape}] in the checkpoint but [${p.shape}] in the recipe's model`);
    } else if (t.dtype !== p.dtype) {
      problems.push(`${name} is ${t.dtype} in the checkpoint but ${p.dtype} in the recipe's model`);
    }
  }
  const known = new Set(params.map(([n]) => n));
  for (const name of tensors.keys()) {
    if (!name.startsWith(OPTIM_PREFIX) && !name.startsWith(BUFFER_PREFIX) && !known.has(name)) {
      problems.push(`${name} [${tensors.get(name)!.shape}] is in the checkpoint but not in the recipe's model`);
    }
  }
  if (!problems.length) return null;
  return problems[0] + (problems.length > 1 ? ` (and ${problems.length - 1} more)` : "");
}

/** A trained model read back from its run folder. */
export interface TrainedRun {
  /** The run's recipe (its `precision:` is reset to f32 unless `keepPrecision`). */
  readonly recipe: LMRecipe;
  /** The model with the checkpoint's parameters (on the active backend). */
  readonly model: GPT;
  /** The checkpoint's metadata (step, optimizer, ...). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** Options of {@link loadTrainedRun}. */
export interface LoadRunOptions {
  /** Names the option that gave the folder in errors (`--resume`, `finetune.from`, ...; default `run`). */
  readonly what?: string;
  /** Keep the run's `precision:` (default: dropped, the model is plain f32). */
  readonly keepPrecision?: boolean;
  /**
   * A fine-tuned run's LoRA / QLoRA adapters are folded into the base (`mergeAdapters`, f32: a QLoRA base is
   * dequantized), so the model has plain parameter names; default: the adapters stay.
   */
  readonly merge?: boolean;
}

/**
 * Loads a run folder's recipe and checkpoint into a fresh model. The model
 * is plain f32 (the run's `precision:` dropped) unless `keepPrecision`:
 * post-training methods and fine-tuning choose their own. A fine-tuned run
 * is rebuilt from its `finetune.from` run (recipes/finetune.ts) and comes
 * with its adapters unless `merge`. Throws one error naming the folder and
 * the first tensor that does not fit the recipe.
 */
export async function loadTrainedRun(dir: string, opts: LoadRunOptions = {}): Promise<TrainedRun> {
  const what = opts.what ?? "run";
  await checkRunDir(dir, what);
  const any = await recipeOfRun(dir);
  if (any.kind !== "lm") throw new ConfigError(`${what} ${dir}: a '${any.kind}' run has no language model`);
  const recipe: LMRecipe = opts.keepPrecision
    ? any
    : { ...any, precision: { preset: "f32", skip: "", lsq: false, ste: "", roles: {} } };
  const path = join(dir, CHECKPOINT_FILE);
  const built = isFinetune(recipe) ? await buildFinetuneModel(recipe) : { model: buildModel(recipe), baseDigest: null };
  const model = built.model;
  const { tensors, metadata } = await loadTensors(path).catch((e) => {
    model.dispose();
    throw e;
  });
  try {
    const mismatch = firstMismatch(model.namedParameters(), tensors);
    if (mismatch) throw new ConfigError(`${path}: checkpoint does not match the run's recipe: ${mismatch}`);
    if (built.baseDigest) checkBaseDigest(metadata, built.baseDigest, path);
    for (const [name, p] of model.namedParameters()) p.assign(noGrad(() => clone(tensors.get(name)!)).keep());
    // Buffers: all of them with the run's precision (e.g. delayed scaling's histories); AWQ's input scales always.
    for (const [name, t] of tensors) {
      if (!name.startsWith(BUFFER_PREFIX) || !(opts.keepPrecision || name.endsWith(`.${AWQ_INPUT_SCALE}`))) continue;
      model.setBuffer(name.slice(BUFFER_PREFIX.length), noGrad(() => clone(t)));
    }
    restoreAwqInputScales(model);
    if (opts.merge) mergeAdapters(model);
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  return { recipe, model, metadata };
}

/** Philox stream of calibration sequences (distinct from training batches and validation). */
export const CALIBRATION_STREAM = 0x63616c69;

/**
 * `samples` calibration sequences of `context` bytes drawn from the training
 * split (seeded, so two methods given the same seed see the same data), as an
 * i32 [samples, context] tensor.
 */
export function calibrationTokens(train: Uint8Array, samples: number, context: number, seed: number): Tensor {
  if (!(Number.isInteger(samples) && samples >= 1)) {
    throw new Error(`calibration samples ${samples}: expected an integer >= 1`);
  }
  const { inputs } = sampleBatch(train, samples, context, seed, CALIBRATION_STREAM, 0);
  return tidy(() => tensor(inputs, { shape: [samples, context], dtype: "i32" }));
}

/** The corpus a recipe's `data:` section names, split as the run split it. */
export function recipeCorpus(r: LMRecipe): Promise<Corpus> {
  const d = r.data;
  return loadCorpus({ corpus: d.corpus, path: d.path, url: d.url, maxBytes: d.max_bytes, valFraction: d.val_fraction });
}
