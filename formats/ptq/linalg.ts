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
 * @module
 */

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
 * (its index counts from the top, as the rows of `a`).
 */
export function reverseCholesky(a: Float64Array, n: number): Float64Array {
  checkSquare(a, n, "reverseCholesky");
  const r = new Float64Array(n * n), sums = new Float64Array(4);
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n, tail = n - i - 1, from = ri + i + 1;
    const pivot = a[ri + i] - dot(r, from, r, from, tail);
    if (!(pivot > 0) || !Number.isFinite(pivot)) throw new NotPositiveDefiniteError(i, pivot);
    const d = Math.sqrt(pivot);
    r[ri + i] = d;
    let j = 0;
    for (; j + 3 < i; j += 4) {
      dot4(r, j * n + i + 1, n, r, from, tail, sums);
      for (let k = 0; k < 4; k++) r[(j + k) * n + i] = (a[(j + k) * n + i] - sums[k]) / d;
    }
    for (; j < i; j++) r[j * n + i] = (a[j * n + i] - dot(r, j * n + i + 1, r, from, tail)) / d;
  }
  return r;
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
