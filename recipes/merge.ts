/**
 * `deno task merge RUN_DIR [--requantize FORMAT] [--out DIR] [--json]`
 *
 * Folds the LoRA / QLoRA adapters of a fine-tuned run into its base weights
 * (`mergeAdapters`: a QLoRA base is dequantized, `(α/r)·A·B` added) and writes
 * a plain run folder (default `RUN_DIR/merged`, or `RUN_DIR/merged-FORMAT`):
 * `checkpoint.safetensors` with the plain parameter names, `config.json`
 * whose recipe is the run's without `finetune.from` (so `loadTrainedRun`,
 * PTQ and another fine-tune read it as any run), and `report.json`.
 *
 * The report gives the validation loss of the adapter model and of the
 * merged one (equal within the matmul tolerance), and with `--requantize`
 * the QLoRA pitfall in numbers: re-quantizing the merged weights moves them
 * (relative L2 change against the f32 merge, over all merged weights) and
 * changes the validation loss.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { type GPT, type Linear, saveTensors, useBackend } from "@lowp/core";
import { mergeAdapters, parseFormat } from "@lowp/formats";
import { ConfigError, runCli } from "./config.ts";
import type { Corpus } from "./data.ts";
import { checkRunDir, loadTrainedRun, recipeCorpus, recipeOfRun } from "./run_dir.ts";
import { LM_SCHEMA, type LMRecipe } from "./schema.ts";
import { evaluate } from "./trainer.ts";

/** Options of {@link mergeRun}. */
export interface MergeRunOptions {
  /** Re-quantize the merged weights with this format along the input axis (e.g. `nf4-dq`); default f32. */
  readonly requantize?: string;
  /** The folder to write (default `RUN_DIR/merged` or `RUN_DIR/merged-FORMAT`); it must not exist. */
  readonly out?: string;
}

/** What {@link mergeRun} measured and wrote (`report.json`). */
export interface MergeReport {
  /** The fine-tuned run. */
  readonly run: string;
  /** The folder written. */
  readonly out: string;
  /** Its method (`lora` or `qlora`). */
  readonly method: string;
  /** The layers merged. */
  readonly layers: number;
  /** Validation loss of the adapter model. */
  readonly val_loss_adapters: number;
  /** Validation loss after merging in f32. */
  readonly val_loss_merged: number;
  /** The re-quantization format, or null. */
  readonly requantize: string | null;
  /** Validation loss after merging and re-quantizing (null without `requantize`). */
  readonly val_loss_requantized: number | null;
  /** ‖W_requantized − W_merged‖ / ‖W_merged‖ over all merged weights (null without `requantize`). */
  readonly weight_change: number | null;
}

/** The merged layers' weights, read back (for the weight change). */
async function mergedWeights(model: GPT, names: string[]): Promise<Float32Array[]> {
  const out = [];
  for (const name of names) out.push((await (model.getModule(name) as Linear).weight.data()) as Float32Array);
  return out;
}

/**
 * Merges a fine-tuned run's adapters (see the module doc) and writes the plain run folder; returns the
 * report. Throws before writing anything when the run has no adapters, the format is unknown or the output
 * folder exists.
 */
export async function mergeRun(dir: string, opts: MergeRunOptions = {}): Promise<MergeReport> {
  await checkRunDir(dir, "merge");
  const recipe = await recipeOfRun(dir) as LMRecipe;
  const method = recipe.finetune.from ? recipe.finetune.method : "none";
  if (method !== "lora" && method !== "qlora") {
    throw new ConfigError(`merge ${dir}: the run has no adapters (finetune.method ${method}); nothing to merge`);
  }
  if (opts.requantize) {
    try {
      parseFormat(opts.requantize);
    } catch (e) {
      throw new ConfigError(`merge --requantize: ${(e as Error).message}`);
    }
  }
  const out = opts.out ?? join(dir, opts.requantize ? `merged-${opts.requantize}` : "merged");
  if (await Deno.stat(out).then(() => true, () => false)) throw new ConfigError(`merge: ${out} exists already`);
  const corpus: Corpus = await recipeCorpus(recipe);
  const load = () => loadTrainedRun(dir, { what: "merge", keepPrecision: true });
  const { model, metadata } = await load();
  const valAdapters = await evaluate(model, recipe, corpus.val);
  const names = mergeAdapters(model);
  const valMerged = await evaluate(model, recipe, corpus.val);
  let final = model, valRequantized: number | null = null, weightChange: number | null = null;
  if (opts.requantize) {
    const f32 = await mergedWeights(model, names);
    model.dispose();
    final = (await load()).model;
    mergeAdapters(final, { requantize: opts.requantize });
    valRequantized = await evaluate(final, recipe, corpus.val);
    const q = await mergedWeights(final, names);
    let diff = 0, norm = 0;
    f32.forEach((w, k) => w.forEach((v, i) => (diff += (v - q[k][i]) ** 2, norm += v * v)));
    weightChange = Math.sqrt(diff / norm);
  }
  const report: MergeReport = {
    run: dir,
    out,
    method,
    layers: names.length,
    val_loss_adapters: valAdapters,
    val_loss_merged: valMerged,
    requantize: opts.requantize ?? null,
    val_loss_requantized: valRequantized,
    weight_change: weightChange,
  };
  const plainRecipe = { ...recipe, finetune: { ...defaultFinetune(), from: "" } };
  await Deno.mkdir(out, { recursive: true });
  await saveTensors(join(out, "checkpoint.safetensors"), final.namedParameters(), {
    step: metadata.step ?? "0",
    merged_from: dir,
    ...(opts.requantize ? { requantized: opts.requantize } : {}),
  });
  await Deno.writeTextFile(join(out, "config.json"), JSON.stringify({ recipe: plainRecipe, merged: report }, null, 2));
  await Deno.writeTextFile(join(out, "report.json"), JSON.stringify(report, null, 2));
  final.dispose();
  return report;
}

/** The `finetune:` section's defaults (a plain run's). */
function defaultFinetune(): LMRecipe["finetune"] {
  const fields = LM_SCHEMA.finetune.fields;
  return Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f.default])) as LMRecipe["finetune"];
}

const USAGE = "usage: deno task merge RUN_DIR [--requantize FORMAT] [--out DIR] [--json] [--backend cpu|webgpu|auto]";

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      requantize: { type: "string" },
      out: { type: "string" },
      json: { type: "boolean" },
      backend: { type: "string", default: "cpu" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(USAGE);
  if (positionals.length !== 1) throw new ConfigError(`expected one run folder\n${USAGE}`);
  await useBackend(values.backend as "cpu" | "webgpu" | "auto");
  const r = await mergeRun(positionals[0], { requantize: values.requantize, out: values.out });
  if (values.json) return console.log(JSON.stringify(r));
  const f = (v: number | null) => (v === null ? "-" : v.toFixed(6));
  console.log(`merged ${r.layers} layers of ${r.run} (${r.method}) into ${r.out}`);
  console.log(
    `val loss: adapters ${f(r.val_loss_adapters)} | merged ${f(r.val_loss_merged)}` +
      (r.requantize ? ` | merged + ${r.requantize} ${f(r.val_loss_requantized)}` : ""),
  );
  if (r.weight_change !== null) {
    console.log(`re-quantizing moved the merged weights by ${(100 * r.weight_change).toFixed(3)}% (relative L2)`);
  }
}

if (import.meta.main) await runCli(main);
