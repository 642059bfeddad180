/**
 * `deno task ptq` end to end on a tiny trained run: the output folder is a
 * run folder that loads back to the reported loss, GPTQ beats RTN layer by
 * layer, `--pack` stores the method's own codes and scales (restored bit for
 * bit to the checkpoint's weights), and bad input fails with one line and
 * writes nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSafetensors, useBackend } from "@lowp/core";
import { packedBytes, restore, unpackFile } from "@lowp/formats";
import { evaluate, loadTrainedRun, recipeCorpus } from "@lowp/recipes";
import { runScript } from "./helpers.ts";

const TRAIN = new URL("../recipes/train.ts", import.meta.url).pathname;
const PTQ = new URL("../recipes/ptq_cli.ts", import.meta.url).pathname;

/** A tiny trained run folder (d_model 32, 2 layers, context 16, 30 steps) shared by the tests of this file. */
const runs = await Deno.makeTempDir();
const trained = await runScript(TRAIN, [
  "recipes/tiny-brown.yaml",
  "--backend=cpu",
  ...["model.d_model=32", "model.n_layers=2", "model.context=16", "train.steps=30", "train.warmup=3"]
    .flatMap((s) => ["--set", s]),
  ...["train.log_every=10", "train.eval_batches=2", "data.max_bytes=200000", `out_dir=${runs}`]
    .flatMap((s) => ["--set", s]),
]);
assert.equal(trained.code, 0, trained.stderr);
const RUN = join(runs, [...Deno.readDirSync(runs)][0].name);

function ptqFolders(): string[] {
  return [...Deno.readDirSync(RUN)].map((e) => e.name).filter((n) => n.startsWith("ptq-"));
}

Deno.test({
  name: "ptq CLI: RTN and GPTQ write run folders that load back to the reported loss; GPTQ's layer errors are lower",
  sanitizeResources: false,
  fn: async () => {
    const rtn = await runScript(PTQ, [RUN, "--method", "rtn", "--format", "int3", "--calib-samples", "32", "--json"]);
    assert.equal(rtn.code, 0, rtn.stderr);
    const gptq = await runScript(PTQ, [RUN, "--method", "gptq", "--format", "int3", "--calib-samples", "32", "--json"]);
    assert.equal(gptq.code, 0, gptq.stderr);
    const [r, g] = [JSON.parse(rtn.stdout), JSON.parse(gptq.stdout)];
    assert.equal(r.layers.length, 8); // 2 blocks × (c_attn, attn.c_proj, c_fc, mlp.c_proj)
    for (const l of r.layers) assert.equal(l.relError, l.rtnRelError);
    // GPTQ minimises exactly this error: on every layer it must be lower than RTN's on the same inputs.
    for (const l of g.layers) assert.ok(l.relError < l.rtnRelError, `${l.name}: ${l.relError} vs ${l.rtnRelError}`);
    assert.equal(g.val_loss_before, r.val_loss_before);
    assert.ok(r.bytes.quantized < r.bytes.f32 / 8, JSON.stringify(r.bytes)); // 3-bit codes + f32 scales per column

    await useBackend("cpu");
    const back = await loadTrainedRun(join(RUN, "ptq-gptq-int3"));
    const corpus = await recipeCorpus(back.recipe);
    assert.equal(await evaluate(back.model, back.recipe, corpus.val), g.val_loss_after);
    back.model.dispose();
  },
});

/**
 * Checks `dir`'s packed file against its checkpoint: `restore` gives every tensor bit for bit (the linear
 * weights from their codes and scales), and the reported bytes are those of the packed records.
 */
async function packedMatchesCheckpoint(dir: string, summary: { bytes: { quantized: number } }, layers: number) {
  const path = join(dir, "weights.packed.safetensors");
  const { packed } = unpackFile(await readSafetensors(path), path);
  assert.equal(packed.size, layers);
  assert.equal([...packed.values()].reduce((sum, p) => sum + packedBytes(p), 0), summary.bytes.quantized);
  await useBackend("cpu");
  const [restored, checkpoint] = [await restore(path), await readSafetensors(join(dir, "checkpoint.safetensors"))];
  assert.deepEqual([...restored.tensors.keys()].sort(), [...checkpoint.tensors.keys()].sort());
  for (const [name, want] of checkpoint.tensors) {
    const got = restored.tensors.get(name)!;
    assert.deepEqual(got.shape, want.shape, name);
    const bad = want.data.findIndex((b, i) => b !== got.data[i]);
    assert.equal(bad, -1, `${dir}: ${name} differs at byte ${bad}${packed.has(name) ? " (packed)" : ""}`);
  }
}

Deno.test("ptq CLI: --pack stores RTN's codes; restore gives the checkpoint bit for bit; --act-format quantizes the inputs", async () => {
  const res = await runScript(PTQ, [
    RUN,
    ...["--method", "rtn", "--format", "int8", "--act-format", "e4m3", "--calib-samples", "8", "--pack", "--json"],
  ]);
  assert.equal(res.code, 0, res.stderr);
  const s = JSON.parse(res.stdout);
  assert.equal(s.act_format, "e4m3");
  const dir = join(RUN, "ptq-rtn-int8-ae4m3");
  const packed = await Deno.stat(join(dir, "weights.packed.safetensors"));
  const plain = await Deno.stat(join(dir, "checkpoint.safetensors"));
  assert.ok(packed.size < plain.size, `${packed.size} vs ${plain.size}`);
  await packedMatchesCheckpoint(dir, s, 8);
});

Deno.test("ptq CLI: --pack stores GPTQ's and AWQ's own codes and scales; restore gives the checkpoint bit for bit", async () => {
  // GPTQ: group scales fitted on error-updated rows, act-order; AWQ: clipped, scaled weights with input scales as
  // buffers. Re-quantizing either checkpoint would move values.
  const cases = [
    ["gptq", "uint3", ["--granularity", "group:16", "--act-order"], "-g16"],
    ["gptq", "nvfp4", [], ""],
    ["awq", "int4", ["--granularity", "group:16"], "-g16"],
  ] as const;
  for (const [method, format, extra, suffix] of cases) {
    const res = await runScript(PTQ, [
      RUN,
      ...["--method", method, "--format", format, ...extra, "--calib-samples", "16", "--pack", "--json"],
    ]);
    assert.equal(res.code, 0, res.stderr);
    await packedMatchesCheckpoint(join(RUN, `ptq-${method}-${format}${suffix}`), JSON.parse(res.stdout), 8);
  }
});

const BAD: [string, string[], RegExp][] = [
  ["a folder with no checkpoint", [runs + "/nope", "--method", "rtn", "--format", "int4"], /no such run folder/],
  ["a format with no scalar grid", [RUN, "--method", "gptq", "--format", "e8m0"], /e8m0/],
  [
    "a group that does not divide the width",
    [RUN, "--method", "rtn", "--format", "int4", "--granularity", "group:24"],
    /multiples of 24/,
  ],
  [
    "zero calibration samples",
    [RUN, "--method", "gptq", "--format", "int4", "--calib-samples", "0"],
    /--calib-samples '0'/,
  ],
  ["an unknown method", [RUN, "--method", "best", "--format", "int4"], /--method 'best'/],
  ["GPTQ options on RTN", [RUN, "--method", "rtn", "--format", "int4", "--act-order"], /GPTQ's options/],
];
for (const [what, args, message] of BAD) {
  Deno.test(`ptq CLI: ${what} is one error line and writes nothing`, async () => {
    const before = ptqFolders();
    const res = await runScript(PTQ, args);
    assert.equal(res.code, 1);
    const lines = res.stderr.trim().split("\n");
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0], /^error: /);
    assert.match(lines[0], message);
    assert.deepEqual(ptqFolders(), before);
  });
}

Deno.test("ptq CLI: a checkpoint whose shapes do not match its recipe is named", async () => {
  const copy = await Deno.makeTempDir();
  try {
    for (const f of ["checkpoint.safetensors", "config.json"]) await Deno.copyFile(join(RUN, f), join(copy, f));
    const config = JSON.parse(await Deno.readTextFile(join(copy, "config.json")));
    config.recipe.model.mlp_ratio = 2;
    await Deno.writeTextFile(join(copy, "config.json"), JSON.stringify(config));
    const res = await runScript(PTQ, [copy, "--method", "rtn", "--format", "int4"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^error: .*checkpoint does not match the run's recipe: .*mlp\.c_fc\.weight/);
    assert.deepEqual([...Deno.readDirSync(copy)].map((e) => e.name).sort(), ["checkpoint.safetensors", "config.json"]);
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
});

globalThis.addEventListener("unload", () => Deno.removeSync(runs, { recursive: true }));
