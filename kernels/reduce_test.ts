/**
 * The summation order of `reduce("sum")` on the CPU backend: in index order below 512 elements, in the
 * lane order of `splitSum` from there on (the WebGPU backend's order too; tests/parity_test.ts compares
 * the two bit for bit). Each case is built so that the two orders give different f32 results.
 */
import assert from "node:assert/strict";
import { splitSum, SUM_LANES } from "./backend.ts";
import { type CpuStorage, createCpuBackend } from "./cpu.ts";

const cpu = createCpuBackend();

function sumOf(values: Float32Array): number {
  const input = cpu.upload(values), out = cpu.alloc(1);
  cpu.reduce("sum", input, 1, values.length, 1, out);
  const result = (out as CpuStorage).f32[0];
  cpu.free(input);
  cpu.free(out);
  return result;
}

/** 2^24 then ones: adding a one to 2^24 rounds back to 2^24 (ties to even), two ones at once do not. */
function bigThenOnes(n: number): Float32Array {
  const x = new Float32Array(n).fill(1);
  x[0] = 2 ** 24;
  return x;
}

Deno.test("sums shorter than 512 run in index order", () => {
  assert.equal(splitSum(511), false);
  assert.equal(sumOf(bigThenOnes(511)), 2 ** 24); // every +1 is lost
});

Deno.test("sums of 512 or more run in lane order: lane t adds t, t + 256, …; lanes combine pairwise", () => {
  assert.equal(splitSum(512), true);
  assert.equal(SUM_LANES, 256);
  // Lane 0: 2^24 + 1 rounds to 2^24; lanes 1..255: 1 + 1 = 2 each; their pairwise total 510 is exact.
  assert.equal(sumOf(bigThenOnes(512)), 2 ** 24 + 510);
  // A length that is not a multiple of 256, against the order written out step by step.
  const x = bigThenOnes(700), lanes = new Float32Array(SUM_LANES);
  for (let i = 0; i < x.length; i++) lanes[i % SUM_LANES] = Math.fround(lanes[i % SUM_LANES] + x[i]);
  for (let s = SUM_LANES / 2; s >= 1; s /= 2) {
    for (let t = 0; t < s; t++) lanes[t] = Math.fround(lanes[t] + lanes[t + s]);
  }
  assert.equal(sumOf(x), lanes[0]);
  assert.notEqual(lanes[0], 2 ** 24);
});

Deno.test("max/min/argmax/argmin: a contiguous run (inner 1) gives what the strided loop gives: first NaN wins, ties keep the first", () => {
  const cases = [
    [3, -1, 7, 7, 2],
    [0, -0, 0, -5],
    [-0, 0, 1, -1],
    [1, NaN, 9, NaN, -9],
    [NaN, 2],
    [5],
    [-Infinity, Infinity, 4],
  ];
  for (const values of cases) {
    const n = values.length;
    for (const op of ["max", "min", "argmax", "argmin"] as const) {
      // The same values as one contiguous run (outer 1, inner 1) and as a column (outer 1, inner 2, other
      // column zeros), which takes the strided loop.
      const run = cpu.upload(Float32Array.from(values)), one = cpu.alloc(1);
      const column = cpu.upload(Float32Array.from(values.flatMap((v) => [v, 0]))), two = cpu.alloc(2);
      cpu.reduce(op, run, 1, n, 1, one);
      cpu.reduce(op, column, 1, n, 2, two);
      const word = (s: unknown, i: number) => (s as CpuStorage).u32[i];
      assert.equal(word(one, 0), word(two, 0), `${op} of [${values}]`);
      for (const s of [run, one, column, two]) cpu.free(s);
    }
  }
});

Deno.test("column sums (inner > 1) give each column the bits of summing it alone, below and above 512 rows", () => {
  for (const [outer, size, inner] of [[1, 5, 3], [2, 300, 7], [1, 512, 4], [3, 1000, 5], [1, 1024, 128]]) {
    // Values spread over many binades with a few huge ones, so that a different order gives different bits.
    const values = Float32Array.from({ length: outer * size * inner }, (_, i) => {
      const u = Math.sin(i * 12.9898) * 43758.5453;
      return (u - Math.floor(u) - 0.5) * 2 ** ((i * 7) % 30) * (i % 97 === 0 ? 2 ** 20 : 1);
    });
    values[inner + 1] = -0;
    const input = cpu.upload(values), out = cpu.alloc(outer * inner);
    cpu.reduce("sum", input, outer, size, inner, out);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        const column = Float32Array.from({ length: size }, (_, r) => values[(o * size + r) * inner + j]);
        const alone = sumOf(column), got = (out as CpuStorage).f32[o * inner + j];
        assert.ok(Object.is(got, alone), `[${outer}, ${size}, ${inner}] column ${o}, ${j}: ${got} vs ${alone}`);
      }
    }
    cpu.free(input);
    cpu.free(out);
  }
});
