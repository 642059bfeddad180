/**
 * MX block formats: scale selection on crafted blocks (every scale rounding),
 * NaN/Inf blocks, MXINT8 rounding and clamping, CPU vs WebGPU bit identity on
 * wide-range random inputs with specials, stochastic rounding from the seed,
 * SQNR floors on N(0,1) data (torchao's), and `dequantize(quantize(x))` equal
 * to `quantDequant(x)` bit for bit.
 *
 * @module
 */
import assert from "node:assert/strict";
import { cpuBackend, randn, tensor } from "@lowp/core";
import { type Backend, philoxWords } from "@lowp/kernels";
import { assertSameBits, bitsOf, gpuBackendOrSkip } from "../tests/helpers.ts";
import type { Rounding } from "./element.ts";
import { MX_FORMATS, type MxQuantizeOptions, mxQuantizer, type MxScaleRounding } from "./mx.ts";

const CPU = cpuBackend();
const ROUNDINGS: Rounding[] = ["nearest", "nearest-away", "stochastic"];
const SCALE_ROUNDINGS: MxScaleRounding[] = ["floor", "ceil", "even", "rceil"];
const NAMES = Object.keys(MX_FORMATS);
const F32_MAX = 3.4028234663852886e38;

/** f32 bit patterns that must each appear in the random inputs (NaN and Inf make their block NaN). */
const SPECIALS = [
  0x7fc00000, // NaN
  0xffc00001, // NaN with sign and payload
  0x7f800001, // signalling NaN
  0x7f800000, // +Inf
  0xff800000, // -Inf
  0x80000000, // -0
  0x7f7fffff, // f32 max
  0xff7fffff,
  0x00000001, // smallest subnormal
  0x80000001,
  0x007fffff, // largest subnormal
  0x00800000, // smallest normal
];

/**
 * Random f32 bits over f32's whole range: each block of 32 gets a base
 * exponent anywhere from the subnormals to the top binade and its elements
 * lie within 2^-23 of it; every third block keeps only 2 mantissa bits (so
 * ties to the element grids occur); {@link SPECIALS} sit in blocks 0, 7, 14, ...
 */
function wideInputs(n: number, seed: number): Float32Array {
  const w = philoxWords(new Uint32Array(2 * n), seed, 0x3d, 0);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const block = Math.floor(i / 32);
    const base = 1 + (w[2 * block * 32] % 254);
    const ef = Math.max(0, base - (w[2 * i] % 24));
    const mant = block % 3 === 0 ? w[2 * i + 1] & 0x600000 : w[2 * i + 1] & 0x7fffff;
    bits[i] = ((w[2 * i + 1] & 0x80000000) | (ef << 23) | mant) >>> 0;
  }
  SPECIALS.forEach((s, k) => bits[k * 7 * 32 + 5 * k] = s);
  return new Float32Array(bits.buffer);
}

Deno.test("MX formats: emax_elem and element widths of OCP MX v1.0", () => {
  const spec: Record<string, [number, number]> = {
    mxfp8_e4m3: [8, 8],
    mxfp8_e5m2: [15, 8],
    mxfp6_e2m3: [2, 6],
    mxfp6_e3m2: [4, 6],
    mxfp4: [2, 4],
    mxint8: [0, 8],
  };
  assert.deepEqual(NAMES.sort(), Object.keys(spec).sort());
  for (const [name, [emax, bits]] of Object.entries(spec)) {
    assert.equal(MX_FORMATS[name].emax, emax, `${name} emax`);
    const q = mxQuantizer(name)!;
    assert.equal(q.elementBits, bits, `${name} bits`);
    assert.equal(q.blockSize, 32);
  }
  for (const other of ["nvfp4", "e4m3", "mxfp8", "int8", "toString"]) assert.equal(mxQuantizer(other), null, other);
});

/** A crafted block (the rest of the 32 values are 0) and what it must give. */
interface ScaleCase {
  readonly format: string;
  readonly block: readonly number[];
  readonly opts?: MxQuantizeOptions;
  /** Expected E8M0 code. */
  readonly code: number;
  /** Expected dequantized values of the first `values.length` elements. */
  readonly values: readonly number[];
}

const at = (format: string, block: number[], code: number, values: number[], opts?: MxQuantizeOptions): ScaleCase => ({
  format,
  block,
  opts,
  code,
  values,
});
/** One case per scale rounding: [floor, ceil, even, rceil] codes and values. */
const perRounding = (format: string, block: number[], cases: [number, number[]][]): ScaleCase[] =>
  SCALE_ROUNDINGS.map((scaleRounding, k) => at(format, block, cases[k][0], cases[k][1], { scaleRounding }));

const SCALE_CASES: ScaleCase[] = [
  at("mxfp4", [], 0, [0, 0]), // all zeros: the smallest scale 2^-127
  at("mxfp4", [-0, -0], 0, [-0, -0]),
  at("mxint8", [-0], 0, [0]), // MXINT8 has no -0
  at("mxfp8_e4m3", [1000, 1, -3], 128, [896, 1, -3]), // outlier: X = 2, 500 saturates to 448
  at("mxfp8_e4m3", [1, 0.3], 119, [1, 0.3125]), // X = 2^-8; 76.8 rounds to 80
  at("mxfp4", [6, -6, 3], 127, [6, -6, 3]), // block max at the element max
  at("mxfp8_e5m2", [57344, 1], 127, [57344, 1]),
  at("mxfp6_e2m3", [7.5, 0.125], 127, [7.5, 0.125]),
  at("mxfp6_e3m2", [28, 0.0625], 127, [28, 0.0625]),
  at("mxint8", [1.984375, 0.015625], 127, [1.984375, 0.015625]),
  // FORMATS.md: E2M1 block with amax 7: FLOOR X = 1 and 7 saturates to 6; the others double X (7/2 = 3.5 -> 4).
  ...perRounding("mxfp4", [7, 5], [[127, [6, 4]], [128, [8, 4]], [128, [8, 4]], [128, [8, 4]]]),
  ...perRounding("mxfp4", [6.5], [[127, [6]], [128, [6]], [127, [6]], [128, [6]]]),
  ...perRounding("mxfp4", [6], [[127, [6]], [128, [6]], [127, [6]], [127, [6]]]),
  ...perRounding("mxfp4", [4], [[127, [4]], [127, [4]], [127, [4]], [127, [4]]]),
  ...perRounding("mxfp8_e4m3", [480], [[127, [448]], [128, [480]], [127, [448]], [128, [480]]]),
  ...perRounding("mxfp8_e4m3", [496], [[127, [448]], [128, [512]], [128, [512]], [128, [512]]]),
  at("mxfp4", [2 ** -140], 0, [0]), // exponent below -127 clamps to -127
  at("mxfp8_e5m2", [2 ** -130], 0, [2 ** -130]),
  at("mxint8", [F32_MAX], 254, [1.984375 * 2 ** 127]),
  at("mxint8", [F32_MAX], 0xff, [NaN, NaN], { scaleRounding: "ceil" }), // exponent 128: NaN block
  at("mxint8", [1.999, -1.999, -0.001, 0.5], 127, [1.984375, -2, 0, 0.5]), // clamp to [-128, 127]·2^-6
  at("mxfp8_e4m3", [479, 1], 127, [NaN, 1], { saturate: false }), // 479 -> 480 > 448: NaN
  at("mxfp8_e5m2", [65000, 1], 127, [Infinity, 1], { saturate: false }),
  at("mxfp8_e5m2", [65000, 1], 127, [57344, 1]),
];

async function checkCase(c: ScaleCase, backend: Backend): Promise<void> {
  const q = mxQuantizer(c.format)!;
  const data = new Float32Array(32);
  data.set(c.block);
  const x = tensor(data, { shape: [1, 32], backend });
  const label = `${backend.name} ${c.format} [${c.block}] ${JSON.stringify(c.opts ?? {})}`;
  const [codes, scales] = q.quantize(x, c.opts).parts;
  assert.equal((await scales.codes.data())[0], c.code, `${label}: scale code`);
  const y = await q.quantDequant(x, c.opts).data();
  c.values.forEach((v, i) => assert.ok(Object.is(y[i], v), `${label}: value ${i} is ${y[i]}, expected ${v}`));
  assertSameBits(await bitsOf(q.dequantize(q.quantize(x, c.opts))), await bitsOf(q.quantDequant(x, c.opts)), label);
  assert.equal(codes.bits, MX_FORMATS[c.format].bits);
}

Deno.test("MX scale selection on crafted blocks, every scale rounding", async () => {
  for (const c of SCALE_CASES) await checkCase(c, CPU);
});

Deno.test("webgpu: MX scale selection on crafted blocks", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const c of SCALE_CASES) await checkCase(c, gpu);
});

Deno.test("one NaN or Inf makes the whole MX block NaN and leaves the others alone", async () => {
  for (const name of NAMES) {
    for (const special of [NaN, -NaN, Infinity, -Infinity]) {
      const data = Float32Array.from({ length: 64 }, (_, i) => (i % 7) - 3); // exact in every MX format
      data[3] = special;
      const q = mxQuantizer(name)!;
      const x = tensor(data, { shape: [2, 32], backend: CPU });
      const y = await bitsOf(q.quantDequant(x));
      assert.ok(y.subarray(0, 32).every((b) => b === 0x7fc00000), `${name} ${special}: block 0 is not all NaN`);
      const [codes, scales] = q.quantize(x).parts;
      const amax3 = 127 + 1 - MX_FORMATS[name].emax; // block 1 has amax 3: shared_exp = floor(log2 3) - emax_elem
      assert.deepEqual(Array.from(await scales.codes.data()), [0xff, amax3], `${name} ${special}: scales`);
      assert.ok((await codes.codes.data()).subarray(0, 32).every((c) => c === 0), `${name}: NaN block codes`);
      assert.deepEqual(Array.from(new Float32Array(y.buffer).subarray(32)), Array.from(data.subarray(32)), name);
    }
  }
});

/** The quantizer configurations checked across backends: every rounding (FLOOR) and every scale rounding (RNE). */
const CONFIGS: [string, MxQuantizeOptions][] = NAMES.flatMap((name) => [
  ...ROUNDINGS.map((rounding): [string, MxQuantizeOptions] => [name, { rounding, seed: 11, stream: 2, offset: 5 }]),
  ...SCALE_ROUNDINGS.slice(1).map((scaleRounding): [string, MxQuantizeOptions] => [name, { scaleRounding }]),
]);

/** quantDequant, the codes and scales of quantize, and dequantize(quantize(x)), as bits. */
async function runAll(name: string, opts: MxQuantizeOptions, data: Float32Array, backend: Backend) {
  const q = mxQuantizer(name)!;
  const x = tensor(data, { shape: [64, 96], backend });
  const stored = q.quantize(x, opts);
  return {
    values: await bitsOf(q.quantDequant(x, opts)),
    codes: await bitsOf(stored.parts[0].codes),
    scales: await bitsOf(stored.parts[1].codes),
    restored: await bitsOf(q.dequantize(stored)),
  };
}

Deno.test("MX pack-free round trip: dequantize(quantize(x)) equals quantDequant(x) bit for bit", async () => {
  const data = wideInputs(64 * 96, 1);
  for (const [name, opts] of CONFIGS) {
    const r = await runAll(name, opts, data, CPU);
    assertSameBits(r.restored, r.values, `${name} ${JSON.stringify(opts)}`);
    const width = MX_FORMATS[name].bits;
    assert.ok(r.codes.every((c) => c < 2 ** width), `${name}: a code wider than ${width} bits`);
  }
});

Deno.test("webgpu: every MX format, rounding and scale rounding is bit-identical to the CPU", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const data = wideInputs(64 * 96, 2);
  for (const [name, opts] of CONFIGS) {
    const want = await runAll(name, opts, data, CPU), got = await runAll(name, opts, data, gpu);
    for (const part of ["values", "codes", "scales", "restored"] as const) {
      assertSameBits(got[part], want[part], `${name} ${JSON.stringify(opts)} ${part}`);
    }
  }
});

Deno.test("MX stochastic rounding: reproducible from (seed, stream, offset), unbiased on average", async () => {
  const x = randn([4, 64], { seed: 3, stream: 0 }, 1, { backend: CPU });
  const q = mxQuantizer("mxfp4")!;
  const run = async (seed: number, stream = 0, offset = 0) =>
    await bitsOf(q.quantDequant(x, { rounding: "stochastic", seed, stream, offset }));
  const base = await run(1);
  assertSameBits(await run(1), base, "same key");
  for (
    const [label, other] of [["seed", await run(2)], ["stream", await run(1, 1)], ["offset", await run(1, 0, 256)]]
  ) {
    assert.ok((other as Uint32Array).some((b, i) => b !== base[i]), `changing the ${label} changes the draws`);
  }
  // The mean of many draws approaches x; round-to-nearest stays a whole grid step off.
  const xs = await x.data() as Float32Array, mean = new Float64Array(x.size);
  const draws = 200;
  for (let s = 0; s < draws; s++) new Float32Array((await run(100 + s)).buffer).forEach((v, i) => mean[i] += v / draws);
  const nearest = await q.quantDequant(x).data();
  const err = (y: ArrayLike<number>) => xs.reduce((acc, v, i) => acc + Math.abs(y[i] - v), 0);
  assert.ok(err(mean) < 0.5 * err(nearest), `stochastic mean error ${err(mean)} vs nearest ${err(nearest)}`);
});

/** Signal-to-quantization-noise ratio in dB. */
function sqnr(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let signal = 0, noise = 0;
  for (let i = 0; i < x.length; i++) [signal, noise] = [signal + x[i] ** 2, noise + (x[i] - y[i]) ** 2];
  return 10 * Math.log10(signal / noise);
}

Deno.test("MX SQNR on N(0,1) meets torchao's floors (18 dB E4M3, 13 dB the others)", async () => {
  const x = randn([128, 256], { seed: 7, stream: 0 }, 1, { backend: CPU });
  const xs = await x.data();
  const measured: string[] = [];
  for (const name of NAMES) {
    const db = sqnr(xs, await mxQuantizer(name)!.quantDequant(x).data());
    measured.push(`${name} ${db.toFixed(2)} dB`);
    assert.ok(db >= (name === "mxfp8_e4m3" ? 18 : 13), `${name}: SQNR ${db} dB`);
  }
  console.log(`SQNR on N(0,1) [128,256]: ${measured.join(", ")}`);
});

Deno.test("MX rejects shapes, dtypes, granularities and options it cannot honour", () => {
  const q = mxQuantizer("mxfp4")!;
  const bad: [() => unknown, RegExp][] = [
    [
      () => q.quantDequant(tensor(new Float32Array(99), { shape: [3, 33], backend: CPU })),
      /divisible by 32; got tensor \[3,33\] f32/,
    ],
    [() => q.quantize(tensor(new Float32Array(1), { shape: [], backend: CPU })), /divisible by 32/],
    [() => q.quantDequant(tensor(new Int32Array(32), { shape: [32], backend: CPU })), /must be f32/],
    [
      () => q.quantDequant(tensor(new Float32Array(32), { backend: CPU }), { granularity: { kind: "tensor" } }),
      /group:32/,
    ],
    [
      () => q.quantDequant(tensor(new Float32Array(32), { backend: CPU }), { scaleRounding: "up" as MxScaleRounding }),
      /scaleRounding 'up'/,
    ],
    [() => q.dequantize(mxQuantizer("mxint8")!.quantize(tensor(new Float32Array(32), { backend: CPU }))), /mxint8/],
  ];
  for (const [fn, message] of bad) assert.throws(fn, message);
  const y = q.quantDequant(tensor(new Float32Array(32), { backend: CPU }), {
    granularity: { kind: "group", size: 32 },
  });
  assert.deepEqual(y.shape, [32]);
});
