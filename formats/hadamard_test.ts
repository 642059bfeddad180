/**
 * Blockwise Hadamard transform: against a dense Sylvester matrix product in
 * f64, H·H = I, gradients (finite differences and the exact D·H·g), WebGPU
 * against the CPU, and errors on bad sizes.
 *
 * Tolerances (u = 2⁻²⁴): one transform output is a tree of log₂ b f32 adds
 * then one multiply by fl(1/√b), so |ŷ - y| ≤ (log₂ b + 2)·u·Σ|x_block|/√b
 * (recursive summation bound γ_{log₂ b} plus the scale's two roundings). A
 * round trip adds the second transform's error and carries the first through
 * an orthonormal map (≤ √b·max|e| per element): ≤ 2(log₂ b + 2)·u·Σ|x_block|.
 */
import assert from "node:assert/strict";
import { backward, cpuBackend, mul, sum, type Tensor, tensor, tidy } from "@lowp/core";
import { type Backend, createCpuBackend, philoxWords } from "@lowp/kernels";
import { assertClose, gpuBackendOrSkip, gradCheck, randomArray, seedOf } from "../tests/helpers.ts";
import { hadamard, type HadamardOptions, type HadamardSigns, inverseHadamard } from "./hadamard.ts";

const U = 2 ** -24;
const BLOCKS = [2, 4, 16, 32, 64, 128, 256];
const SIGNS: (HadamardSigns | undefined)[] = [
  undefined,
  { seed: 11, stream: 3, offset: 5 },
  { seed: 11, stream: 3, offset: 2 ** 32 + 9, per: "column" },
];
const signName = (s?: HadamardSigns) => (s ? `signs per ${s.per ?? "block"}` : "no signs");

/** Sylvester's construction: H₁ = [1], H₂ₙ = [[H, H], [H, -H]]. */
function sylvester(b: number): number[][] {
  let h = [[1]];
  while (h.length < b) h = [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((v) => -v)])];
  return h;
}

/** The ±1 signs of indices 0..n-1: the top bit of Philox word offset + j of (seed, stream), 1 meaning -1. */
function signVector(n: number, s: HadamardSigns): number[] {
  const words = philoxWords(new Uint32Array(n), s.seed, s.stream ?? 0, s.offset ?? 0);
  return Array.from(words, (w) => (w >>> 31 ? -1 : 1));
}

/** Dense f64 reference of H·D·x (or D·H·x) per block, and the per-element error scale Σ|x_block|/√b. */
function dense(x: Float32Array, last: number, b: number, s: HadamardSigns | undefined, inverse: boolean) {
  const h = sylvester(b);
  const d = s ? signVector(s.per === "column" ? last : b, s) : null;
  const sign = (k: number) => (d ? d[s!.per === "column" ? k % last : k % b] : 1);
  const y = new Float64Array(x.length), scale = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += b) {
    let l1 = 0;
    for (let j = 0; j < b; j++) l1 += Math.abs(x[base + j]);
    for (let i = 0; i < b; i++) {
      let acc = 0;
      for (let j = 0; j < b; j++) acc += h[i][j] * x[base + j] * (inverse ? 1 : sign(base + j));
      y[base + i] = (acc / Math.sqrt(b)) * (inverse ? sign(base + i) : 1);
      scale[base + i] = l1 / Math.sqrt(b);
    }
  }
  return { y, scale };
}

async function run(fn: (x: Tensor) => Tensor, data: Float32Array, shape: number[], backend: Backend) {
  const y = tidy(() => fn(tensor(data, { shape, backend })));
  const out = await y.data() as Float32Array;
  y.dispose();
  return out;
}

const cpu = cpuBackend();

Deno.test("hadamard: H4 of [1, 1, 1, 1] is [2, 0, 0, 0]; of e0 is [1/2, 1/2, 1/2, 1/2]", async () => {
  assert.deepEqual(Array.from(await run((x) => hadamard(x, { block: 4 }), Float32Array.of(1, 1, 1, 1), [4], cpu)), [
    2,
    0,
    0,
    0,
  ]);
  assert.deepEqual(Array.from(await run((x) => hadamard(x, { block: 4 }), Float32Array.of(1, 0, 0, 0), [4], cpu)), [
    0.5,
    0.5,
    0.5,
    0.5,
  ]);
});

for (const b of BLOCKS) {
  for (const signs of SIGNS) {
    for (const inverse of [false, true]) {
      const name = `${inverse ? "inverseHadamard" : "hadamard"} b=${b}, ${signName(signs)}: dense Sylvester product`;
      Deno.test(name, async () => {
        const shape = [3, 2 * b];
        const x = randomArray(3 * 2 * b, seedOf(name));
        const opts: HadamardOptions = { block: b, signs };
        const got = await run((t) => (inverse ? inverseHadamard(t, opts) : hadamard(t, opts)), x, shape, cpu);
        const { y, scale } = dense(x, 2 * b, b, signs, inverse);
        assertClose(got, y, { rtol: (Math.log2(b) + 2) * U, atol: 0 }, name, scale);
      });
    }
  }
}

for (const b of BLOCKS) {
  for (const signs of SIGNS) {
    const name = `hadamard b=${b}, ${signName(signs)}: the inverse undoes it (H·H = I)`;
    Deno.test(name, async () => {
      const shape = [2, 2 * b];
      const x = randomArray(4 * b, seedOf(name));
      const opts: HadamardOptions = { block: b, signs };
      const back = await run((t) => inverseHadamard(hadamard(t, opts), opts), x, shape, cpu);
      const scale = new Float64Array(x.length);
      for (let base = 0; base < x.length; base += b) {
        let l1 = 0;
        for (let j = 0; j < b; j++) l1 += Math.abs(x[base + j]);
        scale.fill(l1, base, base + b);
      }
      assertClose(back, x, { rtol: 2 * (Math.log2(b) + 2) * U, atol: 0 }, name, scale);
      if (!signs) {
        // Without signs H is its own inverse: both directions run the same arithmetic.
        const twice = await run((t) => hadamard(hadamard(t, opts), opts), x, shape, cpu);
        assertClose(twice, back, { rtol: 0, atol: 0 }, `${name}: hadamard twice`);
      }
    });
  }
}

Deno.test("hadamard: fresh signs per offset, the same signs for the same key", async () => {
  const x = Float32Array.from({ length: 32 }, (_, i) => i + 1);
  const at = (offset: number) => run((t) => hadamard(t, { block: 32, signs: { seed: 1, offset } }), x, [32], cpu);
  assert.deepEqual(await at(0), await at(0));
  assert.notDeepEqual(await at(0), await at(32));
});

Deno.test("hadamard: signs per block are shared by every block; per column they differ", async () => {
  const x = Float32Array.from({ length: 64 }, (_, i) => (i % 16) + 1); // four equal blocks of 16
  const y = await run((t) => hadamard(t, { block: 16, signs: { seed: 5 } }), x, [2, 32], cpu);
  for (let k = 1; k < 4; k++) assert.deepEqual(y.slice(16 * k, 16 * k + 16), y.slice(0, 16));
  const z = await run((t) => hadamard(t, { block: 16, signs: { seed: 5, per: "column" } }), x, [2, 32], cpu);
  assert.deepEqual(z.slice(32, 64), z.slice(0, 32), "rows share column signs");
  assert.notDeepEqual(z.slice(16, 32), z.slice(0, 16), "blocks of a row differ");
});

const GRAD_CASES: [string, HadamardOptions][] = [
  ["b=4", { block: 4 }],
  ["b=16 with block signs", { block: 16, signs: { seed: 3, stream: 1 } }],
  ["b=16 with column signs", { block: 16, signs: { seed: 3, stream: 1, per: "column" } }],
];
for (const [label, opts] of GRAD_CASES) {
  for (const inverse of [false, true]) {
    const op = inverse ? inverseHadamard : hadamard;
    const name = `${inverse ? "inverseHadamard" : "hadamard"} ${label}: gradient`;
    Deno.test(`${name} by finite differences`, async () => {
      await gradCheck((x) => op(x, opts), [{ data: randomArray(64, seedOf(name)), shape: [2, 32] }], { label: name });
    });
    Deno.test(`${name} is the opposite transform of g, exactly`, async () => {
      const r = randomArray(64, seedOf(name) + 1);
      const x = tensor(randomArray(64, seedOf(name)), { shape: [2, 32], requiresGrad: true, backend: cpu });
      tidy(() => backward(sum(mul(op(x, opts), tensor(r, { shape: [2, 32], backend: cpu })))));
      const expected = await run((g) => (inverse ? hadamard(g, opts) : inverseHadamard(g, opts)), r, [2, 32], cpu);
      assertClose(await x.grad!.data(), expected, { rtol: 0, atol: 0 }, name);
      x.dispose();
    });
  }
}

const BAD: [string, number[], number, RegExp][] = [
  ["block 3", [2, 12], 3, /power of two/],
  ["block 24", [2, 48], 24, /power of two/],
  ["block 1", [2, 4], 1, /power of two/],
  ["block 512", [2, 512], 512, /power of two from 2 to 256/],
  ["last dim 48 with block 32", [2, 48], 32, /multiple of the block size 32/],
  ["a scalar", [], 2, /multiple of the block size/],
];
for (const [label, shape, block, message] of BAD) {
  Deno.test(`hadamard: a clear error for ${label}`, () => {
    const x = tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), { shape, backend: cpu });
    assert.throws(() => hadamard(x, { block }), message);
    assert.throws(() => inverseHadamard(x, { block }), message);
  });
}
Deno.test("hadamard: i32 input is refused", () => {
  assert.throws(() => hadamard(tensor([1, 2], { dtype: "i32", backend: cpu }), { block: 2 }), /must be f32/);
});

// ---------------------------------------------------------------- WebGPU against the CPU

/**
 * Same kernel on both backends: the same f32 operations in the same order, each correctly rounded, so the
 * results should be bit-identical (measured on lavapipe: 0 ulp). The assertion allows the transform's own
 * error bound, as a GPU may flush subnormals or differ in ways WGSL permits.
 */
Deno.test("hadamard: WebGPU matches the CPU, forward and backward", async (t) => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  for (const b of [16, 32, 256]) {
    for (const signs of SIGNS) {
      await t.step(`b=${b}, ${signName(signs)}`, async () => {
        const shape = [2, 2 * b], n = 4 * b;
        const x = randomArray(n, seedOf(`parity ${b} ${signName(signs)}`), -4, 4);
        const r = randomArray(n, seedOf(`parity R ${b}`));
        const results = await Promise.all([cpu, gpu].map(async (backend) => {
          const xt = tensor(x, { shape, backend, requiresGrad: true });
          const y = tidy(() => {
            const y = hadamard(xt, { block: b, signs });
            backward(sum(mul(y, tensor(r, { shape, backend }))));
            return y;
          });
          const out = [await y.data() as Float32Array, await xt.grad!.data() as Float32Array];
          y.dispose();
          xt.dispose();
          return out;
        }));
        for (const [k, what] of ["forward", "gradient"].entries()) {
          const { scale } = dense(k === 0 ? x : r, 2 * b, b, undefined, false);
          assertClose(results[1][k], results[0][k], { rtol: (Math.log2(b) + 2) * U, atol: 0 }, what, scale);
        }
      });
    }
  }
});

Deno.test("hadamard: the CPU's WebAssembly pass gives the word kernel's bits (chunks, signs, NaN, ±Inf, ±0)", async () => {
  const reference = createCpuBackend({ kernels: "reference" });
  for (const b of [4, 8, 16, 32, 256]) {
    // 70 rows of 512: more than one 16384-value chunk, and per-column signs with a period of 512.
    const shape = [70, 512], x = randomArray(70 * 512, seedOf(`host ${b}`), -3, 3);
    x.set([NaN, Infinity, -Infinity, -0, 0, 1e-40, -1e-40, 3e38, -3e38], 17);
    for (const signs of SIGNS) {
      for (const inverse of [false, true]) {
        const opts: HadamardOptions = { block: b, signs };
        const fn = (t: Tensor) => inverse ? inverseHadamard(t, opts) : hadamard(t, opts);
        const [got, want] = await Promise.all([cpu, reference].map((backend) => run(fn, x, shape, backend)));
        // NaN where the reference has NaN; its NaN bits follow the host's arithmetic (x86 makes 0xffc00000).
        const bits = (a: Float32Array) =>
          Array.from(a, (v, i) => Number.isNaN(v) ? "NaN" : new Uint32Array(a.buffer)[i]);
        assert.deepEqual(bits(got), bits(want), `b=${b}, ${signName(signs)}, ${inverse ? "inverse" : "forward"}`);
      }
    }
  }
});
