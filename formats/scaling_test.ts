/**
 * `reduceRanges` on the CPU backend's host path (one loop per scale) against the word kernels (a CPU backend
 * made with `kernels: "reference"`), bit for bit, on layouts it takes and ones it leaves to the kernels, with
 * NaN of either sign, ±Inf, ±0 and subnormals among the values.
 */
import assert from "node:assert/strict";
import { type Backend, type CpuStorage, createCpuBackend } from "@lowp/kernels";
import { blockLayout, type Layout, layoutOf, reduceRanges } from "./scaling.ts";
import { parseGranularity } from "./spec.ts";

const host = createCpuBackend(), reference = createCpuBackend({ kernels: "reference" });

function rangesOn(backend: Backend, words: Uint32Array, layout: Layout): number[][] {
  const x = backend.upload(new Float32Array(words.buffer.slice(0)));
  const r = reduceRanges(backend, x, layout);
  const out = [r.hi, r.lo, r.amax].map((s) => Array.from((s as CpuStorage).u32.subarray(0, layout.channels)));
  for (const s of [x, r.hi, r.lo, r.amax]) backend.free(s);
  return out;
}

Deno.test("reduceRanges: the host loop gives the word kernels' keys and magnitudes", () => {
  const specials = [0x7fc00000, 0xffc00001, 0x7f800000, 0xff800000, 0x80000000, 0, 1, 0x80000001, 0x7f7fffff];
  const cases: [string, Layout][] = [
    ["tensor", layoutOf([3000], parseGranularity("tensor"), "test")],
    ["group:32", layoutOf([40, 64], parseGranularity("group:32"), "test")],
    ["blocks of 100 over 1050", blockLayout(1050, 100)],
    ["channel:0 (left to the kernels)", layoutOf([40, 64], parseGranularity("channel:0"), "test")],
    ["group:8 along axis 0 (left to the kernels)", layoutOf([40, 64], parseGranularity("group:8"), "test", 0)],
  ];
  for (const [name, layout] of cases) {
    for (const withSpecials of [false, true]) {
      const words = Uint32Array.from({ length: layout.n }, (_, i) => (Math.imul(i + 1, 2654435761) >>> 0) & 0xbfffffff);
      if (withSpecials) specials.forEach((w, k) => (words[(k * 997) % layout.n] = w));
      else words.forEach((w, i) => (words[i] = w & 0x3fffffff | (i % 3 === 0 ? 0x80000000 : 0))); // finite only
      assert.deepEqual(
        rangesOn(host, words, layout),
        rangesOn(reference, words, layout),
        `${name}, specials ${withSpecials}`,
      );
    }
  }
});
