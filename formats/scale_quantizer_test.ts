/** The scale formats as formats of their own: values, names, and CPU/WebGPU bit parity. */
import assert from "node:assert/strict";
import { cpuBackend, tensor } from "@lowp/core";
import { philoxWords } from "@lowp/kernels";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import { parseFormat } from "./registry.ts";

const CASES: [string, number[], number[]][] = [
  // e8m0 keeps 2^floor(log2 |x|), clamped to [2^-127, 2^127]; NaN and Inf are its NaN code.
  ["e8m0", [3, 0.3, -5, 1, 0, 1.5 * 2 ** 127, NaN, Infinity], [2, 0.25, 4, 1, 2 ** -127, 2 ** 127, NaN, NaN]],
  // ue4m3 is E4M3 without a sign: RNE, saturating at 448.
  ["ue4m3", [500, 0.3, -3.3, 1.0625, 2 ** -10], [448, 0.3125, 3.25, 1, 0]],
  // ue5m3: bias 15, largest 114688, smallest 2^-17 (the documented choice).
  ["ue5m3", [1e6, 3.3, 2 ** -17, 2 ** -19], [114688, 3.25, 2 ** -17, 0]],
];

Deno.test("scale formats: values as documented, and stored codes decode to the same bits", async () => {
  for (const [name, input, want] of CASES) {
    const q = parseFormat(name);
    assert.equal(q.name, name);
    const x = tensor(input, { backend: cpuBackend() });
    assert.deepEqual(Array.from(await q.quantDequant(x).data()), want, name);
    assert.deepEqual(await q.dequantize(q.quantize(x)).data(), await q.quantDequant(x).data(), `${name} round trip`);
  }
});

Deno.test("scale formats: e8m0 has no rounding mode and no format takes a granularity", () => {
  const x = tensor([1], { backend: cpuBackend() });
  assert.throws(() => parseFormat("e8m0").quantDequant(x, { rounding: "stochastic" }), /no rounding mode/);
  assert.throws(() => parseFormat("ue4m3").quantDequant(x, { granularity: { kind: "tensor" } }), /no granularity/);
});

Deno.test("scale formats: CPU and WebGPU give identical bits", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const bits = philoxWords(new Uint32Array(4096), 9, 1, 0);
  [0, 0x80000000, 0x7f800000, 0x7fc00000, 1, 0x00400000].forEach((v, i) => bits[i] = v);
  const values = new Float32Array(bits.buffer);
  for (const name of ["e8m0", "ue4m3", "ue5m3"]) {
    for (const rounding of name === "e8m0" ? ["nearest"] as const : ["nearest", "stochastic"] as const) {
      const q = parseFormat(name);
      const run = (backend: typeof gpu) =>
        q.quantize(tensor(values, { backend }), { rounding, seed: 5 }).parts[0].codes.data();
      assert.deepEqual(await run(gpu), await run(cpuBackend()), `${name} ${rounding}`);
    }
  }
});
