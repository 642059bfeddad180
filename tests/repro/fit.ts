/**
 * The small statistical model of F2: ridge regression on standardized
 * features with an intercept, and its held-out R² when each group (one
 * checkpoint: all its formats) is left out in turn.
 *
 * @module
 */

/** One observation: its group (a checkpoint), its features and its target. */
export interface Observation {
  /** Left out together in cross-validation. */
  readonly group: string;
  /** Feature values, in a fixed order. */
  readonly x: readonly number[];
  /** The target. */
  readonly y: number;
}

/** A fitted ridge model. */
export interface RidgeModel {
  /** Predicts the target of a feature vector. */
  predict(x: readonly number[]): number;
}

/** Solves A·x = b for a small symmetric positive-definite A by Gaussian elimination with partial pivoting. */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length, m = a.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    [m[c], m[p]] = [m[p], m[c]];
    if (m[c][c] === 0) throw new Error("ridge: singular system");
    for (let r = c + 1; r < n; r++) {
      const f = m[r][c] / m[c][c];
      for (let k = c; k <= n; k++) m[r][k] -= f * m[c][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = m[r][n];
    for (let k = r + 1; k < n; k++) s -= m[r][k] * x[k];
    x[r] = s / m[r][r];
  }
  return x;
}

/**
 * Ridge regression of y on x: features standardized on the training rows (a constant feature is left at 0),
 * an unpenalized intercept, penalty `lambda` on the standardized coefficients.
 */
export function fitRidge(rows: readonly Observation[], lambda: number): RidgeModel {
  if (!rows.length) throw new Error("ridge: no rows");
  const d = rows[0].x.length;
  const mu = Array.from({ length: d }, (_, j) => rows.reduce((s, r) => s + r.x[j], 0) / rows.length);
  const sd = Array.from({ length: d }, (_, j) => {
    const v = rows.reduce((s, r) => s + (r.x[j] - mu[j]) ** 2, 0) / rows.length;
    return v > 0 ? Math.sqrt(v) : 0;
  });
  const z = (x: readonly number[]) => x.map((v, j) => sd[j] ? (v - mu[j]) / sd[j] : 0);
  const yMean = rows.reduce((s, r) => s + r.y, 0) / rows.length;
  const a = Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => (i === j ? lambda : 0)));
  const b = new Array<number>(d).fill(0);
  for (const r of rows) {
    const zr = z(r.x);
    for (let i = 0; i < d; i++) {
      b[i] += zr[i] * (r.y - yMean);
      for (let j = 0; j < d; j++) a[i][j] += zr[i] * zr[j];
    }
  }
  for (let i = 0; i < d; i++) if (!sd[i]) a[i][i] = 1; // a constant feature gets coefficient 0
  const w = solve(a, b);
  return { predict: (x) => yMean + z(x).reduce((s, v, j) => s + v * w[j], 0) };
}

/** R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)². */
export function rSquared(actual: readonly number[], predicted: readonly number[]): number {
  const m = actual.reduce((a, b) => a + b, 0) / actual.length;
  let res = 0, tot = 0;
  actual.forEach((y, i) => {
    res += (y - predicted[i]) ** 2;
    tot += (y - m) ** 2;
  });
  return 1 - res / tot;
}

/** Held-out predictions with each group left out in turn, and their R² against the targets. */
export function leaveOneGroupOut(
  rows: readonly Observation[],
  lambda: number,
): { predicted: number[]; r2: number } {
  const groups = [...new Set(rows.map((r) => r.group))];
  if (groups.length < 2) throw new Error(`leave-one-group-out needs at least 2 groups, got ${groups.length}`);
  const predicted = new Array<number>(rows.length);
  for (const g of groups) {
    const model = fitRidge(rows.filter((r) => r.group !== g), lambda);
    rows.forEach((r, i) => {
      if (r.group === g) predicted[i] = model.predict(r.x);
    });
  }
  return { predicted, r2: rSquared(rows.map((r) => r.y), predicted) };
}
