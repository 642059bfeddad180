import assert from "node:assert/strict";
import {
  type Backend,
  cpuBackend,
  generate,
  GPT,
  type GPTConfig,
  KVCache,
  mul,
  noGrad,
  slice,
  tensor,
  tidy,
  useBackend,
} from "@lowp/core";
import { assertClose, gpuBackendOrSkip } from "../../tests/helpers.ts";

const CONFIGS: Record<string, GPTConfig> = {
  gpt2: { vocabSize: 64, contextLength: 40, dModel: 32, nLayers: 2, nHeads: 4 },
  llama: {
    vocabSize: 64,
    contextLength: 40,
    dModel: 32,
    nLayers: 2,
    nHeads: 4,
    norm: "rmsnorm",
    mlp: "swiglu",
    position: "rope",
    tieEmbeddings: false,
  },
};
const PROMPTS = [[5, 9, 2, 33, 17, 1, 60, 8], [40, 3, 3, 12, 50, 7, 21, 0]];

for (const backendName of ["cpu", "webgpu"] as const) {
  for (const [arch, cfg] of Object.entries(CONFIGS)) {
    Deno.test(`KV cache (${backendName}, ${arch}): 32 greedy tokens equal decoding by full re-forward`, async () => {
      const b: Backend | null = backendName === "cpu" ? cpuBackend() : await gpuBackendOrSkip();
      if (!b) return;
      await useBackend(backendName);
      try {
        const model = new GPT(cfg, { seed: 11 });
        // GPT-2's init (std 0.02) gives near-uniform logits and a constant greedy path; larger weights give a
        // path that changes token to token, so a wrong cached position shows.
        noGrad(() => tidy(() => model.parameters().forEach((p) => p.rank === 2 && p.assign(mul(p, 40)))));
        const cached = await generate(model, PROMPTS, { maxNewTokens: 32 });
        const full = await generate(model, PROMPTS, { maxNewTokens: 32, useCache: false });
        assert.deepEqual(cached, full);
        assert.ok(new Set(cached[0]).size > 3, `the greedy path varies: ${cached[0]}`);
        model.dispose();
      } finally {
        await useBackend("cpu");
      }
    });
  }
}

Deno.test("KV cache: prefill + decode logits match the full forward's last rows; positions and errors", async () => {
  await useBackend("cpu");
  const cfg = CONFIGS.gpt2, model = new GPT(cfg, { seed: 4 });
  const seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const full = await noGrad(() => tidy(() => model.forward(tensor([seq], { dtype: "i32" })))).data();
  const cache = new KVCache();
  const parts = noGrad(() => [
    model.forward(tensor([seq.slice(0, 7)], { dtype: "i32" }), { cache }),
    model.forward(tensor([seq.slice(7, 9)], { dtype: "i32" }), { cache }),
    model.forward(tensor([seq.slice(9)], { dtype: "i32" }), { cache }),
  ]);
  assert.equal(cache.length, 10);
  assert.equal(cache.lengthOf("transformer.h.1.attn"), 10);
  const got = new Float32Array(await Promise.all(parts.map((p) => p.data())).then((d) => d.flatMap((x) => [...x])));
  // Within the matmul tolerance, not bit for bit: a one-row product is small enough for the CPU's reference
  // kernel (f64 multiply-add) where the ten-row one runs in WebAssembly (f32 multiply, then add). With
  // LOWP_CPU_KERNELS=reference both take the same kernel and the logits agree to the bit.
  assertClose(got, full as Float32Array, { rtol: 1e-5, atol: 1e-6 }, "cached logits vs full forward");
  assert.throws(
    () => noGrad(() => model.forward(tensor([new Array(31).fill(1)], { dtype: "i32" }), { cache })),
    /31 tokens at position 10 do not fit the context length 40/,
  );
  assert.throws(
    () => model.forward(tensor([[1]], { dtype: "i32" }), { cache }),
    /KVCache: layer 'transformer.h.0.attn' appends tensors that record gradients; decode inside noGrad/,
  );
  cache.dispose();
  assert.equal(cache.length, 0);
  // An explicit position without a cache shifts the learned positions: token 0 at position 3 = row 3 of a full pass.
  const shifted = await noGrad(() => tidy(() => model.forward(tensor([[seq[3]]], { dtype: "i32" }), { position: 3 })))
    .data();
  const row3 = await tidy(() =>
    slice(model.forward(tensor([seq.slice(0, 4)], { dtype: "i32" })), [0, 3, 0], [1, 1, cfg.vocabSize])
  ).data();
  assert.notDeepEqual(shifted, row3, "without the cache, attention sees only the one token");
  model.dispose();
});

Deno.test("generate: temperature sampling is repeatable per seed and differs between seeds", async () => {
  await useBackend("cpu");
  const model = new GPT(CONFIGS.gpt2, { seed: 5 });
  const a = await generate(model, PROMPTS, { maxNewTokens: 12, temperature: 1, seed: 1 });
  assert.deepEqual(await generate(model, PROMPTS, { maxNewTokens: 12, temperature: 1, seed: 1 }), a);
  assert.notDeepEqual(await generate(model, PROMPTS, { maxNewTokens: 12, temperature: 1, seed: 2 }), a);
  await assert.rejects(
    () => generate(model, PROMPTS, { maxNewTokens: 33 }),
    /8 prompt tokens \+ 33 new exceed the context length 40/,
  );
  await assert.rejects(() => generate(model, [[1, 2], [3]], { maxNewTokens: 1 }), /equally long/);
  model.dispose();
});
