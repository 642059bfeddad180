/**
 * Dense f64 linear algebra on the host for GPTQ: Cholesky factors, the
 * inverse through them, and the upper Cholesky factor of an inverse.
 * Matrices are row-major `Float64Array`s of n·n values; factors come back
 * full n·n with zeros in the other triangle.
 *
 * A matrix that is not positive definite (a pivot ≤ 0 or not finite) throws
 * {@link NotPositiveDefiniteError} naming the pivot: never a NaN factor.
 *
 * Every inner loop runs over a contiguous row (dot products and axpys on
 * row tails), in a fixed order: the results do not depend on anything but
 * the input.
 *
 * {@link reverseCholesky}, the one GPTQ runs, is WebAssembly SIMD (f64x2,
 * formats/wasm/linalg.wat) where the module compiles, and JS loops in the
 * same order of operations otherwise (`LOWP_CPU_KERNELS=reference`, a
 * runtime without SIMD): both give the same bits (linalg_test.ts checks it).
 *
 * @module
 */
import { compileKernel, CPU_KERNELS } from "@lowp/kernels";
import { LINALG_WASM } from "../wasm/linalg_wasm.ts";

/** Thrown when a Cholesky factorisation meets a pivot that is not positive (the matrix is not positive definite). */
export class NotPositiveDefiniteError extends Error {
  /** Index of the failing pivot (row and column). */
  readonly index: number;
  /** The value that should have been positive (the diagonal minus the sum of squares before it). */
  readonly pivot: number;
  /** Builds the error for pivot `index` with value `pivot`. */
  constructor(index: number, pivot: number) {
    super(`matrix is not positive definite: pivot ${index} is ${pivot}`);
    this.name = "NotPositiveDefiniteError";
    this.index = index;
    this.pivot = pivot;
  }
}

function checkSquare(a: Float64Array, n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || a.length !== n * n) {
    throw new Error(`${what}: expected ${n}·${n} values for an n = ${n} matrix, got ${a.length}`);
  }
}

/** Σ x[xo + k]·y[yo + k] for k < len, four partial sums (fixed order). */
function dot(x: Float64Array, xo: number, y: Float64Array, yo: number, len: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
  for (; k + 3 < len; k += 4) {
    s0 += x[xo + k] * y[yo + k];
    s1 += x[xo + k + 1] * y[yo + k + 1];
    s2 += x[xo + k + 2] * y[yo + k + 2];
    s3 += x[xo + k + 3] * y[yo + k + 3];
  }
  for (; k < len; k++) s0 += x[xo + k] * y[yo + k];
  return (s0 + s1) + (s2 + s3);
}

/**
 * Four dot products at once, sharing the loads of y: out[m] = Σ_k x[xo + m·xs + k]·y[yo + k] for m < 4, k < len
 * (fixed order: each sum runs k upwards).
 */
function dot4(
  x: Float64Array,
  xo: number,
  xs: number,
  y: Float64Array,
  yo: number,
  len: number,
  out: Float64Array,
): void {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const x1 = xo + xs, x2 = x1 + xs, x3 = x2 + xs;
  for (let k = 0; k < len; k++) {
    const v = y[yo + k];
    s0 += x[xo + k] * v;
    s1 += x[x1 + k] * v;
    s2 += x[x2 + k] * v;
    s3 += x[x3 + k] * v;
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/**
 * The lower Cholesky factor L of a symmetric positive definite `a` (A = L·Lᵀ;
 * only the lower triangle of `a` is read). Throws {@link NotPositiveDefiniteError}.
 */
export function choleskyLower(a: Float64Array, n: number): Float64Array {
  checkSquare(a, n, "choleskyLower");
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j < i; j++) {
      const rj = j * n;
      l[ri + j] = (a[ri + j] - dot(l, ri, l, rj, j)) / l[rj + j];
    }
    const pivot = a[ri + i] - dot(l, ri, l, ri, i);
    if (!(pivot > 0) || !Number.isFinite(pivot)) throw new NotPositiveDefiniteError(i, pivot);
    l[ri + i] = Math.sqrt(pivot);
  }
  return l;
}

/** The upper Cholesky factor U of `a` (A = Uᵀ·U, U = Lᵀ): `torch.linalg.cholesky(a, upper=True)`. */
export function choleskyUpper(a: Float64Array, n: number): Float64Array {
  return transposeMatrix(choleskyLower(a, n), n);
}

/** The transpose of an n×n matrix. */
export function transposeMatrix(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j];
  return t;
}

/**
 * The inverse of an upper triangular `r` (upper triangular too), by back
 * substitution: X_ij = −(Σ_{i<k≤j} r_ik·X_kj)/r_ii for j > i, rows from the
 * last up. X is built transposed, so each sum is a dot product of two
 * contiguous row pieces.
 */
export function invertUpper(r: Float64Array, n: number): Float64Array {
  checkSquare(r, n, "invertUpper");
  const y = new Float64Array(n * n), sums = new Float64Array(4); // y = Xᵀ (lower)
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n, inv = 1 / r[ri + i], from = i + 1;
    y[ri + i] = inv;
    let j = i + 1;
    for (; j + 3 < n; j += 4) {
      // Rows j..j+3 of y over k in (i, j]: a common part of length j − i, then the extra terms of the longer ones.
      const len = j - i;
      dot4(y, j * n + from, n, r, ri + from, len, sums);
      for (let m = 1; m < 4; m++) {
        const yo = (j + m) * n;
        for (let k = j + 1; k <= j + m; k++) sums[m] += y[yo + k] * r[ri + k];
      }
      for (let m = 0; m < 4; m++) y[(j + m) * n + i] = -sums[m] * inv;
    }
    for (; j < n; j++) y[j * n + i] = -dot(y, j * n + from, r, ri + from, j - i) * inv;
  }
  return transposeMatrix(y, n);
}

/**
 * A⁻¹ from the lower Cholesky factor L of A: `torch.cholesky_inverse(L)`,
 * computed as L⁻ᵀ·L⁻¹ (symmetric, both triangles filled).
 */
export function choleskyInverse(l: Float64Array, n: number): Float64Array {
  const x = invertUpper(transposeMatrix(l, n), n); // X = L⁻ᵀ, upper
  const out = new Float64Array(n * n);
  // (L⁻ᵀ·L⁻¹)_ij = Σ_k X_ik·X_jk over k ≥ max(i, j): a dot product of row tails.
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = dot(x, i * n + j, x, j * n + j, n - j);
      out[i * n + j] = v;
      out[j * n + i] = v;
    }
  }
  return out;
}

/**
 * The upper triangular R with A = R·Rᵀ (a Cholesky factorisation from the
 * last pivot up, i.e. the lower factor of A with rows and columns reversed).
 * Column i is filled from row dot products over the columns after i. Only
 * the upper triangle of `a` is read. Throws {@link NotPositiveDefiniteError}
 * (its index counts from the top, as the rows of `a`). WebAssembly where it
 * loads, else {@link reverseCholeskyJs}: the same bits.
 */
export function reverseCholesky(a: Float64Array, n: number): Float64Array {
  checkSquare(a, n, "reverseCholesky");
  return wasmLinalg ? reverseCholeskyWasm(wasmLinalg, a, n) : reverseCholeskyJs(a, n);
}

/** The WebAssembly kernel's exports (formats/wasm/linalg.wat). */
interface LinalgKernels {
  memory: WebAssembly.Memory;
  reverse_cholesky(a: number, n: number, info: number): number;
}

/** Compiled at import, unless `LOWP_CPU_KERNELS=reference` or the runtime lacks WebAssembly SIMD (JS loops then). */
const wasmLinalg: LinalgKernels | undefined = (() => {
  if (CPU_KERNELS === "reference") return undefined;
  try {
    const module = compileKernel(LINALG_WASM, "f64 Cholesky kernel (formats/wasm/linalg.wat)");
    return new WebAssembly.Instance(module, {}).exports as unknown as LinalgKernels;
  } catch {
    return undefined; // the JS loops give the same bits
  }
})();

/** Whether {@link reverseCholesky} runs in WebAssembly. */
export const LINALG_WASM_AVAILABLE: boolean = wasmLinalg !== undefined;

/** Bytes before the matrix in the module's memory: a failing pivot and 64 bytes of scratch. */
const INFO_BYTES = 128;
const PAGE = 65536;

function reverseCholeskyWasm(k: LinalgKernels, a: Float64Array, n: number): Float64Array {
  const bytes = INFO_BYTES + 8 * n * n;
  if (bytes > k.memory.buffer.byteLength) k.memory.grow(Math.ceil((bytes - k.memory.buffer.byteLength) / PAGE));
  const mem = new Float64Array(k.memory.buffer, INFO_BYTES, n * n);
  mem.set(a);
  const failed = k.reverse_cholesky(INFO_BYTES, n, 0);
  if (failed >= 0) throw new NotPositiveDefiniteError(failed, new Float64Array(k.memory.buffer, 0, 1)[0]);
  const r = new Float64Array(n * n); // the upper triangle; the lower one stays 0
  for (let i = 0; i < n; i++) r.set(mem.subarray(i * n + i, (i + 1) * n), i * n + i);
  return r;
}

/** Σ x[xo + k]·y[yo + k] for k < len in two lanes (even k, odd k; an odd length's last term to the even lane). */
function dotPairs(x: Float64Array, xo: number, y: Float64Array, yo: number, len: number): number {
  let s0 = 0, s1 = 0, k = 0;
  for (; k + 1 < len; k += 2) {
    s0 += x[xo + k] * y[yo + k];
    s1 += x[xo + k + 1] * y[yo + k + 1];
  }
  if (k < len) s0 += x[xo + k] * y[yo + k];
  return s0 + s1;
}

/** Eight {@link dotPairs} at once: rows m < 4 of x (`xs` apart from `xo`) with y at `y0` (out[m]) and `y1` (out[4 + m]). */
function dot4x2Pairs(
  x: Float64Array,
  xo: number,
  xs: number,
  y: Float64Array,
  y0: number,
  y1: number,
  len: number,
  out: Float64Array,
): void {
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0; // even lanes
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0; // odd lanes
  const x1 = xo + xs, x2 = x1 + xs, x3 = x2 + xs;
  let k = 0;
  for (; k + 1 < len; k += 2) {
    const u = y[y0 + k], v = y[y1 + k], u1 = y[y0 + k + 1], v1 = y[y1 + k + 1];
    const e0 = x[xo + k], e1 = x[x1 + k], e2 = x[x2 + k], e3 = x[x3 + k];
    const f0 = x[xo + k + 1], f1 = x[x1 + k + 1], f2 = x[x2 + k + 1], f3 = x[x3 + k + 1];
    a0 += e0 * u, a1 += e1 * u, a2 += e2 * u, a3 += e3 * u;
    b0 += e0 * v, b1 += e1 * v, b2 += e2 * v, b3 += e3 * v;
    c0 += f0 * u1, c1 += f1 * u1, c2 += f2 * u1, c3 += f3 * u1;
    d0 += f0 * v1, d1 += f1 * v1, d2 += f2 * v1, d3 += f3 * v1;
  }
  if (k < len) {
    const u = y[y0 + k], v = y[y1 + k];
    const e0 = x[xo + k], e1 = x[x1 + k], e2 = x[x2 + k], e3 = x[x3 + k];
    a0 += e0 * u, a1 += e1 * u, a2 += e2 * u, a3 += e3 * u;
    b0 += e0 * v, b1 += e1 * v, b2 += e2 * v, b3 += e3 * v;
  }
  out[0] = a0 + c0, out[1] = a1 + c1, out[2] = a2 + c2, out[3] = a3 + c3;
  out[4] = b0 + d0, out[5] = b1 + d1, out[6] = b2 + d2, out[7] = b3 + d3;
}

/** {@link reverseCholesky} in JS loops, in the WebAssembly kernel's order of operations (exported for tests). */
export function reverseCholeskyJs(a: Float64Array, n: number): Float64Array {
  checkSquare(a, n, "reverseCholesky");
  const r = new Float64Array(n * n), sums = new Float64Array(8);
  let i = n - 1;
  // Two columns at a time (i and p = i − 1): each row j < p needs the dot products of its tail after i with
  // rows i and p, so one pass over the tail serves both (then column p adds its term at k = i).
  for (; i >= 1; i -= 2) {
    const p = i - 1, ri = i * n, rp = p * n, from = i + 1, tail = n - from;
    const di = pivotRoot(a[ri + i] - dotPairs(r, ri + from, r, ri + from, tail), i);
    r[ri + i] = di;
    const rpi = (a[rp + i] - dotPairs(r, rp + from, r, ri + from, tail)) / di;
    r[rp + i] = rpi;
    const dp = pivotRoot(a[rp + p] - rpi * rpi - dotPairs(r, rp + from, r, rp + from, tail), p);
    r[rp + p] = dp;
    let j = 0;
    for (; j + 3 < p; j += 4) {
      dot4x2Pairs(r, j * n + from, n, r, ri + from, rp + from, tail, sums);
      for (let m = 0; m < 4; m++) {
        const rj = (j + m) * n, rji = (a[rj + i] - sums[m]) / di;
        r[rj + i] = rji;
        r[rj + p] = (a[rj + p] - (sums[4 + m] + rji * rpi)) / dp;
      }
    }
    for (; j < p; j++) {
      const rj = j * n, rji = (a[rj + i] - dotPairs(r, rj + from, r, ri + from, tail)) / di;
      r[rj + i] = rji;
      r[rj + p] = (a[rj + p] - (dotPairs(r, rj + from, r, rp + from, tail) + rji * rpi)) / dp;
    }
  }
  if (i === 0) r[0] = pivotRoot(a[0] - dotPairs(r, 1, r, 1, n - 1), 0);
  return r;
}

/** √pivot, or {@link NotPositiveDefiniteError} for pivot `index` when it is not positive and finite. */
function pivotRoot(pivot: number, index: number): number {
  if (!(pivot > 0) || !Number.isFinite(pivot)) throw new NotPositiveDefiniteError(index, pivot);
  return Math.sqrt(pivot);
}

/**
 * The upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ·U), the matrix GPTQ works
 * with. The reference computes it as
 * `torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(A)), upper=True)`
 * ({@link inverseCholeskyUpperReference}); the factor is unique, and here it
 * comes in half the work: A = R·Rᵀ with R upper ({@link reverseCholesky}),
 * so A⁻¹ = R⁻ᵀ·R⁻¹ and U = R⁻¹ ({@link invertUpper}). Throws
 * {@link NotPositiveDefiniteError} when A is not positive definite.
 */
export function inverseCholeskyUpper(a: Float64Array, n: number): Float64Array {
  return invertUpper(reverseCholesky(a, n), n);
}

/** {@link inverseCholeskyUpper} the reference's way (three factorisations): for tests. */
export function inverseCholeskyUpperReference(a: Float64Array, n: number): Float64Array {
  return choleskyUpper(choleskyInverse(choleskyLower(a, n), n), n);
}
