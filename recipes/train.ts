/**
 * `deno task train <recipe.yaml> [--backend cpu|webgpu|auto] [--set key=value ...] [--resume RUN_DIR]`
 *
 * Runs an LM recipe and writes a run folder: `config.json` (the resolved
 * recipe plus backend, adapter and data source), `metrics.jsonl` (appended as
 * the run goes), `checkpoint.safetensors` (model + optimizer state, atomic
 * writes), `loss.svg` and `summary.json`. Ctrl-C stops at the next step
 * boundary after writing a checkpoint; `--resume` continues bit-exactly.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { backendChoiceFromEnv, useBackend } from "@lowp/core";
import { ConfigError, describeSchema, loadRecipe } from "./config.ts";
import { loadCorpus, unigramBaseline } from "./data.ts";
import { lineChart } from "./plot.ts";
import { formatDuration, Progress } from "./progress.ts";
import { checkLMRecipe, LM_SCHEMA, type LMRecipe } from "./schema.ts";
import { type MetricsRecord, trainLM } from "./trainer.ts";

const USAGE = `usage: deno task train RECIPE.yaml [--backend cpu|webgpu|auto] [--set key=value ...] [--resume RUN_DIR]

Recipe keys:
${describeSchema(LM_SCHEMA)}`;

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
}

/** Creates `<parent>/<base>` (or `<base>-2`, `-3`, … when taken): two runs never share a folder. */
async function freshRunDir(parent: string, base: string): Promise<string> {
  await Deno.mkdir(parent, { recursive: true });
  for (let i = 1;; i++) {
    const dir = join(parent, i === 1 ? base : `${base}-${i}`);
    try {
      await Deno.mkdir(dir);
      return dir;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
}

function parseOverrides(sets: string[]): Record<string, string> {
  return Object.fromEntries(sets.map((s) => {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--set '${s}': expected key=value (e.g. --set train.steps=50)`);
    return [s.slice(0, eq), s.slice(eq + 1)];
  }));
}

function writeLossPlot(dir: string, name: string, metrics: MetricsRecord[], baseline: number): Promise<void> {
  const train = metrics.filter((m) => m.loss !== undefined).map((m) => [m.step, m.loss!] as const);
  const val = metrics.filter((m) => m.val_loss !== undefined).map((m) => [m.step, m.val_loss!] as const);
  const svg = lineChart([
    { label: "train loss", color: "#1f77b4", points: train },
    { label: "validation loss", color: "#d62728", points: val },
  ], {
    title: `${name}: loss`,
    xLabel: "step",
    yLabel: "cross-entropy (nats/byte)",
    hlines: [{ y: baseline, label: "unigram baseline" }],
  });
  return Deno.writeTextFile(join(dir, "loss.svg"), svg);
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      backend: { type: "string" },
      set: { type: "string", multiple: true, default: [] },
      resume: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length !== 1) {
    console.log(USAGE);
    if (!values.help) Deno.exit(2);
    return;
  }
  const recipe = await loadRecipe(positionals[0], LM_SCHEMA, parseOverrides(values.set)) as unknown as LMRecipe;
  checkLMRecipe(recipe, positionals[0]);
  const backend = await useBackend(backendChoiceFromEnv(values.backend ?? Deno.env.get("BACKEND") ?? recipe.backend));
  const corpus = await loadCorpus({
    corpus: recipe.data.corpus,
    path: recipe.data.path,
    maxBytes: recipe.data.max_bytes,
    valFraction: recipe.data.val_fraction,
  });
  const baseline = unigramBaseline(corpus.train, corpus.val);
  const dir = values.resume ?? await freshRunDir(recipe.out_dir, `${recipe.name}-${timestamp()}`);
  const checkpoint = join(dir, "checkpoint.safetensors");
  const resumeFrom = values.resume ? checkpoint : undefined;
  await Deno.writeTextFile(
    join(dir, resumeFrom ? `config.resumed-${timestamp()}.json` : "config.json"),
    JSON.stringify(
      {
        recipe,
        backend: backend.name,
        adapter: backend.adapter,
        data_source: corpus.source,
        unigram_baseline: baseline,
      },
      null,
      2,
    ),
  );
  const metricsPath = join(dir, "metrics.jsonl");
  console.error(
    `run ${dir} | backend ${backend.name} (${backend.adapter}) | data ${corpus.source}: ` +
      `${corpus.train.length} train / ${corpus.val.length} val bytes | unigram baseline ${baseline.toFixed(4)}`,
  );

  let stop = false;
  const onSignal = () => {
    stop = true;
    console.error("\nstopping after this step; writing a checkpoint (Ctrl-C again to abort)");
    Deno.removeSignalListener("SIGINT", onSignal);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const progress = new Progress({ total: recipe.train.steps, label: recipe.name });
  const started = performance.now();
  const result = await trainLM(recipe, corpus, {
    checkpointPath: checkpoint,
    resumeFrom,
    shouldStop: () => stop,
    onMetrics: (m) => Deno.writeTextFile(metricsPath, JSON.stringify(m) + "\n", { append: true }),
    onStep: (step, m) => {
      const fields: Record<string, number> = {};
      if (m.loss !== undefined) fields.loss = m.loss;
      if (m.tokens_per_s !== undefined) fields["tok/s"] = Math.round(m.tokens_per_s);
      progress.update(step, fields);
    },
  });
  Deno.removeSignalListener("SIGINT", onSignal);
  await writeLossPlot(dir, recipe.name, result.metrics, baseline);
  const summary = {
    steps: result.steps,
    final_val_loss: result.finalValLoss,
    unigram_baseline: baseline,
    seconds: (performance.now() - started) / 1000,
    backend: backend.name,
    adapter: backend.adapter,
    stopped_early: result.steps < recipe.train.steps,
  };
  await Deno.writeTextFile(join(dir, "summary.json"), JSON.stringify(summary, null, 2));
  console.error(
    `done: ${result.steps} steps in ${formatDuration(summary.seconds)} | validation loss ${
      result.finalValLoss.toFixed(4)
    } ` +
      `vs unigram ${baseline.toFixed(4)} nats/byte | ${dir}`,
  );
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    // Recipe and data problems are the user's to fix: one line, no stack.
    const message = e instanceof Error ? e.message : String(e);
    console.error(`error: ${message}`);
    if (!(e instanceof ConfigError) && Deno.env.get("LOWP_DEBUG")) console.error(e);
    Deno.exit(1);
  }
}
