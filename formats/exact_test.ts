/**
 * The integer-bit multiply and reciprocal against the hardware's IEEE f32
 * arithmetic (a Float32Array store rounds once, to nearest even), and their
 * WGSL twins against the TypeScript, bit for bit.
 */
import assert from "node:assert/strict";
import { cpuBackend } from "@lowp/core";
import { philoxWords, type WordKernel } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { EXACT_WGSL, f32MulBits, f32RecipBits } from "./exact.ts";

/** Operand pairs covering every exponent range: random, tiny, subnormal, near-overflow, specials. */
function operands(n: number): [Uint32Array, Uint32Array] {
  const a = philoxWords(new Uint32Array(n), 3, 4, 0), b = philoxWords(new Uint32Array(n), 3, 5, 0);
  for (let i = 0; i < n; i++) {
    switch (i % 8) {
      case 1: // small exponents, including subnormal products
        a[i] &= 0x80ffffff;
        break;
      case 2: // products near the subnormal boundary
        a[i] = (a[i] & 0x807fffff) | 0x1f000000;
        b[i] = (b[i] & 0x807fffff) | 0x1f800000;
        break;
      case 3: // subnormal operands
        a[i] &= 0x807fffff;
        break;
      case 4: // huge: reciprocals are subnormal, products overflow
        a[i] = (a[i] & 0x807fffff) | 0x7e800000;
        break;
    }
  }
  const specials = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 1, 0x00800000, 0x3f800000, 0x7f7fffff];
  specials.forEach((v, i) => {
    a[i] = v;
    b[specials.length - 1 - i] = v;
  });
  return [a, b];
}

const f = new Float32Array(1), u = new Uint32Array(f.buffer);
const asF32 = (bits: number) => (u[0] = bits, f[0]);
const bitsOf = (v: number) => (f[0] = v, u[0]);
const sameOrBothNaN = (got: number, want: number) =>
  got === want || (Number.isNaN(asF32(got)) && Number.isNaN(asF32(want)));

Deno.test("f32MulBits and f32RecipBits are IEEE round-to-nearest-even, subnormals included", () => {
  const [a, b] = operands(400_000);
  for (let i = 0; i < a.length; i++) {
    const want = bitsOf(asF32(a[i]) * asF32(b[i]));
    assert.ok(sameOrBothNaN(f32MulBits(a[i], b[i]), want), `mul ${a[i].toString(16)} ${b[i].toString(16)}`);
    const wantRecip = bitsOf(1 / asF32(a[i]));
    assert.ok(sameOrBothNaN(f32RecipBits(a[i]), wantRecip), `recip ${a[i].toString(16)}`);
  }
});

const EXACT_KERNEL: WordKernel = {
  name: "exact_test",
  inputs: 2,
  outputs: 2,
  cpu: (i, [a, b], [mul, recip]) => {
    mul[i] = f32MulBits(a[i], b[i]);
    recip[i] = f32RecipBits(a[i]);
  },
  wgslHelpers: EXACT_WGSL,
  wgsl: "  out0[i] = f32_mul_bits(in0[i], in1[i]);\n  out1[i] = f32_recip_bits(in0[i]);",
};

Deno.test("WGSL f32_mul_bits and f32_recip_bits give the TypeScript's bits", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const [a, b] = operands(1 << 16);
  const run = async (backend: typeof gpu) => {
    const ins = [backend.upload(a), backend.upload(b)], outs = [backend.alloc(a.length), backend.alloc(a.length)];
    backend.runWords(EXACT_KERNEL, ins, outs, a.length, []);
    const result = await Promise.all(outs.map((o) => backend.read(o, "u32")));
    [...ins, ...outs].forEach((s) => backend.free(s));
    return result;
  };
  const [cpu, webgpu] = [await run(cpuBackend()), await run(gpu)];
  assert.deepEqual(webgpu[0], cpu[0], "products");
  assert.deepEqual(webgpu[1], cpu[1], "reciprocals");
});
