/**
 * NF4: the code and midpoint constants (FORMATS.md, bitsandbytes), every code
 * value quantizing to itself, midpoints going to the lower code, specials,
 * the bitsandbytes mean-absolute-error figure on 1024×1024 N(0,1), double
 * quantization against a plain `Math.fround` reference, and CPU vs WebGPU bit
 * for bit.
 */
import assert from "node:assert/strict";
import { cpuBackend, randn, type Tensor, tensor } from "@lowp/core";
import { type Backend, philoxWords } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { NF4_BLOCK, NF4_CODE_BITS, NF4_MIDPOINT_BITS, type Nf4Options, nf4Quantizer } from "./nf4.ts";

const cpu = cpuBackend();
const gpu = await gpuBackendOrSkip();
/** The backends the crafted cases run on. */
const BACKENDS: Backend[] = gpu ? [cpu, gpu] : [cpu];
const F = new Float32Array(1), U = new Uint32Array(F.buffer);
const bitsOf = (v: number) => (F[0] = v, U[0]);
const valueOf = (b: number) => (U[0] = b, F[0]);
const readBits = async (t: Tensor) => new Uint32Array((await t.data()).slice().buffer);
const nf4 = nf4Quantizer("nf4")!;
const f = Math.fround;

/** FORMATS.md's code values (QLoRA appendix; bitsandbytes `dDequantizeNF4`). */
const CODES = [
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
];
/** The thresholds of bitsandbytes' `dQuantizeNF4` (`x > t` picks the upper code), ascending. */
const BNB_THRESHOLDS = [
  -0.8480964004993439,
  -0.6106329262256622,
  -0.4599952697753906,
  -0.33967943489551544,
  -0.23460740596055984,
  -0.13791173323988914,
  -0.045525018125772476,
  0.03979014977812767,
  0.1202552504837513,
  0.2035212516784668,
  0.2920137718319893,
  0.3893125355243683,
  0.5016634166240692,
  0.6427869200706482,
  0.8614784181118011,
];
const MIDPOINTS = CODES.slice(1).map((c, k) => f((CODES[k] + c) / 2));

Deno.test("constants: code values, midpoints fround((c_k + c_k+1)/2), bitsandbytes' thresholds", () => {
  assert.deepEqual(NF4_CODE_BITS, CODES.map(bitsOf));
  assert.deepEqual(NF4_MIDPOINT_BITS, MIDPOINTS.map(bitsOf));
  assert.deepEqual(NF4_MIDPOINT_BITS, BNB_THRESHOLDS.map(bitsOf));
});

/** Quantizes a 1-row tensor of 64 values on every backend: [values, codes], checked to agree. */
async function block(x: number[]): Promise<[number[], number[]]> {
  const results = await Promise.all(BACKENDS.map(async (backend) => {
    const t = tensor(x, { shape: [1, NF4_BLOCK], backend });
    return [Array.from(await nf4.quantDequant(t).data()), Array.from(await nf4.quantize(t).parts[0].codes.data())];
  }));
  for (const r of results.slice(1)) assert.deepEqual(r, results[0], "WebGPU equals CPU");
  return results[0] as [number[], number[]];
}

const repeat = <T>(xs: T[], n: number) => Array.from({ length: n }, (_, i) => xs[i % xs.length]);

Deno.test("every code value times absmax quantizes to itself", async () => {
  for (const absmax of [1, 0.37, 3e-3, 12345.678, 2 ** -120]) {
    const a = f(absmax), x = repeat(CODES.map((c) => f(c * a)), NF4_BLOCK);
    const [values, codes] = await block(x);
    assert.deepEqual(values.map(bitsOf), x.map(bitsOf), `absmax ${a}`);
    assert.deepEqual(codes, repeat([...CODES.keys()], NF4_BLOCK), `absmax ${a} codes`);
  }
});

Deno.test("a value on a midpoint goes to the lower code, the next f32 up to the upper one", async () => {
  for (const scale of [1, 2, 0.25]) {
    // absmax = scale (the 1.0 code); a power-of-two scale keeps x / absmax exact.
    const x = [scale, ...MIDPOINTS.flatMap((m) => [m * scale, valueOf(bitsOf(m * scale) + (m > 0 ? 1 : -1))])];
    const want = [15, ...MIDPOINTS.flatMap((_, k) => [k, k + 1])];
    const [, codes] = await block(repeat(x, NF4_BLOCK));
    assert.deepEqual(codes, repeat(want, NF4_BLOCK), `scale ${scale}`);
  }
});

Deno.test("specials: NaN or Inf makes its block NaN (code 7); a zero block gives +0; other blocks unaffected", async () => {
  const rows = [repeat([0.5, -1, 0.25], 64), repeat([1, NaN], 64), repeat([2, -Infinity], 64), repeat([0, -0], 64)];
  const [clean] = await block(rows[0]);
  for (const backend of BACKENDS) {
    const t = tensor(rows.flat(), { shape: [4, NF4_BLOCK], backend });
    const got = Array.from(await readBits(nf4.quantDequant(t)));
    assert.deepEqual(got, [...clean.map(bitsOf), ...new Array(128).fill(0x7fc00000), ...new Array(64).fill(0)]);
    const q = nf4.quantize(t);
    assert.ok(Array.from(await q.parts[0].codes.data()).slice(64).every((c) => c === 7));
    assert.deepEqual(Array.from(await q.parts[1].codes.data()).slice(1), [0x7fc00000, 0x7fc00000, 0]);
  }
});

Deno.test("mean absolute error on 1024×1024 N(0,1) is 0.0728 ± 0.0005 (bitsandbytes' figure), CPU", async () => {
  const x = randn([1024, 1024], { seed: 42, stream: 0 }, 1, { backend: cpu }), a = await x.data();
  const mae = async (doubleQuant: boolean) => {
    const b = await nf4.quantDequant(x, { doubleQuant }).data();
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
    return sum / a.length;
  };
  const [plain, dq] = [await mae(false), await mae(true)];
  console.log(`nf4 MAE on 1024x1024 N(0,1): ${plain.toFixed(6)}, with double quantization ${dq.toFixed(6)}`);
  assert.ok(Math.abs(plain - 0.0728) < 0.0005, `MAE ${plain}`);
  assert.ok(Math.abs(dq - plain) < 0.001 * plain, `double quantization changes the MAE by under 0.1% (${dq})`);
});

// ---------------------------------------------------------------- double quantization

const rne = (v: number) => {
  const fl = Math.floor(v), d = v - fl;
  return d > 0.5 || (d === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
};

/** NF4 with double quantization in plain Math.fround arithmetic (finite inputs). */
function reference(x: Float32Array, doubleQuant: boolean): Float32Array {
  const blocks = x.length / NF4_BLOCK;
  const absmax = Array.from({ length: blocks }, (_, b) => {
    let m = 0;
    for (let k = 0; k < NF4_BLOCK; k++) m = Math.max(m, Math.abs(x[b * NF4_BLOCK + k]));
    return m;
  });
  let restored = absmax;
  if (doubleQuant) {
    const mean = f(absmax.reduce((s, a) => f(s + a), 0) * f(1 / blocks));
    const centred = absmax.map((a) => f(a - mean));
    restored = centred.map((c, b) => {
      const group = centred.slice(b - (b % 256), b - (b % 256) + 256);
      const s = f(Math.max(...group.map(Math.abs)) * f(1 / 127));
      const q = s === 0 ? 0 : Math.min(127, Math.max(-128, rne(f(c * f(1 / s)))));
      return f(f(q * s) + mean);
    });
  }
  return Float32Array.from(x, (v, i) => {
    const a = absmax[Math.floor(i / NF4_BLOCK)];
    const code = a === 0 ? 7 : MIDPOINTS.filter((m) => f(v * f(1 / a)) > m).length;
    return f(CODES[code] * restored[Math.floor(i / NF4_BLOCK)]);
  });
}

/** `n` values: N(0,1) times 2^(−6…6) per block, some exact zeros and subnormals, and (with `specials`) NaN/±Inf. */
async function input(n: number, seed: number, specials: boolean): Promise<Float32Array> {
  const g = await randn([n], { seed, stream: 9 }, 1, { backend: cpu }).data();
  const w = philoxWords(new Uint32Array(n), seed, 10, 0);
  return Float32Array.from(w, (r, i) => {
    if (specials && r % 97 === 0) return [NaN, Infinity, -Infinity][i % 3];
    if (r % 97 === 1) return i % 2 ? -0 : 0;
    if (r % 97 === 2) return valueOf(r & 0x807fffff); // subnormal
    return g[i] * 2 ** ((Math.floor(i / NF4_BLOCK) % 13) - 6);
  });
}

Deno.test("double quantization equals the Math.fround reference; dequantize∘quantize = quantDequant", async () => {
  // 300 blocks: one full block of 256 absmax values and a last one of 44.
  const x = await input(300 * NF4_BLOCK, 7, false);
  for (const doubleQuant of [false, true]) {
    const t = tensor(x, { shape: [3, 100 * NF4_BLOCK], backend: cpu });
    const got = await readBits(nf4.quantDequant(t, { doubleQuant }));
    assert.deepEqual(got, new Uint32Array(reference(x, doubleQuant).buffer), `doubleQuant ${doubleQuant}`);
    assert.deepEqual(
      await readBits(nf4.dequantize(nf4.quantize(t, { doubleQuant }))),
      got,
      `round trip ${doubleQuant}`,
    );
  }
  const parts = nf4Quantizer("nf4-dq")!.quantize(tensor(x, { backend: cpu })).parts;
  assert.deepEqual(parts.map((p) => [p.name, p.bits, p.format, p.codes.shape.join()]), [
    ["codes", 4, "nf4", "19200"],
    ["absmax_codes", 8, "int8", "300"],
    ["absmax_scales", 32, "f32", "2"],
    ["absmax_mean", 32, "f32", "1"],
  ]);
});

Deno.test("errors: last axis not a multiple of 64, other rounding or granularity, unknown names", () => {
  assert.equal(nf4Quantizer("nf3"), null);
  const x = tensor(new Float32Array(200), { shape: [2, 100], backend: cpu });
  assert.throws(() => nf4.quantDequant(x), /\[2,100\].*multiple of 64/);
  const y = tensor(new Float32Array(64), { backend: cpu });
  assert.throws(() => nf4.quantDequant(y, { rounding: "stochastic" }), /nearest/);
  assert.throws(() => nf4.quantDequant(y, { granularity: { kind: "tensor" } }), /blocks of 64/);
});

// ---------------------------------------------------------------- CPU vs WebGPU

async function outputs(backend: Backend, x: Float32Array, shape: number[], opts: Nf4Options) {
  const t = tensor(x, { shape, backend });
  const q = nf4.quantize(t, opts);
  return {
    values: await readBits(nf4.quantDequant(t, opts)),
    parts: await Promise.all(q.parts.map((p) => p.codes.data())),
    restored: await readBits(nf4.dequantize(q)),
  };
}

Deno.test({
  name: "CPU and WebGPU agree bit for bit (with and without double quantization, with and without specials)",
  ignore: !gpu,
  fn: async () => {
    const shape = [2, 150 * NF4_BLOCK]; // 300 blocks: two absmax blocks of the double quantization
    for (const specials of [false, true]) {
      const x = await input(300 * NF4_BLOCK, 11, specials);
      for (const doubleQuant of [false, true]) {
        const [c, g] = [await outputs(cpu, x, shape, { doubleQuant }), await outputs(gpu!, x, shape, { doubleQuant })];
        assert.deepEqual(g, c, `specials ${specials}, doubleQuant ${doubleQuant}`);
        assert.deepEqual(c.restored, c.values, `round trip, specials ${specials}, doubleQuant ${doubleQuant}`);
        assert.ok(c.values.every((b) => (b & 0x7fffffff) <= 0x7f800000 || b === 0x7fc00000), "canonical NaN");
      }
    }
  },
});
