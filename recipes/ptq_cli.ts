/**
 * `deno task ptq RUN_DIR --method rtn|gptq|awq --format F [--granularity channel|group:N] [--act-format F]
 * [--calib-samples N] [--seed S] [--skip PATTERN] [--block-size B] [--damp D] [--act-order] [--pack] [--json]
 * [--backend cpu|webgpu|auto] [--out DIR]`
 *
 * Post-training quantization of a run's checkpoint: loads the run's recipe
 * and weights, draws `--calib-samples` calibration sequences (default 128)
 * from the training split, quantizes every linear layer (the embedding and
 * tied head are no linear layer and stay f32; `--skip` keeps more in f32),
 * optionally quantizes every linear layer's input per tensor at run time
 * (`--act-format`, e.g. W8A8 with `--format int8 --act-format e4m3`), and
 * evaluates the validation loss before and after. Writes
 * `RUN_DIR/ptq-<method>-<format>[-g<N>][-a<act>]/` (or `--out`): a run folder
 * of its own (`config.json` and `checkpoint.safetensors` with the quantized
 * weights as f32 and AWQ's input scales as buffers, so `finetune.from` and
 * another `ptq` can start from it; with `--act-format` its recipe's
 * `precision:` quantizes the activations, which `loadTrainedRun(dir,
 * { keepPrecision: true })` applies),
 * `report.json`, and with `--pack` `weights.packed.safetensors` (the linear
 * weights as packed codes and scales, the layout of `deno task quantize
 * --pack`: the method's own codes and scales, so `restore` gives the
 * checkpoint's weights bit for bit; other tensors f32). Prints a per-layer table (layer-wise error
 * `‖XW − XŴ‖²/‖XW‖²` against RTN's on the same inputs) and the totals, or
 * `--json` one object. Bad input is one `error: ...` line, exit code 1, and
 * nothing is written; the folder appears only complete.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { backendChoiceFromEnv, useBackend } from "@lowp/core";
import {
  applyPrecision,
  pack,
  type PackedTensor,
  parseFormat,
  parseWeightSpec,
  type Quantized,
  restoreAwqInputScales,
  sharingText,
} from "@lowp/formats";
import type { LMRecipe } from "./schema.ts";
import type { PrecisionSection } from "./precision.ts";
import { ConfigError, runCli } from "./config.ts";

import { calibrationTokens, loadTrainedRun, recipeCorpus } from "./run_dir.ts";
import { evaluate } from "./trainer.ts";
import { activationOperand, checkPtqLayers, PTQ_METHODS, ptqLayers, type PtqMethod, quantizeModel } from "./ptq.ts";
import { type PtqSummary, ptqTable, writePtqFolder } from "./ptq_output.ts";

const USAGE = "usage: deno task ptq RUN_DIR --method rtn|gptq|awq --format F [--granularity channel|group:N] " +
  "[--act-format F] [--calib-samples N] [--seed S] [--skip PATTERN] [--block-size B] [--damp D] [--act-order] " +
  "[--pack] [--json] [--backend cpu|webgpu|auto] [--out DIR]";

function integer(value: string | undefined, flag: string, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min) throw new ConfigError(`${flag} '${value}': expected an integer >= ${min}`);
  return n;
}

/** The default output folder's name: `ptq-<method>-<format>[-g<N>][-a<act>]`. */
export function ptqFolderName(method: string, format: string, granularity?: string, actFormat?: string): string {
  const group = /^group:(\d+)$/.exec(granularity ?? "");
  return `ptq-${method}-${format}${group ? `-g${group[1]}` : ""}${actFormat ? `-a${actFormat}` : ""}`;
}

async function main(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        method: { type: "string" },
        format: { type: "string" },
        granularity: { type: "string" },
        "act-format": { type: "string" },
        "calib-samples": { type: "string" },
        seed: { type: "string" },
        skip: { type: "string" },
        "block-size": { type: "string" },
        damp: { type: "string" },
        "act-order": { type: "boolean", default: false },
        pack: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        backend: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (${USAGE})`);
  }
  const { values: v, positionals } = parsed;
  if (v.help) {
    console.log(USAGE);
    return;
  }
  if (positionals.length !== 1) throw new ConfigError(`expected one RUN_DIR, got ${positionals.length} (${USAGE})`);
  const dir = positionals[0];
  if (!v.method || !(PTQ_METHODS as readonly string[]).includes(v.method)) {
    throw new ConfigError(`--method '${v.method ?? ""}': expected one of ${PTQ_METHODS.join(", ")}`);
  }
  const method = v.method as PtqMethod;
  if (!v.format) throw new ConfigError(`--format is required (${USAGE})`);
  const spec = tryConfig(() => parseWeightSpec(v.format!, v.granularity));
  const actFormat = v["act-format"] === undefined ? undefined : tryConfig(() => parseFormat(v["act-format"]!).name);
  const samples = integer(v["calib-samples"], "--calib-samples", 1, 128);
  const seed = integer(v.seed, "--seed", 0, 0);
  const blockSize = integer(v["block-size"], "--block-size", 1, 128);
  const damp = v.damp === undefined ? 0.01 : Number(v.damp);
  if (!(damp > 0 && damp < 1)) {
    throw new ConfigError(`--damp '${v.damp}': expected a fraction of the mean diagonal in (0, 1)`);
  }
  if (method !== "gptq" && (v["act-order"] || v["block-size"] !== undefined || v.damp !== undefined)) {
    throw new ConfigError(`--act-order, --block-size and --damp are GPTQ's options; --method is ${method}`);
  }
  const backendChoice = tryConfig(() => backendChoiceFromEnv(v.backend ?? Deno.env.get("BACKEND")));

  const backend = await useBackend(backendChoice);
  const { recipe, model } = await loadTrainedRun(dir, { what: "ptq" });
  const layers = ptqLayers(model, v.skip);
  tryConfig(() => checkPtqLayers(layers, spec, method));
  const out = v.out ?? join(dir, ptqFolderName(method, spec.format, v.granularity, actFormat));
  const corpus = await recipeCorpus(recipe);
  const calibration = calibrationTokens(corpus.train, samples, recipe.model.context, seed);
  const started = performance.now();
  const valBefore = await evaluate(model, recipe, corpus.val);
  console.error(
    `ptq ${method} ${spec.format} ${sharingText(spec)}${actFormat ? ` act ${actFormat}` : ""} | ${dir} | ` +
      `${samples} calibration sequences of ${recipe.model.context} bytes | ${backend.name} (${backend.adapter}) | ` +
      `val loss before ${valBefore.toFixed(4)}`,
  );
  const records = new Map<string, PackedTensor>(); // what --pack stores, and the bytes
  const reports = await quantizeModel(model, {
    method,
    spec,
    calibration,
    skip: v.skip,
    gptq: { blockSize, dampPercent: damp, actOrder: v["act-order"] },
    onLayer: (r) =>
      console.error(`  ${r.name}: rel err ${r.relError.toExponential(3)} (rtn ${r.rtnRelError.toExponential(3)})`),
    onMessage: (text) => console.error(`  ${text}`),
    onRecord: async (layer: string, record: Quantized) => {
      records.set(`${layer}.weight`, await pack(record));
    },
  });
  if (actFormat) {
    applyPrecision(model, { forward: { input: activationOperand(actFormat) } }, { skip: v.skip });
    restoreAwqInputScales(model); // AWQ's input scales wrap the new op again
  }
  const valAfter = await evaluate(model, recipe, corpus.val);
  const summary: PtqSummary = {
    run: dir,
    out,
    method,
    format: spec.format,
    granularity: sharingText(spec),
    act_format: actFormat ?? null,
    calib_samples: samples,
    seed,
    ...(method === "gptq" ? { gptq: { block_size: blockSize, damp, act_order: v["act-order"] } } : {}),
    backend: { name: backend.name, adapter: backend.adapter },
    val_loss_before: valBefore,
    val_loss_after: valAfter,
    seconds: (performance.now() - started) / 1000,
    layers: reports,
    bytes: { f32: 0, quantized: 0 },
  };
  // The folder's recipe runs the activations as quantized here: `loadTrainedRun(out, { keepPrecision: true })`.
  const saved: LMRecipe = actFormat ? { ...recipe, precision: activationPrecision(actFormat, v.skip) } : recipe;
  const written = await writePtqFolder(out, saved, model, summary, { spec, pack: v.pack, skip: v.skip, records });
  calibration.dispose();
  model.dispose();
  console.log(v.json ? JSON.stringify(written) : ptqTable(written));
}

/** A `precision:` section quantizing every linear layer's input to `format` per tensor, as `--act-format` does. */
function activationPrecision(format: string, skip = ""): PrecisionSection {
  // Only the keys the operand needs: the folder's config.json is parsed again, with defaults, when it is read.
  const roles = { "forward.input": activationOperand(format) } as unknown as PrecisionSection["roles"];
  return { preset: "f32", skip, lsq: false, ste: "", roles };
}

function tryConfig<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof ConfigError ? e : new ConfigError((e as Error).message);
  }
}

if (import.meta.main) await runCli(main);
