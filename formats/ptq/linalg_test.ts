/**
 * The f64 host linear algebra: factors reproduce their matrix, the fast
 * upper factor of the inverse equals the reference's three-step route, and
 * a matrix that is not positive definite throws naming the pivot (no NaN),
 * and the WebAssembly Cholesky gives the JS loops' bits.
 */
import assert from "node:assert/strict";
import {
  choleskyInverse,
  choleskyLower,
  choleskyUpper,
  inverseCholeskyUpper,
  inverseCholeskyUpperReference,
  LINALG_WASM_AVAILABLE,
  NotPositiveDefiniteError,
  reverseCholesky,
  reverseCholeskyJs,
} from "./linalg.ts";

/** A random SPD matrix X·Xᵀ/m + εI from a fixed LCG, n×n. */
function spd(n: number, m: number, eps: number, seed: number): Float64Array {
  let s = seed;
  const x = Float64Array.from({ length: n * m }, () => (s = (s * 16807) % 2147483647) / 2147483647 - 0.5);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let t = 0;
      for (let k = 0; k < m; k++) t += x[i * m + k] * x[j * m + k];
      a[i * n + j] = t / m + (i === j ? eps : 0);
    }
  }
  return a;
}

/** max |a − b| / max |b|. */
function relDiff(a: Float64Array, b: Float64Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i])), m = Math.max(m, Math.abs(b[i]));
  return d / m;
}

/** op(a)·op(b) for n×n matrices, `ta`/`tb` transposing. */
function mul(a: Float64Array, b: Float64Array, n: number, ta = false, tb = false): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let t = 0;
      for (let k = 0; k < n; k++) t += (ta ? a[k * n + i] : a[i * n + k]) * (tb ? b[j * n + k] : b[k * n + j]);
      c[i * n + j] = t;
    }
  }
  return c;
}

Deno.test("Cholesky factors reproduce the matrix, and the inverse inverts it", () => {
  const n = 37, a = spd(n, 50, 1e-3, 7);
  const l = choleskyLower(a, n), u = choleskyUpper(a, n), r = reverseCholesky(a, n);
  assert.ok(relDiff(mul(l, l, n, false, true), a) < 1e-13);
  assert.ok(relDiff(mul(u, u, n, true, false), a) < 1e-13);
  assert.ok(relDiff(mul(r, r, n, false, true), a) < 1e-13);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) assert.equal(r[i * n + j], 0, "R is upper triangular");
  }
  const inv = choleskyInverse(l, n), eye = mul(a, inv, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) assert.ok(Math.abs(eye[i * n + j] - (i === j ? 1 : 0)) < 1e-9, `A·A⁻¹ at ${i},${j}`);
  }
});

Deno.test("the upper factor of the inverse equals the reference's cholesky(cholesky_inverse(L), upper)", () => {
  for (const [n, eps] of [[1, 0.5], [64, 1e-2], [200, 1e-4]] as const) {
    const a = spd(n, n + 20, eps, 11 + n);
    const fast = inverseCholeskyUpper(a, n), ref = inverseCholeskyUpperReference(a, n);
    const d = relDiff(fast, ref);
    assert.ok(d < 1e-10, `n = ${n}: relative difference ${d}`);
    assert.ok(relDiff(mul(fast, fast, n, true, false), choleskyInverse(choleskyLower(a, n), n)) < 1e-10);
  }
});

Deno.test("a matrix that is not positive definite throws naming the failing pivot, never NaN", () => {
  const indefinite = Float64Array.of(1, 2, 0, 2, 1, 0, 0, 0, 1); // eigenvalues 3, -1, 1
  for (const f of [choleskyLower, reverseCholesky, inverseCholeskyUpper]) {
    assert.throws(() => f(indefinite, 3), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot <= 0);
  }
  const singular = Float64Array.of(1, 1, 1, 1);
  assert.throws(() => choleskyLower(singular, 2), /pivot 1 is 0/);
  const nan = Float64Array.of(NaN, 0, 0, 1);
  assert.throws(() => inverseCholeskyUpper(nan, 2), NotPositiveDefiniteError);
  assert.throws(() => choleskyLower(new Float64Array(3), 2), /expected 2·2 values/);
});

Deno.test("the WebAssembly reverse Cholesky gives the JS loops' bits, failing pivots included", () => {
  if (!LINALG_WASM_AVAILABLE) {
    console.log("skipped: the WebAssembly kernel is off (LOWP_CPU_KERNELS=reference or no SIMD)");
    return;
  }
  // Sizes around the four-row and two-column steps, odd and even tails; a wide range of scales.
  for (const [n, eps] of [[1, 0.5], [2, 1e-3], [5, 1e-2], [8, 1e-3], [37, 1e-6], [130, 1e-4], [257, 1e-2]] as const) {
    const a = spd(n, n + 3, eps, 5 + n);
    for (let i = 0; i < n; i++) a[i * n + i] *= 1 + (i % 5) * 1e3; // uneven channels, as GPTQ's Hessians
    const [wasm, js] = [reverseCholesky(a, n), reverseCholeskyJs(a, n)];
    const bad = js.findIndex((v, i) => !Object.is(v, wasm[i]));
    assert.equal(bad, -1, `n = ${n}: element ${bad} is ${wasm[bad]} in WebAssembly, ${js[bad]} in JS`);
  }
  const rankDeficient = spd(40, 10, 0, 3); // rank 10: a pivot fails
  const failure = (f: typeof reverseCholesky) => {
    try {
      f(rankDeficient, 40);
    } catch (e) {
      return e instanceof NotPositiveDefiniteError ? [e.index, e.pivot] : e;
    }
    return "no error";
  };
  const failed = failure(reverseCholesky);
  assert.ok(Array.isArray(failed), String(failed));
  assert.deepEqual(failed, failure(reverseCholeskyJs));
});
