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
    assert.match(stderr, /recipes\/tiny-brown\.yaml: train\.warmup \(20\) must be smaller than train\.steps \(4\)/);
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
    assert.match(stderr, /data\.path '.*nope\.txt' does not exist .*data\.corpus: brown/);
    assert.throws(() => Deno.statSync(join(dir, "runs")));
  });
});
