/**
 * Exhaustive tests of the element formats (FORMATS.md "How the anchors
 * test"), against a reference written here from the spec alone: a code's value
 * from sign, exponent and mantissa with Math.pow; rounding by comparing with
 * the exact midpoint of the two neighbouring values (f64 holds every value and
 * midpoint exactly). Then the quantizer API (FORMATS.md vectors, -0, f32
 * subnormals, stochastic rounding) and WebGPU against the CPU, bit for bit.
 *
 * Ties to even means the neighbour whose code is even. For M = 0 formats the
 * implementation differs: the significand of every normal is 1 (odd), so a
 * tie between two normals goes up to the larger magnitude (see the M = 0 test).
 */
import assert from "node:assert/strict";
import { cpuBackend, type Tensor, tensor } from "@lowp/core";
import { type Backend, philoxWords } from "@lowp/kernels";
import { assertClose, gpuBackendOrSkip, seedOf } from "../tests/helpers.ts";
import {
  decodeBits,
  e2m1Nearest,
  encodeBits,
  type FloatFormat,
  isSaturatingE2M1,
  maxBits,
  parseFloatFormat,
  quantizeBits,
  quantParams,
  type Rounding,
  ROUNDING_CODE,
  type Specials,
} from "./element.ts";
import { floatQuantizer } from "./float.ts";

// ---------------------------------------------------------------- f32 bits

const F32 = new Float32Array(1), W32 = new Uint32Array(F32.buffer);
const bitsOf = (v: number) => (F32[0] = v, W32[0]);
const valueOf = (w: number) => (W32[0] = w, F32[0]);
const QNAN = 0x7fc00000;
/** Whether the f32 with bits w is subnormal (non-zero with a zero exponent field). */
const f32Subnormal = (w: number) => (w & 0x7f800000) === 0 && (w & 0x7fffff) !== 0;
const hex = (w: number) => `0x${(w >>> 0).toString(16).padStart(8, "0")}`;

// ---------------------------------------------------------------- the formats under test

/** [name, E, M, specials]: the five named formats, generic spellings, FP16 and BF16 (all 2^16 codes). */
const FORMATS: [string, number, number, Specials][] = [
  ["e4m3", 4, 3, "fn"],
  ["e5m2", 5, 2, "ieee"],
  ["e2m3", 2, 3, "none"],
  ["e3m2", 3, 2, "none"],
  ["e2m1", 2, 1, "none"],
  ["e4m3fn", 4, 3, "fn"],
  ["e3m4", 3, 4, "ieee"],
  ["e5m2none", 5, 2, "none"],
  ["e2m2fn", 2, 2, "fn"],
  ["e1m2none", 1, 2, "none"],
  ["e1m0none", 1, 0, "none"],
  ["e3m0none", 3, 0, "none"],
  ["e5m10", 5, 10, "ieee"],
  ["e8m7", 8, 7, "ieee"],
];
const fmt = (name: string): FloatFormat => parseFloatFormat(name)!;

/** The value of code c by the spec (FORMATS.md "Generic ExMy"), computed independently of element.ts. */
function specValue(c: number, e: number, m: number, specials: Specials): number {
  const s = Math.floor(c / 2 ** (e + m)) % 2, ef = Math.floor(c / 2 ** m) % 2 ** e, mf = c % 2 ** m;
  const top = 2 ** e - 1, bias = 2 ** (e - 1) - 1;
  if (specials === "ieee" && ef === top) return mf === 0 ? (s ? -Infinity : Infinity) : NaN;
  if (specials === "fn" && ef === top && mf === 2 ** m - 1) return NaN;
  const mag = ef === 0 ? Math.pow(2, 1 - bias) * (mf / 2 ** m) : Math.pow(2, ef - bias) * (1 + mf / 2 ** m);
  return s ? -mag : mag;
}

/** Finite non-negative values in code order (codes 0, 1, ...), plus the spec's extremes. */
interface Table {
  readonly values: number[];
  readonly codes: number[];
  readonly max: number;
  readonly maxCode: number;
  /** The value one quantum above max (the first value that overflows), and its would-be code. */
  readonly beyond: number;
}
const tables = new Map<string, Table>();
function table(name: string, e: number, m: number, specials: Specials): Table {
  let t = tables.get(name);
  if (!t) {
    const values: number[] = [], codes: number[] = [];
    for (let c = 0; c < 2 ** (e + m); c++) {
      const v = specValue(c, e, m, specials);
      if (Number.isFinite(v)) [values.push(v), codes.push(c)];
    }
    const max = values[values.length - 1];
    const emax = Math.floor(Math.log2(max)); // exact for these dyadic values
    t = { values, codes, max, maxCode: codes[codes.length - 1], beyond: max + 2 ** (emax - m) };
    tables.set(name, t);
  }
  return t;
}

/** What overflow becomes: ±max when saturating (always for formats without specials), else Inf or NaN. */
function overflowValue(specials: Specials, saturate: boolean, max: number, negative: boolean): number {
  if (saturate || specials === "none") return negative ? -max : max;
  return specials === "ieee" ? (negative ? -Infinity : Infinity) : NaN;
}

/**
 * Reference rounding of the f32 `x` to format `name` (modes nearest and nearest-away): find the neighbours
 * lo ≤ |x| < hi in the table (hi may be the value beyond max), compare |x| with their exact midpoint.
 */
function reference(x: number, name: string, spec: [number, number, Specials], mode: Rounding, saturate: boolean) {
  const [e, m, specials] = spec;
  const t = table(name, e, m, specials);
  if (Number.isNaN(x)) return NaN;
  const neg = x < 0 || Object.is(x, -0), a = Math.abs(x);
  const over = overflowValue(specials, saturate, t.max, neg);
  if (a >= t.beyond) return over;
  // Binary search: the last index with values[i] <= a.
  let lo = 0, hi = t.values.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (t.values[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  const loVal = t.values[lo], hiVal = lo + 1 < t.values.length ? t.values[lo + 1] : t.beyond;
  const hiCode = lo + 1 < t.values.length ? t.codes[lo + 1] : t.maxCode + 1;
  const midpoint = (loVal + hiVal) / 2;
  let up = a > midpoint;
  if (a === midpoint) up = mode === "nearest-away" || (m === 0 && loVal > 0) || hiCode % 2 === 0;
  if (a === loVal) up = false;
  const r = up ? (hiVal === t.beyond ? NaN : hiVal) : loVal;
  if (Number.isNaN(r)) return over;
  return neg ? -r : r;
}

const specOf = (name: string): [number, number, Specials] => {
  const row = FORMATS.find((f) => f[0] === name)!;
  return [row[1], row[2], row[3]];
};
const MODES: Rounding[] = ["nearest", "nearest-away", "stochastic"];
const q = (x: number, name: string, mode: Rounding, saturate = true, rand = 0) =>
  valueOf(quantizeBits(bitsOf(x), quantParams(fmt(name), saturate), ROUNDING_CODE[mode], rand));

/** Asserts equal values, NaN meeting NaN and -0 told from +0. */
function same(actual: number, expected: number, what: string): void {
  if (Number.isNaN(actual) && Number.isNaN(expected)) return;
  if (!Object.is(actual, expected)) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}

// ---------------------------------------------------------------- format records and constants

Deno.test("element formats: parsed records (E, M, bias, specials, bits)", () => {
  for (const [name, e, m, specials] of FORMATS) {
    const f = fmt(name);
    assert.deepEqual([f.ebits, f.mbits, f.bias, f.specials, f.bits], [e, m, 2 ** (e - 1) - 1, specials, 1 + e + m]);
  }
  assert.throws(() => parseFloatFormat("e9m2"), /need 1 <= E <= 8/);
  assert.equal(parseFloatFormat("e4m3xyz"), null);
  assert.equal(parseFloatFormat("int4"), null);
});

/** FORMATS.md's table (and IEEE binary16 / bfloat16): max normal, min normal, min subnormal. */
const CONSTANTS: [string, number, number, number][] = [
  ["e4m3", 448, 2 ** -6, 2 ** -9],
  ["e5m2", 57344, 2 ** -14, 2 ** -16],
  ["e2m3", 7.5, 1, 0.125],
  ["e3m2", 28, 0.25, 0.0625],
  ["e2m1", 6, 1, 0.5],
  ["e5m10", 65504, 2 ** -14, 2 ** -24],
  ["e8m7", (2 - 2 ** -7) * 2 ** 127, 2 ** -126, 2 ** -133],
];
for (const [name, max, minNormal, minSub] of CONSTANTS) {
  Deno.test(`${name}: max ${max}, min normal ${minNormal}, min subnormal ${minSub}; the code table agrees`, () => {
    const f = fmt(name), t = table(name, ...specOf(name));
    assert.deepEqual([f.maxNormal, f.minNormal, f.minSubnormal], [max, minNormal, minSub]);
    assert.equal(valueOf(maxBits(f)), max);
    assert.equal(t.max, max);
    assert.equal(t.values[1], minSub);
    assert.equal(t.values[2 ** f.mbits], minNormal);
  });
}

Deno.test("e2m1 magnitudes are 0, 0.5, 1, 1.5, 2, 3, 4, 6", () => {
  assert.deepEqual(table("e2m1", 2, 1, "none").values, [0, 0.5, 1, 1.5, 2, 3, 4, 6]);
});

Deno.test("special codes: E4M3 S.1111.111 is NaN; E5M2 S.11111.00 is Inf, S.11111.{01,10,11} NaN", () => {
  const e4 = fmt("e4m3"), e5 = fmt("e5m2");
  assert.equal(decodeBits(0x7f, e4), QNAN);
  assert.equal(decodeBits(0xff, e4), QNAN);
  assert.equal(valueOf(decodeBits(0x7e, e4)), 448);
  assert.equal(valueOf(decodeBits(0x7c, e5)), Infinity);
  assert.equal(valueOf(decodeBits(0xfc, e5)), -Infinity);
  for (const c of [0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff]) assert.equal(decodeBits(c, e5), QNAN);
});

// ---------------------------------------------------------------- every code

for (const [name, e, m, specials] of FORMATS) {
  const f = fmt(name);
  const codes = 2 ** (1 + e + m);

  Deno.test(`${name}: every one of the ${codes} codes decodes to the spec's value; NaN codes to the canonical NaN`, () => {
    for (let c = 0; c < codes; c++) {
      const expected = specValue(c, e, m, specials), got = decodeBits(c, f);
      if (Number.isNaN(expected)) assert.equal(got, QNAN, `code ${c}`);
      else same(valueOf(got), expected, `${name} code ${c}`);
    }
  });

  Deno.test(`${name}: every code encodes back to itself; NaN to the all-ones code`, () => {
    const allOnes = 2 ** (e + m) - 1;
    for (let c = 0; c < codes; c++) {
      const v = decodeBits(c, f);
      if (f32Subnormal(v) && e === 8) continue; // known encodeBits bug, see the ignored test below
      if (v === QNAN) assert.equal(encodeBits(v, f), allOnes, `NaN code ${c}`);
      else assert.equal(encodeBits(v, f), c, `code ${c}`);
    }
    // Formats without NaN have no code for it: all ones is +max there (documented in element.ts).
    if (specials === "none") assert.equal(valueOf(decodeBits(encodeBits(QNAN, f), f)), table(name, e, m, specials).max);
  });

  Deno.test(`${name}: every value quantizes to itself in every mode, saturating or not, -0 included`, () => {
    for (let c = 0; c < codes; c++) {
      const v = specValue(c, e, m, specials);
      if (Number.isNaN(v)) continue;
      for (const mode of MODES) {
        for (const saturate of [true, false]) {
          for (const rand of [0, 0x80000000, 0xffffffff]) {
            const expected = Number.isFinite(v) ? v : overflowValue(specials, saturate, f.maxNormal, v < 0);
            same(q(v, name, mode, saturate, rand), expected, `${name} ${v} ${mode} saturate=${saturate}`);
          }
        }
      }
    }
  });

  if (m > 0) {
    Deno.test(`${name}: neighbour midpoints tie to the even code (away from zero for nearest-away); just off goes to the nearer`, () => {
      const t = table(name, e, m, specials);
      const his = [...t.values.slice(1), t.beyond], hiCodes = [...t.codes.slice(1), t.maxCode + 1];
      for (let i = 0; i < t.values.length; i++) {
        const lo = t.values[i], hi = his[i], mid = (lo + hi) / 2;
        assert.equal(Math.fround(mid), mid, `${name}: midpoint ${mid} must be an f32`);
        const below = valueOf(bitsOf(mid) - 1), above = valueOf(bitsOf(mid) + 1);
        for (const saturate of [true, false]) {
          for (const sign of [1, -1]) {
            const over = overflowValue(specials, saturate, t.max, sign < 0);
            const hiOut = hi === t.beyond ? over : sign * hi;
            const even = hiCodes[i] % 2 === 0 ? hiOut : sign * lo;
            const tag = `${name} (${lo}, ${hi}) sign ${sign} saturate=${saturate}`;
            same(q(sign * mid, name, "nearest", saturate), even, `${tag}: tie, nearest`);
            same(q(sign * mid, name, "nearest-away", saturate), hiOut, `${tag}: tie, nearest-away`);
            for (const mode of ["nearest", "nearest-away"] as const) {
              same(q(sign * below, name, mode, saturate), sign * lo, `${tag}: just below the midpoint, ${mode}`);
              same(q(sign * above, name, mode, saturate), hiOut, `${tag}: just above the midpoint, ${mode}`);
            }
            const sr = q(sign * mid, name, "stochastic", saturate, 0x12345678);
            assert.ok(Object.is(sr, sign * lo) || Object.is(sr, hiOut), `${tag}: stochastic gave ${sr}`);
          }
        }
      }
    });
  }
}

Deno.test("M = 0 formats: a tie between two normals goes to the larger magnitude; between 0 and the smallest, to 0", () => {
  // e3m0none: 0, 0.25, 0.5, 1, ..., 16. The significand of a normal is always 1 (odd), so ties round it up.
  for (const [x, y] of [[0.125, 0], [0.375, 0.5], [0.75, 1], [1.5, 2], [3, 4], [12, 16], [24, 16], [-0.375, -0.5]]) {
    same(q(x, "e3m0none", "nearest"), y, `e3m0none ${x}`);
  }
  // e1m0none: 0 and 2 only.
  for (const [x, y] of [[0.9, 0], [1, 0], [1.1, 2], [3, 2], [1e9, 2], [-1, -0]]) {
    same(q(x, "e1m0none", "nearest"), y, `e1m0none ${x}`);
  }
});

// ---------------------------------------------------------------- random f32 against the reference

/** Words of every f32 class: random bits, values spread over the format's range, and hand-picked edges. */
function inputWords(name: string, n: number): Uint32Array {
  const f = fmt(name), words = philoxWords(new Uint32Array(3 * n), seedOf(name), 7, 0);
  const out = new Uint32Array(2 * n + EDGES.length);
  out.set(words.subarray(0, n)); // uniform bits: mostly huge/tiny magnitudes, some NaN/Inf/subnormal
  for (let i = 0; i < n; i++) {
    // Exponent uniform in [emin - M - 3, emax + 2], random mantissa and sign: in and around the format's range.
    const span = f.emax - f.emin + f.mbits + 6;
    const exp = Math.max(-126, Math.min(127, f.emin - f.mbits - 3 + (words[n + i] % span)));
    out[n + i] = (words[2 * n + i] & 0x807fffff) | ((exp + 127) << 23);
  }
  out.set(EDGES, 2 * n);
  return out;
}
const EDGES = Uint32Array.of(
  0x00000000, // +0
  0x80000000, // -0
  0x00000001, // smallest f32 subnormal
  0x80000001,
  0x007fffff, // largest f32 subnormal
  0x807fffff,
  0x00800000, // smallest f32 normal
  0x7f7fffff, // largest f32
  0xff7fffff,
  0x7f800000, // +Inf
  0xff800000, // -Inf
  0x7fc00000, // NaN
  0x7f800001, // signalling NaN
  0xffffffff, // negative NaN
  bitsOf(1),
  bitsOf(-1.5),
);

for (const [name] of FORMATS) {
  Deno.test(`${name}: random f32 (all classes) quantize as the reference, both ties rules, saturating or not`, () => {
    const words = inputWords(name, 3000);
    for (const w of words) {
      for (const mode of ["nearest", "nearest-away"] as const) {
        for (const saturate of [true, false]) {
          const x = valueOf(w);
          const got = quantizeBits(w, quantParams(fmt(name), saturate), ROUNDING_CODE[mode], 0);
          const expected = reference(x, name, specOf(name), mode, saturate);
          if (Number.isNaN(expected)) assert.equal(got, QNAN, `${name} ${hex(w)} ${mode}: NaN out`);
          else same(valueOf(got), expected, `${name} ${hex(w)} (${x}) ${mode} saturate=${saturate}`);
        }
      }
    }
  });
}

Deno.test("e5m10 with ties to even and no saturation is IEEE binary16 (Math.f16round) on every f32 class", () => {
  for (const w of inputWords("e5m10", 20000)) {
    same(q(valueOf(w), "e5m10", "nearest", false), Math.f16round(valueOf(w)), `${hex(w)}`);
  }
});

Deno.test("e8m23 is f32 itself: every input, subnormals included, quantizes to itself", () => {
  for (const w of inputWords("e8m7", 5000)) {
    for (const mode of MODES) {
      const got = quantizeBits(w, quantParams(fmt("e8m23"), false), ROUNDING_CODE[mode], 0xdeadbeef);
      assert.equal(got, Number.isNaN(valueOf(w)) ? QNAN : w, hex(w));
    }
  }
});

/** [label, format, x, expected] for f32 subnormal inputs. */
const SUBNORMAL_INPUTS: [string, string, number, number][] = [
  ["below half of bf16's smallest subnormal 2^-133", "e8m7", 2 ** -140, 0],
  ["its negative keeps the sign", "e8m7", -(2 ** -140), -0],
  ["3/4 of bf16's smallest subnormal rounds up", "e8m7", 3 * 2 ** -135, 2 ** -133],
  ["a bf16 subnormal is kept", "e8m7", 5 * 2 ** -133, 5 * 2 ** -133],
  ["the largest f32 subnormal to bf16", "e8m7", valueOf(0x007fffff), 2 ** -126],
  ["an f32 subnormal to e4m3 is +0", "e4m3", 2 ** -130, 0],
  ["a negative f32 subnormal to e2m1 is -0", "e2m1", -(2 ** -149), -0],
];
for (const [label, name, x, expected] of SUBNORMAL_INPUTS) {
  Deno.test(`f32 subnormal inputs: ${label}`, () => {
    for (const mode of ["nearest", "nearest-away"] as const) same(q(x, name, mode), expected, `${name} ${x} ${mode}`);
  });
}

// ---------------------------------------------------------------- the quantizer API (CPU)

const cpu = cpuBackend();
async function quantDequant(name: string, xs: ArrayLike<number>, opts = {}, backend: Backend = cpu) {
  const t = tensor(Float32Array.from(xs), { backend });
  const y = floatQuantizer(name)!.quantDequant(t, opts);
  const out = await y.data() as Float32Array;
  t.dispose();
  y.dispose();
  return out;
}

/** FORMATS.md's known vectors. */
const VECTORS: [string, string, { saturate?: boolean }, number[], number[]][] = [
  ["ml_dtypes #400, non-saturating", "e4m3", { saturate: false }, [1000, 448, 464, 465, -1000], [
    NaN,
    448,
    448,
    NaN,
    NaN,
  ]],
  ["ml_dtypes #400, saturating", "e4m3", {}, [1000, 448, 464, 465, -1000], [448, 448, 448, 448, -448]],
  ["E5M2 overflow to Inf, non-saturating", "e5m2", { saturate: false }, [57344, 61439, 61440, -1e6], [
    57344,
    57344,
    Infinity,
    -Infinity,
  ]],
  ["E2M1 ties to even", "e2m1", {}, [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5], [0, 1, 1, 2, 2, 4, 4]],
  ["E2M1 saturates (no specials even when asked)", "e2m1", { saturate: false }, [7, -100, Infinity], [6, -6, 6]],
  ["E3M2 26 ties to 24, 29 to 28", "e3m2", {}, [26, 29, 30, 100], [24, 28, 28, 28]],
  ["NaN in, NaN out (also where the format has no NaN)", "e2m3", {}, [NaN, -NaN], [NaN, NaN]],
  ["-0 keeps its sign; tiny negatives round to -0", "e4m3", {}, [-0, -1e-6, 1e-6], [-0, -0, 0]],
];
for (const [label, name, opts, xs, expected] of VECTORS) {
  Deno.test(`quantDequant vectors: ${label}`, async () => {
    assertClose(await quantDequant(name, xs, opts), expected, { rtol: 0, atol: 0 }, label);
  });
}

Deno.test("quantize then dequantize equals quantDequant bit for bit (random f32, every format, non-NaN)", async () => {
  for (const [name, , , specials] of FORMATS) {
    const words = inputWords(name, 500);
    // Formats without NaN store it as the all-ones code (±max), so only non-NaN inputs round-trip. E = 8:
    // f32-subnormal values hit the known encodeBits bug (ignored test below).
    const x = new Float32Array(words.buffer).filter((v) =>
      (specials !== "none" || !Number.isNaN(v)) && !(fmt(name).ebits === 8 && f32Subnormal(bitsOf(v)))
    );
    for (const mode of MODES) {
      const opts = { rounding: mode, seed: 3, offset: 11 };
      const quant = floatQuantizer(name)!;
      const t = tensor(x, { backend: cpu });
      const stored = quant.quantize(t, opts);
      const back = await quant.dequantize(stored).data();
      assertClose(back, await quantDequant(name, x, opts), { rtol: 0, atol: 0 }, `${name} ${mode}`);
      assert.equal(stored.parts[0].bits, fmt(name).bits);
    }
  }
});

/** E = 8 formats (emin = -126, e.g. bf16 `e8m7`): an f32-subnormal value is subnormal in the target too. */
Deno.test({
  name: "E = 8 codes of f32-subnormal values encode back to themselves",
  fn: () => {
    const f = fmt("e8m7");
    for (let c = 0; c < 2 ** 16; c++) {
      const v = decodeBits(c, f);
      if (f32Subnormal(v)) assert.equal(encodeBits(v, f), c, `code ${c}`);
    }
  },
});

// ---------------------------------------------------------------- stochastic rounding

/**
 * [format, x, lo, hi]. With P(up) = (x - lo)/(hi - lo) (exact: the threshold is resolved to 2^-32 and the
 * dropped bits here fit in it), E[q(x)] = x and the mean of N draws has standard deviation
 * σ = (hi - lo)·√(p(1 - p)/N). The bound is 5σ; Philox is deterministic, so the test is too.
 */
const SR_CASES: [string, number, number, number][] = [
  ["e2m1", 2.3, 2, 3],
  ["e2m1", -4.5, -4, -6],
  ["e2m1", 0.1, 0, 0.5],
  ["e4m3", 0.1, 0.09375, 0.1015625],
  ["e5m2", 1000, 896, 1024],
  ["e3m2", 27, 24, 28],
];
for (const [name, x0, lo, hi] of SR_CASES) {
  Deno.test(`stochastic rounding ${name} ${x0}: unbiased (mean within 5σ of x), closer than round-to-nearest`, async () => {
    const n = 20000, x = Math.fround(x0);
    const ys = await quantDequant(name, new Float32Array(n).fill(x), { rounding: "stochastic", seed: 42, stream: 1 });
    let sum = 0;
    for (const y of ys) {
      assert.ok(y === lo || y === hi, `${name} ${x}: draw ${y} is not a neighbour`);
      sum += y;
    }
    const mean = sum / n, p = (x - lo) / (hi - lo);
    const sigma = Math.abs(hi - lo) * Math.sqrt((p * (1 - p)) / n);
    assert.ok(Math.abs(mean - x) <= 5 * sigma, `${name} ${x}: mean ${mean}, 5σ = ${5 * sigma}`);
    const rtn = (await quantDequant(name, [x]))[0];
    assert.ok(Math.abs(mean - x) < Math.abs(rtn - x), `${name} ${x}: mean ${mean} no closer than RTN ${rtn}`);
  });
}

Deno.test("stochastic rounding: reproducible from (seed, stream, offset), word offset + i for element i", async () => {
  const n = 512, x = new Float32Array(n).fill(2.3);
  const draw = (seed: number, stream: number, offset: number, xs: Float32Array = x) =>
    quantDequant("e2m1", xs, { rounding: "stochastic", seed, stream, offset });
  const base = await draw(5, 6, 0);
  assert.deepEqual(await draw(5, 6, 0), base, "same key, same draws");
  for (
    const [label, other] of [["offset", await draw(5, 6, 1000)], ["seed", await draw(6, 6, 0)], [
      "stream",
      await draw(5, 7, 0),
    ]] as const
  ) {
    const differ = other.filter((v, i) => v !== base[i]).length;
    assert.ok(differ > n / 10, `another ${label} gives other draws (${differ} of ${n} differ)`);
  }
  // Element i uses word offset + i: shifting the offset by k shifts the draws by k.
  assert.deepEqual(await draw(5, 6, 7, x.subarray(7)), base.subarray(7));
  // Offsets beyond 2^32 follow the same layout: element i rounds up iff Philox word (offset + i) < threshold.
  const offset = 2 ** 32 + 3, words = philoxWords(new Uint32Array(n), 5, 6, offset);
  const expected = Array.from(words, (w) => q(2.3, "e2m1", "stochastic", true, w));
  assertClose(await draw(5, 6, offset), expected, { rtol: 0, atol: 0 }, "offset 2^32 + 3");
});

// ---------------------------------------------------------------- WebGPU against the CPU

/** Formats of the parity sweep: the named five plus generic ones of every specials policy. */
const PARITY_FORMATS = ["e4m3", "e5m2", "e2m3", "e3m2", "e2m1", "e3m4", "e5m2none", "e2m2fn", "e3m0none", "e8m7"];

async function readAll(ts: Tensor[]): Promise<Uint32Array[]> {
  const out = await Promise.all(ts.map(async (t) => new Uint32Array((await t.data()).buffer.slice(0))));
  ts.forEach((t) => t.dispose());
  return out;
}

Deno.test("element formats: WebGPU equals the CPU bit for bit (quantDequant, quantize, dequantize)", async (t) => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const name of PARITY_FORMATS) {
    await t.step(name, async () => {
      const x = new Float32Array(inputWords(name, 1024).buffer);
      const quant = floatQuantizer(name)!;
      for (const rounding of MODES) {
        for (const saturate of [true, false]) {
          const opts = { rounding, saturate, seed: 9, stream: 4, offset: 2 ** 32 - 5 };
          const [c, g]: Uint32Array[][] = await Promise.all([cpu, gpu].map((backend) => {
            const xt = tensor(x, { backend });
            const stored = quant.quantize(xt, opts);
            return readAll([quant.quantDequant(xt, opts), stored.parts[0].codes, quant.dequantize(stored), xt]);
          }));
          const tag = `${name} ${rounding} saturate=${saturate}`;
          for (const [k, what] of ["quantDequant", "quantize", "dequantize"].entries()) {
            const bad = c[k].findIndex((w, i) => w !== g[k][i]);
            assert.equal(
              bad,
              -1,
              `${tag} ${what}: input ${hex(c[3][bad] ?? 0)} gives cpu ${hex(c[k][bad] ?? 0)}, gpu ${
                hex(g[k][bad] ?? 0)
              }`,
            );
          }
        }
      }
    });
  }
});

Deno.test("an fn format needs a mantissa bit for its NaN code", () => {
  assert.throws(() => parseFloatFormat("e2m0fn"), /e2m0fn.*needs at least one mantissa bit/);
});

Deno.test("e2m1Nearest equals quantizeBits on E2M1 (saturating, nearest): ties ± an ulp, zeros, Inf, 1M random", () => {
  const q = quantParams(parseFloatFormat("e2m1")!, true);
  assert.ok(isSaturatingE2M1(q) && !isSaturatingE2M1(quantParams(parseFloatFormat("e3m2")!, true)));
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  const values = [0, -0, 1e-45, -1e-45, Infinity, -Infinity, 3.4028234663852886e38, 7, -7, 6, 5.5];
  for (const t of [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5]) {
    f[0] = t;
    for (const d of [-1, 0, 1]) {
      u[0] += d;
      values.push(f[0], -f[0]);
      u[0] -= d;
    }
  }
  for (const w of philoxWords(new Uint32Array(1 << 20), 11, 0, 0)) {
    u[0] = ((w & 0x807fffff) | ((120 + ((w >>> 23) & 15)) << 23)) >>> 0; // magnitudes 2^-7 … 2^9: every case
    values.push(f[0]);
  }
  for (const v of values) {
    f[0] = v;
    const want = quantizeBits(u[0], q, 0, 0);
    f[0] = e2m1Nearest(f[0]);
    assert.equal(u[0], want, `e2m1Nearest(${v})`);
  }
});
