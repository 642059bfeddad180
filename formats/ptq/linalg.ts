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

/** y[yo + k] += c·x[xo + k] for k < len. */
function axpy(c: number, x: Float64Array, xo: number, y: Float64Array, yo: number, len: number): void {
  for (let k = 0; k < len; k++) y[yo + k] += c * x[xo + k];
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
  return transpose(choleskyLower(a, n), n);
}

/** The transpose of an n×n matrix. */
export function transpose(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j];
  return t;
}

/**
 * The inverse of an upper triangular `r` (upper triangular too), by back
 * substitution one row at a time: row i = (e_i − Σ_{k>i} r_ik·row k)/r_ii.
 */
export function invertUpper(r: Float64Array, n: number): Float64Array {
  checkSquare(r, n, "invertUpper");
  const x = new Float64Array(n * n);
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n;
    for (let k = i + 1; k < n; k++) {
      const c = r[ri + k];
      if (c !== 0) axpy(c, x, k * n + k, x, ri + k, n - k);
    }
    const inv = 1 / r[ri + i];
    for (let j = i + 1; j < n; j++) x[ri + j] *= -inv;
    x[ri + i] = inv;
  }
  return x;
}

/**
 * A⁻¹ from the lower Cholesky factor L of A: `torch.cholesky_inverse(L)`,
 * computed as L⁻ᵀ·L⁻¹ (symmetric, both triangles filled).
 */
export function choleskyInverse(l: Float64Array, n: number): Float64Array {
  const x = invertUpper(transpose(l, n), n); // X = L⁻ᵀ, upper
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
  const r = new Float64Array(n * n);
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n, tail = n - i - 1;
    const pivot = a[ri + i] - dot(r, ri + i + 1, r, ri + i + 1, tail);
    if (!(pivot > 0) || !Number.isFinite(pivot)) throw new NotPositiveDefiniteError(i, pivot);
    const d = Math.sqrt(pivot);
    r[ri + i] = d;
    for (let j = 0; j < i; j++) {
      const rj = j * n;
      r[rj + i] = (a[rj + i] - dot(r, rj + i + 1, r, ri + i + 1, tail)) / d;
    }
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
