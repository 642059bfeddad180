/**
 * Scale formats: known code values from the specs (OCP MX v1.0 E8M0, OFP8
 * E4M3) and the UE5M3 choice, every code's round trip, rounding to the
 * float-like scales, and the WGSL twins bit-identical to the TypeScript.
 *
 * @module
 */
import assert from "node:assert/strict";
import { cpuBackend, type Tensor, tensor } from "@lowp/core";
import type { Backend, WordKernel } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { CODES_WGSL, ELEMENT_WGSL, quantizeBits } from "./element.ts";
import {
  decodeScaleBits,
  encodeScaleBits,
  pow2Bits,
  SCALE_FORMATS,
  type ScaleFormatName,
  scaleQuantParams,
  SCALES_WGSL,
} from "./scales.ts";

const F32 = new Float32Array(1), U32 = new Uint32Array(F32.buffer);
const bitsOf = (x: number) => (F32[0] = x, U32[0]);
const valueOf = (b: number) => (U32[0] = b, F32[0]);

/** [format, code, value] from the specs (NaN codes decode to NaN). */
const KNOWN: [ScaleFormatName, number, number][] = [
  ["e8m0", 0x00, 2 ** -127],
  ["e8m0", 0x01, 2 ** -126],
  ["e8m0", 0x7f, 1],
  ["e8m0", 0x80, 2],
  ["e8m0", 0xfe, 2 ** 127],
  ["e8m0", 0xff, NaN],
  ["ue4m3", 0x00, 0],
  ["ue4m3", 0x01, 2 ** -9],
  ["ue4m3", 0x07, 0.875 * 2 ** -6],
  ["ue4m3", 0x08, 2 ** -6],
  ["ue4m3", 0x38, 1],
  ["ue4m3", 0x7e, 448],
  ["ue4m3", 0x7f, NaN],
  ["ue5m3", 0x00, 0],
  ["ue5m3", 0x01, 2 ** -17],
  ["ue5m3", 0x08, 2 ** -14],
  ["ue5m3", 0x78, 1],
  ["ue5m3", 0x79, 1.125],
  ["ue5m3", 0xf8, 2 ** 16],
  ["ue5m3", 0xfe, 114688],
  ["ue5m3", 0xff, NaN],
];

/** How many codes each format has (UE4M3 is E4M3 with sign 0). */
const CODE_COUNT: Record<ScaleFormatName, number> = { e8m0: 256, ue4m3: 128, ue5m3: 256 };

Deno.test("scale codes decode to the values of the specs and encode back", () => {
  for (const [name, code, value] of KNOWN) {
    const f = SCALE_FORMATS[name];
    const got = valueOf(decodeScaleBits(code, f));
    assert.ok(Object.is(got, value), `${name} code ${code}: ${got}, expected ${value}`);
    assert.equal(encodeScaleBits(bitsOf(value), f), code, `${name} encode ${value}`);
  }
});

Deno.test("every scale code round-trips and the values increase with the code", () => {
  for (const [name, count] of Object.entries(CODE_COUNT)) {
    const f = SCALE_FORMATS[name as ScaleFormatName];
    let prev = -1;
    for (let c = 0; c < count; c++) {
      const v = decodeScaleBits(c, f);
      if (c === f.nanCode) {
        assert.equal(v, 0x7fc00000, `${name} NaN code`);
        continue;
      }
      assert.ok(valueOf(v) > prev, `${name} code ${c} is not above code ${c - 1}`);
      prev = valueOf(v);
      assert.equal(encodeScaleBits(v, f), c, `${name} code ${c} round trip`);
    }
    assert.equal(f.maxBits, bitsOf(prev), `${name} largest finite`);
    assert.equal(f.minBits, decodeScaleBits(f.name === "e8m0" ? 0 : 1, f), `${name} smallest positive`);
  }
});

Deno.test("E8M0 encodes floor(log2 |v|) clamped to [-127, 127], NaN/Inf as 0xFF", () => {
  const cases: [number, number][] = [
    [3, 128],
    [-3, 128],
    [0.75, 126],
    [2 ** -127, 0],
    [2 ** -140, 0],
    [0, 0],
    [3.4e38, 254],
    [Infinity, 0xff],
    [NaN, 0xff],
  ];
  for (const [v, code] of cases) assert.equal(encodeScaleBits(bitsOf(v), SCALE_FORMATS.e8m0), code, `e8m0(${v})`);
  for (let e = -127; e <= 127; e++) assert.equal(valueOf(pow2Bits(e)), 2 ** e, `2^${e}`);
});

Deno.test("rounding to UE4M3 and UE5M3: RNE, saturating", () => {
  const cases: [ScaleFormatName, number, number][] = [
    ["ue4m3", 464, 448], // between 448 and the NaN code: saturates
    ["ue4m3", 1e6, 448],
    ["ue4m3", 1.0625, 1], // tie to even mantissa
    ["ue4m3", 1.1875, 1.25],
    ["ue4m3", 2 ** -10, 0], // half the smallest subnormal: tie to 0
    ["ue4m3", 1.5 * 2 ** -10, 2 ** -9],
    ["ue5m3", 200000, 114688],
    ["ue5m3", 1.0625, 1],
    ["ue5m3", 3 * 2 ** 14 + 2 ** 11, 3 * 2 ** 14], // 49152 + half an ulp (4096): tie to even
    ["ue5m3", 2 ** -18, 0],
    ["ue5m3", 0.75 * 2 ** -17, 2 ** -17],
  ];
  for (const [name, x, want] of cases) {
    const got = valueOf(quantizeBits(bitsOf(x), scaleQuantParams(SCALE_FORMATS[name]), 0, 0));
    assert.equal(got, want, `${name}(${x})`);
  }
  assert.throws(() => scaleQuantParams(SCALE_FORMATS.e8m0), /bare exponent/);
});

/** Decodes in0 (codes) and encodes in1 (f32 bits) for scale kind Q(0); out2 = pow2_bits(i - 127). */
const SCALE_KERNEL: WordKernel = {
  name: "test_scales",
  inputs: 2,
  outputs: 3,
  cpu: (i, [codes, values], [decoded, encoded, pow2], p) => {
    const f = Object.values(SCALE_FORMATS).find((s) => s.kind === p[0])!;
    decoded[i] = decodeScaleBits(codes[i], f);
    encoded[i] = encodeScaleBits(values[i], f);
    pow2[i] = pow2Bits(Math.min(i, 254) - 127);
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + SCALES_WGSL,
  wgsl: `  out0[i] = scale_decode(in0[i], Q(0u));
  out1[i] = scale_encode(in1[i], Q(0u));
  out2[i] = pow2_bits(i32(min(i, 254u)) - 127);`,
};

/** Values to encode: every code's value, its neighbours one ulp away, and specials. */
function encodeInputs(): Uint32Array {
  const out: number[] = [0, 0x80000000, 1, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001];
  for (const f of Object.values(SCALE_FORMATS)) {
    for (let c = 0; c < 256; c++) {
      const v = decodeScaleBits(c, f);
      out.push(v, v + 1, Math.max(v - 1, 0), (v | 0x80000000) >>> 0);
    }
  }
  return Uint32Array.from(out);
}

function runScales(backend: Backend, kind: number, values: Uint32Array): Promise<Uint32Array[]> {
  const n = values.length;
  const codes = tensor(Uint32Array.from({ length: n }, (_, i) => i & 0xff), { backend });
  const vals = tensor(values, { backend });
  const outs: Tensor[] = [0, 1, 2].map(() => tensor(new Uint32Array(n), { backend }));
  backend.runWords(SCALE_KERNEL, [codes.storage, vals.storage], outs.map((t) => t.storage), n, [kind]);
  return Promise.all(outs.map(async (t) => await t.data() as Uint32Array));
}

Deno.test("webgpu: scale encode/decode and pow2_bits are bit-identical to the TypeScript", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const values = encodeInputs();
  for (const f of Object.values(SCALE_FORMATS)) {
    const want = await runScales(cpuBackend(), f.kind, values);
    const got = await runScales(gpu, f.kind, values);
    for (const [k, part] of ["decode", "encode", "pow2_bits"].entries()) {
      const bad = want[k].findIndex((w: number, i: number) => w !== got[k][i]);
      assert.equal(bad, -1, `${f.name} ${part} at ${bad}: webgpu ${got[k][bad]}, cpu ${want[k][bad]}`);
    }
  }
});
