/**
 * `deno task train` end to end: a run folder with every artefact, and bad
 * input that fails with one clear line and writes nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSafetensors } from "@lowp/core";

const TRAIN = new URL("../recipes/train.ts", import.meta.url).pathname;

async function train(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", TRAIN, ...args],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const TINY = [
  "--backend",
  "cpu",
  "--set",
  "model.d_model=16",
  "--set",
  "model.n_layers=1",
  "--set",
  "model.context=8",
  "--set",
  "train.steps=4",
  "--set",
  "train.warmup=1",
  "--set",
  "train.log_every=2",
  "--set",
  "train.eval_batches=1",
  "--set",
  "data.max_bytes=50000",
];

Deno.test("train CLI: a short run writes config, metrics, checkpoint, plot and summary", async () => {
  await withTempDir(async (dir) => {
    const { code, stderr } = await train(["recipes/tiny-brown.yaml", ...TINY, "--set", `out_dir=${dir}`]);
    assert.equal(code, 0, stderr);
    const [run] = [...Deno.readDirSync(dir)].map((e) => join(dir, e.name));
    const config = JSON.parse(await Deno.readTextFile(join(run, "config.json")));
    assert.equal(config.recipe.model.d_model, 16);
    assert.equal(config.backend, "cpu");
    const metrics = (await Deno.readTextFile(join(run, "metrics.jsonl"))).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(metrics.filter((m) => m.loss !== undefined).map((m) => m.step), [2, 4]);
    assert.ok(metrics.every((m) => Number.isFinite(m.loss ?? m.val_loss)));
    const ckpt = await readSafetensors(join(run, "checkpoint.safetensors"));
    assert.ok(ckpt.tensors.has("transformer.h.0.attn.c_attn.weight"));
    assert.ok(ckpt.tensors.has("optimizer.transformer.wte.weight/exp_avg"));
    assert.equal(ckpt.metadata.step, "4");
    assert.match(await Deno.readTextFile(join(run, "loss.svg")), /^<svg[\s\S]*polyline/);
    const summary = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
    assert.equal(summary.steps, 4);
    assert.match(stderr, /step 4\/4 \(100\.0%\)/, "progress reaches the last step");
  });
});

Deno.test("train CLI: a recipe error names file, line and key, and creates no run folder", async () => {
  await withTempDir(async (dir) => {
    const recipe = join(dir, "bad.yaml");
    await Deno.writeTextFile(recipe, `name: bad\nout_dir: ${dir}/runs\nmodel:\n  d_model: 64\n  n_layer: 2\n`);
    const { code, stderr } = await train([recipe, "--backend", "cpu"]);
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`${recipe}:5: model\\.n_layer: unknown key \\(did you mean 'n_layers'\\?\\)`));
    assert.equal(stderr.trim().split("\n").length, 1, "one line, no stack trace");
    assert.throws(() => Deno.statSync(join(dir, "runs")));
  });
});

Deno.test("train CLI: keys that contradict each other are reported before anything is written", async () => {
  await withTempDir(async (dir) => {
    const { code, stderr } = await train([
      "recipes/tiny-brown.yaml",
      "--set",
      "train.steps=4",
      "--set",
      `out_dir=${dir}/runs`,
    ]);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /recipes\/tiny-brown\.yaml: train\.warmup \(20\) must be smaller than train\.steps \(4\): lower it, e\.g\. --set train\.warmup=0/,
    );
    assert.throws(() => Deno.statSync(join(dir, "runs")));
  });
});

Deno.test("train CLI: a missing corpus file says where data can come from", async () => {
  await withTempDir(async (dir) => {
    const { code, stderr } = await train([
      "recipes/tiny-brown.yaml",
      "--backend",
      "cpu",
      "--set",
      "data.corpus=file",
      "--set",
      `data.path=${dir}/nope.txt`,
      "--set",
      `out_dir=${dir}/runs`,
    ]);
    assert.equal(code, 1);
    assert.match(stderr, /data\.path '.*nope\.txt' does not exist.*data\.corpus: brown/);
    assert.throws(() => Deno.statSync(join(dir, "runs")));
  });
});

/** The run folder the one run in `parent` wrote. */
function onlyRun(parent: string): string {
  const runs = [...Deno.readDirSync(parent)].map((e) => join(parent, e.name));
  assert.equal(runs.length, 1, `one run folder in ${parent}`);
  return runs[0];
}

async function readJsonl(path: string): Promise<Record<string, number>[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
}

/** The number of points of the loss plot's first curve (the training loss). */
async function trainCurvePoints(run: string): Promise<number> {
  const svg = await Deno.readTextFile(join(run, "loss.svg"));
  return svg.match(/<polyline[^>]*points="([^"]*)"/)![1].trim().split(" ").filter(Boolean).length;
}

Deno.test("train CLI: --resume without a recipe continues the run; plot, metrics and seconds cover every part", async () => {
  await withTempDir(async (dir) => {
    const first = await train([
      "recipes/tiny-brown.yaml",
      ...TINY,
      "--set",
      "train.steps=2",
      "--set",
      `out_dir=${dir}`,
    ]);
    assert.equal(first.code, 0, first.stderr);
    const run = onlyRun(dir);
    const before = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));

    const more = await train(["--resume", run, "--set", "train.steps=4"]);
    assert.equal(more.code, 0, more.stderr);
    assert.match(more.stderr, /resumed at step 2 of 4/);
    const metrics = await readJsonl(join(run, "metrics.jsonl"));
    assert.deepEqual(metrics.map((m) => [m.step, m.loss === undefined ? "val" : "loss"]), [
      [2, "loss"],
      [2, "val"],
      [4, "loss"],
      [4, "val"],
    ]);
    assert.equal(await trainCurvePoints(run), 2, "the plot shows steps 2 and 4");
    const after = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
    assert.equal(after.steps, 4);
    assert.ok(after.seconds > before.seconds, `seconds ${after.seconds} add the first part's ${before.seconds}`);

    // A finished run resumed: nothing new in metrics.jsonl, and the plot still has the whole run.
    const again = await train(["--resume", run]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /resumed at step 4 of 4/, "the newest config (steps 4) is used");
    assert.equal((await readJsonl(join(run, "metrics.jsonl"))).length, 4, "no duplicate final val_loss");
    assert.equal(await trainCurvePoints(run), 2);
    assert.ok(JSON.parse(await Deno.readTextFile(join(run, "summary.json"))).seconds >= after.seconds);
  });
});

Deno.test("train CLI: --resume errors are one short line and leave the run folder as it was", async () => {
  await withTempDir(async (dir) => {
    const missing = await train(["--resume", join(dir, "nonexistent")]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim(), `error: --resume ${join(dir, "nonexistent")}: no such run folder`);

    const none = await train([]);
    assert.equal(none.code, 1);
    assert.match(none.stderr.trim().split("\n").at(-1)!, /^error: no recipe: give RECIPE\.yaml, or --resume RUN_DIR/);

    const ok = await train([
      "recipes/tiny-brown.yaml",
      ...TINY,
      "--set",
      "train.steps=2",
      "--set",
      `out_dir=${dir}/runs`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const run = onlyRun(`${dir}/runs`);
    const files = [...Deno.readDirSync(run)].map((e) => e.name).sort();
    const bigger = await train(["recipes/tiny-brown.yaml", ...TINY, "--set", "model.d_model=32", "--resume", run]);
    assert.equal(bigger.code, 1);
    const error = bigger.stderr.trim().split("\n").at(-1)!;
    assert.match(
      error,
      /checkpoint does not match the recipe's model: transformer\.wte\.weight is \[256,16\] in the checkpoint but \[256,32\] in the recipe's model \(and \d+ more\)$/,
    );
    assert.ok(error.length < 300, `${error.length} characters`);
    assert.deepEqual([...Deno.readDirSync(run)].map((e) => e.name).sort(), files, "no config.resumed-*.json left");
  });
});

/** Starts a long run and returns it once its first progress line shows training under way. */
async function startLongRun(dir: string, evalBatches: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      TRAIN,
      "recipes/tiny-brown.yaml",
      ...TINY,
      "--set",
      "train.steps=1000000",
      "--set",
      "train.log_every=1000000", // the loss is never read back: stopping must not wait for a log step
      "--set",
      "train.eval_every=1000000",
      "--set",
      `train.eval_batches=${evalBatches}`,
      "--set",
      `out_dir=${dir}`,
    ],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  while (!/step \d+\/1000000/.test(stderr)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the run ended before training: ${stderr}`);
    stderr += value;
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return stderr;
      stderr += value;
    }
  })();
  const guard = setTimeout(() => child.kill("SIGKILL"), 120_000); // a run that ignores Ctrl-C fails, not hangs
  return {
    child,
    stderr: () => stderr,
    finish: async () => {
      const status = await child.status;
      clearTimeout(guard);
      return { code: status.code, stderr: await rest };
    },
  };
}

Deno.test("train CLI: Ctrl-C stops after the current step with a checkpoint, not at a log step", async () => {
  await withTempDir(async (dir) => {
    const run = await startLongRun(dir, 1);
    run.child.kill("SIGINT");
    const { code, stderr } = await run.finish();
    assert.equal(code, 0, stderr);
    const folder = onlyRun(dir);
    const summary = JSON.parse(await Deno.readTextFile(join(folder, "summary.json")));
    assert.ok(summary.stopped_early && summary.steps > 0 && summary.steps < 1000000, JSON.stringify(summary));
    const ckpt = await readSafetensors(join(folder, "checkpoint.safetensors"));
    assert.equal(ckpt.metadata.step, String(summary.steps), "the checkpoint holds the last step taken");
  });
});

Deno.test("train CLI: a second Ctrl-C aborts at once", async () => {
  await withTempDir(async (dir) => {
    const run = await startLongRun(dir, 1000); // a long final evaluation: the second Ctrl-C arrives during it
    run.child.kill("SIGINT");
    while (!run.stderr().includes("Ctrl-C again to abort")) await new Promise((r) => setTimeout(r, 20));
    run.child.kill("SIGINT");
    const { code, stderr } = await run.finish();
    assert.equal(code, 130, stderr);
    assert.match(stderr, /aborted/);
    assert.throws(() => Deno.statSync(join(onlyRun(dir), "summary.json")), "no summary after an abort");
  });
});

Deno.test("train CLI: a recipe whose data file is missing names the file and where to download it", async () => {
  await withTempDir(async (dir) => {
    const { code, stderr } = await train([
      "recipes/shakespeare.yaml",
      "--set",
      `data.path=${dir}/tinyshakespeare.txt`,
      "--set",
      `out_dir=${dir}/runs`,
    ]);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /data\.path '.*tinyshakespeare\.txt' does not exist: download it from https:\/\/raw\.githubusercontent\.com\/karpathy\/char-rnn\/master\/data\/tinyshakespeare\/input\.txt/,
    );
    assert.throws(() => Deno.statSync(join(dir, "runs")));
  });
});
