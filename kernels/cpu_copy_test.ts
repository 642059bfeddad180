/**
 * The CPU backend's strided `copy` against the definition (element by element through both views), on views
 * that take each of its paths: contiguous runs merged into one, rows of a contiguous innermost axis, 2-D
 * transposes in tiles, broadcasts (stride 0), offsets and size-1 axes.
 */
import assert from "node:assert/strict";
import type { View } from "./backend.ts";
import { type CpuStorage, createCpuBackend } from "./cpu.ts";

const cpu = createCpuBackend();

/** dst as the definition leaves it: every index of `shape` copied through both views. */
function expected(src: Uint32Array, sv: View, dst: Uint32Array, dv: View, shape: readonly number[]): Uint32Array {
  const out = dst.slice(), idx = shape.map(() => 0), total = shape.reduce((a, b) => a * b, 1);
  for (let n = 0; n < total; n++) {
    let s = sv.offset, d = dv.offset;
    for (let k = 0; k < shape.length; k++) s += idx[k] * sv.strides[k], d += idx[k] * dv.strides[k];
    out[d] = src[s];
    for (let k = shape.length - 1; k >= 0 && ++idx[k] === shape[k]; k--) idx[k] = 0;
  }
  return out;
}

const dense = (shape: readonly number[]) => shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));

Deno.test("copy: every path gives the definition's bits", () => {
  const cases: { shape: number[]; src: number[]; dst: number[]; srcOffset?: number; dstOffset?: number }[] = [
    { shape: [1, 16, 4, 64, 32], src: [131072, 8192, 2048, 32, 1], dst: [131072, 8192, 2048, 32, 1] }, // one run
    { shape: [300], src: [1], dst: [1], srcOffset: 5, dstOffset: 3 },
    { shape: [512, 1024], src: [1, 512], dst: [1024, 1] }, // transpose
    { shape: [100, 37], src: [1, 100], dst: [37, 1], srcOffset: 7 }, // transpose, partial tiles
    { shape: [39, 70], src: [1, 41], dst: [72, 1], srcOffset: 3, dstOffset: 5 }, // edge rows and columns, padded
    { shape: [3, 16, 4, 64, 32], src: [128, 24576, 32, 384, 1], dst: dense([3, 16, 4, 64, 32]) }, // head split
    { shape: [16, 4, 64, 32], src: [8192, 32, 128, 1], dst: [8192, 2048, 32, 1] },
    { shape: [16, 64, 8], src: [0, 0, 1], dst: dense([16, 64, 8]) }, // broadcast rows
    { shape: [16, 64, 40], src: [0, 0, 0], dst: dense([16, 64, 40]) }, // one value everywhere
    { shape: [5, 7], src: [7, 1], dst: [1, 5] }, // written transposed
    { shape: [4, 1, 6], src: [12, 999, 2], dst: [6, 6, 1] }, // size-1 axis, strided innermost
    { shape: [], src: [], dst: [], srcOffset: 2, dstOffset: 1 },
  ];
  for (const c of cases) {
    const sv: View = { offset: c.srcOffset ?? 0, strides: c.src },
      dv: View = { offset: c.dstOffset ?? 0, strides: c.dst };
    const reach = (v: View) => v.offset + c.shape.reduce((a, n, d) => a + (n - 1) * v.strides[d], 0) + 1;
    const src = Uint32Array.from({ length: reach(sv) }, (_, i) => (i * 2654435761) >>> 0);
    const dst = Uint32Array.from({ length: reach(dv) + 3 }, (_, i) => i ^ 0xdeadbeef);
    const s = cpu.upload(new Float32Array(src.buffer)), d = cpu.upload(new Float32Array(dst.buffer));
    cpu.copy(s, sv, d, dv, c.shape);
    assert.deepEqual((d as CpuStorage).u32, expected(src, sv, dst, dv, c.shape), `copy of ${JSON.stringify(c)}`);
    cpu.free(s);
    cpu.free(d);
  }
});
