/**
 * Fine-tuning runs (`finetune:` in a recipe): QLoRA / LoRA / full from a run
 * folder written by `deno task train`, the state reported in summary.json,
 * resume and loading of the fine-tuned run, every optimizer on adapters, and
 * bad input that fails with one line and writes nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type GPT, Linear, loraAdapterOf, readSafetensors, useBackend } from "@lowp/core";
import { quantizedBaseOf } from "@lowp/formats";
import {
  type Corpus,
  evaluate,
  LM_SCHEMA,
  type LMRecipe,
  loadCorpus,
  loadTrainedRun,
  mergeRun,
  type MetricsRecord,
  parseRecipe,
  resolveFinetune,
  trainLM,
} from "@lowp/recipes";
import { runScript } from "./helpers.ts";

const TRAIN = new URL("../recipes/train.ts", import.meta.url).pathname;
const MODEL = ["model.d_model=64", "model.n_layers=1", "model.n_heads=2", "model.context=16"];
const SHORT = ["train.batch_size=4", "train.log_every=1", "train.eval_batches=2", "data.max_bytes=200000"];

const train = (args: string[]) => runScript(TRAIN, args);

const sets = (keys: string[]) => keys.flatMap((k) => ["--set", k]);
const tmp = await Deno.makeTempDir();
const recipeFile = join(tmp, "ft.yaml");
await Deno.writeTextFile(recipeFile, "name: ft\nfinetune: { method: qlora, r: 4, alpha: 8 }\n");

/** The base run: a 1-block d64 model (QLoRA blocks the input axis in 64s), 8 steps. */
const baseRun = await (async () => {
  const out = join(tmp, "base");
  const { code, stderr } = await train([
    join(new URL("../recipes/tiny-brown.yaml", import.meta.url).pathname),
    "--backend",
    "cpu",
    ...sets([...MODEL, ...SHORT, "train.steps=8", "train.warmup=1", `out_dir=${out}`]),
  ]);
  assert.equal(code, 0, stderr);
  return join(out, [...Deno.readDirSync(out)][0].name);
})();

let corpus: Corpus | null = null;
const brown = async () => corpus ??= await loadCorpus({ corpus: "brown", maxBytes: 200000, valFraction: 0.05 });

/** A fine-tuning recipe from `baseRun`, resolved as the CLI does. */
async function ftRecipe(overrides: Record<string, string> = {}): Promise<LMRecipe> {
  const text = "name: ft\nbackend: cpu\ndata: { max_bytes: 200000 }\n" +
    "train: { steps: 6, batch_size: 4, log_every: 1, eval_batches: 2, warmup: 1, lr: 0.01, weight_decay: 0 }\n";
  const r = parseRecipe(text, LM_SCHEMA, "ft-recipe", { "finetune.from": baseRun, ...overrides }) as LMRecipe;
  await resolveFinetune(r, "ft-recipe");
  return r;
}

const lossCurve = (metrics: readonly MetricsRecord[]) => metrics.filter((m) => m.loss).map((m) => m.loss!);

Deno.test("finetune qlora (CLI): summary counts adapters and bytes; the run loads back with or without merging", async () => {
  await useBackend("cpu");
  const out = join(tmp, "qlora");
  const { code, stderr } = await train([
    recipeFile,
    "--backend",
    "cpu",
    ...sets([
      ...SHORT,
      `finetune.from=${baseRun}`,
      "train.steps=6",
      "train.warmup=1",
      `out_dir=${out}`,
    ]),
  ]);
  assert.equal(code, 0, stderr);
  const dir = join(out, [...Deno.readDirSync(out)][0].name);
  const summary = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));
  // r 4 on c_attn (64→192), c_proj (64→64), c_fc (64→256), mlp.c_proj (256→64): Σ r·(in + out).
  const adapters = 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64));
  assert.equal(summary.trainable_parameters, adapters);
  assert.equal(summary.trainable_bytes, 12 * adapters); // f32 adapters + AdamW's two moments
  const linear = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64;
  const config = JSON.parse(await Deno.readTextFile(join(baseRun, "summary.json")));
  assert.equal(summary.frozen_parameters, config.trainable_parameters); // the whole base model, frozen
  // The frozen f32 parameters (embeddings, norms, biases) at 4 bytes plus the packed bases at ~0.52.
  const f32Frozen = 4 * (config.trainable_parameters - linear);
  assert.ok(summary.frozen_bytes > f32Frozen + 0.5 * linear && summary.frozen_bytes < f32Frozen + 0.55 * linear);
  assert.equal(summary.state_bytes, summary.frozen_bytes + summary.trainable_bytes);
  assert.equal(summary.finetune.method, "qlora");
  assert.ok(Number.isFinite(summary.start_val_loss));
  // The checkpoint holds the adapters and no f32 copy of the frozen base weights.
  const file = await readSafetensors(join(dir, "checkpoint.safetensors"));
  const names = [...file.tensors.keys()];
  assert.ok(names.includes("transformer.h.0.mlp.c_fc.lora_B.weight"));
  assert.ok(!names.includes("transformer.h.0.mlp.c_fc.weight"));
  assert.match(file.metadata.finetune_base_sha256, /^[0-9a-f]{64}$/);

  const loaded = await loadTrainedRun(dir);
  const fc = loaded.model.getModule("transformer.h.0.mlp.c_fc") as Linear;
  assert.ok(loraAdapterOf(fc) && quantizedBaseOf(fc));
  assert.equal(await evaluate(loaded.model, loaded.recipe, (await brown()).val), summary.final_val_loss);
  loaded.model.dispose();
  const merged = await loadTrainedRun(dir, { merge: true });
  assert.ok(!merged.model.namedParameters().some(([n]) => n.includes("lora_")));
  const mergedLoss = await evaluate(merged.model, merged.recipe, (await brown()).val);
  assert.ok(Math.abs(mergedLoss - summary.final_val_loss) < 1e-5, `${mergedLoss} vs ${summary.final_val_loss}`);
  merged.model.dispose();

  // `deno task merge`: a plain run folder; re-quantizing the merged weights moves them (the QLoRA pitfall).
  const report = await mergeRun(dir, { requantize: "nf4-dq" });
  assert.equal(report.val_loss_adapters, summary.final_val_loss);
  assert.ok(Math.abs(report.val_loss_merged - report.val_loss_adapters) < 1e-5);
  assert.ok(report.weight_change! > 1e-3 && report.val_loss_requantized !== report.val_loss_merged);
  const plain = await loadTrainedRun(report.out);
  assert.ok(!plain.model.namedParameters().some(([n]) => n.includes("lora_")));
  assert.equal(await evaluate(plain.model, plain.recipe, (await brown()).val), report.val_loss_requantized);
  plain.model.dispose();
  await assert.rejects(mergeRun(dir, { requantize: "nf4-dq" }), /merged-nf4-dq exists already/);
  await assert.rejects(mergeRun(baseRun), /the run has no adapters \(finetune\.method none\); nothing to merge/);
});

const RESUMED: [string, Record<string, string>][] = [
  ["lora", { "finetune.method": "lora" }],
  ["qlora", { "finetune.method": "qlora" }],
  ["full", { "finetune.method": "full" }],
  ["full + qat-int8 (QAT fine-tuning)", { "finetune.method": "full", precision: "qat-int8" }],
  ["lora + qat-int8", { "finetune.method": "lora", precision: "qat-int8" }],
];

for (const [what, overrides] of RESUMED) {
  Deno.test(`finetune ${what}: stopped at a checkpoint and resumed gives the same losses (cpu)`, async () => {
    await useBackend("cpu");
    const r = await ftRecipe(overrides);
    const path = join(tmp, `resume-${what.replace(/\W+/g, "-")}.safetensors`);
    const straight = await trainLM(r, await brown());
    let calls = 0;
    const first = await trainLM(r, await brown(), { checkpointPath: path, shouldStop: () => calls++ >= 3 });
    const rest = await trainLM(r, await brown(), { resumeFrom: path });
    assert.equal(first.steps, 3);
    assert.deepEqual(lossCurve([...first.metrics, ...rest.metrics]), lossCurve(straight.metrics));
    assert.equal(rest.finalValLoss, straight.finalValLoss);
    // A fine-tune's first record is the validation loss it starts from.
    assert.deepEqual(Object.keys(straight.metrics[0]), ["step", "val_loss"]);
    for (const m of [straight.model, first.model, rest.model]) m.dispose();
  });
}

/** Every adapter value, flattened. */
async function adapterValues(model: GPT): Promise<Float32Array[]> {
  const out = [];
  for (const [, p] of model.namedParameters({ trainable: true })) out.push((await p.data()) as Float32Array);
  return out;
}

const OPTIMIZERS: [string, Record<string, string>][] = [
  ["adamw", {}],
  ["sgd", { "train.lr": "0.2" }],
  ["eco-adam", { "train.weight_format": "e4m3" }],
  ["eco-sgd", { "train.weight_format": "e4m3", "train.lr": "0.2" }],
  ["master-adam", { "train.weight_format": "e4m3", "train.weight_rounding": "stochastic" }],
  ["master-sgd", { "train.weight_format": "int8", "train.weight_granularity": "channel:1", "train.lr": "0.2" }],
  ["naive-adam", { "train.weight_format": "e4m3", "train.weight_rounding": "stochastic" }],
  ["naive-sgd", { "train.weight_format": "int8", "train.weight_granularity": "channel:1", "train.lr": "0.2" }],
];

for (const [optimizer, settings] of OPTIMIZERS) {
  Deno.test(`finetune qlora with ${optimizer}: the adapters train, the packed bases stay (cpu)`, async () => {
    await useBackend("cpu");
    const r = await ftRecipe({ "train.optimizer": optimizer, ...settings });
    const { model, finalValLoss, metrics } = await trainLM(r, await brown());
    const start = metrics[0].val_loss!;
    const values = await adapterValues(model);
    assert.ok(Number.isFinite(finalValLoss) && finalValLoss !== start, `${optimizer}: ${start} → ${finalValLoss}`);
    // Every lora_B left zero: each adapter took part.
    assert.ok(values.filter((_, k) => k % 2 === 1).every((b) => b.some((v) => v !== 0)));
    model.dispose();
  });
}

Deno.test("finetune bad input: one clear line each, and no run folder", async () => {
  const out = join(tmp, "bad");
  const emptyRun = join(tmp, "no-checkpoint");
  await Deno.mkdir(emptyRun, { recursive: true });
  // A run whose recipe says d_model 128 while its checkpoint holds d_model 64 tensors.
  const wrongShapes = join(tmp, "wrong-shapes");
  await Deno.mkdir(wrongShapes, { recursive: true });
  await Deno.copyFile(join(baseRun, "checkpoint.safetensors"), join(wrongShapes, "checkpoint.safetensors"));
  const config = JSON.parse(await Deno.readTextFile(join(baseRun, "config.json")));
  config.recipe.model.d_model = 128;
  await Deno.writeTextFile(join(wrongShapes, "config.json"), JSON.stringify(config));
  const cases: [string[], RegExp][] = [
    [[`finetune.from=${join(tmp, "nowhere")}`], /finetune\.from .*nowhere: no such run folder/],
    [[`finetune.from=${emptyRun}`], /no checkpoint\.safetensors there/],
    [
      [`finetune.from=${wrongShapes}`],
      /checkpoint does not match the run's recipe: transformer\.wte\.weight is \[256,64\]/,
    ],
    [
      [`finetune.from=${baseRun}`, "finetune.target_modules=**.q_proj"],
      /target_modules '\*\*\.q_proj' matches no linear layer/,
    ],
    [[`finetune.from=${baseRun}`, "model.d_model=128"], /model\.d_model is 128 here but 64 in .*leave model: out/],
    [[`finetune.from=${baseRun}`, "precision=qat-int8"], /finetune\.method qlora keeps the base weights in nf4-dq/],
    [[], /finetune\.method needs finetune\.from/],
    [[`finetune.from=${baseRun}`, "train.optimizer=master-sgd", "train.weight_format=e4m3"], /the adapters stall/],
  ];
  for (const [keys, expected] of cases) {
    const { code, stderr } = await train([recipeFile, "--backend", "cpu", ...sets([...keys, `out_dir=${out}`])]);
    assert.equal(code, 1, stderr);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], expected);
    assert.ok(!(await Deno.stat(out).then(() => true, () => false)), `${keys.join(" ")} wrote ${out}`);
  }
});

addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
