/**
 * `deno task train <recipe.yaml> [--backend cpu|webgpu|auto] [--set key=value ...] [--resume RUN_DIR]`
 *
 * Runs a recipe (the trainer its `kind:` selects; `lm` is the only kind so
 * far) and writes a run folder: `config.json` (the resolved recipe plus
 * backend, adapter and data source), `metrics.jsonl` (appended as the run
 * goes), `checkpoint.safetensors` (model + optimizer state, atomic writes),
 * `loss.svg` and `summary.json`. Ctrl-C stops at the next step boundary after
 * writing a checkpoint, a second Ctrl-C aborts. `--resume RUN_DIR` continues
 * bit-exactly, with the recipe from the run folder when none is given (its
 * newest `config.resumed-*.json`, else `config.json`); the metrics, plot and
 * summary then cover the whole run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { backendChoiceFromEnv, useBackend } from "@lowp/core";
import { ConfigError, describeSchema, runCli } from "./config.ts";
import { unigramBaseline } from "./data.ts";
import { loadAnyRecipe, RECIPE_KINDS, type RecipeKindName } from "./kinds.ts";
import { lineChart } from "./plot.ts";
import { formatDuration, Progress } from "./progress.ts";
import type { LMRecipe } from "./schema.ts";
import { precisionName, precisionOf } from "./precision.ts";
import { checkRunDir, recipeCorpus, recipeOfRun } from "./run_dir.ts";
import { buildFinetuneModel, isFinetune, resolveFinetune } from "./finetune.ts";
import { buildModel, type MetricsRecord, NonFiniteLossError, trainLM, type TrainResult } from "./trainer.ts";

const USAGE = `usage: deno task train RECIPE.yaml [--backend cpu|webgpu|auto] [--set key=value ...] [--resume RUN_DIR]
       deno task train --resume RUN_DIR [--set key=value ...]   (the recipe comes from RUN_DIR/config.json)

${
  Object.entries(RECIPE_KINDS).map(([kind, { schema }]) => `Recipe keys (kind: ${kind}):\n${describeSchema(schema)}`)
    .join("\n\n")
}`;

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

/** Command-line options shared by every kind's runner. */
interface RunOptions {
  /** `--backend`, if given. */
  backend?: string;
  /** `--resume RUN_DIR`, if given. */
  resume?: string;
  /** Where the recipe came from (for messages). */
  file: string;
}

/** The metrics records already in `path` (empty when there is none). */
async function readMetrics(path: string): Promise<MetricsRecord[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as MetricsRecord);
}

/** Writes `text` to `path` through a temporary file and a rename, so a crash never leaves half a file. */
async function writeAtomic(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path + ".tmp", text);
  await Deno.rename(path + ".tmp", path);
}

/** Trains an LM recipe and writes (or, with `--resume`, continues) its run folder. */
async function runLM(recipe: LMRecipe, opts: RunOptions): Promise<void> {
  // The precision (and a fine-tune's start and adapters) must fit before anything is written: build once.
  if (isFinetune(recipe)) {
    await resolveFinetune(recipe, opts.file);
    (await buildFinetuneModel(recipe)).model.dispose();
  } else buildModel(recipe).dispose();
  const backend = await useBackend(backendChoiceFromEnv(opts.backend ?? Deno.env.get("BACKEND") ?? recipe.backend));
  const corpus = await recipeCorpus(recipe);
  const baseline = unigramBaseline(corpus.train, corpus.val);
  const dir = opts.resume ?? await freshRunDir(recipe.out_dir, `${recipe.name}-${timestamp()}`);
  const checkpoint = join(dir, "checkpoint.safetensors");
  const resumeFrom = opts.resume ? checkpoint : undefined;
  const writeConfig = (name: string) =>
    Deno.writeTextFile(
      join(dir, name),
      JSON.stringify(
        {
          recipe,
          precision: precisionOf(recipe.precision),
          backend: backend.name,
          adapter: backend.adapter,
          data_source: corpus.source,
          unigram_baseline: baseline,
        },
        null,
        2,
      ),
    );
  if (!resumeFrom) await writeConfig("config.json");
  const metricsPath = join(dir, "metrics.jsonl");
  console.error(
    `run ${dir} | backend ${backend.name} (${backend.adapter}) | data ${corpus.source}: ` +
      `${corpus.train.length} train / ${corpus.val.length} val bytes | unigram baseline ${baseline.toFixed(4)}`,
  );

  // First Ctrl-C: stop after the current step with a checkpoint. Second: abort at once.
  let stop = false;
  const onSignal = () => {
    if (stop) {
      console.error("\naborted");
      Deno.exit(130);
    }
    stop = true;
    console.error("\nstopping after this step; writing a checkpoint (Ctrl-C again to abort)");
  };
  Deno.addSignalListener("SIGINT", onSignal);
  let progress = new Progress({ total: recipe.train.steps, label: recipe.name });
  let earlier: MetricsRecord[] = [];
  let result: TrainResult;
  try {
    result = await trainLM(recipe, corpus, {
      checkpointPath: checkpoint,
      resumeFrom,
      shouldStop: () => stop,
      onStart: async (step) => {
        progress = new Progress({ total: recipe.train.steps, label: recipe.name, start: step });
        if (!resumeFrom) return;
        // The checkpoint fits: record this part's settings, and forget metrics logged after the checkpoint
        // (a run killed between checkpoints logs steps that are now taken again).
        await writeConfig(`config.resumed-${timestamp()}.json`);
        const all = await readMetrics(metricsPath);
        earlier = all.filter((m) => m.step <= step);
        if (earlier.length !== all.length) {
          await writeAtomic(
            metricsPath,
            earlier.map((m) => JSON.stringify(m) + "\n").join(""),
          );
        }
        console.error(`resumed at step ${step} of ${recipe.train.steps}`);
      },
      onMetrics: (m) => Deno.writeTextFile(metricsPath, JSON.stringify(m) + "\n", { append: true }),
      onStep: (step, m) => {
        const fields: Record<string, number> = {};
        if (m.loss !== undefined) fields.loss = m.loss;
        if (m.tokens_per_s !== undefined) fields["tok/s"] = Math.round(m.tokens_per_s);
        progress.update(step, fields);
      },
    });
  } catch (e) {
    if (!(e instanceof NonFiniteLossError)) throw e;
    Deno.removeSignalListener("SIGINT", onSignal);
    await writeLossPlot(dir, recipe.name, await readMetrics(metricsPath), baseline);
    e.message += e.checkpoint
      ? `. Change what diverged and go on from there: deno task train --resume ${dir} --set train.lr=...`
      : "";
    throw e;
  }
  Deno.removeSignalListener("SIGINT", onSignal);
  await writeLossPlot(dir, recipe.name, [...earlier, ...result.metrics], baseline);
  const summary = {
    steps: result.steps,
    final_val_loss: result.finalValLoss,
    unigram_baseline: baseline,
    seconds: result.seconds,
    backend: backend.name,
    adapter: backend.adapter,
    stopped_early: result.steps < recipe.train.steps,
    precision: precisionName(recipe.precision),
    optimizer: recipe.train.optimizer,
    weight_format: recipe.train.weight_format || "f32",
    bytes_per_parameter: result.bytesPerParameter,
    ...(isFinetune(recipe)
      ? {
        finetune: recipe.finetune,
        start_val_loss: [...earlier, ...result.metrics].find((m) => m.step === 0 && m.val_loss !== undefined)
          ?.val_loss,
      }
      : {}),
    ...result.state,
  };
  await Deno.writeTextFile(join(dir, "summary.json"), JSON.stringify(summary, null, 2));
  console.error(
    `done: ${result.steps} steps in ${formatDuration(summary.seconds)} | validation loss ${
      result.finalValLoss.toFixed(4)
    } ` +
      `vs unigram ${baseline.toFixed(4)} nats/byte | ${dir}`,
  );
}

/** The trainer of each kind. */
const RUNNERS = { lm: runLM } satisfies Record<RecipeKindName, (r: LMRecipe, opts: RunOptions) => Promise<void>>;

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
  if (values.help) return console.log(USAGE);
  if (positionals.length > 1 || (positionals.length === 0 && !values.resume)) {
    console.error(USAGE);
    throw new ConfigError(
      positionals.length > 1
        ? `expected one recipe, got ${positionals.length}: ${positionals.join(" ")}`
        : "no recipe: give RECIPE.yaml, or --resume RUN_DIR to continue a run",
    );
  }
  const overrides = parseOverrides(values.set);
  if (values.resume) await checkRunDir(values.resume, "--resume");
  const recipe = positionals.length
    ? await loadAnyRecipe(positionals[0], overrides)
    : await recipeOfRun(values.resume!, overrides);
  const file = positionals[0] ?? join(values.resume!, "config.json");
  await RUNNERS[recipe.kind](recipe, { backend: values.backend, resume: values.resume, file });
}

if (import.meta.main) await runCli(main, { multiline: true });
