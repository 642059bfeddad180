/**
 * Flexpoint flex16+5: the per-tensor exponent on crafted tensors, rounding
 * and saturation of the 16-bit mantissas, Autoflex on scripted max-abs
 * sequences (prediction, window, overflow doubling, clamping), and CPU vs
 * WebGPU bit for bit.
 */
import assert from "node:assert/strict";
import { cpuBackend, randn, type Tensor, tensor } from "@lowp/core";
import { type Backend, philoxWords } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import type { Rounding } from "./element.ts";
import { Autoflex, type AutoflexOptions, autoflexQuantDequant, autoflexState } from "./autoflex.ts";
import { FLEX_EXP_MIN, flexQuantizer, maxAbs } from "./flex.ts";
import type { QuantizeOptions } from "./spec.ts";

const cpu = cpuBackend();
const gpu = await gpuBackendOrSkip();
/** The backends the crafted cases run on. */
const BACKENDS: Backend[] = gpu ? [cpu, gpu] : [cpu];
const flex = flexQuantizer("flex16+5")!;
const readBits = async (t: Tensor) => new Uint32Array((await t.data()).slice().buffer);
const values = async (t: Tensor) => Array.from(await t.data());

/** Inputs, the expected exponent, and the expected values (nearest rounding unless given). */
const EXPONENTS: { x: number[]; e: number; want: number[]; rounding?: Rounding }[] = [
  { x: [1, -0.5], e: -14, want: [1, -0.5] },
  { x: [1.5, 2 ** -15, 3 * 2 ** -15], e: -14, want: [1.5, 0, 2 ** -13] }, // half units tie to even
  { x: [1.5, 2 ** -15, 3 * 2 ** -15], e: -14, want: [1.5, 2 ** -14, 2 ** -13], rounding: "nearest-away" },
  { x: [0.75, 0.1], e: -15, want: [0.75, 3277 * 2 ** -15] },
  { x: [32767.4, -1], e: 0, want: [32767, -1] },
  { x: [65536, -40000, 3.5], e: 0, want: [32767, -32768, 4] }, // beyond the exponent range: saturates
  { x: [2 ** -20, 3 * 2 ** -33], e: FLEX_EXP_MIN, want: [2 ** -20, 2 ** -31] }, // below: fewer significant bits
  { x: [0, -0], e: FLEX_EXP_MIN, want: [0, 0] },
  { x: [1e-40, -1e-45], e: FLEX_EXP_MIN, want: [0, 0] },
];

Deno.test("per-tensor exponent floor(log2 amax) − 14 in [−31, 0]; mantissas round and saturate", async () => {
  for (const [{ x, e, want, rounding }, backend] of EXPONENTS.flatMap((c) => BACKENDS.map((b) => [c, b] as const))) {
    const t = tensor(x, { backend }), label = `[${x}] ${rounding ?? ""} ${backend.name}`;
    assert.deepEqual(await values(flex.quantDequant(t, { rounding })), want, label);
    const [codes, scale] = flex.quantize(t, { rounding }).parts;
    assert.deepEqual(await values(scale.codes), [((e + 127) << 23) >>> 0], `${label} scale`);
    assert.deepEqual(await values(codes.codes), want.map((v) => (v * 2 ** -e) & 0xffff), `${label} codes`);
  }
});

Deno.test("quantDequantWith: a given exponent saturates at 32767 and −32768 mantissa units", async () => {
  for (const backend of BACKENDS) {
    const t = tensor([1, 3, -5, 2 ** -15], { backend });
    assert.deepEqual(await values(flex.quantDequantWith(t, -14)), [1, 32767 * 2 ** -14, -32768 * 2 ** -14, 0]);
    assert.deepEqual(await values(flex.quantDequantWith(t, -12)), [1, 3, -5, 0]);
    for (const e of [1, -32, 0.5]) assert.throws(() => flex.quantDequantWith(t, e), /exponent/);
  }
});

Deno.test("specials: NaN or Inf makes the tensor NaN; names and granularity are checked", async () => {
  for (const [bad, backend] of [NaN, Infinity, -Infinity].flatMap((v) => BACKENDS.map((b) => [v, b] as const))) {
    const t = tensor([1, bad, 2], { backend });
    assert.deepEqual(Array.from(await readBits(flex.quantDequant(t))), [0x7fc00000, 0x7fc00000, 0x7fc00000], `${bad}`);
    assert.ok((await values(flex.quantDequantWith(t, -10))).every(Number.isNaN), `${bad} with an exponent`);
  }
  assert.equal(flexQuantizer("flex16"), null);
  const t = tensor([1, 2], { backend: cpu });
  assert.throws(() => flex.quantDequant(t, { granularity: { kind: "group", size: 2 } }), /per tensor/);
});

// ---------------------------------------------------------------- Autoflex

/** A scripted run: options, then [max-abs, exponent used, overflowed, next exponent] per step. */
const SCRIPTS: { name: string; opts?: AutoflexOptions; steps: [number, number, boolean, number][] }[] = [
  {
    name: "prediction and overflow doubling",
    steps: [
      [1, -14, false, -14], // own exponent; pred 1 + 100·2^-14 → -14
      [1.5, -14, false, -13], // pred 1.5 + 3·0.25 + 100·2^-14 = 2.256 → -13
      [4.5, -13, true, -12], // 4.5·2^13 = 36864 ≥ 32767: clear, double
      [4.5, -12, false, -12], // pred 4.5 + 100·2^-12 = 4.524 → -12
      [32767 * 2 ** -12, -12, true, -11], // exactly 2^15 − 1 units counts as an overflow
      [32766 * 2 ** -11, -11, false, -10], // pred 15.99 + 100·2^-11 = 16.04 → -10
      [NaN, -10, true, -9], // NaN/Inf: overflow
    ],
  },
  {
    name: "the window drops old values (history 2)",
    opts: { history: 2 },
    steps: [
      [8, -11, false, -11], // pred 8 + 100·2^-11 = 8.05 → -11
      [1, -11, false, -10], // pred 8 + 3·3.5 + 100·2^-11 = 18.55 → -10
      [1, -10, false, -14], // history [1, 1]: pred 1 + 100·2^-10 = 1.098 → -14
      [1, -14, false, -14],
    ],
  },
  {
    name: "exponents stay in [−31, 0]",
    // The margin of 100 units at e = 0 dominates a tiny max-abs: pred = 100 → -8, then 100·2^-8 + … → -16.
    steps: [[40000, 0, true, 0], [40000, 0, true, 0], [1e-12, 0, false, -8], [0, -8, false, -16]],
  },
  { name: "lower clamp without a margin", opts: { marginUnits: 0 }, steps: [[1e-12, -31, false, -31]] },
];

Deno.test("Autoflex follows scripted max-abs sequences", () => {
  for (const { name, opts, steps } of SCRIPTS) {
    const af = new Autoflex(opts);
    for (const [k, [amax, exponent, overflowed, next]] of steps.entries()) {
      const s = af.observe(amax);
      assert.deepEqual([s.exponent, s.overflowed, s.nextExponent], [exponent, overflowed, next], `${name}, step ${k}`);
      assert.equal(s.scale, 2 ** exponent);
      assert.equal(af.exponent, next);
    }
  }
  const af = new Autoflex();
  for (let k = 0; k < 20; k++) af.observe(k + 1);
  assert.deepEqual(af.history, Array.from({ length: 16 }, (_, k) => k + 5), "keeps the last 16");
});

// ---------------------------------------------------------------- CPU vs WebGPU

/** N(0,1)·2^(−20…10) by row, zeros, subnormals, and (with `specials`) one NaN or ±Inf. */
async function input(n: number, seed: number, specials: boolean): Promise<Float32Array> {
  const g = await randn([n], { seed, stream: 4 }, 1, { backend: cpu }).data();
  const w = philoxWords(new Uint32Array(n), seed, 5, 0);
  const x = Float32Array.from(
    w,
    (r, i) =>
      r % 53 === 0
        ? (i % 2 ? -0 : 0)
        : r % 53 === 1
        ? new Float32Array(Uint32Array.of(r & 0x807fffff).buffer)[0]
        : g[i] * 2 ** (seed % 31 - 20),
  );
  if (specials) x[seed % n] = [NaN, Infinity, -Infinity][seed % 3];
  return x;
}

async function outputs(backend: Backend, x: Float32Array, opts: QuantizeOptions, exponent: number) {
  const t = tensor(x, { shape: [3, x.length / 3], backend });
  const q = flex.quantize(t, opts);
  return {
    values: await readBits(flex.quantDequant(t, opts)),
    parts: await Promise.all(q.parts.map((p) => p.codes.data())),
    restored: await readBits(flex.dequantize(q)),
    given: await readBits(flex.quantDequantWith(t, exponent, opts)),
    maxAbs: await maxAbs(t),
  };
}

Deno.test({
  name: "CPU and WebGPU agree bit for bit: every rounding, own and given exponents; dequantize∘quantize = quantDequant",
  ignore: !gpu,
  fn: async () => {
    for (const [k, seed] of [3, 17, 26, 8].entries()) {
      const x = await input(3 * 400, seed, k === 3); // 1200 values: two reduction passes
      for (const rounding of ["nearest", "nearest-away", "stochastic"] as const) {
        const opts = { rounding, seed: 9, offset: 77 }, label = `input ${seed} ${rounding}`;
        const [c, g] = [await outputs(cpu, x, opts, -12 - k), await outputs(gpu!, x, opts, -12 - k)];
        assert.deepEqual(g, c, label);
        assert.deepEqual(c.restored, c.values, `${label}: round trip`);
        assert.ok(c.values.every((b) => (b & 0x7fffffff) <= 0x7f800000 || b === 0x7fc00000), `${label}: canonical NaN`);
      }
    }
  },
});

Deno.test("Autoflex.next reads the max-abs from the tensor (on every backend)", async () => {
  for (const backend of gpu ? [cpu, gpu] : [cpu]) {
    const af = new Autoflex();
    const steps = [];
    for (const v of [1, 1.5, 4.5]) steps.push(await af.next(tensor([v / 3, -v], { backend })));
    assert.deepEqual(steps.map((s) => [s.exponent, s.overflowed, s.maxAbs]), [[-14, false, 1], [-14, false, 1.5], [
      -13,
      true,
      4.5,
    ]]);
  }
});

Deno.test("stochastic mantissas are unbiased and reproducible", async () => {
  const n = 20_000, x = new Float32Array(n + 1).fill(1.3 * 2 ** -14);
  x[0] = 1; // e = -14: x sits 0.3 units above a mantissa
  const t = tensor(x, { backend: cpu });
  const draw = async (seed: number) => (await flex.quantDequant(t, { rounding: "stochastic", seed }).data()).slice(1);
  const a = await draw(3), mean = Array.from(a).reduce((s, v) => s + v, 0) / n * 2 ** 14;
  // sd of one draw ≈ 0.46 units, of the mean 0.0032: 0.015 is a 4.6-sigma bound.
  assert.ok(Math.abs(mean - 1.3) < 0.015, `mean ${mean} units`);
  assert.deepEqual(await draw(3), a);
  assert.notDeepEqual(await draw(4), a);
});

// ---------------------------------------------------------------- Autoflex on the backend

/** Max-abs sequences: growth, overflow, NaN/Inf, zeros, subnormals, clamping at −31 and 0, a full window. */
const SEQUENCES: { name: string; opts?: AutoflexOptions; amaxes: number[] }[] = [
  { name: "growth and overflow", amaxes: [1, 1.5, 4.5, 4.5, 32767 * 2 ** -12, 32766 * 2 ** -11, 20, 0.3, 0.31] },
  { name: "NaN and Inf", amaxes: [NaN, 2, Infinity, 3, -Infinity, 3, NaN] },
  { name: "zeros and subnormals", amaxes: [0, 0, 1e-40, 1e-45, 2 ** -126, 0] },
  { name: "clamped at −31 without a margin", opts: { marginUnits: 0 }, amaxes: [1e-12, 0, 1e-30, 2e-12] },
  { name: "clamped at 0", amaxes: [40000, 40000, 1e6, 30000, 32000, 1] },
  {
    name: "window of 4, 3.5 sigmas",
    opts: { history: 4, sigmas: 3.5, marginUnits: 7 },
    amaxes: Array.from({ length: 14 }, (_, k) => (k > 10 ? 3 : 0.9) * (1 + ((k * 7) % 5) / 5)),
  },
];

/** One tensor with max-abs `a` (and a few smaller values of both signs). */
const withMaxAbs = (a: number, backend: Backend) =>
  tensor([a / 3, -a, Number.isFinite(a) ? a / 1.7 : 1, a / 100], { backend });

Deno.test("Autoflex on the backend: the state update is the host's step, values use the exponent it chose", async () => {
  for (const [{ name, opts, amaxes }, backend] of SEQUENCES.flatMap((s) => BACKENDS.map((b) => [s, b] as const))) {
    const host = new Autoflex(opts);
    let state = autoflexState(backend, opts);
    for (const [k, a] of amaxes.entries()) {
      const label = `${name}, step ${k} (${a}) on ${backend.name}`, x = withMaxAbs(a, backend);
      const { values, state: next } = autoflexQuantDequant(x, state, { ...opts, update: true });
      const step = host.observe(a);
      assert.deepEqual(await readBits(next!), host.state, `${label}: state`);
      const want = Number.isNaN(a) || !Number.isFinite(a)
        ? new Uint32Array(4).fill(0x7fc00000)
        : await readBits(flex.quantDequantWith(withMaxAbs(a, cpu), step.exponent));
      assert.deepEqual(await readBits(values), want, `${label}: values at exponent ${step.exponent}`);
      state = next!;
    }
  }
});

Deno.test("Autoflex on the backend: without update the state stays and the predicted exponent is used", async () => {
  for (const backend of BACKENDS) {
    const host = new Autoflex();
    let state = autoflexState(backend);
    const fresh = await readBits(state);
    const probe = withMaxAbs(3, backend);
    const first = autoflexQuantDequant(probe, state, { update: false });
    assert.equal(first.state, null);
    assert.deepEqual(await values(first.values), await values(flex.quantDequant(probe)), "own exponent at first");
    assert.deepEqual(await readBits(state), fresh, "an evaluation leaves the state alone");
    for (const a of [1, 1.5]) {
      state = autoflexQuantDequant(withMaxAbs(a, backend), state, { update: true }).state!;
      host.observe(a);
    }
    assert.equal(host.exponent, -13);
    const held = await readBits(state);
    const predicted = autoflexQuantDequant(probe, state, { update: false }).values;
    assert.deepEqual(await values(predicted), await values(flex.quantDequantWith(probe, -13)), "saturates at 2^-13");
    assert.deepEqual(await readBits(state), held, "still unmoved");
  }
});

Deno.test({
  name: "Autoflex on the backend: CPU and WebGPU give the same states and values in every rounding",
  ignore: !gpu,
  fn: async () => {
    for (const rounding of ["nearest", "stochastic"] as const) {
      const run = async (backend: Backend) => {
        let state = autoflexState(backend, { history: 3 });
        const out = [];
        for (const [k, seed] of [3, 17, 26, 8, 5, 11].entries()) {
          const x = tensor(await input(3 * 400, seed, k === 3), { backend });
          const r = autoflexQuantDequant(x, state, { history: 3, rounding, seed: 9, offset: k, update: true });
          out.push(await readBits(r.values), await readBits(r.state!));
          state = r.state!;
        }
        return out;
      };
      assert.deepEqual(await run(gpu!), await run(cpu), rounding);
    }
  },
});

/** The original simulator's prediction in f64 with a square root: the exponent, or null within 1e-5 of a power of 2. */
function simulatorNext(history: readonly number[], e: number): number | null {
  const n = history.length, mean = history.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(history.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  const pred = Math.max(...history) + 3 * std + 100 * 2 ** e, lg = Math.log2(pred);
  if (Math.abs(lg - Math.round(lg)) < 1e-5) return null;
  return Math.min(0, Math.max(-31, Math.floor(lg) - 14));
}

Deno.test("Autoflex's exact f32 prediction agrees with the simulator's f64 formula away from powers of two", () => {
  const words = philoxWords(new Uint32Array(4000), 12, 1, 0);
  let compared = 0;
  for (let run = 0; run < 40; run++) {
    const af = new Autoflex(), scale = 2 ** ((run % 23) - 16);
    for (let k = 0; k < 50; k++) {
      const w = words[run * 50 + k];
      const step = af.observe(scale * (1 + (w % 1000) / 250) * (w % 7 === 0 ? 3 : 1));
      if (step.overflowed) continue;
      const want = simulatorNext(af.history, step.exponent);
      if (want === null) continue;
      assert.equal(step.nextExponent, want, `run ${run}, step ${k}: history ${af.history}`);
      compared++;
    }
  }
  assert.ok(compared > 1500, `${compared} predictions compared`);
});

Deno.test("Autoflex: bad settings and states get one clear error", () => {
  for (
    const [opts, what] of [
      [{ history: 0 }, /history must be an integer from 1 to 1024, got 0/],
      [{ history: 2.5 }, /history must be an integer/],
      [{ sigmas: -1 }, /sigmas must be from 0 to 1000, got -1/],
      [{ marginUnits: NaN }, /margin units must be from 0 to 65536, got NaN/],
    ] as const
  ) {
    assert.throws(() => new Autoflex(opts), what);
    assert.throws(() => autoflexState(cpu, opts), what);
  }
  const x = tensor([1, 2], { backend: cpu });
  assert.throws(
    () => autoflexQuantDequant(x, autoflexState(cpu, { history: 4 }), { update: true }),
    /an Autoflex state for a history of 16 is f32 \[18\], got/,
  );
  assert.throws(() => autoflexQuantDequant(tensor([1], { dtype: "i32" }), autoflexState(cpu), { update: true }), /f32/);
});
