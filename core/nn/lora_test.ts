import assert from "node:assert/strict";
import {
  applyLora,
  generate,
  GPT,
  type GPTConfig,
  Linear,
  loraAdapterOf,
  mergeLora,
  mul,
  noGrad,
  plainLinear,
  setBaseOp,
  type Tensor,
  tensor,
  useBackend,
} from "@lowp/core";
import { logitsOf, sgdSteps } from "../../tests/helpers.ts";

await useBackend("cpu");

const CFG: GPTConfig = { vocabSize: 32, contextLength: 16, dModel: 16, nLayers: 2, nHeads: 2 };
const tokens = () => tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], { dtype: "i32" });
const targets = () => tensor([[2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]], { dtype: "i32" });
const batch = (): [Tensor, Tensor] => [tokens(), targets()];
const LINEAR = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

/** Largest |a − b| relative to the largest |b| (the logits' scale). */
function maxRelative(a: Float32Array, b: Float32Array): number {
  const scale = b.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0) / scale;
}

Deno.test("applyLora: PEFT names and init (A Kaiming-uniform(a=√5), B zero), all else frozen, same logits", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const before = await logitsOf(model, tokens());
  const names = applyLora(model, { r: 4, alpha: 8 });
  assert.deepEqual(names, [0, 1].flatMap((i) => LINEAR.map((l) => `transformer.h.${i}.${l}`)));
  const trainable = model.namedParameters({ trainable: true });
  assert.deepEqual(trainable.map(([n]) => n), names.flatMap((n) => [`${n}.lora_A.weight`, `${n}.lora_B.weight`]));
  const fc = model.getModule("transformer.h.0.mlp.c_fc") as Linear;
  const adapter = loraAdapterOf(fc)!;
  assert.deepEqual(adapter.A.shape, [16, 4]);
  assert.deepEqual(adapter.B.shape, [4, 64]);
  assert.equal(adapter.scaling, 2);
  const a = (await adapter.A.data()) as Float32Array;
  const bound = 1 / Math.sqrt(16); // kaiming_uniform_(a=√5) on a [r, in] weight: U(−1/√in, 1/√in)
  assert.ok(a.every((v) => Math.abs(v) <= bound) && Math.max(...a.map(Math.abs)) > 0.8 * bound);
  assert.ok(((await adapter.B.data()) as Float32Array).every((v) => v === 0));
  // B = 0 adds exact zeros: the adapted model computes the same logits, bit for bit.
  assert.deepEqual(await logitsOf(model, tokens()), before);
  // Another layer draws other values (each stream hashes the parameter name).
  const other = loraAdapterOf(model.getModule("transformer.h.1.mlp.c_fc") as Linear)!;
  assert.notDeepEqual(await other.A.data(), a);
  model.dispose();
});

Deno.test("LoRA training moves only the adapters; mergeLora gives the same logits within the matmul tolerance", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const frozen = new Map(
    await Promise.all(model.namedParameters().map(async ([n, p]) => [n, await p.data()] as const)),
  );
  applyLora(model, { r: 4, alpha: 8, targetModules: ["**.c_attn", "**.mlp.c_fc"] });
  const loss0 = await noGrad(() => model.loss(tokens(), targets())).item();
  sgdSteps(model, batch, 5, 0.1);
  assert.ok(await noGrad(() => model.loss(tokens(), targets())).item() < loss0);
  for (const [name, p] of model.namedParameters({ trainable: false })) {
    assert.deepEqual(await p.data(), frozen.get(name), `${name} moved`);
  }
  const adapted = await logitsOf(model, tokens());
  assert.deepEqual(mergeLora(model), [
    "transformer.h.0.attn.c_attn",
    "transformer.h.0.mlp.c_fc",
    "transformer.h.1.attn.c_attn",
    "transformer.h.1.mlp.c_fc",
  ]);
  assert.deepEqual(model.namedParameters().map(([n]) => n), [...frozen.keys()]); // plain names again
  const merged = await logitsOf(model, tokens());
  // x·(W + s·A·B) against x·W + (x·A·s)·B: f32 GEMMs in another order; 1e-5 of the logits' scale is ~100 ulp.
  const err = maxRelative(merged, adapted);
  assert.ok(err < 1e-5 && err > 0, `merged vs adapter logits: relative error ${err}`);
  model.dispose();
});

Deno.test("LoRA stacks on the layer's op, and setBaseOp (what a precision uses) keeps the adapter on top", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const halve: typeof plainLinear = (x, layer, ctx) => mul(plainLinear(x, layer, ctx), 0.5);
  for (const [, m] of model.namedModules()) if (m instanceof Linear) m.op = halve;
  const halved = await logitsOf(model, tokens());
  applyLora(model, { r: 2, alpha: 2 });
  assert.deepEqual(await logitsOf(model, tokens()), halved); // the adapter adds zeros on top of the layer's own op
  for (const [, m] of model.namedModules()) if (m instanceof Linear) setBaseOp(m, plainLinear);
  const layer = model.getModule("transformer.h.0.attn.c_attn") as Linear;
  assert.equal(loraAdapterOf(layer)!.baseOp, plainLinear);
  assert.notEqual(layer.op, plainLinear); // still the adapter's op
  const plain = new GPT(CFG, { seed: 0 });
  assert.deepEqual(await logitsOf(model, tokens()), await logitsOf(plain, tokens()));
  model.dispose();
  plain.dispose();
});

Deno.test("LoRA dropout: only in training, the same draws for the same step, other draws for another", async () => {
  const model = new GPT(CFG, { seed: 0 });
  applyLora(model, { r: 4, alpha: 8, dropout: 0.5 });
  sgdSteps(model, batch, 2, 0.1); // B ≠ 0, so the adapter path shows in the output
  const evalA = await logitsOf(model, tokens()), evalB = await logitsOf(model, tokens(), { step: 3 });
  assert.deepEqual(evalA, evalB);
  const train = (step: number) => logitsOf(model, tokens(), { step, training: true });
  const [t1, t1again, t2] = [await train(1), await train(1), await train(2)];
  assert.deepEqual(t1, t1again);
  assert.notDeepEqual(t1, evalA);
  assert.notDeepEqual(t1, t2);
  model.dispose();
});

Deno.test("LoRA with the KV cache: greedy generation equals the uncached one", async () => {
  const model = new GPT(CFG, { seed: 0 });
  applyLora(model, { r: 4, alpha: 8 });
  sgdSteps(model, batch, 3, 0.2);
  const prompts = [[1, 2, 3], [4, 5, 6]];
  const cached = await generate(model, prompts, { maxNewTokens: 8 });
  const uncached = await generate(model, prompts, { maxNewTokens: 8, useCache: false });
  assert.deepEqual(cached, uncached);
  model.dispose();
});

Deno.test("applyLora: bad input gets one clear error and changes nothing", () => {
  const model = new GPT(CFG, { seed: 0 });
  const names = () => model.namedParameters({ trainable: true }).map(([n]) => n);
  const all = names();
  assert.throws(
    () => applyLora(model, { r: 4, alpha: 8, targetModules: "**.q_proj" }),
    /'\*\*\.q_proj' matches no linear layer; the linear layers are transformer\.h\.0\.attn\.c_attn/,
  );
  assert.throws(() => applyLora(model, { r: 0, alpha: 8 }), /LoRA: r must be an integer >= 1, got 0/);
  assert.throws(() => applyLora(model, { r: 2, alpha: 8, dropout: 1 }), /dropout must be in \[0, 1\)/);
  assert.deepEqual(names(), all);
  applyLora(model, { r: 2, alpha: 4, targetModules: "**.c_fc" });
  assert.throws(
    () => applyLora(model, { r: 2, alpha: 4, targetModules: "**.mlp.*" }),
    /with an adapter already \(merge it first\): transformer\.h\.0\.mlp\.c_fc/,
  );
  model.dispose();
});
