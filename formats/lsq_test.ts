import assert from "node:assert/strict";
import {
  type Backend,
  backward,
  clone,
  cpuBackend,
  GPT,
  type GPTConfig,
  Linear,
  matmul,
  mul,
  noGrad,
  randn,
  sum,
  type Tensor,
  tensor,
  tidy,
  useBackend,
} from "@lowp/core";
import { AdamW, trainStep } from "@lowp/optim";
import {
  applyPrecision,
  convertPrecision,
  type LinearPrecision,
  lsqQuant,
  operandProblems,
  PRECISION_PRESETS,
  quantizedLinear,
} from "@lowp/formats";
import { lsqCodeRange, lsqGroupQuant, lsqInitialStep, lsqQuantDequant } from "./lsq.ts";
import { parseGranularity } from "./spec.ts";
import { assertClose, assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";

await useBackend("cpu");
const fr = Math.fround;

/** Round half to even (f64). */
function roundEven(t: number): number {
  const r = Math.round(t);
  return r - t === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The f64 reference of LSQ on flat values with step index `stepOf(i)`: t = v·(1/s) (as the f32 product of the
 * f32 reciprocal, the definition of v/s here), value, ∂v̂/∂s and whether the gradient passes to v.
 */
function reference(v: ArrayLike<number>, steps: ArrayLike<number>, stepOf: (i: number) => number, bits: number) {
  const qn = 2 ** (bits - 1), qp = qn - 1;
  return Array.from(v, (x, i) => {
    const s = steps[stepOf(i)], t = fr(x * fr(1 / s));
    if (t <= -qn) return { value: -qn * s, term: -qn, inside: false };
    if (t >= qp) return { value: qp * s, term: qp, inside: false };
    const q = roundEven(t);
    return { value: fr(q * s), term: q - t, inside: true };
  });
}

Deno.test("lsq forward: values equal the reference on a hand-made tensor, clipped values included", async () => {
  // int4: codes -8 … 7; s = 0.5: v/s = 2v. Ties go to even; ±Inf clips; beyond ±Qn/Qp clips.
  const v = [0.2, 0.25, 0.75, -0.75, 1.3, 3.4, 3.5, 3.75, 100, -3.9, -4, -4.2, -100, Infinity, -Infinity, 0, -0];
  const want = [0, 0, 1, -1, 1.5, 3.5, 3.5, 3.5, 3.5, -4, -4, -4, -4, 3.5, -4, 0, 0];
  const { values, terms } = lsqQuantDequant(tensor(v), tensor([0.5]), { format: "int4" });
  assert.deepEqual([...await values.data()], want);
  const t = await terms.data();
  // round(v/s) - v/s inside; -Qn = -8 at v/s ≤ -8 and Qp = 7 at v/s ≥ 7 (the paper's strict inequalities).
  assert.deepEqual([...t].slice(0, 5), [fr(-0.4), -0.5, 0.5, -0.5, 3 - 2 * fr(1.3)]);
  // 3.4 → 6.8 rounds to 7 inside; 3.5 → 7 = Qp exactly counts as clipped; -3.9 → -7.8 rounds to -8 inside.
  assert.deepEqual([...t].slice(5), [7 - 2 * fr(3.4), 7, 7, 7, -8 + 2 * fr(3.9), -8, -8, -8, 7, -8, 0, 0]);
  assert.ok(Object.is(t[16], 0) && Object.is((await values.data())[16], 0), "codes have no -0");
});

Deno.test("lsq forward: per group along axis 0 and per channel, on random values, match the f64 reference", async () => {
  const [k, n, g] = [8, 3, 4];
  const w = randn([k, n], { seed: 3, stream: 1 }, 1);
  const wv = await w.data();
  // group:4 along axis 0 of [8, 3]: steps [2, 3] row-major, step of (r, c) = floor(r/4)·3 + c.
  const steps = [0.11, 0.23, 0.37, 0.05, 0.5, 0.19];
  const got = lsqQuantDequant(w, tensor(steps), { format: "int3", granularity: { kind: "group", size: g }, axis: 0 });
  const ref = reference(wv, steps.map(fr), (i) => Math.floor(Math.floor(i / n) / g) * n + (i % n), 3);
  assert.deepEqual([...await got.values.data()], ref.map((r) => fr(r.value)));
  assert.deepEqual([...await got.terms.data()], ref.map((r) => fr(r.term)));
  assert.ok(ref.some((r) => !r.inside) && ref.some((r) => r.inside), "both clipped and inside values are tested");
  const perChannel = lsqQuantDequant(w, tensor(steps.slice(0, 3)), {
    format: "int3",
    granularity: parseGranularity("channel:1"),
  });
  const refC = reference(wv, steps.slice(0, 3).map(fr), (i) => i % n, 3);
  assert.deepEqual([...await perChannel.values.data()], refC.map((r) => fr(r.value)));
});

Deno.test("lsq gradients: ∂/∂v is the clipped STE, ∂/∂s = g·Σ grad·term (f64 reference within 1e-6 relative)", async () => {
  const [k, n, g] = [64, 4, 16];
  const v = randn([k, n], { seed: 5, stream: 2 }, 0.4).requireGrad();
  const stepValues = Array.from({ length: (k / g) * n }, (_, i) => 0.03 + 0.01 * (i % 5));
  const step = tensor(stepValues).requireGrad();
  const upstream = randn([k, n], { seed: 6, stream: 3 });
  const opts = { format: "int4", granularity: { kind: "group" as const, size: g }, axis: 0 };
  tidy(() => backward(sum(mul(lsqGroupQuant(v, step, opts), upstream))));
  const [vv, gv, dv, ds] = await Promise.all([v.data(), upstream.data(), v.grad!.data(), step.grad!.data()]);
  const stepOf = (i: number) => Math.floor(Math.floor(i / n) / g) * n + (i % n);
  const ref = reference(vv, stepValues.map(fr), stepOf, 4);
  assert.deepEqual([...dv], ref.map((r, i) => (r.inside ? gv[i] : 0)));
  // Default scale: N = the g values sharing a step, Qp = 7.
  const scale = 1 / Math.sqrt(g * 7);
  const want = new Float64Array(stepValues.length), mag = new Float64Array(stepValues.length);
  ref.forEach((r, i) => {
    want[stepOf(i)] += gv[i] * r.term;
    mag[stepOf(i)] += Math.abs(gv[i] * r.term);
  });
  // A float reduction of f32 products: within 1e-6 of the sum of magnitudes (n·eps with n = 16 is 2e-6 at worst;
  // pairwise sums stay far below), times the scale.
  for (let c = 0; c < want.length; c++) {
    assert.ok(
      Math.abs(ds[c] - scale * want[c]) <= 1e-6 * scale * mag[c] + 1e-12,
      `step ${c}: ${ds[c]} vs ${scale * want[c]}`,
    );
  }
});

Deno.test("lsq per tensor equals lsqQuant (the broadcast-step estimator): same values and ∂/∂v bits, ∂/∂s close", async () => {
  const x = randn([16, 32], { seed: 9, stream: 1 }, 1);
  const run = async (f: (a: Tensor, s: Tensor) => Tensor) => {
    const a = tensor(await x.data() as Float32Array, { shape: [16, 32] }).requireGrad();
    const s = tensor([0.21]).requireGrad();
    const y = tidy(() => {
      const y = f(a, s);
      backward(sum(mul(y, x)));
      return y;
    });
    return [await bitsOf(y), await bitsOf(a.grad!), await s.grad!.data() as Float32Array];
  };
  const mine = await run((a, s) => lsqGroupQuant(a, s, { format: "int4" }));
  const theirs = await run((a, s) => lsqQuant(a, s, 4));
  // lsqQuant keeps the sign of a zero level; INT codes have no -0 (int.ts), so -0 is +0 here.
  const noNegZero = (b: Uint32Array) => b.map((w) => (w === 0x80000000 ? 0 : w));
  assertSameBits(mine[0] as Uint32Array, noNegZero(theirs[0] as Uint32Array), "values");
  assertSameBits(mine[1] as Uint32Array, theirs[1] as Uint32Array, "dv");
  assert.ok(
    Math.abs(mine[2][0] - theirs[2][0]) <= 1e-5 * Math.abs(theirs[2][0]),
    `ds ${mine[2][0]} vs ${theirs[2][0]}`,
  );
});

Deno.test("lsq: values and step terms are bit-identical on the CPU and WebGPU; ∂/∂s within 1e-5", async () => {
  const gpu: Backend | null = await gpuBackendOrSkip();
  if (!gpu) return;
  const cpu = cpuBackend();
  const host = await randn([256, 48], { seed: 11, stream: 4 }, 2).data() as Float32Array;
  // Subnormal, huge, infinite and NaN values, and ties.
  host.set([1e-40, -3e-39, 1e30, -Infinity, Infinity, NaN, 0.125, -0.375, 0], 0);
  const steps = Float32Array.from({ length: 8 * 48 }, (_, i) => 0.05 + 0.003 * (i % 37));
  steps[5] = -1; // invalid steps give NaN
  steps[6] = 0;
  const on = (b: Backend) => {
    const v = tensor(host, { shape: [256, 48], backend: b }).requireGrad();
    const s = tensor(steps, { backend: b }).requireGrad();
    return { v, s };
  };
  const opts = { format: "int4", granularity: { kind: "group" as const, size: 32 }, axis: 0 };
  const results = [];
  for (const b of [cpu, gpu]) {
    const { v, s } = on(b);
    const parts = lsqQuantDequant(v, s, opts);
    const up = tensor(await randn([256, 48], { seed: 12, stream: 5 }).data() as Float32Array, {
      shape: [256, 48],
      backend: b,
    });
    const y = lsqGroupQuant(v, s, opts);
    backward(sum(mul(y, up)));
    results.push({
      values: await bitsOf(parts.values),
      terms: await bitsOf(parts.terms),
      dv: await bitsOf(v.grad!),
      ds: await s.grad!.data(),
    });
  }
  const [a, b] = results;
  assertSameBits(b.values, a.values, "values");
  assertSameBits(b.terms, a.terms, "terms");
  assertSameBits(b.dv, a.dv, "dv");
  for (let c = 0; c < a.ds.length; c++) {
    if (Number.isNaN(a.ds[c])) assert.ok(Number.isNaN(b.ds[c]), `ds ${c}: NaN on both`);
    else {assert.ok(
        Math.abs(a.ds[c] - b.ds[c]) <= 1e-5 * (Math.abs(a.ds[c]) + 1e-3),
        `ds ${c}: ${a.ds[c]} vs ${b.ds[c]}`,
      );}
  }
});

Deno.test("lsq init: 2·mean(|v|)/sqrt(Qp) per scale group, floored at the smallest normal", async () => {
  const w = tensor([[1, -2], [3, 0], [-5, 0], [7, 0]]);
  const s = await lsqInitialStep(w, { format: "int4", granularity: { kind: "group", size: 2 }, axis: 0 }).data();
  const want = [(1 + 3) / 2, 1, (5 + 7) / 2, 0].map((m) => fr(Math.max((2 * m) / Math.sqrt(7), 2 ** -126)));
  assert.deepEqual([...s].map((x, i) => Math.abs(x - want[i]) <= 1e-7 * want[i] ? want[i] : x), want);
  assert.deepEqual(lsqCodeRange("int8"), [-128, 127]);
});

const LSQ_INT4: LinearPrecision = {
  forward: {
    input: { ...PRECISION_PRESETS["qat-int4"].precision.forward!.input!, lsq: true },
    weight: { ...PRECISION_PRESETS["qat-int4"].precision.forward!.weight!, lsq: true },
  },
};
const CFG: GPTConfig = { vocabSize: 64, contextLength: 16, dModel: 128, nLayers: 1, nHeads: 2 };
const TOKENS = () => tensor([Array.from({ length: 16 }, (_, i) => (i * 5) % 64)], { dtype: "i32" });
const TARGETS = () => tensor([Array.from({ length: 16 }, (_, i) => (i * 5 + 1) % 64)], { dtype: "i32" });

async function stepsOf(model: GPT): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, p] of model.namedParameters()) if (n.includes(".lsq.")) out.set(n, await p.data() as Float32Array);
  return out;
}

Deno.test("lsq layers: steps are named parameters; a training step moves them, frozen ones stay", async () => {
  const model = new GPT(CFG, { seed: 1 });
  applyPrecision(model, LSQ_INT4);
  const shapes = Object.fromEntries(
    model.namedParameters().filter(([n]) => n.includes(".lsq.")).map(([n, p]) => [n, p.shape]),
  );
  assert.deepEqual(shapes["transformer.h.0.mlp.c_fc.lsq.forward.weight"], [512], "one step per group of 128 × 512");
  assert.deepEqual(shapes["transformer.h.0.mlp.c_proj.lsq.forward.weight"], [4 * 128]);
  assert.deepEqual(shapes["transformer.h.0.attn.c_attn.lsq.forward.input"], [1]);
  assert.equal(Object.keys(shapes).length, 8);
  const unit = () => model.namedBuffers().find(([n]) => n === "transformer.h.0.mlp.c_fc.lsq.forward.input.unit")!;
  assert.deepEqual([...await unit()[1].data()], [0], "not initialised");
  const before = await stepsOf(model);
  const opt = new AdamW(model.namedParameters({ trainable: true }));
  const train = () =>
    trainStep({
      model,
      optimizer: opt,
      inputs: TOKENS(),
      targets: TARGETS(),
      lr: 1e-3,
      ctx: { step: 0, training: true },
    })
      .dispose();
  train();
  assert.ok((await unit()[1].data())[0] > 0, "the first training batch initialised the input steps");
  const after = await stepsOf(model);
  for (const [n, v] of before) assert.notDeepEqual(after.get(n), v, `${n} moved`);
  model.freeze("**.lsq");
  const weight = await (model.getModule("transformer.h.0.mlp.c_fc") as Linear).weight.data();
  train();
  const frozen = await stepsOf(model);
  for (const [n, v] of after) assert.deepEqual(frozen.get(n), v, `${n} stays when frozen`);
  const moved = await (model.getModule("transformer.h.0.mlp.c_fc") as Linear).weight.data();
  assert.notDeepEqual(moved, weight, "the weights still train");
  model.dispose();
});

Deno.test("lsq input step: 2·mean(|x|)/sqrt(Qp) of the first training batch; evaluation before it stores nothing", async () => {
  const layer = new Linear("probe", { seed: 2 }, 32, 8);
  const x = randn([4, 32], { seed: 3, stream: 1 }, 1.5);
  applyPrecision(layer, { forward: { input: { format: "int8", granularity: "tensor", lsq: true } } });
  const unit = () => layer.buffer("lsq.forward.input.unit")!.data();
  assert.deepEqual([...await layer.parameter("lsq.forward.input")!.data()], [1], "θ starts at 1");
  tidy(() => layer.call(x, { training: false }));
  assert.deepEqual([...await unit()], [0], "evaluation leaves the step alone");
  tidy(() => layer.call(x, { training: true }));
  const xs = await x.data() as Float32Array;
  const want = (2 * xs.reduce((a, b) => a + Math.abs(b), 0) / xs.length) / Math.sqrt(127);
  const got = (await unit())[0];
  assert.ok(Math.abs(got - want) <= 1e-6 * want, `${got} vs ${want}`);
  tidy(() => layer.call(mul(x, 3), { training: true }));
  assert.equal((await unit())[0], got, "later batches do not re-initialise");
  layer.dispose();
});

Deno.test("lsq in a linear layer: same values and dx, dW as LSQ composed around matmul; θ gets g·(∂L/∂s)/u", async () => {
  const [m, k, n] = [24, 64, 16];
  const p: LinearPrecision = {
    forward: {
      input: { format: "int8", granularity: "tensor", lsq: true },
      weight: { format: "int4", granularity: "group:16", lsq: true },
    },
  };
  const layer = new Linear("probe", { seed: 5 }, k, n, { bias: false });
  applyPrecision(layer, p);
  const x = randn([m, k], { seed: 6, stream: 1 }).requireGrad();
  const up = randn([m, n], { seed: 7, stream: 2 });
  tidy(() => layer.call(x, { training: true })); // sets the input unit
  // θ other than 1, so that both the unit and θ matter.
  layer.parameter("lsq.forward.input")!.assign(tensor([1.25]));
  layer.parameter("lsq.forward.weight")!.assign(tensor(Array.from({ length: (k / 16) * n }, (_, i) => 0.8 + 0.02 * i)));
  const y = tidy(() => {
    const y = layer.call(x, { training: true });
    backward(sum(mul(y, up)));
    return y;
  });
  const got = {
    y: await bitsOf(y),
    dx: await bitsOf(x.grad!),
    dw: await bitsOf(layer.weight.grad!),
    thetaIn: await layer.parameter("lsq.forward.input")!.grad!.data(),
    thetaW: await layer.parameter("lsq.forward.weight")!.grad!.data(),
  };
  x.grad = null;
  // The reference: s = u·θ as plain tensors, lsqGroupQuant around matmul, autograd through both.
  const uIn = layer.buffer("lsq.forward.input.unit")!, uW = layer.buffer("lsq.forward.weight.unit")!;
  const sIn = noGrad(() => mul(uIn, layer.parameter("lsq.forward.input")!)).requireGrad();
  const sW = noGrad(() => mul(uW, layer.parameter("lsq.forward.weight")!)).requireGrad();
  const w = noGrad(() => clone(layer.weight)).requireGrad();
  const yRef = tidy(() => {
    const xq = lsqGroupQuant(x, sIn, { format: "int8", gradScale: 1 / Math.sqrt(k * 127) });
    const wq = lsqGroupQuant(w, sW, { format: "int4", granularity: { kind: "group", size: 16 }, axis: 0 });
    const y = matmul(xq, wq);
    backward(sum(mul(y, up)));
    return y;
  });
  assertSameBits(got.y, await bitsOf(yRef), "y");
  assertSameBits(got.dx, await bitsOf(x.grad!), "dx");
  assertSameBits(got.dw, await bitsOf(w.grad!), "dW");
  const [u1, u2, g1, g2] = await Promise.all([uIn.data(), uW.data(), sIn.grad!.data(), sW.grad!.data()]);
  // θ's gradient is the step's divided by u: one more f32 rounding than the reference's quotient in f64.
  const close = (a: number, b: number, what: string) =>
    assert.ok(Math.abs(a - b) <= 1e-6 * Math.abs(b) + 1e-12, `${what}: ${a} vs ${b}`);
  close(got.thetaIn[0], g1[0] / u1[0], "θ input");
  got.thetaW.forEach((v, i) => close(v, g2[i] / u2[i], `θ weight ${i}`));
  layer.dispose();
});

Deno.test("lsq convert: stored weights use the learned steps; logits equal the fake-quant model's bit for bit", async () => {
  for (const preset of ["qat-int8", "qat-int4"]) {
    const base = PRECISION_PRESETS[preset].precision.forward!;
    const p: LinearPrecision = {
      forward: { input: { ...base.input!, lsq: true }, weight: { ...base.weight!, lsq: true } },
    };
    const model = new GPT(CFG, { seed: 4 });
    applyPrecision(model, p);
    const opt = new AdamW(model.namedParameters({ trainable: true }));
    trainStep({ model, optimizer: opt, inputs: TOKENS(), targets: TARGETS(), lr: 1e-2, ctx: { training: true } })
      .dispose();
    const fake = await tidy(() => model.forward(TOKENS())).data();
    const layer = model.getModule("transformer.h.0.mlp.c_fc") as Linear;
    const learned = await layer.parameter("lsq.forward.weight")!.data();
    assert.ok(learned.some((t) => t !== 1), `${preset}: the steps were learned`);
    const w = await layer.weight.data();
    convertPrecision(model, p);
    assert.notDeepEqual(await layer.weight.data(), w, `${preset}: quantized weights stored`);
    assert.equal(layer.parameter("lsq.forward.weight"), undefined, "the weight steps go with the weight quantizer");
    assert.ok(layer.parameter("lsq.forward.input"), "the learned input step stays");
    assert.deepEqual(await tidy(() => model.forward(TOKENS())).data(), fake, `${preset}: same logits`);
    model.dispose();
  }
});

Deno.test("lsq: bad input gets one clear error", () => {
  const only = /lsq learns the step of forward signed int operands only/;
  assert.match(operandProblems({ format: "int4", lsq: true }, 64, "grad_input.weight")[0], only);
  assert.match(operandProblems({ format: "e4m3", lsq: true }, 64, "forward.weight")[0], /not of format 'e4m3'/);
  assert.match(operandProblems({ format: "uint4", lsq: true }, 64, "forward.weight")[0], only);
  assert.match(
    operandProblems({ format: "int4", lsq: true, rounding: "stochastic" }, 64, "forward.weight")[0],
    /not with stochastic rounding/,
  );
  assert.match(
    operandProblems({ format: "int8", granularity: "channel", lsq: true }, 64, "forward.input")[0],
    /lsq on forward.input learns one step shared by every token: granularity tensor, not 'channel'/,
  );
  assert.deepEqual(operandProblems({ format: "int4", granularity: "group:32", lsq: true }, 64, "forward.weight"), []);
  const model = new GPT({ ...CFG, dModel: 64 }, { seed: 0 });
  assert.throws(
    () => applyPrecision(model, { grad_weight: { grad_output: { format: "int8", lsq: true } } }),
    /grad_weight.grad_output: lsq learns the step of forward signed int operands only.*not of grad_weight.grad_output \(transformer.h.0.attn.c_attn/,
  );
  model.dispose();
  const layer = new Linear("probe", { seed: 0 }, 16, 4);
  layer.op = quantizedLinear({ forward: { weight: { format: "int4", lsq: true } } });
  assert.throws(
    () => layer.call(randn([2, 16], { seed: 1, stream: 0 })),
    /probe: forward.weight learns its step \(lsq\) but has none/,
  );
  assert.throws(
    () =>
      lsqQuantDequant(randn([8, 4], { seed: 1, stream: 0 }), tensor([1, 2]), {
        format: "int4",
        granularity: parseGranularity("channel:1"),
      }),
    /needs 4 steps as a 1-D tensor/,
  );
  assert.throws(
    () => lsqQuantDequant(randn([4], { seed: 1, stream: 0 }), tensor([1]), { format: "uint4" }),
    /not a signed int/,
  );
  layer.dispose();
});

Deno.test("lsq in a linear layer: CPU and WebGPU agree (values exact, GEMMs within the matmul tolerance)", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const run = async (backend: "cpu" | "webgpu") => {
    await useBackend(backend);
    const layer = new Linear("probe", { seed: 8 }, 128, 32);
    applyPrecision(layer, {
      forward: { input: { format: "int8", lsq: true }, weight: { format: "int4", granularity: "group:32", lsq: true } },
    });
    const x = randn([2, 16, 128], { seed: 9, stream: 1 }).requireGrad();
    const up = randn([2, 16, 32], { seed: 9, stream: 2 });
    const y = tidy(() => {
      const y = layer.call(x, { training: true }); // also initialises the input's unit on the device
      backward(sum(mul(y, up)));
      return y;
    });
    const out = [
      await y.data(),
      await x.grad!.data(),
      await layer.weight.grad!.data(),
      await layer.parameter("lsq.forward.input")!.grad!.data(),
      await layer.parameter("lsq.forward.weight")!.grad!.data(),
      await layer.buffer("lsq.forward.input.unit")!.data(),
    ] as Float32Array[];
    layer.dispose();
    return out;
  };
  try {
    const cpu = await run("cpu"), web = await run("webgpu");
    ["y", "dx", "dW", "dθ input", "dθ weight", "input unit"].forEach((n, i) =>
      assertClose(web[i], cpu[i], { rtol: 2e-5, atol: 2e-5 }, n)
    );
  } finally {
    await useBackend("cpu");
  }
});

Deno.test("lsq: applying again keeps learned steps made for the same format; another format starts afresh", async () => {
  const layer = new Linear("probe", { seed: 3 }, 32, 8);
  const record = (format: string): LinearPrecision => ({
    forward: { weight: { format, granularity: "channel", lsq: true } },
  });
  applyPrecision(layer, record("int8"));
  const theta = layer.parameter("lsq.forward.weight")!;
  theta.assign(tensor(Array.from({ length: 8 }, (_, i) => 1 + i / 10)));
  const unit8 = await layer.buffer("lsq.forward.weight.unit")!.data();
  applyPrecision(layer, record("int8"));
  assert.equal(layer.parameter("lsq.forward.weight"), theta, "kept");
  applyPrecision(layer, record("int4"));
  assert.notEqual(layer.parameter("lsq.forward.weight"), theta, "int4 steps are new");
  assert.deepEqual([...await layer.parameter("lsq.forward.weight")!.data()], Array(8).fill(1));
  const unit4 = await layer.buffer("lsq.forward.weight.unit")!.data();
  unit4.forEach((u, i) => assert.ok(Math.abs(u / unit8[i] - Math.sqrt(127 / 7)) < 1e-5, "u scales with 1/sqrt(Qp)"));
  applyPrecision(layer, "f32");
  assert.equal(layer.namedParameters().length, 2, "f32 removes the steps");
  assert.equal(layer.namedBuffers().length, 0);
  layer.dispose();
});
