/**
 * GPTQ's Hessian `H = 2·X·Xᵀ / n` of a linear layer's inputs, accumulated
 * over calibration batches as the reference (IST-DASLab/gptq `add_batch`)
 * does: a running average over n sequences, `H ← H·n/(n + m) + (2/(n + m))·XᵀX`
 * for a batch of m sequences. XᵀX runs on the backend's matmul (only the
 * blocks on and above the diagonal: it is symmetric); the sum is kept in f64
 * on the host, in the order the batches come.
 *
 * @module
 */
import { matmul, reshape, slice, type Tensor } from "@lowp/core";

/** Input features per block row of XᵀX: only blocks on or above the diagonal are multiplied. */
const GRAM_BLOCK = 256;

/** The running Hessian of one layer's inputs. */
export class HessianAccumulator {
  /** Input features (the last dimension of every batch). */
  readonly inFeatures: number;
  #h: Float64Array;
  #samples = 0;

  /** An empty accumulator for inputs of `inFeatures` features. */
  constructor(inFeatures: number) {
    if (!Number.isInteger(inFeatures) || inFeatures < 1) {
      throw new Error(`HessianAccumulator: inFeatures must be a positive integer, got ${inFeatures}`);
    }
    this.inFeatures = inFeatures;
    this.#h = new Float64Array(inFeatures * inFeatures);
  }

  /** Sequences seen so far (n of the running average). */
  get samples(): number {
    return this.#samples;
  }

  /**
   * Adds a batch of inputs `x` ([..., in], f32): [B, T, in] counts B
   * sequences (the product of all dimensions before the last two for higher
   * ranks), a [T, in] matrix one sequence, as the reference counts them.
   */
  async add(x: Tensor): Promise<void> {
    const n = this.inFeatures;
    if (x.dtype !== "f32" || x.rank < 2 || x.shape[x.rank - 1] !== n) {
      throw new Error(`HessianAccumulator.add: expects f32 inputs [..., ${n}], got ${x.describe()}`);
    }
    const sequences = x.shape.slice(0, -2).reduce((a, b) => a * b, 1);
    const rows = x.size / n;
    if (rows === 0) return;
    const total = this.#samples + sequences;
    const keep = this.#samples / total, scale = 2 / total;
    const h = this.#h; // only the upper triangle is kept up to date; hessian() mirrors it
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) h[i * n + j] *= keep;
    this.#samples = total;
    const flat = reshape(x, [rows, n]);
    try {
      for (let b0 = 0; b0 < n; b0 += GRAM_BLOCK) {
        const b1 = Math.min(n, b0 + GRAM_BLOCK), width = n - b0;
        const left = b0 === 0 && b1 === n ? flat : slice(flat, [0, b0], [rows, b1 - b0]);
        const right = b0 === 0 ? flat : slice(flat, [0, b0], [rows, width]);
        const block = matmul(left, right, { transA: true }); // rows b0..b1 of XᵀX, columns b0..n
        const g = await block.data();
        for (const t of [block, left, right]) if (t !== flat) t.dispose();
        for (let i = b0; i < b1; i++) {
          const gi = (i - b0) * width - b0, hi = i * n;
          for (let j = i; j < n; j++) h[hi + j] += scale * g[gi + j];
        }
      }
    } finally {
      flat.dispose();
    }
  }

  /** A copy of H ([in·in], row-major, f64). */
  hessian(): Float64Array {
    const n = this.inFeatures, h = this.#h.slice();
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) h[j * n + i] = h[i * n + j];
    return h;
  }
}
