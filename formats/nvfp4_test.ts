/**
 * NVFP4: the two-level scales and the values checked exactly against an
 * independent reference written here with `Math.fround` arithmetic, the edge
 * cases (zeros, NaN/Inf, underflowing scales), the multi-level tensor-amax
 * reduction, CPU vs WebGPU bit identity, stochastic rounding from the seed,
 * SQNR on N(0,1) data, and `dequantize(quantize(x))` equal to
 * `quantDequant(x)` bit for bit.
 *
 * @module
 */
import assert from "node:assert/strict";
import { cpuBackend, randn, tensor } from "@lowp/core";
import { type Backend, philoxWords } from "@lowp/kernels";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";
import type { Rounding } from "./element.ts";
import { NVFP4_BLOCK, nvfp4Quantizer } from "./nvfp4.ts";
import type { Quantized, QuantizeOptions } from "./spec.ts";

const CPU = cpuBackend();
const NV = nvfp4Quantizer("nvfp4")!;
const QNAN = 0x7fc00000;
const fr = Math.fround;

// ---------------------------------------------------------------- independent reference

/** Positive FP4 E2M1 values by code (FORMATS.md). */
const E2M1_GRID = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
/** Positive E4M3 values by code 0..126 (OFP8: bias 7, subnormals m·2^-9, 0x7F is NaN). */
const E4M3_GRID = Array.from({ length: 127 }, (_, c) => c < 8 ? c * 2 ** -9 : 2 ** ((c >> 3) - 7) * (1 + (c & 7) / 8));

/** Nearest grid value to |v| (ties to the even code, i.e. the even mantissa), saturating; keeps the sign. */
function roundToGrid(grid: readonly number[], v: number): number {
  const a = Math.abs(v), sign = v < 0 || Object.is(v, -0) ? -1 : 1;
  let k = 0;
  while (k + 1 < grid.length && grid[k + 1] <= a) k++;
  if (k + 1 === grid.length) return sign * grid[k];
  const mid = (grid[k] + grid[k + 1]) / 2;
  return sign * (a < mid || (a === mid && k % 2 === 0) ? grid[k] : grid[k + 1]);
}

/**
 * NVFP4 by the module's formulas in plain f32 arithmetic (`Math.fround` of
 * exact double products and quotients is the correctly rounded f32 result).
 */
function reference(x: Float32Array): { values: Float32Array; blockScales: number[]; tensorScale: number } {
  const amax = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const st = fr(amax * fr(1 / 2688));
  const values = new Float32Array(x.length), blockScales: number[] = [];
  for (let b = 0; b < x.length / NVFP4_BLOCK; b++) {
    const block = x.subarray(b * NVFP4_BLOCK, (b + 1) * NVFP4_BLOCK);
    const amaxBlock = block.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const sb = amaxBlock === 0 || st === 0 ? 0 : roundToGrid(E4M3_GRID, fr(amaxBlock * fr(1 / fr(6 * st))));
    blockScales.push(sb);
    const prod = fr(sb * st), r = fr(1 / prod);
    block.forEach((v, j) => {
      const q = prod === 0 || v === 0 ? v * 0 : roundToGrid(E2M1_GRID, fr(v * r));
      values[b * NVFP4_BLOCK + j] = fr(fr(q * sb) * st);
    });
  }
  return { values, blockScales, tensorScale: st };
}

/** f32 values of UE4M3 codes (the reference grid, 0x7F = NaN). */
const ue4m3Value = (c: number) => c === 0x7f ? NaN : E4M3_GRID[c];

// ---------------------------------------------------------------- inputs

/**
 * Gaussian-like values in blocks whose scales spread over 2^-24 .. 2^12
 * relative to each other, with a zero block, a block of -0s, a block of tiny
 * values whose scale underflows, and blocks whose mantissas keep 2 bits
 * (ties).
 */
function spreadInputs(n: number, seed: number, magnitude = 1): Float32Array {
  const w = philoxWords(new Uint32Array(2 * n), seed, 0x4e, 0);
  const x = new Float32Array(n), bits = new Uint32Array(x.buffer);
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / NVFP4_BLOCK), lead = w[2 * b * NVFP4_BLOCK];
    const scale = 2 ** ((lead % 37) - 24) * magnitude;
    x[i] = scale * ((w[2 * i] / 2 ** 32) * 2 - 1) * (1 + (w[2 * i + 1] % 5));
    if (b % 4 === 1) bits[i] &= 0xffe00000; // 2 mantissa bits: many ties on the FP4 and E4M3 grids
  }
  x.fill(0, 0, NVFP4_BLOCK);
  x.fill(-0, 2 * NVFP4_BLOCK, 3 * NVFP4_BLOCK);
  x[5 * NVFP4_BLOCK] = 1e-30 * magnitude;
  return x;
}

/** Named input tensors: [label, shape, values]. */
const INPUTS: [string, number[], Float32Array][] = [
  ["spread", [64, 96], spreadInputs(64 * 96, 1)],
  ["small (2^-100)", [8, 64], spreadInputs(8 * 64, 2, 2 ** -100)],
  ["s_t subnormal (2^-130)", [8, 64], spreadInputs(8 * 64, 4, 2 ** -130)],
  ["huge", [8, 64], spreadInputs(8 * 64, 3, 2 ** 100)],
  ["f32 max", [2, 32], Float32Array.from({ length: 64 }, (_, i) => i === 17 ? -3.4028234663852886e38 : i * 1e36)],
  ["NaN", [4, 32], Float32Array.from({ length: 128 }, (_, i) => i === 77 ? NaN : i - 60)],
  ["-Inf", [4, 32], Float32Array.from({ length: 128 }, (_, i) => i === 3 ? -Infinity : i)],
  ["zeros", [2, 16], Float32Array.from({ length: 32 }, (_, i) => i % 3 ? 0 : -0)],
  ["s_t underflows to 0", [1, 16], Float32Array.from({ length: 16 }, (_, i) => (i % 2 ? -1 : 1) * 2 ** -149)],
];

// ---------------------------------------------------------------- tests

Deno.test("NVFP4 equals the Math.fround reference exactly: values, block scales, tensor scale", async () => {
  for (const [label, shape, data] of INPUTS) {
    const ref = reference(data);
    const x = tensor(data, { shape, backend: CPU });
    const y = await NV.quantDequant(x).data();
    const [, scales, ts] = NV.quantize(x).parts;
    const nan = data.some((v) => !Number.isFinite(v));
    const wantScales = nan ? ref.blockScales.map(() => NaN) : ref.blockScales;
    assert.deepEqual(Array.from(await scales.codes.data(), ue4m3Value), wantScales, `${label}: block scales`);
    const st = new Float32Array((await ts.codes.data()).buffer)[0];
    assert.ok(Object.is(st, nan ? NaN : ref.tensorScale), `${label}: tensor scale ${st}, expected ${ref.tensorScale}`);
    const bad = y.findIndex((v, i) => !Object.is(v, nan ? NaN : ref.values[i]));
    assert.equal(bad, -1, `${label}: value ${bad} is ${y[bad]}, expected ${ref.values[bad]} (x = ${data[bad]})`);
  }
});

Deno.test("NVFP4 edge cases: zeros keep their sign, NaN/Inf make everything NaN, tiny blocks flush to zero", async () => {
  const run = async (data: number[], shape = [1, 16]) => {
    const x = tensor(Float32Array.from(data), { shape, backend: CPU });
    const [codes, scales, ts] = NV.quantize(x).parts;
    return {
      values: await bitsOf(NV.quantDequant(x)),
      codes: Array.from(await codes.codes.data()),
      scales: Array.from(await scales.codes.data()),
      st: (await ts.codes.data())[0],
    };
  };
  const zeros = await run(Array.from({ length: 16 }, (_, i) => i % 2 ? -0 : 0));
  assert.deepEqual(Array.from(zeros.values), Array.from({ length: 16 }, (_, i) => i % 2 ? 0x80000000 : 0));
  assert.deepEqual([zeros.scales, zeros.st], [[0], 0]);
  assert.deepEqual(zeros.codes, Array.from({ length: 16 }, (_, i) => i % 2 ? 0x8 : 0));
  for (const special of [NaN, Infinity, -Infinity]) {
    const r = await run([1, 2, special, ...new Array(29).fill(3)], [2, 16]);
    assert.ok(r.values.every((b) => b === QNAN), `${special}: all values NaN`);
    assert.deepEqual([r.scales, r.st, r.codes.every((c) => c === 0)], [[0x7f, 0x7f], QNAN, true], `${special}`);
  }
  // A block 2^-20 below the tensor amax needs s_b = 448·2^-20 < 2^-10 (half the smallest UE4M3): it flushes to zeros.
  const flushed = await run([...new Array(16).fill(6 * 2 ** -20), 6, ...new Array(15).fill(-0)], [2, 16]);
  assert.deepEqual(flushed.scales, [0, 0x7e]);
  assert.ok(flushed.values.subarray(0, 16).every((b) => b === 0), "flushed block");
});

Deno.test("NVFP4 tensor amax: deterministic multi-level reduction finds the max anywhere", async () => {
  // Block amaxes [1,16]: 1 -> 1; [3,4800]: 900 -> 4 -> 1; [1024,256]: 16384 -> 64 -> 1.
  for (const [rows, cols] of [[1, 16], [3, 16 * 300], [1024, 256]]) {
    const n = rows * cols;
    for (const where of [0, Math.floor(n / 3), n - 1]) {
      const data = new Float32Array(n).fill(0.5);
      data[where] = -1000;
      const ts = NV.quantize(tensor(data, { shape: [rows, cols], backend: CPU })).parts[2].codes;
      assert.equal(
        new Float32Array((await ts.data()).buffer)[0],
        fr(1000 * fr(1 / 2688)),
        `[${rows},${cols}] at ${where}`,
      );
    }
  }
});

/** Every part of quantize, quantDequant and dequantize(quantize(x)), as bits. */
async function runAll(data: Float32Array, shape: number[], opts: QuantizeOptions, backend: Backend) {
  const x = tensor(data, { shape, backend });
  const stored: Quantized = NV.quantize(x, opts);
  const [codes, scales, ts] = await Promise.all(stored.parts.map((p) => bitsOf(p.codes)));
  return {
    values: await bitsOf(NV.quantDequant(x, opts)),
    codes,
    scales,
    ts,
    restored: await bitsOf(NV.dequantize(stored)),
  };
}

const ROUNDINGS: Rounding[] = ["nearest", "nearest-away", "stochastic"];
const optsOf = (rounding: Rounding): QuantizeOptions => ({ rounding, seed: 5, stream: 1, offset: 3 });

Deno.test("NVFP4 pack-free round trip: dequantize(quantize(x)) equals quantDequant(x) bit for bit", async () => {
  for (const [label, shape, data] of INPUTS) {
    for (const rounding of ROUNDINGS) {
      const r = await runAll(data, shape, optsOf(rounding), CPU);
      assertSameBits(r.restored, r.values, `${label} ${rounding}`);
    }
  }
});

Deno.test("webgpu: NVFP4 is bit-identical to the CPU on every input and rounding", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const [label, shape, data] of INPUTS) {
    for (const rounding of ROUNDINGS) {
      const want = await runAll(data, shape, optsOf(rounding), CPU);
      const got = await runAll(data, shape, optsOf(rounding), gpu);
      for (const part of ["values", "codes", "scales", "ts", "restored"] as const) {
        assertSameBits(got[part], want[part], `${label} ${rounding} ${part}`);
      }
    }
  }
});

Deno.test("NVFP4 stochastic rounding is reproducible from the seed and changes with it", async () => {
  const x = tensor(INPUTS[0][2], { shape: INPUTS[0][1], backend: CPU });
  const run = async (seed: number) => await bitsOf(NV.quantDequant(x, { rounding: "stochastic", seed }));
  const a = await run(1);
  assertSameBits(await run(1), a, "same seed");
  assert.ok((await run(2)).some((b, i) => b !== a[i]), "another seed draws differently");
});

/** SQNR floor for NVFP4 on N(0,1): measured 20.49 dB on [128, 256] (seed 7); the floor leaves a 1.5 dB margin. */
const NVFP4_SQNR_FLOOR = 19;

Deno.test("NVFP4 SQNR on N(0,1)", async () => {
  const x = randn([128, 256], { seed: 7, stream: 0 }, 1, { backend: CPU });
  const xs = await x.data(), y = await NV.quantDequant(x).data();
  let signal = 0, noise = 0;
  xs.forEach((v, i) => [signal, noise] = [signal + v * v, noise + (v - y[i]) ** 2]);
  const db = 10 * Math.log10(signal / noise);
  console.log(`NVFP4 SQNR on N(0,1) [128,256]: ${db.toFixed(2)} dB`);
  assert.ok(db >= NVFP4_SQNR_FLOOR, `SQNR ${db} dB`);
});

Deno.test("NVFP4 rejects other names, shapes and granularities", () => {
  assert.equal(nvfp4Quantizer("mxfp4"), null);
  assert.equal(NV.blockSize, 16);
  assert.equal(NV.elementBits, 4);
  assert.throws(() => NV.quantDequant(tensor(new Float32Array(24), { shape: [2, 12], backend: CPU })), /\[2,12\]/);
  const x = tensor(new Float32Array(16), { backend: CPU });
  assert.throws(() => NV.quantDequant(x, { granularity: { kind: "channel", axis: 0 } }), /group:16/);
});
