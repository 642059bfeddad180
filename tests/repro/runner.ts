/**
 * Runs the suite's arms as ordinary LM recipes (the base recipe of the mode
 * plus the arm's overrides and a seed) and writes one folder per arm and seed:
 * `recipe.json`, `metrics.jsonl` and `summary.json`. An arm shared by several
 * findings (f32) runs once per seed.
 *
 * @module
 */
import { join } from "node:path";
import { checkLMRecipe, LM_SCHEMA, type LMRecipe, loadCorpus, parseRecipe, trainLM } from "@lowp/recipes";
import type { Arm, Finding, Mode } from "./finding.ts";
import { BASE_RECIPES } from "./findings.ts";

/** One run: an arm at a seed. */
export interface Job {
  /** The arm. */
  readonly arm: Arm;
  /** Its seed. */
  readonly seed: number;
}

/** What a run folder's `summary.json` holds. */
export interface RunSummary {
  /** Arm name. */
  readonly arm: string;
  /** Seed. */
  readonly seed: number;
  /** `quick` or `full`. */
  readonly mode: Mode;
  /** Where the text came from. */
  readonly corpus: string;
  /** Final validation loss. */
  readonly final_val_loss: number;
  /** Mean training tokens/s over the logged intervals. */
  readonly tokens_per_s: number;
  /** Weights + optimizer state per parameter, as if packed. */
  readonly bytes_per_parameter: number;
  /** Wall-clock seconds. */
  readonly seconds: number;
}

/** The suite's run settings. */
export interface SuiteOptions {
  /** `quick` (one short run per arm) or `full`. */
  readonly mode: Mode;
  /** Seeds per arm. */
  readonly seeds: number;
  /** A text file to train on instead of the Brown corpus. */
  readonly corpus?: string;
  /** Backend override (`cpu`, `webgpu`, `auto`). */
  readonly backend?: string;
}

/** Every (arm, seed) of the findings, each once, in a fixed order (what `--shard` splits). */
export function jobsOf(findings: readonly Finding[], seeds: number): Job[] {
  const arms = new Map<string, Arm>();
  for (const f of findings) {
    for (const a of f.arms) {
      const seen = arms.get(a.name);
      if (seen && JSON.stringify(seen.set) !== JSON.stringify(a.set)) {
        throw new Error(`repro: arm '${a.name}' is defined twice with different settings`);
      }
      arms.set(a.name, a);
    }
  }
  return [...arms.values()].flatMap((arm) => Array.from({ length: seeds }, (_, seed) => ({ arm, seed })));
}

/** The jobs of shard `index` of `count` (every count-th job from `index`). */
export function shardOf<T>(jobs: readonly T[], index: number, count: number): T[] {
  if (!(Number.isInteger(count) && count >= 1 && Number.isInteger(index) && index >= 0 && index < count)) {
    throw new Error(`repro: --shard ${index}/${count}: expected i/n with 0 <= i < n`);
  }
  return jobs.filter((_, j) => j % count === index);
}

/** The resolved recipe of a job. */
export function recipeOf(job: Job, opts: SuiteOptions): LMRecipe {
  const overrides: Record<string, string> = { ...job.arm.set, seed: String(job.seed) };
  if (opts.corpus) Object.assign(overrides, { "data.corpus": "file", "data.path": opts.corpus });
  if (opts.backend) overrides.backend = opts.backend;
  const file = `repro ${opts.mode} arm ${job.arm.name}`;
  const r = parseRecipe(BASE_RECIPES[opts.mode], LM_SCHEMA, file, overrides) as LMRecipe;
  checkLMRecipe(r, file);
  return { ...r, name: `${job.arm.name}-s${job.seed}` };
}

/** The folder of a job's run inside the suite's output folder. */
export function runDir(out: string, job: Job): string {
  return join(out, `${job.arm.name}-s${job.seed}`);
}

/** Trains one job and writes its run folder; returns its summary. */
export async function runJob(job: Job, opts: SuiteOptions, out: string): Promise<RunSummary> {
  const r = recipeOf(job, opts);
  const corpus = await loadCorpus({
    corpus: r.data.corpus,
    path: r.data.path,
    url: r.data.url,
    maxBytes: r.data.max_bytes,
    valFraction: r.data.val_fraction,
  });
  const dir = runDir(out, job);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "recipe.json"), JSON.stringify(r, null, 2));
  const result = await trainLM(r, corpus);
  await Deno.writeTextFile(join(dir, "metrics.jsonl"), result.metrics.map((m) => JSON.stringify(m) + "\n").join(""));
  const rates = result.metrics.flatMap((m) => m.tokens_per_s === undefined ? [] : [m.tokens_per_s]);
  const summary: RunSummary = {
    arm: job.arm.name,
    seed: job.seed,
    mode: opts.mode,
    corpus: corpus.source,
    final_val_loss: result.finalValLoss,
    tokens_per_s: rates.reduce((a, b) => a + b, 0) / Math.max(1, rates.length),
    bytes_per_parameter: result.bytesPerParameter,
    seconds: result.seconds,
  };
  await Deno.writeTextFile(join(dir, "summary.json"), JSON.stringify(summary, null, 2));
  result.model.dispose();
  return summary;
}
