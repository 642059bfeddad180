import assert from "node:assert/strict";
import { concat, div, matmul, mul, randn, sub, sum, type Tensor, tensor, useBackend } from "@lowp/core";
import { AwqInputStats, awqLayer, rtnWeight, type WeightQuantSpec } from "@lowp/formats";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../../tests/helpers.ts";

await useBackend("cpu");

const INT4_G32: WeightQuantSpec = { format: "int4", sharing: { group: 32 } };

/** A [in, out] weight (GPT-2 init scale) and inputs [n, in] whose channels 5, 34, 63, ... are `outlier`× larger. */
function outlierLayer(seed: number, outlier = 20, inF = 128, outF = 64, n = 512): { w: Tensor; x: Tensor } {
  const w = randn([inF, outF], { seed, stream: 1 }, 0.02);
  const m = new Float32Array(inF).fill(1);
  for (let c = 5; c < inF; c += 29) m[c] = outlier;
  const x = mul(randn([n, inF], { seed, stream: 2 }), tensor(m, { shape: [1, inF] }));
  return { w, x };
}

/** ‖XW − X·(Q/s)‖² / ‖XW‖² computed from the outputs themselves. */
async function directError(x: Tensor, w: Tensor, q: Tensor, scales: Float32Array): Promise<number> {
  const y = matmul(x, w), yq = matmul(x, div(q, tensor(scales, { shape: [scales.length, 1] })));
  const d = sub(y, yq);
  return (await sum(mul(d, d)).item()) / (await sum(mul(y, y)).item());
}

Deno.test("awqLayer: with outlier input channels AWQ's layer error is well below RTN's (INT3, INT4, FP4)", async () => {
  // Measured max AWQ/RTN ratio over seeds 0-7 (128x64 layer, 512 tokens, 5 channels x20):
  // int4 group:32 0.21, int3 group:32 0.19, int4 channel 0.39, int3 channel 0.35, nvfp4 0.22, nf4 0.37.
  // (mxfp4, whose scales are powers of two, reaches 1.05: AWQ does not always help it, so it is not claimed.)
  const cases: [WeightQuantSpec, number][] = [
    [INT4_G32, 0.5],
    [{ format: "int3", sharing: { group: 32 } }, 0.5],
    [{ format: "int4", sharing: "channel" }, 0.6],
    [{ format: "nvfp4", sharing: "block" }, 0.5],
  ];
  for (const [spec, bound] of cases) {
    for (const seed of [0, 1, 2]) {
      const { w, x } = outlierLayer(seed);
      const r = await awqLayer(w, x, spec);
      const label = `${spec.format} ${JSON.stringify(spec.sharing)} seed ${seed}`;
      assert.ok(r.relError < bound * r.rtnRelError, `${label}: AWQ ${r.relError} vs RTN ${r.rtnRelError}`);
      // The Gram-matrix error is the output error.
      const direct = await directError(x, w, r.weight, r.scales);
      assert.ok(Math.abs(direct - r.relError) <= 1e-4 * direct, `${label}: ${r.relError} vs direct ${direct}`);
      const rtnDirect = await directError(x, w, rtnWeight(w, spec), new Float32Array(128).fill(1));
      assert.ok(Math.abs(rtnDirect - r.rtnRelError) <= 1e-4 * rtnDirect, `${label}: RTN ${r.rtnRelError}`);
      assert.ok(r.alpha !== null && r.alpha > 0, `${label}: alpha ${r.alpha}`);
    }
  }
});

Deno.test("awqLayer: alpha = 0 with s = 1 (x_mean^0, no clip) is RTN bit for bit", async () => {
  const { w, x } = outlierLayer(3);
  for (const spec of [INT4_G32, { format: "nvfp4", sharing: "block" } as WeightQuantSpec]) {
    const r = await awqLayer(w, x, spec, { duoScaling: false, nGrid: 1, clip: false });
    assert.equal(r.alpha, 0);
    assert.ok(r.scales.every((s) => s === 1));
    assertSameBits(await bitsOf(r.weight), await bitsOf(rtnWeight(w, spec)), `${spec.format} alpha 0`);
    assert.equal(r.relError, r.rtnRelError);
  }
});

Deno.test("awqLayer: weights sharing an input are searched together and quantized each on its own", async () => {
  const { w, x } = outlierLayer(4);
  const [a, b] = [w, randn([128, 32], { seed: 4, stream: 3 }, 0.02)];
  const both = await awqLayer([a, b], x, INT4_G32);
  const joined = await awqLayer(concat([a, b], 1), x, INT4_G32);
  // INT group scales are per output column, so the pair equals the concatenated layer bit for bit.
  assert.deepEqual(both.scales, joined.scales);
  assertSameBits(await bitsOf(both.weight), await bitsOf(joined.weight), "pair vs concatenation");
  assert.deepEqual(both.weights.map((t) => t.shape), [[128, 64], [128, 32]]);
  assert.equal(both.clip.length, 4 * 96);
});

Deno.test("awqLayer: all-zero groups, dead input channels and non-finite tokens give finite results", async () => {
  const inF = 64, outF = 16, n = 128;
  const w = new Float32Array(await randn([inF, outF], { seed: 5, stream: 1 }, 0.02).data());
  for (let i = 0; i < 32; i++) w[i * outF + 3] = 0; // column 3's first group is all zero
  for (let j = 0; j < outF; j++) w[40 * outF + j] = 0; // input channel 40 has no weight
  const x = new Float32Array(await randn([n, inF], { seed: 5, stream: 2 }).data());
  for (let r = 0; r < n; r++) x[r * inF + 7] = 0; // input channel 7 is dead
  x[10 * inF + 2] = NaN;
  x[20 * inF + 9] = Infinity;
  for (const spec of [INT4_G32, { format: "nvfp4", sharing: "block" } as WeightQuantSpec]) {
    const stats = new AwqInputStats(inF, "layer.with.holes");
    await stats.add(tensor(x, { shape: [n, inF] }));
    assert.equal(stats.skippedTokens, 2);
    assert.equal(stats.tokens, n - 2);
    const r = await awqLayer(tensor(w, { shape: [inF, outF] }), stats, spec);
    const q = await r.weight.data();
    assert.ok(q.every(Number.isFinite), `${spec.format}: quantized weight is finite`);
    assert.ok(r.scales.every((s) => Number.isFinite(s) && s > 0), `${spec.format}: scales finite and positive`);
    assert.ok(r.clip.every(Number.isFinite) && Number.isFinite(r.relError) && Number.isFinite(r.rtnRelError));
    for (let i = 0; i < 32; i++) assert.equal(q[i * outF + 3], 0, `${spec.format}: zero group stays zero`);
    assert.equal(r.clip[3], 0, "zero group's clip max is 0");
    stats.dispose();
  }
  // Every token non-finite: no statistics, so s = 1 (alpha null): RTN plus a clip search that sees no error.
  const bad = new AwqInputStats(inF, "all.bad");
  await bad.add(tensor(new Float32Array(4 * inF).fill(NaN), { shape: [4, inF] }));
  const r = await awqLayer(tensor(w, { shape: [inF, outF] }), bad, INT4_G32);
  assert.equal(r.alpha, null);
  assert.ok(r.scales.every((s) => s === 1));
  assertSameBits(
    await bitsOf(r.weight),
    await bitsOf(rtnWeight(tensor(w, { shape: [inF, outF] }), INT4_G32)),
    "no data",
  );
  assert.equal(r.relError, 0); // ‖XW‖ = 0 with no tokens
  // A non-finite weight is an error naming the layer and where.
  w[17 * outF + 2] = NaN;
  await assert.rejects(
    () =>
      awqLayer(
        tensor(w, { shape: [inF, outF] }),
        tensor(x.map((v) => (Number.isFinite(v) ? v : 0)), { shape: [n, inF] }),
        INT4_G32,
        { name: "h.0.mlp.c_fc" },
      ),
    /h\.0\.mlp\.c_fc: weight \[64, 16\] has NaN at \[17, 2\]/,
  );
});

Deno.test("awqLayer: WebGPU finds the same scales and the same quantized bits as the CPU", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const { w, x } = outlierLayer(6, 20, 64, 32, 128);
  const cpu = await awqLayer(w, x, INT4_G32);
  const wg = tensor(await w.data() as Float32Array, { shape: w.shape, backend: gpu });
  const xg = tensor(await x.data() as Float32Array, { shape: x.shape, backend: gpu });
  const g = await awqLayer(wg, xg, INT4_G32);
  assert.equal(g.alpha, cpu.alpha);
  assert.deepEqual(g.scales, cpu.scales);
  assertSameBits(await bitsOf(g.weight), await bitsOf(cpu.weight), "webgpu vs cpu AWQ weight");
  assert.ok(Math.abs(g.relError - cpu.relError) <= 1e-4 * cpu.relError);
});
