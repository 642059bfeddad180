/**
 * The fake-quant autograd ops: straight-through gradients (plain and clipped)
 * exactly on crafted inputs, the forward against the quantizer, LSQ's forward
 * (ties to even), its estimator on crafted values, its gradient scale, finite
 * differences where the estimator is the true derivative, and WebGPU against
 * the CPU (bit-identical: every step is an exact or correctly rounded op).
 */
import assert from "node:assert/strict";
import { backward, cpuBackend, mul, noGrad, type Tensor, tensor, tidy } from "@lowp/core";
import type { Backend } from "@lowp/kernels";
import { assertClose, gpuBackendOrSkip, randomArray, seedOf } from "../tests/helpers.ts";
import { fakeQuant, type FakeQuantOptions, type LsqOptions, lsqQuant, lsqRange, steClipRange } from "./fake_quant.ts";
import { floatQuantizer } from "./float.ts";
import type { Quantizer } from "./spec.ts";

const cpu = cpuBackend();
/** Exact, and -0 told from +0: a gradient that does not flow is +0 (`where`), never R·0. */
const EXACT = { rtol: 0, atol: 0 };
const fq = (name: string) => floatQuantizer(name)!;

/** Forward values and the gradients of Σ R·fn(inputs) w.r.t. every input, read back. */
async function valueAndGrads(
  fn: (...xs: Tensor[]) => Tensor,
  inputs: { data: ArrayLike<number>; shape: number[] }[],
  r: ArrayLike<number>,
  backend: Backend = cpu,
): Promise<{ y: Float32Array; grads: Float32Array[] }> {
  const leaves = inputs.map(({ data, shape }) =>
    tensor(Float32Array.from(data), { shape, backend, requiresGrad: true })
  );
  const y = tidy(() => {
    const y = fn(...leaves);
    backward(y, tensor(Float32Array.from(r), { shape: [...y.shape], backend }));
    return y;
  });
  const out = await y.data() as Float32Array;
  const grads = await Promise.all(leaves.map(async (t) => await t.grad!.data() as Float32Array));
  [y, ...leaves].forEach((t) => t.dispose());
  return { y: out, grads };
}

/** quantDequant on the CPU, no autograd. */
async function reference(q: Quantizer, x: ArrayLike<number>, opts: FakeQuantOptions = {}): Promise<Float32Array> {
  const { ste: _ste, clip: _clip, ...rest } = opts;
  const y = noGrad(() => q.quantDequant(tensor(Float32Array.from(x), { backend: cpu }), rest));
  const out = await y.data() as Float32Array;
  y.dispose();
  return out;
}

// ---------------------------------------------------------------- STE

/** A scaled stand-in quantizer (no fixed clip range): rounds to multiples of 0.5 within ±2. */
const TOY: Quantizer = {
  name: "toy16",
  elementBits: 4,
  blockSize: 16,
  quantDequant: (x) => noGrad(() => fq("e2m1").quantDequant(x)),
  quantize: () => {
    throw new Error("unused");
  },
  dequantize: () => {
    throw new Error("unused");
  },
};

/** [label, quantizer, options, x, gradient mask]: the gradient must be exactly R·mask. */
const STE_CASES: [string, Quantizer, FakeQuantOptions, number[], number[]][] = [
  ["e4m3 plain", fq("e4m3"), {}, [-1000, -448, -0.3, 0, 0.3, 448, 449, 464, 1e30], [1, 1, 1, 1, 1, 1, 1, 1, 1]],
  [
    "e4m3 clipped at its max 448",
    fq("e4m3"),
    { ste: "clipped" },
    [-1000, -448, -0.3, 0, 0.3, 448, 449, 464, 1e30],
    [0, 1, 1, 1, 1, 1, 0, 0, 0],
  ],
  ["e2m1 clipped at 6, NaN gets none", fq("e2m1"), { ste: "clipped" }, [-7, -6, -6.01, 5.9, 6, 6.5, NaN], [
    0,
    1,
    0,
    1,
    1,
    0,
    0,
  ]],
  ["e5m2 clipped, non-saturating", fq("e5m2"), { ste: "clipped", saturate: false }, [57344, 57345, 61440, 1e6, -1], [
    1,
    0,
    0,
    0,
    1,
  ]],
  ["e4m3 clipped at an explicit 1", fq("e4m3"), { ste: "clipped", clip: 1 }, [-2, -1, 0.5, 1, 1.01], [0, 1, 1, 1, 0]],
  ["a scaled format, plain", TOY, {}, [-3, 0.3, 3], [1, 1, 1]],
  ["a scaled format clipped at an explicit 2", TOY, { ste: "clipped", clip: 2 }, [-3, -2, 0.3, 2.5], [0, 1, 1, 0]],
];

for (const [label, q, opts, x, mask] of STE_CASES) {
  Deno.test(`fakeQuant ${label}: forward is quantDequant, gradient R·mask exactly`, async () => {
    const r = x.map((_, i) => (i % 3) - 0.75); // nonzero, distinct signs
    const { y, grads } = await valueAndGrads((t) => fakeQuant(t, q, opts), [{ data: x, shape: [x.length] }], r);
    assertClose(y, await reference(q, x, opts), EXACT, `${label}: forward`);
    assertClose(grads[0], r.map((v, i) => (mask[i] ? v : 0)), EXACT, `${label}: gradient`);
  });
}

Deno.test("fakeQuant: stochastic rounding options reach the quantizer", async () => {
  const x = randomArray(64, 5, -3, 3);
  const opts: FakeQuantOptions = { rounding: "stochastic", seed: 9, stream: 2, offset: 77, ste: "clipped" };
  const { y } = await valueAndGrads((t) => fakeQuant(t, fq("e2m1"), opts), [{ data: x, shape: [64] }], x);
  assertClose(y, await reference(fq("e2m1"), x, opts), EXACT, "stochastic forward");
  assert.notDeepEqual(y, await reference(fq("e2m1"), x, { ...opts, offset: 78 }));
});

Deno.test("fakeQuant composes with other ops: d(q(w)·x)/dw = x, d/dx = q(w)", async () => {
  const w = [0.3, -1.7, 500], x = [2, 3, -4];
  const { grads } = await valueAndGrads((a, b) => mul(fakeQuant(a, fq("e4m3")), b), [
    { data: w, shape: [3] },
    { data: x, shape: [3] },
  ], [1, 1, 1]);
  assertClose(grads[0], x, EXACT, "dw");
  assertClose(grads[1], await reference(fq("e4m3"), w), EXACT, "dx");
});

Deno.test("fakeQuant records nothing when the input needs no gradient", () => {
  const y = fakeQuant(tensor([1.3], { backend: cpu }), fq("e2m1"));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
});

Deno.test("fakeQuant: clear errors for a clipped STE without a range, clip with plain, unknown ste", () => {
  const x = tensor([1], { backend: cpu });
  assert.throws(() => fakeQuant(x, TOY, { ste: "clipped" }), /toy16.*needs an explicit clip range/);
  assert.throws(() => fakeQuant(x, fq("e4m3"), { clip: 3 }), /only used by the clipped STE/);
  assert.throws(() => fakeQuant(x, fq("e4m3"), { ste: "straight" as "plain" }), /unknown ste 'straight'/);
  assert.throws(() => fakeQuant(x, fq("e4m3"), { ste: "clipped", clip: -1 }), /non-negative/);
  assert.equal(steClipRange(fq("e2m3")), 7.5);
  assert.equal(steClipRange(fq("e5m2")), 57344);
});

// ---------------------------------------------------------------- LSQ

Deno.test("lsqRange: signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1], bad bits refused", () => {
  assert.deepEqual(lsqRange(4), { qn: -8, qp: 7 });
  assert.deepEqual(lsqRange(8, false), { qn: 0, qp: 255 });
  assert.deepEqual(lsqRange(1, false), { qn: 0, qp: 1 });
  for (const [bits, signed] of [[1, true], [0, false], [17, true], [2.5, true]] as const) {
    assert.throws(() => lsqRange(bits, signed), /bits must be an integer/);
  }
});

/** [label, x, s, bits, signed, expected y]; s is a power of two so v = x/s is exact. */
const LSQ_FORWARD: [string, number[], number, number, boolean, number[]][] = [
  [
    "int4 signed, s = 0.5: clamps to [-8, 7], ties to even, -0 kept",
    [-10, -4, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.3, 3.4, 3.5, 3.6, 100],
    0.5,
    4,
    true,
    [-4, -4, -1, -1, -0, 0, 1, 1, 1.5, 3.5, 3.5, 3.5, 3.5],
  ],
  [
    "uint2, s = 1: clamps to [0, 3]",
    [-1, 0.5, 1.5, 2.5, 2.9, 3, 9],
    1,
    2,
    false,
    [0, 0, 2, 2, 3, 3, 3],
  ],
];
for (const [label, x, s, bits, signed, expected] of LSQ_FORWARD) {
  Deno.test(`lsqQuant forward ${label}`, async () => {
    const y = lsqQuant(tensor(x, { backend: cpu }), tensor([s], { backend: cpu }), bits, { signed });
    assertClose(await y.data(), expected, EXACT, label);
  });
}

/** The paper's estimator in f64: dx mask and d(level)/ds per element, for a given v = x/s. */
function estimator(v: number, qn: number, qp: number): { inside: number; dlevel: number } {
  if (v <= qn) return { inside: 0, dlevel: qn };
  if (v >= qp) return { inside: 0, dlevel: qp };
  const f = Math.floor(v), d = v - f;
  const level = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1; // ties to even
  return { inside: 1, dlevel: level - v };
}

Deno.test("lsqQuant gradients: the paper's estimator on crafted values, per channel, g = 1/√(N·Qp)", async () => {
  // x [3, 4], s [3, 1] (powers of two, so v is exact); N = 4 elements per step size, Qp = 7.
  const x = [-10, -4, -1.25, 0.3, 0.75, 1.3, 1.75, 8, 0.2, 3.4, 7, 6.6];
  const s = [0.5, 0.25, 1];
  const r = [1, -2, 0.5, 3, -1, 2, 1.5, -0.5, 2, 1, -3, 0.25];
  const { grads } = await valueAndGrads((a, b) => lsqQuant(a, b, 4), [
    { data: x, shape: [3, 4] },
    { data: s, shape: [3, 1] },
  ], r);
  const g = 1 / Math.sqrt(4 * 7);
  const dx: number[] = [], ds = [0, 0, 0];
  x.forEach((xi, i) => {
    const v = Math.fround(xi) / s[Math.floor(i / 4)];
    const e = estimator(v, -8, 7);
    dx.push(e.inside ? r[i] : 0);
    ds[Math.floor(i / 4)] += r[i] * e.dlevel * g;
  });
  assertClose(grads[0], dx, EXACT, "dx");
  // f32: the dlevel differences, products and a 4-term sum, then the multiply by fl(g): a few ulp of Σ|terms|.
  assertClose(grads[1], ds, { rtol: 2 ** -20, atol: 2 ** -20 }, "ds");
});

Deno.test("lsqQuant: the step size's gradient is exactly fl(g)·(its gradient with gradScale 1)", async () => {
  const x = randomArray(24, 3, -4, 4), r = randomArray(24, 4);
  const run = (opts: LsqOptions) =>
    valueAndGrads((a, b) => lsqQuant(a, b, 3, opts), [{ data: x, shape: [2, 12] }, { data: [0.37], shape: [] }], r);
  const [scaled, raw] = [await run({}), await run({ gradScale: 1 })];
  const g = Math.fround(1 / Math.sqrt(24 * 3));
  assertClose(scaled.grads[1], [Math.fround(raw.grads[1][0] * g)], EXACT, "ds");
  assertClose(scaled.grads[0], raw.grads[0], EXACT, "dx does not depend on gradScale");
});

/**
 * Central differences in s with s ± h dyadic (s = 0.5, h = 2^-8) and levels ≤ 8, so every level·(s ± h) is
 * exact in f32 and the difference quotient is exact. Inputs keep v's fractional part in [0.2, 0.3] or beyond
 * the range by more than 1, so the ±h step (|dv| ≤ |v|·h/s < 0.06) never crosses a rounding boundary.
 */
async function dLossDs(x: number[], r: number[], bits: number, s = 0.5, h = 2 ** -8): Promise<number> {
  const loss = async (step: number) => {
    const y = await lsqQuant(tensor(x, { backend: cpu }), tensor([step], { backend: cpu }), bits).data();
    return Array.from(y).reduce((acc, v, i) => acc + r[i] * v, 0);
  };
  return (await loss(s + h) - await loss(s - h)) / (2 * h);
}

Deno.test("lsqQuant: beyond the range the estimator is the true derivative (dy/ds = Qn or Qp, dy/dx = 0)", async () => {
  const x = [-9, -6, 5, 40], r = [1, -2, 0.5, 3]; // v = -18, -12, 10, 80 with [Qn, Qp] = [-8, 7]
  const { grads } = await valueAndGrads((a, b) => lsqQuant(a, b, 4, { gradScale: 1 }), [
    { data: x, shape: [4] },
    { data: [0.5], shape: [1] },
  ], r);
  assert.equal(grads[1][0], await dLossDs(x, r, 4));
  assert.equal(grads[1][0], -8 * (1 - 2) + 7 * (0.5 + 3));
  assertClose(grads[0], [0, 0, 0, 0], EXACT, "dx");
});

Deno.test("lsqQuant: inside the range the estimator is the true dy/ds = round(v) minus v, and dx = 1 (STE)", async () => {
  const x = [-3.4, -1.1, 0.1, 0.65, 1.15, 2.6], r = [1, -2, 0.5, 3, -1, 2];
  const { grads } = await valueAndGrads((a, b) => lsqQuant(a, b, 4, { gradScale: 1 }), [
    { data: x, shape: [6] },
    { data: [0.5], shape: [1] },
  ], r);
  const sumRv = x.reduce((acc, xi, i) => acc + r[i] * Math.fround(xi) / 0.5, 0);
  assertClose(grads[1], [await dLossDs(x, r, 4) - sumRv], { rtol: 2 ** -20, atol: 2 ** -20 }, "ds");
  // The true dy/dx is 0 (y is piecewise constant in x); the STE passes R instead.
  assertClose(grads[0], r, EXACT, "dx");
});

Deno.test("lsqQuant: clear errors for a step size that does not broadcast, bad bits, i32", () => {
  const x = tensor(new Float32Array(6), { shape: [2, 3], backend: cpu });
  assert.throws(() => lsqQuant(x, tensor([[1], [2], [3]], { backend: cpu }), 4), /do not broadcast/);
  assert.throws(() => lsqQuant(x, tensor([[[1, 2, 3], [4, 5, 6]]], { backend: cpu }), 4), /must broadcast to/);
  assert.throws(() => lsqQuant(x, tensor([1], { backend: cpu }), 1), /bits must be an integer from 2/);
  assert.throws(() => lsqQuant(x, tensor([1], { dtype: "i32", backend: cpu }), 4), /must be f32/);
});

// ---------------------------------------------------------------- WebGPU against the CPU

/** [label, op over (x, extra inputs), inputs]: forward and all gradients must be bit-identical. */
const PARITY: [string, (...xs: Tensor[]) => Tensor, { data: ArrayLike<number>; shape: number[] }[]][] = [
  ["fakeQuant e4m3 plain", (x) => fakeQuant(x, fq("e4m3")), [{ data: randomArray(256, 1, -600, 600), shape: [256] }]],
  [
    "fakeQuant e4m3 clipped",
    (x) => fakeQuant(x, fq("e4m3"), { ste: "clipped" }),
    [{ data: randomArray(256, 2, -600, 600), shape: [256] }],
  ],
  [
    "fakeQuant e2m1 stochastic, clipped",
    (x) => fakeQuant(x, fq("e2m1"), { ste: "clipped", rounding: "stochastic", seed: 4, offset: 3 }),
    [{ data: randomArray(256, 3, -8, 8), shape: [256] }],
  ],
  [
    "lsqQuant int4 per channel",
    (x, s) => lsqQuant(x, s, 4),
    [
      // Row 0 holds exact ties (v = k + 0.5 with s = 0.5); the others random values and steps.
      {
        data: [...Array.from({ length: 32 }, (_, k) => (k - 16 + 0.5) * 0.5), ...randomArray(96, 5, -3, 3)],
        shape: [4, 32],
      },
      { data: [0.5, 0.37, 0.1, 1.3], shape: [4, 1] },
    ],
  ],
  [
    "lsqQuant uint3 with a scalar step",
    (x, s) => lsqQuant(x, s, 3, { signed: false }),
    [{ data: randomArray(64, 6, -1, 4), shape: [8, 8] }, { data: [0.45], shape: [] }],
  ],
];

Deno.test("fake-quant ops: WebGPU matches the CPU bit for bit, forward and backward", async (t) => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const [label, fn, inputs] of PARITY) {
    await t.step(label, async () => {
      const n = inputs[0].shape.reduce((a, b) => a * b, 1);
      const r = randomArray(n, seedOf(label));
      const [c, g] = [await valueAndGrads(fn, inputs, r, cpu), await valueAndGrads(fn, inputs, r, gpu)];
      assertClose(g.y, c.y, EXACT, `${label}: forward`);
      g.grads.forEach((gi, k) => assertClose(gi, c.grads[k], EXACT, `${label}: gradient ${k}`));
    });
  }
});
