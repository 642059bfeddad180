import assert from "node:assert/strict";
import {
  applyLora,
  backward,
  cpuBackend,
  generate,
  GPT,
  type GPTConfig,
  Linear,
  loraAdapterOf,
  noGrad,
  type Tensor,
  tensor,
  tidy,
  useBackend,
} from "@lowp/core";
import { assertClose, gpuBackendOrSkip, logitsOf, sgdSteps } from "../tests/helpers.ts";
import { applyPrecision } from "./quantized_linear.ts";
import { applyQLora, frozenStateBytes, mergeAdapters, QLORA_FORMAT, quantizedBaseOf } from "./qlora.ts";
import { parseFormat } from "./registry.ts";

await useBackend("cpu");

const CFG: GPTConfig = { vocabSize: 64, contextLength: 16, dModel: 64, nLayers: 1, nHeads: 2 };
const IDS = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]];
const tokens = () => tensor(IDS, { dtype: "i32" });
const targets = () => tensor(IDS.map((r) => r.map((v) => v + 1)), { dtype: "i32" });
const batch = (): [Tensor, Tensor] => [tokens(), targets()];
const LORA = { r: 8, alpha: 16 };

/** The f32 model whose linear weights are replaced by their nf4-dq values (what the QLoRA base computes with). */
function dequantizedTwin(): GPT {
  const model = new GPT(CFG, { seed: 0 });
  for (const [, m] of model.namedModules()) {
    if (m instanceof Linear) {
      noGrad(() => tidy(() => void m.weight.assign(parseFormat(QLORA_FORMAT).quantDequant(m.weight, { axis: 0 }))));
    }
  }
  return model;
}

/** Adapter gradients (in parameter order) after one backward of the loss. */
async function adapterGrads(model: GPT): Promise<Float32Array[]> {
  tidy(() => backward(model.loss(tokens(), targets())));
  const grads = [];
  for (const [, p] of model.namedParameters({ trainable: true })) grads.push((await p.grad!.data()) as Float32Array);
  model.zeroGrad();
  return grads;
}

/** Largest |a − b| relative to the largest |b|. */
function maxRelative(a: Float32Array, b: Float32Array): number {
  const scale = b.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0) / scale;
}

Deno.test("applyQLora: the f32 weights are removed, the packed base computes what its nf4-dq values do, bit for bit", async () => {
  const model = new GPT(CFG, { seed: 0 });
  const f32Bytes = frozenStateBytes(model) + 4 * model.parameterCount({ trainable: true });
  applyQLora(model, LORA);
  const names = model.namedParameters().map(([n]) => n);
  assert.ok(!names.includes("transformer.h.0.attn.c_attn.weight"));
  assert.ok(names.includes("transformer.h.0.attn.c_attn.bias")); // biases stay f32, frozen
  const base = quantizedBaseOf(model.getModule("transformer.h.0.mlp.c_fc") as Linear)!;
  assert.equal(base.format, QLORA_FORMAT);
  assert.deepEqual(base.shape, [64, 256]);
  // About 0.52 bytes per base value instead of 4: the frozen state shrinks by the linear weights' 3.5 bytes.
  const linearValues = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64;
  const saved = f32Bytes - frozenStateBytes(model);
  assert.ok(saved > 3.4 * linearValues && saved < 3.5 * linearValues, `saved ${saved} bytes`);

  const twin = dequantizedTwin();
  applyLora(twin, LORA);
  assert.deepEqual(await logitsOf(model, tokens()), await logitsOf(twin, tokens()));
  sgdSteps(model, batch, 1, 0.5);
  sgdSteps(twin, batch, 1, 0.5);
  // Same adapters, same base values, same GEMMs (dequantized in the backward too): identical gradients.
  const [got, want] = [await adapterGrads(model), await adapterGrads(twin)];
  got.forEach((g, k) => assert.deepEqual(g, want[k], `adapter gradient ${k}`));
  // Decoding with the KV cache runs the same op: greedy tokens equal those of re-running the whole sequence.
  const cached = await generate(model, IDS, { maxNewTokens: 6 });
  assert.deepEqual(cached, await generate(model, IDS, { maxNewTokens: 6, useCache: false }));
  assert.deepEqual(cached, await generate(twin, IDS, { maxNewTokens: 6 }));
  model.dispose();
  twin.dispose();
});

Deno.test("mergeAdapters: logits within the matmul tolerance; re-quantizing the merged weights (the QLoRA pitfall) moves them", async () => {
  const adapted = new GPT(CFG, { seed: 0 });
  applyQLora(adapted, LORA);
  sgdSteps(adapted, batch, 4, 0.5);
  const want = await logitsOf(adapted, tokens());
  const b = await loraAdapterOf(adapted.getModule("transformer.h.0.mlp.c_fc") as Linear)!.B.data();
  assert.ok((b as Float32Array).some((v) => v !== 0));
  const trained = new Map<string, Float32Array>();
  for (const [n, p] of adapted.namedParameters({ trainable: true })) trained.set(n, (await p.data()) as Float32Array);
  // A fresh QLoRA model (same seed: the same base) given the trained adapters, then merged.
  const mergeCopy = (requantize?: string) => {
    const model = new GPT(CFG, { seed: 0 });
    applyQLora(model, LORA);
    for (const [n, p] of model.namedParameters({ trainable: true })) {
      tidy(() => void p.assign(tensor(trained.get(n)!, { shape: [...p.shape] })));
    }
    assert.equal(mergeAdapters(model, requantize ? { requantize } : {}).length, 4);
    return model;
  };
  const merged = mergeCopy();
  assert.ok(merged.namedParameters().some(([n]) => n === "transformer.h.0.mlp.c_fc.weight"));
  assert.ok(!merged.namedParameters().some(([n]) => n.includes("lora_")));
  const plain = await logitsOf(merged, tokens());
  // dequant(Q)·x + (x·A·s)·B against (dequant(Q) + s·A·B)·x: f32 GEMMs in another order.
  const mergeError = maxRelative(plain, want);
  assert.ok(mergeError < 1e-5, `merged vs adapter logits: ${mergeError}`);

  const requantized = mergeCopy(QLORA_FORMAT);
  const logitChange = maxRelative(await logitsOf(requantized, tokens()), want);
  const w = (m: GPT) => (m.getModule("transformer.h.0.mlp.c_fc") as Linear).weight.data() as Promise<Float32Array>;
  const [wf, wq] = [await w(merged), await w(requantized)];
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const weightChange = norm(wf.map((v, i) => v - wq[i])) / norm(wf);
  const base = new GPT(CFG, { seed: 0 });
  applyQLora(base, LORA);
  const w0 =
    (await quantizedBaseOf(base.getModule("transformer.h.0.mlp.c_fc") as Linear)!.dequantize().data()) as Float32Array;
  const update = norm(wf.map((v, i) => v - w0[i])) / norm(wf);
  base.dispose();
  console.error(
    `QLoRA pitfall (c_fc, 4 SGD steps): re-quantizing the merged weight to ${QLORA_FORMAT} changes it by ` +
      `${(100 * weightChange).toFixed(2)}% (relative L2; the adapters' update is ${
        (100 * update).toFixed(2)
      }%) and the logits by ${logitChange.toExponential(2)} ` +
      `(max, relative to the largest) against ${mergeError.toExponential(2)} for the f32 merge`,
  );
  assert.ok(weightChange > 0.01 && logitChange > 100 * mergeError);
  for (const m of [adapted, merged, requantized]) m.dispose();
});

Deno.test("LoRA stacks on a QAT precision, applied before or after it; QLoRA and a precision refuse each other", async () => {
  const qat = new GPT(CFG, { seed: 0 });
  applyPrecision(qat, "qat-int8");
  const want = await logitsOf(qat, tokens());
  applyLora(qat, LORA);
  assert.deepEqual(await logitsOf(qat, tokens()), want); // B = 0: the QAT op's output, bit for bit
  applyPrecision(qat, "fp8-current"); // switches the op under the adapter
  const layer = qat.getModule("transformer.h.0.attn.c_attn") as Linear;
  assert.ok(loraAdapterOf(layer) && layer.parameter("lora_A.weight"));
  const fp8 = new GPT(CFG, { seed: 0 });
  applyPrecision(fp8, "fp8-current");
  assert.deepEqual(await logitsOf(qat, tokens()), await logitsOf(fp8, tokens()));
  assert.throws(() => applyQLora(fp8, LORA), /QLoRA: transformer\.h\.0\.attn\.c_attn runs under a training precision/);
  assert.ok(fp8.getModule("transformer.h.0.attn.c_attn").parameter("weight")); // nothing changed
  const q = new GPT(CFG, { seed: 0 });
  applyQLora(q, LORA);
  assert.throws(() => applyPrecision(q, "qat-int8"), /the weight is frozen packed \(a QLoRA base\)/);
  const narrow = new GPT({ ...CFG, dModel: 48, nHeads: 2 }, { seed: 0 });
  assert.throws(() => applyQLora(narrow, LORA), /transformer\.h\.0\.attn\.c_attn has 48 inputs, not a multiple of/);
  assert.throws(() => applyQLora(narrow, { ...LORA, targetModules: "**.k_proj" }), /matches no linear layer/);
  assert.equal(narrow.parameterCount({ trainable: true }), narrow.parameterCount());
  for (const m of [qat, fp8, q, narrow]) m.dispose();
});

Deno.test("QLoRA on WebGPU: the same base bits; logits and adapter gradients within the matmul tolerance of the CPU", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const run = async (backend: "cpu" | "webgpu") => {
    await useBackend(backend);
    const model = new GPT(CFG, { seed: 0 });
    applyQLora(model, LORA);
    sgdSteps(model, batch, 1, 0.5);
    const base = quantizedBaseOf(model.getModule("transformer.h.0.mlp.c_proj") as Linear)!;
    const w = base.dequantize();
    const bits = new Uint32Array(((await w.data()) as Float32Array).buffer);
    w.dispose();
    const out = { bits, logits: await logitsOf(model, tokens()), grads: await adapterGrads(model) };
    model.dispose();
    return out;
  };
  try {
    const cpu = await run("cpu"), web = await run("webgpu");
    assert.deepEqual(web.bits, cpu.bits);
    // One SGD step and one backward of f32 GEMMs: the matmul tolerance of the precision tests.
    assertClose(web.logits, cpu.logits, { rtol: 2e-5, atol: 2e-5 }, "logits");
    web.grads.forEach((g, k) => assertClose(g, cpu.grads[k], { rtol: 2e-5, atol: 2e-5 }, `adapter gradient ${k}`));
  } finally {
    await useBackend("cpu");
  }
});

Deno.test("QLoRA: training steps keep the live buffer count flat; dispose() frees the packed bases", () => {
  const cpu = cpuBackend();
  const start = cpu.liveCount();
  const model = new GPT(CFG, { seed: 0 });
  applyQLora(model, LORA);
  sgdSteps(model, batch, 1, 0.1);
  const before = cpu.liveCount();
  sgdSteps(model, batch, 20, 0.1);
  assert.equal(cpu.liveCount(), before, "live storages after 20 steps");
  model.dispose();
  assert.equal(cpu.liveCount(), start, "live storages after dispose");
});
