import assert from "node:assert/strict";
import {
  add,
  type Backend,
  backward,
  cpuBackend,
  GPT,
  type GPTConfig,
  Linear,
  matmul,
  mul,
  randn,
  sum,
  type Tensor,
  tensor,
  tidy,
  transpose,
  useBackend,
} from "@lowp/core";
import {
  applyPrecision,
  Autoflex,
  autoflexInitialState,
  convertPrecision,
  currentScale,
  fakeQuant,
  type LinearPrecision,
  parseFormat,
  PRECISION_NAMES,
  PRECISION_PRESETS,
  quantizedLinear,
  questQuantDequant,
  scaledQuantDequant,
  scaleValue,
} from "@lowp/formats";
import { createCpuBackend } from "@lowp/kernels";
import { assertClose, assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";

await useBackend("cpu");

/** A Linear [k → n] with random weights and bias, and a random input [2, 16, k]. */
function layerAndInput(k: number, n: number, seed = 1): { layer: Linear; x: Tensor } {
  const layer = new Linear("probe", { seed }, k, n);
  layer.bias!.assign(randn([n], { seed, stream: 99 }, 0.1));
  const x = randn([2, 16, k], { seed, stream: 7 }).requireGrad();
  return { layer, x };
}

/** Output, dx, dW and db of one forward/backward with a fixed output gradient. */
async function runLayer(layer: Linear, x: Tensor, op = layer.op): Promise<Float32Array[]> {
  layer.op = op;
  const out = tidy(() => {
    const y = layer.call(x, { step: 3, seed: 5, training: true });
    const gy = randn(y.shape, { seed: 2, stream: 3 });
    backward(sum(mul(y, gy)));
    return y;
  });
  const result = [
    await out.data(),
    await x.grad!.data(),
    await layer.weight.grad!.data(),
    await layer.bias!.grad!.data(),
  ];
  for (const t of [x, layer.weight, layer.bias!]) {
    t.grad?.dispose();
    t.grad = null;
  }
  return result as Float32Array[];
}
Deno.test("quantizedLinear: every role f32 is Linear's own op (same bits)", async () => {
  const { layer, x } = layerAndInput(32, 16);
  const plain = await runLayer(layer, x);
  const viaRecord = await runLayer(layer, x, quantizedLinear({ ste: "plain" }));
  assert.deepEqual(viaRecord, plain);
});

Deno.test("quantizedLinear: forward-only roles equal fake-quant composed around matmul (QAT), grads included", async () => {
  const precision: LinearPrecision = {
    forward: { input: { format: "int8", granularity: "tensor" }, weight: { format: "int4", granularity: "group:16" } },
  };
  const { layer, x } = layerAndInput(32, 16);
  const got = await runLayer(layer, x, quantizedLinear(precision));
  // Reference: fake-quant x along features, W along its input axis (transpose, group along the last axis, back).
  const want = await runLayer(layer, x, (input, l) => {
    const xq = fakeQuant(input, parseFormat("int8"), { granularity: { kind: "tensor" } });
    const wq = transpose(
      fakeQuant(transpose(l.weight), parseFormat("int4"), { granularity: { kind: "group", size: 16 } }),
    );
    return add(matmul(xq, wq), l.bias!);
  });
  const names = ["y", "dx", "dW", "db"];
  got.forEach((g, i) => assertClose(g, want[i], { rtol: 1e-6, atol: 1e-6 }, names[i]));
});

Deno.test("fp8 current scaling: s = 448/amax for E4M3, the amax lands on 448, values on the scaled grid", async () => {
  const x = tensor([0.5, -2, 1e-3, 1.7, 0.3]);
  const scale = currentScale(x, "e4m3");
  assert.equal(await scaleValue(scale), 224);
  const y = await scaledQuantDequant(x, "e4m3", scale).data();
  const grid = await parseFormat("e4m3").quantDequant(tensor([0.5, -2, 1e-3, 1.7, 0.3].map((v) => v * 224))).data();
  assert.deepEqual([...y], [...grid].map((v) => Math.fround(v * Math.fround(1 / 224))));
  assert.equal(y[1], -2, "the amax is exact (448 is on the grid)");
  assert.equal(await scaleValue(currentScale(tensor([0, 0]), "e4m3")), 1, "an all-zero tensor keeps scale 1");
  assert.equal(await scaleValue(currentScale(x, "e4m3", 2)), 56, "margin 2 divides the scale by 4");
});

Deno.test("per-tensor scaled E4M3/E5M2: the CPU's fused path, the word kernel and WebGPU give the same bits", async () => {
  const data = (await randn([64, 48], { seed: 8, stream: 2 }, 3).data()) as Float32Array;
  data[5] = 0; // a zero, a subnormal product and a value that saturates after scaling
  data[6] = 1e-40;
  const gpu = await gpuBackendOrSkip();
  const backends = [cpuBackend(), createCpuBackend({ kernels: "reference" }), ...(gpu ? [gpu] : [])];
  // The scale of a tensor 100× smaller: values scaled past the format's max (saturation), as delayed scaling
  // meets them after a jump. An odd length leaves a tail the fused pass does outside its four-lane loop.
  const small = data.map((v) => v / 100), odd = data.subarray(0, 63 * 47);
  for (const format of ["e4m3", "e5m2"]) {
    for (const rounding of ["nearest", "stochastic"] as const) {
      for (
        const [what, values, shape, from] of [
          ["own scale", data, [64, 48], data],
          ["a smaller tensor's scale", data, [64, 48], small],
          ["odd length", odd, [63, 47], odd],
        ] as const
      ) {
        const bits = await Promise.all(backends.map((backend) => {
          const x = tensor(values, { shape, backend });
          const scale = currentScale(tensor(from, { shape: [from.length], backend }), format, 1);
          return bitsOf(scaledQuantDequant(x, format, scale, { rounding, seed: 3 }));
        }));
        for (const b of bits.slice(1)) assertSameBits(b, bits[0], `${format} ${rounding} ${what}`);
      }
    }
  }
});

Deno.test("QuEST MXFP4: power-of-two scale from the block's σ, E2M1 values, trust mask marks clipped entries", async () => {
  // One block: 31 values of ±1 and one outlier 40. σ ≈ 7.0 → c·σ ≈ 3.4 → scale 2; 40/2 = 20 > 6 clips.
  const values = Array.from({ length: 32 }, (_, i) => (i === 5 ? 40 : i % 2 ? 1 : -1));
  const { values: q, trust } = questQuantDequant(tensor(values, { shape: [1, 32] }));
  const qv = await q.data(), tv = await trust.data();
  assert.equal(qv[5], 12, "the outlier saturates at 6·scale");
  assert.equal(tv[5], 0, "and is not trusted");
  assert.equal(qv[0], -1);
  assert.equal(qv[1], 1);
  assert.equal([...tv].reduce((a, b) => a + b, 0), 31);
});

Deno.test("applyPrecision: every preset runs on a GPT, f32 gives the plain loss, the others a different one", async () => {
  const cfg: GPTConfig = { vocabSize: 64, contextLength: 32, dModel: 128, nLayers: 1, nHeads: 2 };
  const tokens = tensor([Array.from({ length: 32 }, (_, i) => (i * 7) % 64)], { dtype: "i32" });
  const targets = tensor([Array.from({ length: 32 }, (_, i) => (i * 7 + 1) % 64)], { dtype: "i32" });
  const lossOf = async (preset: string) => {
    const model = new GPT(cfg, { seed: 0 });
    const names = applyPrecision(model, preset);
    assert.equal(names.length, 4);
    const loss = tidy(() => {
      const l = model.loss(tokens, targets, { step: 0, training: true });
      backward(l);
      return l;
    });
    const value = await loss.item();
    for (const [n, p] of model.namedParameters()) assert.ok(p.grad, `${preset}: ${n} has a gradient`);
    model.dispose();
    return value;
  };
  const f32 = await lossOf("f32");
  const plain = await (async () => {
    const model = new GPT(cfg, { seed: 0 });
    const v = await tidy(() => model.loss(tokens, targets)).item();
    model.dispose();
    return v;
  })();
  assert.equal(f32, plain);
  for (const name of PRECISION_NAMES.filter((n) => n !== "f32")) {
    const v = await lossOf(name);
    assert.ok(Number.isFinite(v), `${name}: finite loss`);
    assert.notEqual(v, f32, `${name} changes the loss`);
    assert.ok(Math.abs(v - f32) < 0.5, `${name}: ${v} near f32 ${f32}`);
  }
});

Deno.test("applyPrecision: one error names the layer, role and reason; unknown presets list the known ones", () => {
  const model = new GPT({ vocabSize: 32, contextLength: 8, dModel: 64, nLayers: 1, nHeads: 2 }, { seed: 0 });
  assert.throws(
    () => applyPrecision(model, "qat-int4"),
    /forward.weight: group size 128 does not divide the reduction length 64 \(transformer.h.0.attn.c_attn, transformer.h.0.attn.c_proj, transformer.h.0.mlp.c_fc\)/,
  );
  assert.throws(() => applyPrecision(model, "fp9"), /unknown precision 'fp9': expected one of f32, qat-int8/);
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "e9m9" } } }),
    /forward.input: format 'e9m9': need 1 <= E <= 8 and 0 <= M <= 23, got E=9 M=9 \(transformer.h.0.attn.c_attn, transformer.h.0.attn.c_proj, transformer.h.0.mlp.c_fc, and 1 more layers\)$/,
  );
  assert.throws(
    () =>
      applyPrecision(model, {
        forward: { input: { format: "mxfp4", hadamard: 128 }, weight: { format: "mxfp4", hadamard: 128 } },
        grad_input: { grad_output: { format: "mxfp4" }, weight: { format: "mxfp4" } },
        grad_weight: { input: { format: "mxfp4" }, grad_output: { format: "mxfp4" } },
      }),
    /hadamard block 128 is larger than the reduction length 64/,
  );
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "mxfp4", hadamard: 32 } } }),
    /forward: both operands need the same hadamard/,
  );
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "e4m3" } }, ste: "trust" }),
    /ste trust needs/,
  );
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "int8", scaling: "current" } } }),
    /scaling 'current' needs a plain element format/,
  );
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "int8", scaling: "autoflex" } } }),
    /forward.input: scaling 'autoflex' is defined for flex16\+5 only, not 'int8'/,
  );
  assert.throws(
    () => applyPrecision(model, { forward: { input: { format: "flex16+5", autoflex_history: 8 } } }),
    /autoflex_history \/ _sigmas \/ _margin need scaling: autoflex/,
  );
  assert.throws(
    () =>
      applyPrecision(model, { forward: { input: { format: "flex16+5", scaling: "autoflex", autoflex_history: 0 } } }),
    /forward.input: autoflex: history must be an integer from 1 to 1024, got 0/,
  );
  assert.throws(() => convertPrecision(model, "flex16+5"), /Autoflex/);
  assert.throws(
    () => applyPrecision(model, { forward: { weight: { format: "mxfp4", block2d: true } } }),
    /forward.weight: block2d is defined for nvfp4 only, not 'mxfp4'/,
  );
  model.dispose();
});

Deno.test("delayed scaling: scale 1 at the first step, then from the history; the history moves only in training", async () => {
  const precision = PRECISION_PRESETS["fp8-delayed"].precision;
  const { layer, x } = layerAndInput(16, 16);
  layer.op = quantizedLinear(precision);
  tidy(() => layer.call(x, { training: false }));
  assert.equal(layer.namedBuffers().length, 4, "history and scale of both forward operands");
  const history = () => layer.buffer("fp8.forward.input.amax_history")!.data();
  assert.deepEqual([...(await history())].filter((v) => v !== 0), [], "evaluation leaves the history alone");
  tidy(() => layer.call(x, { training: true }));
  const h = await history();
  const amax = Math.max(...(await x.data()).map(Math.abs));
  assert.equal(h[0], Math.fround(amax));
  assert.equal(await scaleValue(layer.buffer("fp8.forward.input.scale")!), 1, "the first step's scale is 1");
  tidy(() => layer.call(x, { training: true }));
  assert.equal(await scaleValue(layer.buffer("fp8.forward.input.scale")!), Math.fround(448 * Math.fround(1 / h[0])));
});

Deno.test("flex16+5 Autoflex: one state per operand, moved only in training, as the host Autoflex moves", async () => {
  const { layer, x } = layerAndInput(16, 16);
  layer.op = quantizedLinear(PRECISION_PRESETS["flex16+5"].precision);
  const stateOf = async (role: string) => new Uint32Array((await layer.buffer(`flex.${role}.state`)!.data()).buffer);
  const fresh = autoflexInitialState(16);
  const y0 = await tidy(() => layer.call(x, { training: false })).data();
  assert.deepEqual(
    layer.namedBuffers().map(([n]) => n).sort(),
    ["forward.input", "forward.weight"].map((r) => `probe.flex.${r}.state`),
  );
  assert.deepEqual(await stateOf("forward.input"), fresh, "evaluation leaves the state alone");
  const perTensor = { format: "flex16+5" }, own = quantizedLinear({ forward: { input: perTensor, weight: perTensor } });
  const y1 = await tidy(() => own(x, layer, { training: false })).data();
  assert.deepEqual(y0, y1, "before any training step each tensor takes its own exponent");
  const host = new Autoflex();
  const amax = Math.max(...(await x.data()).map(Math.abs));
  for (let step = 0; step < 3; step++) {
    tidy(() => backward(sum(layer.call(x, { training: true, step }))));
    host.observe(amax);
    assert.deepEqual(await stateOf("forward.input"), host.state, `step ${step}: the host's state`);
  }
  assert.equal(layer.namedBuffers().length, 6, "the backward operands have states too");
  const held = await stateOf("grad_weight.grad_output");
  tidy(() => layer.call(x, { training: false }));
  assert.deepEqual(await stateOf("grad_weight.grad_output"), held);
  assert.deepEqual(await stateOf("forward.input"), host.state, "evaluation uses the prediction, moves nothing");
  const evalOf = (op: typeof own) => tidy(() => op(mul(x, 4), layer, { training: false })).data();
  assert.notDeepEqual(await evalOf(layer.op), await evalOf(own), "4·x saturates at the predicted exponent");
  for (const t of [x, layer.weight, layer.bias!]) t.grad = null;
  layer.dispose();
});

Deno.test("stochastic rounding and random signs: another step draws differently, the same step replays", async () => {
  const { layer, x } = layerAndInput(32, 32);
  layer.op = quantizedLinear(PRECISION_PRESETS.quartet.precision);
  const grads = async (step: number) => {
    tidy(() => backward(sum(layer.call(x, { step, seed: 1, training: true }))));
    const g = await layer.weight.grad!.data();
    layer.weight.grad!.dispose();
    layer.weight.grad = null;
    x.grad?.dispose();
    x.grad = null;
    return g;
  };
  const a = await grads(1);
  assert.deepEqual(await grads(1), a);
  assert.notDeepEqual(await grads(2), a);
});

for (const preset of PRECISION_NAMES.filter((n) => n !== "f32")) {
  Deno.test(`${preset}: forward and gradients agree between CPU and WebGPU within the matmul tolerance`, async () => {
    const gpu: Backend | null = await gpuBackendOrSkip();
    if (!gpu) return;
    const run = async (backend: "cpu" | "webgpu") => {
      await useBackend(backend);
      const { layer, x } = layerAndInput(128, 32);
      const out = await runLayer(layer, x, quantizedLinear(PRECISION_PRESETS[preset].precision));
      layer.dispose();
      return out;
    };
    try {
      const cpu = await run("cpu"), web = await run("webgpu");
      // The GEMMs are f32 and agree within the matmul tolerance; the quantizers themselves agree bit for bit
      // (tested per format), so differences stay at the matmul's rounding level.
      ["y", "dx", "dW", "db"].forEach((n, i) => assertClose(web[i], cpu[i], { rtol: 2e-5, atol: 2e-5 }, n));
    } finally {
      await useBackend("cpu");
    }
  });
}

/** A QAT preset with `lsq: true` on its forward operands. */
function withLsq(preset: string): LinearPrecision {
  const f = PRECISION_PRESETS[preset].precision.forward!;
  return { forward: { input: { ...f.input!, lsq: true }, weight: { ...f.weight!, lsq: true } } };
}

for (
  const preset of ["qat-int8", "qat-int4", "qat-int8+lsq", "qat-int4+lsq", "fp8-current", "mxfp8", "fp4-rtn", "nvfp4"]
) {
  // Here the LSQ steps are the initial ones; formats/lsq_test.ts converts learned ones.
  const precision = preset.endsWith("+lsq") ? withLsq(preset.slice(0, -4)) : preset;
  Deno.test(`${preset}: converting the QAT model (stored quantized weights) gives the same logits bit for bit`, async () => {
    const cfg: GPTConfig = { vocabSize: 64, contextLength: 16, dModel: 128, nLayers: 1, nHeads: 2 };
    const tokens = tensor([Array.from({ length: 16 }, (_, i) => (i * 5) % 64)], { dtype: "i32" });
    const fake = new GPT(cfg, { seed: 4 }), real = new GPT(cfg, { seed: 4 });
    applyPrecision(fake, precision);
    const converted = convertPrecision(real, precision);
    assert.equal(converted.length, 4);
    const a = await tidy(() => fake.forward(tokens)).data(), b = await tidy(() => real.forward(tokens)).data();
    assert.deepEqual(b, a);
    const w = await (real.getModule("transformer.h.0.mlp.c_fc") as Linear).weight.data();
    const fw = await (fake.getModule("transformer.h.0.mlp.c_fc") as Linear).weight.data();
    assert.notDeepEqual(w, fw, "the converted model holds other (quantized) weights");
    fake.dispose();
    real.dispose();
  });
}

Deno.test("QuEST MXFP4: the CPU's WebAssembly pass, the word kernel and WebGPU give the same bits", async () => {
  const gpu = await gpuBackendOrSkip();
  // 600 rows of 64: more than one 16384-value chunk. Row 0: a zero block (the 1e-8 guard); row 1: a NaN and
  // an Inf; row 2: tiny values; row 3: huge ones.
  const data = (await randn([600, 64], { seed: 3, stream: 1 }, 2).data()) as Float32Array;
  data.fill(0, 0, 32);
  data.set([NaN, Infinity], 64 + 5);
  for (let j = 128; j < 192; j++) data[j] *= 1e-30;
  for (let j = 192; j < 256; j++) data[j] *= 1e30;
  const backends = [cpuBackend(), createCpuBackend({ kernels: "reference" }), ...(gpu ? [gpu] : [])];
  for (const rounding of ["nearest", "stochastic"] as const) {
    const [first, ...others] = await Promise.all(backends.map(async (backend) => {
      const out = questQuantDequant(tensor(data, { shape: [600, 64], backend }), { rounding, seed: 4, offset: 7 });
      return [await bitsOf(out.values), await bitsOf(out.trust)];
    }));
    for (const [i, [values, trust]] of others.entries()) {
      const what = `quest ${rounding} ${i === 0 ? "word kernel" : "webgpu"}`;
      // The word kernel's NaN bits follow the host's arithmetic: compare NaN as NaN.
      const nan = (bits: number[]) => bits.map((w) => ((w & 0x7fffffff) > 0x7f800000 ? -1 : w));
      assert.deepEqual(nan(Array.from(values)), nan(Array.from(first[0])), `${what} values`);
      assertSameBits(trust, first[1], `${what} trust`);
    }
  }
});
