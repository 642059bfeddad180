/**
 * Runs the suite's arms as ordinary LM recipes (the base recipe of the mode
 * plus the arm's overrides and a seed) and writes one folder per arm and seed:
 * `recipe.json`, `metrics.jsonl` and `summary.json`. An arm shared by several
 * findings (f32) runs once per seed.
 *
 * Derived (post-training) arms run in the job of their base arm: a job is a
 * trained arm at a seed together with every selected arm derived from it,
 * run right after the base trains, on copies of its final model. Shards split
 * these jobs, so a derived arm always runs in the process that trained its
 * base: the base is trained once per seed, never retrained nor saved and
 * reloaded. A derived arm's folder holds only `summary.json` (with `from` and
 * its `metrics`).
 *
 * @module
 */
import { join } from "node:path";
import { Linear, type LinearOp } from "@lowp/core";
import { checkLMRecipe, type Corpus, LM_SCHEMA, type LMRecipe, loadCorpus, parseRecipe, trainLM } from "@lowp/recipes";
import {
  type BaseRun,
  type DerivedArm,
  type Finding,
  isDerived,
  type Mode,
  settingsOf,
  type TrainedArm,
} from "./finding.ts";
import { BASE_RECIPES } from "./findings.ts";
import { f32Recipe } from "./ptq_tools.ts";

/** One job: a trained arm at a seed, and the arms derived from its final model. */
export interface Job {
  /** The trained arm. */
  readonly arm: TrainedArm;
  /** Its seed. */
  readonly seed: number;
  /** Arms derived from this arm's final model at this seed, in the findings' order. */
  readonly derived: readonly DerivedArm[];
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
  /** A derived arm's base arm. */
  readonly from?: string;
  /** A derived arm's other numbers. */
  readonly metrics?: Readonly<Record<string, number>>;
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

/**
 * Every (trained arm, seed) of the findings, each once, in a fixed order (what `--shard` splits), each with the
 * arms derived from it. Throws on an arm defined twice differently, or a derived arm whose base no selected
 * finding trains.
 */
export function jobsOf(findings: readonly Finding[], seeds: number): Job[] {
  const trained = new Map<string, TrainedArm>(), derived = new Map<string, DerivedArm>();
  for (const f of findings) {
    for (const a of f.arms) {
      const seen = trained.get(a.name) ?? derived.get(a.name);
      const same = seen === a ||
        (seen && !isDerived(seen) && !isDerived(a) &&
          JSON.stringify([seen.set, seen.modes]) === JSON.stringify([a.set, a.modes]));
      if (seen && !same) throw new Error(`repro: arm '${a.name}' is defined twice with different settings`);
      if (isDerived(a)) derived.set(a.name, a);
      else trained.set(a.name, a);
    }
  }
  for (const d of derived.values()) {
    if (!trained.has(d.from)) {
      throw new Error(`repro: derived arm '${d.name}' starts from '${d.from}', which no selected finding trains`);
    }
  }
  const from = (arm: TrainedArm) => [...derived.values()].filter((d) => d.from === arm.name);
  return [...trained.values()].flatMap((arm) =>
    Array.from({ length: seeds }, (_, seed) => ({ arm, seed, derived: from(arm) }))
  );
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
  const overrides: Record<string, string> = { ...settingsOf(job.arm, opts.mode), seed: String(job.seed) };
  if (opts.corpus) Object.assign(overrides, { "data.corpus": "file", "data.path": opts.corpus });
  if (opts.backend) overrides.backend = opts.backend;
  const file = `repro ${opts.mode} arm ${job.arm.name}`;
  const r = parseRecipe(BASE_RECIPES[opts.mode], LM_SCHEMA, file, overrides) as LMRecipe;
  checkLMRecipe(r, file);
  return { ...r, name: `${job.arm.name}-s${job.seed}` };
}

/** The folder of an arm's run at a seed inside the suite's output folder. */
export function runDir(out: string, job: { readonly arm: { readonly name: string }; readonly seed: number }): string {
  return join(out, `${job.arm.name}-s${job.seed}`);
}

/**
 * Trains one job's arm, writes its run folder, then runs and writes each derived arm on the final model; returns
 * the summaries (the trained arm's first). `onSummary` hears each as it is written.
 */
export async function runJob(
  job: Job,
  opts: SuiteOptions,
  out: string,
  onSummary: (s: RunSummary) => void = () => {},
): Promise<RunSummary[]> {
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
  onSummary(summary);
  const summaries = [summary];
  try {
    const base: BaseRun = {
      model: result.model,
      recipe: f32Recipe(r),
      corpus,
      seed: job.seed,
      mode: opts.mode,
      valLoss: result.finalValLoss,
    };
    for (const arm of job.derived) {
      const s = await runDerived(arm, base, out, corpus);
      onSummary(s);
      summaries.push(s);
    }
  } finally {
    result.model.dispose();
  }
  return summaries;
}

/** Runs one derived arm on `base`, checks that it left the base model as it was, and writes its folder. */
export async function runDerived(arm: DerivedArm, base: BaseRun, out: string, corpus: Corpus): Promise<RunSummary> {
  const before = await fingerprint(base);
  const started = performance.now();
  const result = await arm.derive(base);
  const seconds = (performance.now() - started) / 1000;
  if (await fingerprint(base) !== before) {
    throw new Error(`repro: derived arm '${arm.name}' changed its base model '${arm.from}' (work on copyModel's copy)`);
  }
  const summary: RunSummary = {
    arm: arm.name,
    seed: base.seed,
    mode: base.mode,
    corpus: corpus.source,
    final_val_loss: result.valLoss,
    tokens_per_s: 0,
    bytes_per_parameter: 0,
    seconds,
    from: arm.from,
    metrics: result.metrics ?? {},
  };
  const dir = runDir(out, { arm, seed: base.seed });
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "summary.json"), JSON.stringify(summary, null, 2));
  return summary;
}

/** A digest of the base model's parameters and its linear layers' ops, to catch a derived arm that changed them. */
async function fingerprint(base: BaseRun): Promise<string> {
  const parts: string[] = [];
  for (const [name, p] of base.model.namedParameters()) {
    const data = await p.data();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    parts.push(`${name}:${p.shape}:${p.dtype}:${hash32(bytes)}`);
  }
  for (const [name, m] of base.model.namedModules()) if (m instanceof Linear) parts.push(`${name}:${opId(m.op)}`);
  return parts.join(";");
}

const opIds = new WeakMap<LinearOp, number>();
let opCount = 0;
function opId(op: LinearOp): number {
  if (!opIds.has(op)) opIds.set(op, ++opCount);
  return opIds.get(op)!;
}

/** FNV-1a over the bytes. */
function hash32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}
