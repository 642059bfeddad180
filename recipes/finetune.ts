/**
 * Fine-tuning runs: a recipe whose `finetune.from` names a run folder starts
 * from that run's checkpoint. Its model section comes from that run's recipe
 * (a model key the recipe sets to another value is an error), the run's own
 * precision is dropped and the recipe's `precision:` applied, then
 * `finetune.method` says what trains: `full` (every parameter; with a QAT
 * preset this is QAT fine-tuning), `lora` (adapters on the f32 base, core's
 * `applyLora`) or `qlora` (adapters on a base frozen in `nf4-dq`, formats'
 * `applyQLora`). A run that was itself fine-tuned with adapters is merged
 * first (`mergeAdapters`, f32), so fine-tunes chain.
 *
 * The checkpoint of a LoRA run holds every parameter (the frozen f32 base
 * included); that of a QLoRA run holds all but the packed bases, which are
 * re-quantized from `finetune.from` when the run is resumed or loaded (the
 * same bits: quantization is deterministic), so its metadata records the
 * SHA-256 of that checkpoint (`finetune_base_sha256`) and a changed base is
 * an error rather than a silently different model.
 *
 * @module
 */
import { join } from "node:path";
import { applyLora, type GPT, Linear, type LoraConfig } from "@lowp/core";
import { applyQLora, frozenStateBytes, quantizedBaseOf } from "@lowp/formats";
import { type Optimizer, optimizerMemory } from "@lowp/optim";
import { ConfigError, givenKeys } from "./config.ts";
import type { LMRecipe } from "./schema.ts";
import { CHECKPOINT_FILE, checkRunDir, loadTrainedRun, recipeOfRun } from "./run_dir.ts";
import { applyRecipePrecision } from "./trainer.ts";

/** Checkpoint metadata key of the SHA-256 of the `finetune.from` checkpoint a fine-tune started from. */
export const BASE_DIGEST_KEY = "finetune_base_sha256";

/** Whether the recipe starts from another run (`finetune.from` set). */
export function isFinetune(r: LMRecipe): boolean {
  return r.finetune.from !== "";
}

/** The LoRA settings of a recipe's `finetune:` section (the adapters' seed is the recipe's). */
export function loraConfigOf(r: LMRecipe): LoraConfig {
  const f = r.finetune;
  const targets = f.target_modules.split(",").map((t) => t.trim()).filter((t) => t);
  return { r: f.r, alpha: f.alpha, dropout: f.dropout, targetModules: targets, seed: r.seed };
}

/**
 * Checks `finetune.from` (a run folder with a checkpoint and an LM recipe) and takes its model section into
 * `r`; `file` names the recipe in errors. A model key the recipe set (file or `--set`) to another value than
 * the run's is an error naming both values.
 */
export async function resolveFinetune(r: LMRecipe, file: string): Promise<void> {
  const from = r.finetune.from;
  await checkRunDir(from, "finetune.from");
  const base = await recipeOfRun(from);
  if (base.kind !== "lm") throw new ConfigError(`finetune.from ${from}: a '${base.kind}' run has no language model`);
  const given = givenKeys(r);
  const conflicts = Object.entries(r.model).filter(([k, v]) =>
    (given === undefined || given.has(`model.${k}`)) && v !== (base.model as Record<string, unknown>)[k]
  ).map(([k, v]) => `model.${k} is ${v} here but ${(base.model as Record<string, unknown>)[k]} in ${from}`);
  if (conflicts.length) {
    throw new ConfigError(
      `${file}: ${conflicts.join("; ")}: a fine-tune takes its model from finetune.from (leave model: out)`,
    );
  }
  r.model = { ...base.model };
}

/** SHA-256 of a file, hex. */
async function digestOf(path: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The model a fine-tuning recipe trains, and the digest of the checkpoint it came from. */
export interface FinetuneModel {
  /** The model, with its method applied (adapters, frozen parameters). */
  readonly model: GPT;
  /** SHA-256 of `finetune.from`'s checkpoint (recorded in the fine-tune's checkpoints as {@link BASE_DIGEST_KEY}). */
  readonly baseDigest: string;
}

/**
 * Builds the model of a fine-tuning recipe (whose model section {@link resolveFinetune} filled): the
 * `finetune.from` checkpoint (adapters merged), the recipe's precision, then the method. A target pattern
 * that matches nothing (or a QLoRA target whose width NF4 cannot block) is a {@link ConfigError}.
 */
export async function buildFinetuneModel(r: LMRecipe): Promise<FinetuneModel> {
  const from = r.finetune.from;
  const { model } = await loadTrainedRun(from, { what: "finetune.from", merge: true });
  try {
    applyRecipePrecision(model, r);
    const method = r.finetune.method;
    try {
      if (method === "lora") applyLora(model, loraConfigOf(r));
      if (method === "qlora") applyQLora(model, loraConfigOf(r));
    } catch (e) {
      throw new ConfigError(`finetune (method ${method}): ${(e as Error).message}`);
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, baseDigest: await digestOf(join(from, CHECKPOINT_FILE)) };
}

/** Throws when a fine-tune's checkpoint was written from another `finetune.from` checkpoint than `digest`'s. */
export function checkBaseDigest(metadata: Readonly<Record<string, string>>, digest: string, path: string): void {
  const saved = metadata[BASE_DIGEST_KEY];
  if (saved !== undefined && saved !== digest) {
    throw new ConfigError(
      `${path}: written from another finetune.from checkpoint (SHA-256 ${saved.slice(0, 12)}…, now ` +
        `${digest.slice(0, 12)}…): that run changed since this one started`,
    );
  }
}

/** Parameters and bytes of a run's state (what `summary.json` reports). */
export interface StateReport {
  /** Trainable parameter values. */
  readonly trainable_parameters: number;
  /** Frozen parameter values (a QLoRA base counts its values, stored packed). */
  readonly frozen_parameters: number;
  /** Bytes of frozen state: f32 frozen parameters plus packed QLoRA bases. */
  readonly frozen_bytes: number;
  /** Bytes of trainable weights plus optimizer state (as `optimizerMemory` counts them). */
  readonly trainable_bytes: number;
  /** frozen_bytes + trainable_bytes. */
  readonly state_bytes: number;
}

/** The {@link StateReport} of a model and its optimizer (after a step, so lazily created state counts). */
export function stateReport(model: GPT, opt: Optimizer): StateReport {
  const trainable = model.namedParameters({ trainable: true });
  const mem = optimizerMemory(opt, trainable);
  const frozenBytes = frozenStateBytes(model), trainableBytes = mem.weightBytes + mem.stateBytes;
  const packedValues = model.namedModules().reduce(
    (n, [, m]) => n + (m instanceof Linear ? quantizedBaseOf(m)?.size ?? 0 : 0),
    0,
  );
  return {
    trainable_parameters: model.parameterCount({ trainable: true }),
    frozen_parameters: model.parameterCount({ trainable: false }) + packedValues,
    frozen_bytes: frozenBytes,
    trainable_bytes: trainableBytes,
    state_bytes: frozenBytes + trainableBytes,
  };
}
