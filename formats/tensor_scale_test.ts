/** `amaxOf` (the CPU's one-loop amax behind per-tensor FP8 scaling) against `max(abs(x))`, bit for bit. */
import assert from "node:assert/strict";
import { abs, max, tensor } from "@lowp/core";
import { createCpuBackend } from "@lowp/kernels";
import { bitsOf } from "../tests/helpers.ts";
import { amaxOf } from "./tensor_scale.ts";

Deno.test("amaxOf gives max(abs(x))'s bits: first NaN wins, ±Inf, -0, subnormals; an empty tensor is its error", async () => {
  const host = createCpuBackend(), reference = createCpuBackend({ kernels: "reference" });
  const cases: number[][] = [
    [3, -7.5, 2, 7.5, -1],
    [-0, 0, -0],
    [1e-45, -2e-45],
    [1, NaN, -Infinity, NaN],
    [NaN, 5],
    [-Infinity, 3],
    Array.from({ length: 5000 }, (_, i) => Math.sin(i * 1.7) * 2 ** (i % 40 - 20)),
  ];
  for (const values of cases) {
    const x = tensor(Float32Array.from(values), { backend: host }),
      r = tensor(Float32Array.from(values), { backend: reference });
    const got = amaxOf(x), want = max(abs(r));
    assert.deepEqual(got.shape, want.shape);
    assert.equal(amaxOf(r).backend, reference, "the reference backend keeps its kernels");
    const [g, w] = [await bitsOf(got), await bitsOf(want)];
    const nan = (b: Uint32Array) => Array.from(b, (u) => ((u & 0x7fffffff) > 0x7f800000 ? "NaN" : u));
    assert.deepEqual(nan(g), nan(w), `amax of [${values.slice(0, 6)}${values.length > 6 ? ", …" : ""}]`);
  }
});

Deno.test("amaxOf of an empty tensor: max's error", () => {
  const x = tensor(new Float32Array(0), { backend: createCpuBackend() });
  assert.throws(() => amaxOf(x), /max: cannot reduce an empty axis of tensor \[0\] f32/);
});
