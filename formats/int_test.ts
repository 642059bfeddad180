/**
 * INT-k: the exact helpers (f32 addition, integer rounding) against
 * `Math.fround` and on WebGPU, crafted values (ties, clamping, zero points,
 * specials), every format and granularity against a small independent
 * reference in plain `Math.fround` arithmetic, CPU vs WebGPU bit for bit for
 * every format × granularity × rounding, and stochastic rounding's bias and
 * reproducibility.
 */
import assert from "node:assert/strict";
import { cpuBackend, type Tensor, tensor } from "@lowp/core";
import { type Backend, philoxWords, sizeOf, type WordKernel } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import type { Rounding } from "./element.ts";
import { intCodeOf, intQuantizer, parseIntFormat } from "./int.ts";
import { f32AddBits, intToBits, nearestEven, roundToInt, SCALED_WGSL } from "./scaling.ts";
import { type Granularity, parseGranularity, type QuantizeOptions, type Quantizer } from "./spec.ts";

const cpu = cpuBackend();
const gpu = await gpuBackendOrSkip();
/** The backends the crafted cases run on. */
const BACKENDS: Backend[] = gpu ? [cpu, gpu] : [cpu];
const QNAN = 0x7fc00000;
const F = new Float32Array(1), U = new Uint32Array(F.buffer);
const bitsOf = (v: number) => (F[0] = v, U[0]);
const valueOf = (b: number) => (U[0] = b, F[0]);
const canon = (b: number) => ((b & 0x7fffffff) > 0x7f800000 ? QNAN : b >>> 0);
const readBits = async (t: Tensor) => new Uint32Array((await t.data()).slice().buffer);
const quantizer = (name: string): Quantizer => intQuantizer(name)!;

// ---------------------------------------------------------------- exact helpers

/** Interesting f32 bit patterns: zeros, subnormals, the normal boundary, ones, max, Inf, NaNs. */
const SPECIAL_BITS = [
  0,
  1,
  2,
  0x7fffff,
  0x800000,
  0x800001,
  0xffffff,
  0x1000000,
  0x3f800000,
  0x3f800001,
  0x3fffffff,
  0x40000000,
  0x4b800000,
  0x33800000,
  0x7f7fffff,
  0x7f7ffffe,
  0x7f000000,
  0x7f800000,
  0x7fc00000,
  0x7f800001,
].flatMap((b) => [b, (b | 0x80000000) >>> 0]);

/** `n` random f32 bit patterns: uniform bits, and pairs of nearby exponents (cancellation, carries). */
function randomBitPairs(n: number, seed: number): [Uint32Array, Uint32Array] {
  const w = philoxWords(new Uint32Array(3 * n), seed, 1, 0);
  const a = new Uint32Array(n), b = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = w[3 * i];
    // Half the pairs share a's exponent up to ±3 so that sums cancel or carry.
    const near = ((a[i] & 0x7f800000) + ((w[3 * i + 2] % 7) - 3) * 0x800000) & 0x7f800000;
    b[i] = w[3 * i + 2] & 1 ? w[3 * i + 1] : ((w[3 * i + 1] & 0x807fffff) | near) >>> 0;
  }
  return [a, b];
}

Deno.test("f32AddBits equals Math.fround(a + b) on specials and 300k random pairs", () => {
  const check = (a: number, b: number) => {
    const want = canon(bitsOf(Math.fround(valueOf(a) + valueOf(b))));
    const got = f32AddBits(a, b);
    if (got !== want) {
      assert.fail(`${a.toString(16)} + ${b.toString(16)}: got ${got.toString(16)}, want ${want.toString(16)}`);
    }
  };
  for (const a of SPECIAL_BITS) for (const b of SPECIAL_BITS) check(a, b);
  const [a, b] = randomBitPairs(300_000, 11);
  for (let i = 0; i < a.length; i++) check(a[i], b[i]);
});

/** [value, nearest (ties to even), nearest-away] integer roundings. */
const ROUND_TO_INT: [number, number, number][] = [
  [2.5, 2, 3],
  [3.5, 4, 4],
  [-2.5, -2, -3],
  [0.5, 0, 1],
  [-0.5, 0, -1],
  [1.4999999, 1, 1],
  [-7.5, -8, -8],
  [1e-45, 0, 0],
  [8388607.5, 8388608, 8388608],
  [1e30, 2 ** 24, 2 ** 24],
  [-Infinity, -(2 ** 24), -(2 ** 24)],
  [NaN, 0, 0],
];

Deno.test("roundToInt: ties to even or away, clamps at ±2^24, NaN → 0", () => {
  for (const [x, even, away] of ROUND_TO_INT) {
    assert.equal(roundToInt(bitsOf(x), 0, 0), even, `nearest ${x}`);
    assert.equal(roundToInt(bitsOf(x), 1, 0), away, `nearest-away ${x}`);
  }
  // Stochastic: 2.25 rounds up iff the draw is below 2^30 (a quarter of the u32 range).
  assert.equal(roundToInt(bitsOf(2.25), 2, 2 ** 30 - 1), 3);
  assert.equal(roundToInt(bitsOf(2.25), 2, 2 ** 30), 2);
  for (const n of [0, 1, -1, 7, -8, 255, 2 ** 23 + 1, -(2 ** 24)]) {
    assert.equal(intToBits(n), bitsOf(n), `intToBits ${n}`);
  }
});

Deno.test("nearestEven equals roundToInt's nearest mode on ties, subnormals, zeros and 200k random f32", () => {
  const cases = [...ROUND_TO_INT.map(([x]) => x), 0, -0, 1e-45, -1e-45, 0.49999997, 0.5000001, 2 ** 24 - 1, -(2 ** 24)];
  for (const w of philoxWords(new Uint32Array(200_000), 7, 0, 0)) {
    const v = (U[0] = w & 0xbfffffff, F[0]); // magnitudes below 2: every rounding case, no NaN/Inf
    cases.push(v, v * 2 ** 16);
  }
  for (const v of cases.map(Math.fround)) {
    if (!Number.isFinite(v) || Math.abs(v) > 2 ** 24) continue;
    assert.equal(nearestEven(v) + 0, roundToInt(bitsOf(v), 0, 0) + 0, `nearestEven(${v})`);
  }
});

/** The helpers on both backends: out0 = a + b, out1 = round_to_int(a, i % 3, b), out2 = int_to_bits of a 25-bit int. */
const HELPERS_KERNEL: WordKernel = {
  name: "test_scaling_helpers",
  inputs: 2,
  outputs: 3,
  cpu: (i, [a, b], [sum, rounded, asFloat]) => {
    sum[i] = f32AddBits(a[i], b[i]);
    rounded[i] = roundToInt(a[i], i % 3, b[i]) >>> 0;
    asFloat[i] = intToBits((b[i] % 0x2000001) - 0x1000000);
  },
  wgslHelpers: SCALED_WGSL,
  wgsl: `  out0[i] = f32_add_bits(in0[i], in1[i]);
  out1[i] = bitcast<u32>(round_to_int(in0[i], i % 3u, in1[i]));
  out2[i] = int_to_bits(i32(in1[i] % 0x2000001u) - 0x1000000);`,
};

async function runHelpers(backend: Backend, a: Uint32Array, b: Uint32Array): Promise<Uint32Array[]> {
  const outs = [0, 1, 2].map(() => backend.alloc(a.length));
  const ins = [backend.upload(a), backend.upload(b)];
  backend.runWords(HELPERS_KERNEL, ins, outs, a.length, []);
  const got = await Promise.all(outs.map((s) => backend.read(s, "u32") as Promise<Uint32Array>));
  [...ins, ...outs].forEach((s) => backend.free(s));
  return got;
}

Deno.test({
  name: "f32_add_bits, round_to_int, int_to_bits: WGSL equals TypeScript bit for bit",
  ignore: !gpu,
  fn: async () => {
    const [ra, rb] = randomBitPairs(1 << 14, 12);
    const a = Uint32Array.from([...SPECIAL_BITS.flatMap((x) => SPECIAL_BITS.map(() => x)), ...ra]);
    const b = Uint32Array.from([...SPECIAL_BITS.flatMap(() => SPECIAL_BITS), ...rb]);
    const [want, got] = [await runHelpers(cpu, a, b), await runHelpers(gpu!, a, b)];
    for (let k = 0; k < 3; k++) assert.deepEqual(got[k], want[k], `output ${k}`);
  },
});

// ---------------------------------------------------------------- crafted values

/** Format, rounding, inputs (1-D, per tensor), expected values and codes. */
const CRAFTED: { name: string; rounding?: Rounding; x: number[]; values: number[]; codes: number[] }[] = [
  // amax 7 → s = 7·fround(1/7) = 1 exactly; ties go to even.
  {
    name: "int4",
    x: [7, 2.5, 3.5, -2.5, 1.5, 0.5, -7, -3.5],
    values: [7, 2, 4, -2, 2, 0, -7, -4],
    codes: [7, 2, 4, 14, 2, 0, 9, 12],
  },
  {
    name: "int4",
    rounding: "nearest-away",
    x: [7, 2.5, 3.5, -2.5, 1.5, 0.5, -7, -3.5],
    values: [7, 3, 4, -3, 2, 1, -7, -4],
    codes: [7, 3, 4, 13, 2, 1, 9, 12],
  },
  // int2: qmax 1 so s = amax; the restricted range never uses -2.
  { name: "int2", x: [1, 0.5, -0.5, -1, 0.75], values: [1, 0, 0, -1, 1], codes: [1, 0, 0, 3, 1] },
  { name: "int8", x: [127, -127, 63.5, 64.5, -0.5], values: [127, -127, 64, 64, 0], codes: [127, 129, 64, 64, 0] },
  // uint4 on [0, 15]: s = 1, zp = 0.
  { name: "uint4", x: [0, 15, 2.5, 3.5, 7.5], values: [0, 15, 2, 4, 8], codes: [0, 15, 2, 4, 8] },
  // uint4 on [-5, 10]: s = 1, zp = 5; -2.5 → round(-2.5) + 5 = 3 → value -2.
  { name: "uint4", x: [-5, 10, -2.5, 0, -0], values: [-5, 10, -2, 0, 0], codes: [0, 15, 3, 5, 5] },
  // All positive: the range still starts at 0 (min = min(x_min, 0)); s = 30·fround(1/15) = 2; 5.5 and 6.5 → 6.
  { name: "uint4", x: [30, 10, 11, 13], values: [30, 10, 12, 12], codes: [15, 5, 6, 6] },
  // Zeros: s = 0, every value +0.
  { name: "int4", x: [0, -0, 0], values: [0, 0, 0], codes: [0, 0, 0] },
  { name: "uint8", x: [-0, 0], values: [0, 0], codes: [0, 0] },
];

Deno.test("crafted INT values: ties, restricted range, zero points, zeros (every backend)", async () => {
  for (const [c, backend] of CRAFTED.flatMap((c) => BACKENDS.map((b) => [c, b] as const))) {
    const q = quantizer(c.name), label = `${c.name} ${c.rounding ?? "nearest"} [${c.x}] ${backend.name}`;
    const x = tensor(c.x, { backend });
    const opts = { rounding: c.rounding };
    assert.deepEqual(await readBits(q.quantDequant(x, opts)), Uint32Array.from(c.values, bitsOf), label);
    assert.deepEqual(Array.from(await q.quantize(x, opts).parts[0].codes.data()), c.codes, `${label} codes`);
  }
});

/** [format, x, 1/s, zero point, expected code]: clamping at qmin and qmax with a given scale. */
const CLAMPS: [string, number, number, number, number][] = [
  ["int4", 100, 1, 0, 7],
  ["int4", -100, 1, 0, -8],
  ["int4", -8.4, 1, 0, -8],
  ["int4", 7.6, 1, 0, 7],
  ["int8", -1e30, 1, 0, -128],
  ["uint4", -10, 1, 3, 0],
  ["uint4", 20, 1, 3, 15],
  ["uint4", 4, 0.5, 3, 5],
];

Deno.test("intCodeOf clamps to [-2^(k-1), 2^(k-1) - 1] and [0, 2^k - 1]", () => {
  for (const [name, x, inv, zp, want] of CLAMPS) {
    const spec = parseIntFormat(name)!;
    const [qmin, qmax] = spec.signed ? [-(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1] : [0, 2 ** spec.bits - 1];
    assert.equal(intCodeOf(bitsOf(x), bitsOf(1 / inv), bitsOf(inv), zp, qmin, qmax, 0, 0), want, `${name} ${x}`);
  }
});

Deno.test("specials: NaN or Inf makes its group NaN (code 0, NaN scale); other groups are unaffected", async () => {
  const x = [1, 2, 3, 4, 1, NaN, 3, 4, 1, 2, -Infinity, 4, 0, -0, 0, 0];
  for (const [name, backend] of ["int4", "uint4"].flatMap((n) => BACKENDS.map((b) => [n, b] as const))) {
    const q = quantizer(name), t = tensor(x, { shape: [4, 4], backend });
    const opts = { granularity: { kind: "group", size: 4 } as const };
    const got = await readBits(q.quantDequant(t, opts));
    const clean = Array.from(await readBits(q.quantDequant(tensor([1, 2, 3, 4], { backend }))));
    assert.deepEqual(Array.from(got), [...clean, ...new Array(8).fill(QNAN), 0, 0, 0, 0], `${name} ${backend.name}`);
    const [codes, scales] = q.quantize(t, opts).parts;
    assert.deepEqual(Array.from((await codes.codes.data()).slice(4, 12)), new Array(8).fill(0), `${name} codes`);
    assert.deepEqual(Array.from(await scales.codes.data()).slice(1), [QNAN, QNAN, 0], `${name} scales`);
  }
  const all = await quantizer("int8").quantDequant(tensor([1, NaN, 2], { backend: cpu })).data();
  assert.ok(all.every(Number.isNaN), "per tensor: one NaN makes the tensor NaN");
});

Deno.test("quantize: part names, bits, formats and shapes", () => {
  const x = tensor(new Float32Array(24), { shape: [2, 3, 4], backend: cpu });
  const cases: [string, Granularity, number[]][] = [
    ["int4", { kind: "tensor" }, [1]],
    ["uint8", { kind: "channel", axis: 1 }, [3]],
    ["uint3", { kind: "group", size: 2 }, [2, 3, 2]],
  ];
  for (const [name, granularity, scaleShape] of cases) {
    const q = quantizer(name).quantize(x, { granularity });
    const parts = q.parts.map((p) => [p.name, p.bits, p.format, p.codes.shape.join(",")]);
    const spec = parseIntFormat(name)!;
    const want = [["codes", spec.bits, name, "2,3,4"], ["scales", 32, "f32", scaleShape.join(",")]];
    if (!spec.signed) want.push(["zero_points", spec.bits, name, scaleShape.join(",")]);
    assert.deepEqual(parts, want, name);
  }
});

Deno.test("errors: unknown names, group size not dividing the last axis, bad axis, non-f32 input", () => {
  for (const name of ["int1", "int9", "uint", "int16", "uint1"]) assert.equal(intQuantizer(name), null, name);
  const x = tensor(new Float32Array(30), { shape: [3, 10], backend: cpu });
  assert.throws(
    () => quantizer("int4").quantDequant(x, { granularity: parseGranularity("group:4") }),
    /group size 4.*\[3,10\]/,
  );
  assert.throws(
    () => quantizer("int4").quantDequant(x, { granularity: parseGranularity("channel:2") }),
    /axis 2.*\[3,10\]/,
  );
  const i = tensor([1, 2], { dtype: "i32", backend: cpu });
  assert.throws(() => quantizer("int4").quantDequant(i), /f32/);
});

// ---------------------------------------------------------------- reference

/** Ties-to-even rounding of a double to an integer. */
function rne(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** Index of the scale of each element, from coordinates (independent of the implementation's layout). */
function scaleIds(shape: number[], g: Granularity): number[] {
  const n = sizeOf(shape), last = shape[shape.length - 1];
  return Array.from({ length: n }, (_, i) => {
    if (g.kind === "tensor") return 0;
    if (g.kind === "group") return Math.floor(i / last) * (last / g.size) + Math.floor((i % last) / g.size);
    const axis = (g.axis + shape.length) % shape.length;
    const stride = sizeOf(shape.slice(axis + 1));
    return Math.floor(i / stride) % shape[axis];
  });
}

/** Fake-quant with nearest rounding in plain Math.fround arithmetic (finite inputs). */
function reference(x: Float32Array, shape: number[], name: string, g: Granularity): Float32Array {
  const spec = parseIntFormat(name)!, f = Math.fround;
  const ids = scaleIds(shape, g), groups = Math.max(...ids) + 1;
  const hi = new Array(groups).fill(0), lo = new Array(groups).fill(0);
  ids.forEach((c, i) => [hi[c], lo[c]] = [Math.max(hi[c], x[i]), Math.min(lo[c], x[i])]);
  const top = spec.signed ? 2 ** (spec.bits - 1) - 1 : 2 ** spec.bits - 1, bottom = spec.signed ? -top - 1 : 0;
  const scale = hi.map((h, c) => spec.signed ? f(Math.max(h, -lo[c]) * f(1 / top)) : f(f(h - lo[c]) * f(1 / top)));
  const zp = scale.map((s, c) => spec.signed || s === 0 ? 0 : Math.min(top, Math.max(0, rne(f(-lo[c] * f(1 / s))))));
  return Float32Array.from(x, (v, i) => {
    const s = scale[ids[i]], z = zp[ids[i]];
    if (s === 0) return 0;
    const q = Math.min(top, Math.max(bottom, rne(f(v * f(1 / s))) + z));
    return f((q - z) * s);
  });
}

const FORMATS = [
  "int2",
  "int3",
  "int4",
  "int5",
  "int6",
  "int7",
  "int8",
  "uint2",
  "uint3",
  "uint4",
  "uint5",
  "uint6",
  "uint7",
  "uint8",
];
const REF_CASES: [number[], string][] = [
  [[5, 12], "tensor"],
  [[5, 12], "channel:0"],
  [[5, 12], "channel:1"],
  [[2, 3, 8], "channel:1"],
  [[2, 3, 8], "channel:-1"],
  [[5, 12], "group:4"],
  [[2, 3, 8], "group:8"],
  [[3, 700], "tensor"], // more than 256 values per scale: the reduction's second pass
  [[3, 700], "channel:0"],
];

Deno.test("every INT format × granularity equals the Math.fround reference bit for bit (CPU)", async () => {
  for (const [shape, text] of REF_CASES) {
    const n = sizeOf(shape), g = parseGranularity(text);
    const w = philoxWords(new Uint32Array(n), n, 2, 0);
    // Values of mixed magnitudes, with exact ties (k/4) and zeros of both signs.
    const x = Float32Array.from(
      w,
      (v, i) => i % 11 === 0 ? (i % 2 ? -0 : 0) : ((v % 64) - 32) / 4 * 2 ** ((v >>> 8) % 7 - 3),
    );
    for (const name of FORMATS) {
      const got = await readBits(quantizer(name).quantDequant(tensor(x, { shape, backend: cpu }), { granularity: g }));
      const want = new Uint32Array(reference(x, shape, name, g).buffer);
      assert.deepEqual(got, want, `${name} ${text} [${shape}]`);
    }
  }
});

// ---------------------------------------------------------------- CPU vs WebGPU

/**
 * `n` f32 values: normals over 2^-8…2^8, subnormals, zeros of both signs, and
 * (with `extreme`) huge values, NaNs (one with a payload) and ±Inf.
 */
function mixedInput(n: number, seed: number, extreme: boolean): Float32Array {
  const w = philoxWords(new Uint32Array(2 * n), seed, 3, 0);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const r = w[2 * i], sign = (r & 1) << 31, kind = (r >>> 1) % 48;
    const mant = w[2 * i + 1] & 0x7fffff;
    const exp = kind === 0 ? 0 : kind === 1 && extreme ? 227 + (r >>> 8) % 26 : 119 + (r >>> 8) % 17;
    out[i] = kind === 2
      ? sign
      : extreme && kind === 3
      ? (r & 2 ? 0xffc00001 : QNAN)
      : extreme && kind === 4
      ? 0x7f800000 | sign
      : sign | (exp << 23) | mant;
  }
  return new Float32Array(out.buffer);
}

const PARITY_SHAPE = [4, 24];
const GRANULARITIES = ["tensor", "channel:0", "channel:-1", "group:8"];
const ROUNDINGS: Rounding[] = ["nearest", "nearest-away", "stochastic"];

/** Every output of a quantizer on one backend: quantDequant, the parts' words, and dequantize(quantize(x)). */
async function outputsOf(q: Quantizer, backend: Backend, x: Float32Array, shape: number[], opts: QuantizeOptions) {
  const t = tensor(x, { shape, backend });
  const values = await readBits(q.quantDequant(t, opts));
  const stored = q.quantize(t, opts);
  const parts = await Promise.all(stored.parts.map((p) => p.codes.data().then((d) => Array.from(d))));
  const restored = await readBits(q.dequantize(stored));
  return { values, parts, restored };
}

Deno.test({
  name:
    "CPU and WebGPU agree bit for bit: every INT format × granularity × rounding; dequantize∘quantize = quantDequant",
  ignore: !gpu,
  fn: async () => {
    for (const [k, name] of FORMATS.entries()) {
      for (const text of GRANULARITIES) {
        const x = mixedInput(sizeOf(PARITY_SHAPE), 100 + k, text !== "tensor");
        for (const rounding of ROUNDINGS) {
          const opts = { granularity: parseGranularity(text), rounding, seed: 5, stream: 2, offset: 2 ** 32 - 7 };
          const label = `${name} ${text} ${rounding}`;
          const [c, g] = [
            await outputsOf(quantizer(name), cpu, x, PARITY_SHAPE, opts),
            await outputsOf(quantizer(name), gpu!, x, PARITY_SHAPE, opts),
          ];
          assert.deepEqual(g, c, label);
          assert.deepEqual(c.restored, c.values, `${label}: dequantize(quantize(x)) on CPU`);
          assert.ok(c.values.every((b) => (b & 0x7fffffff) <= 0x7f800000 || b === QNAN), `${label}: canonical NaN`);
        }
      }
    }
  },
});

Deno.test({
  name: "CPU and WebGPU agree on scales of more than 256 values (two reduction passes)",
  ignore: !gpu,
  fn: async () => {
    const shape = [3, 700], x = mixedInput(2100, 7, false);
    for (const name of ["int8", "uint4"]) {
      for (const text of ["tensor", "channel:0"]) {
        const opts = { granularity: parseGranularity(text) };
        const [c, g] = [
          await outputsOf(quantizer(name), cpu, x, shape, opts),
          await outputsOf(quantizer(name), gpu!, x, shape, opts),
        ];
        assert.deepEqual(g, c, `${name} ${text}`);
      }
    }
  },
});

// ---------------------------------------------------------------- stochastic rounding

Deno.test("stochastic rounding is unbiased and reproducible from (seed, stream, offset)", async () => {
  const n = 20_000;
  // int4 with amax 7 (s = 1) and uint4 on [0, 15] (s = 1): x = 2.3 lies between codes 2 and 3.
  for (const [name, anchor] of [["int4", -7], ["uint4", 15]] as const) {
    const x = new Float32Array(n + 1).fill(2.3);
    x[0] = anchor;
    const t = tensor(x, { backend: cpu }), q = quantizer(name);
    const draw = async (opts: QuantizeOptions) =>
      (await q.quantDequant(t, { rounding: "stochastic", ...opts }).data()).slice(1);
    const a = await draw({ seed: 1 });
    const mean = Array.from(a).reduce((s, v) => s + v, 0) / n;
    // Each draw is 2 or 3 with sd ≈ 0.46, so the mean's sd is 0.0032: 0.015 is a 4.6-sigma bound.
    assert.ok(Math.abs(mean - Math.fround(2.3)) < 0.015, `${name}: mean ${mean}`);
    assert.ok(Math.abs(mean - 2.3) < Math.abs(2 - 2.3), `${name}: closer than round-to-nearest`);
    assert.deepEqual(await draw({ seed: 1 }), a, `${name}: same key, same draws`);
    for (const other of [{ seed: 2 }, { seed: 1, stream: 1 }, { seed: 1, offset: 1 }]) {
      assert.notDeepEqual(await draw(other), a, `${name}: ${JSON.stringify(other)} changes the draws`);
    }
  }
});
