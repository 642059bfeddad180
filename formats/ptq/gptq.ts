/**
 * GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers"; reference IST-DASLab/gptq
 * `fasterquant`, static groups as AutoGPTQ) for a [in, out] weight (GPT-2's
 * Conv1D layout: the reference's columns, the input channels, are our rows).
 *
 * Given H (see `HessianAccumulator`):
 * 1. dead inputs (H_dd = 0) get H_dd = 1 and their weight row 0;
 * 2. act-order (option): rows by descending diag(H) (ties keep their order),
 *    with the group parameters fixed beforehand on the original weight in
 *    the original row order (AutoGPTQ `static_groups`);
 * 3. dampening λ = dampPercent·mean(diag H) added to the diagonal; when the
 *    Cholesky factorisation fails, λ is multiplied by 10 (a message through
 *    `onMessage`) up to `dampRetries` times, then an error names the layer;
 * 4. the factor R of H + λI = R·Rᵀ (upper triangular, f64 on the host);
 * 5. rows quantized in order, in blocks of `blockSize`: row i is rounded on
 *    the format's grid, and its error spread over the later rows.
 *
 * The spread is the reference's, written with R instead of U, the upper
 * Cholesky factor of (H + λI)⁻¹ that the reference computes (U = R⁻¹, so
 * U_ii = 1/R_ii): the reference's updates `w_j −= U_ij·(w̃_i − q_i)/U_ii`
 * add up to `w̃_j = w_j + Σ_{i<j} (R_ij/R_jj)·(w_i − q_i)` with the rows'
 * original values w_i (solve Nᵀ·F = W − Q for the normalised unit factor
 * N = diag(U)⁻¹·U, whose inverse is R·diag(U)). So no inverse is formed:
 * half the f64 work of the reference's three factorisations. Within a block
 * the spread runs on the host over sub-blocks of 16 rows, from each
 * sub-block to the rest of the block and from each block to the rows after
 * it as one backend matmul (`R[i1:i2, i2:]ᵀ·ΔW`, each target row scaled by
 * 1/R_jj). `columnError` is the reference's `Losses`:
 * Σ_out (w̃_i − q_i)²/(2·U_ii²) = Σ_out (w̃_i − q_i)²·R_ii²/2.
 *
 * Group parameters (`group:N`, and the blocks of MX, NVFP4 and NF4) are
 * fitted when the group's first row comes up, as the reference does: on the
 * weights as the updates of the earlier blocks left them (within a block the
 * reference reads its not-yet-updated copy; the same when the group starts
 * the block). `channel` parameters, and NVFP4's per-tensor scale, come from
 * the weight as given (the reference fits them before zeroing dead rows).
 * With H = I (dead rows aside), no dampening and no act-order, nothing is
 * spread and the result is `rtnWeight` bit for bit.
 *
 * `quantized` holds the same weight in the format's storage layout (codes
 * and the parameters of every group as GPTQ fitted them, see
 * `ScalarGrid.record`): the format's `dequantize` gives `weight` bit for
 * bit, and `pack` stores it as `deno task quantize` stores RTN's.
 *
 * The matmuls (here and in the Hessian) are the only backend work, so the
 * result depends on the backend only within its matmul tolerance.
 *
 * @module
 */
import { matmul, type Tensor, tensor } from "@lowp/core";
import type { Quantized } from "../spec.ts";
import { scalarGrid } from "./grid.ts";
import { NotPositiveDefiniteError, reverseCholesky } from "./linalg.ts";
import type { WeightQuantSpec } from "./weight_spec.ts";

/** Options of {@link gptqQuantize}. */
export interface GptqOptions {
  /** Rows per lazy batch update (default 128, the reference's). */
  blockSize?: number;
  /** Dampening as a fraction of the mean diagonal of H (default 0.01). */
  dampPercent?: number;
  /** Quantize rows by descending diag(H), with static groups (default false, as IST-DASLab/gptq). */
  actOrder?: boolean;
  /**
   * How many times λ is multiplied by 10 after a failed Cholesky factorisation before giving up (default 2:
   * 1% → 10% → 100% of the mean diagonal, where GPTQModel's automatic increase stops too).
   */
  dampRetries?: number;
  /** Layer name for messages and errors (default "weight"). */
  name?: string;
  /** Receives the dampening retry messages (default: none). */
  onMessage?: (text: string) => void;
}

/** What {@link gptqQuantize} returns. */
export interface GptqResult {
  /** The quantized-dequantized weight, [in, out] f32, on the input weight's backend. */
  weight: Tensor;
  /**
   * The same weight in the format's storage layout (as `quantizer.quantize(w, weightQuantOptions(spec).options)`
   * lays it out, with GPTQ's own codes and group parameters), on the input weight's backend:
   * `parseFormat(spec.format).dequantize(quantized)` equals `weight` bit for bit.
   */
  quantized: Quantized;
  /** The reference's `Losses` summed per input channel: Σ_out (w − q)²/(2·U_ii²), in the original row order. */
  columnError: Float64Array;
  /** The dampening λ that was used (absolute, added to the diagonal of H). */
  damp: number;
  /** How many times λ was raised. */
  retries: number;
  /** The order rows were quantized in (act-order), or null in the original order. */
  order: Int32Array | null;
}

/** Rows whose errors are spread over the rest of their block by one matmul (within them: on the host). */
const SUB_BLOCK = 16;

const DEFAULTS = { blockSize: 128, dampPercent: 0.01, dampRetries: 2 };

/**
 * Quantizes `weight` ([in, out], f32) with GPTQ on `hessian` ([in·in], f64,
 * e.g. `HessianAccumulator.hessian()`) to `spec`'s format. Throws one error
 * naming the layer for: a bad shape, a format without a scalar grid per
 * group, groups that do not divide the input width, a non-finite Hessian,
 * and a Hessian that stays not positive definite after every dampening retry.
 */
export async function gptqQuantize(
  weight: Tensor,
  hessian: Float64Array,
  spec: WeightQuantSpec,
  opts: GptqOptions = {},
): Promise<GptqResult> {
  const name = opts.name ?? "weight";
  const blockSize = opts.blockSize ?? DEFAULTS.blockSize;
  const dampPercent = opts.dampPercent ?? DEFAULTS.dampPercent;
  const dampRetries = opts.dampRetries ?? DEFAULTS.dampRetries;
  if (weight.rank !== 2 || weight.dtype !== "f32") {
    throw new Error(`${name}: GPTQ needs a 2-D f32 [in, out] weight, got ${weight.describe()}`);
  }
  const [n, out] = weight.shape;
  if (hessian.length !== n * n) {
    throw new Error(`${name}: the Hessian has ${hessian.length} values; a [${n}, ${out}] weight needs ${n}·${n}`);
  }
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`${name}: blockSize must be a positive integer`);
  if (!(dampPercent >= 0) || !Number.isInteger(dampRetries) || dampRetries < 0) {
    throw new Error(`${name}: dampPercent must be >= 0 and dampRetries a non-negative integer`);
  }
  if (!hessian.every(Number.isFinite)) {
    throw new Error(`${name}: the Hessian holds non-finite values (NaN or Inf in the calibration inputs?)`);
  }
  const w = new Float32Array(await weight.data());
  const grid = scalarGrid(spec, w, n, out, name);
  const g = grid.groupRows;
  const channelParams = g === n ? grid.fit(w, 0, n) : null;
  const groups: unknown[] = channelParams ? [channelParams] : []; // in the original row order

  const h = hessian.slice();
  for (let d = 0; d < n; d++) {
    if (h[d * n + d] === 0) {
      h[d * n + d] = 1;
      w.fill(0, d * out, (d + 1) * out);
    }
  }
  const order = opts.actOrder ? descendingDiagonal(h, n) : null;
  const staticParams = order && g < n ? Array.from({ length: n / g }, (_, k) => grid.fit(w, k * g, g)) : null;
  if (staticParams) groups.push(...staticParams);
  const hw = order ? permuteSymmetric(h, n, order) : h;
  const ww = order ? permuteRows(w, out, order) : w;
  const { r, damp, retries } = dampedFactor(hw, n, dampPercent, dampRetries, name, opts.onMessage);

  const q = new Float32Array(n * out), codes = new Uint32Array(n * out);
  const columnError = new Float64Array(n);
  const original = ww.slice(); // w_i in the spread; ww collects the spread of earlier blocks
  const block = new Float32Array(Math.min(blockSize, n) * out), delta = new Float32Array(block.length);
  let params: unknown = channelParams;
  for (let i1 = 0; i1 < n; i1 += blockSize) {
    const i2 = Math.min(n, i1 + blockSize);
    block.set(ww.subarray(i1 * out, i2 * out));
    for (let s1 = i1; s1 < i2; s1 += SUB_BLOCK) {
      const s2 = Math.min(i2, s1 + SUB_BLOCK);
      for (let i = s1; i < s2; i++) {
        if (staticParams) params = staticParams[Math.floor(order![i] / g)];
        else if (g < n && i % g === 0) groups.push(params = grid.fit(ww, i, g));
        const row = i - i1, ro = row * out, io = i * out, ri = i * n, rii = r[ri + i];
        grid.quantizeRow(params, block, row, q, i, codes);
        let loss = 0;
        for (let c = 0; c < out; c++) {
          const diff = block[ro + c] - q[io + c];
          loss += diff * diff;
          delta[ro + c] = original[io + c] - q[io + c];
        }
        columnError[i] = loss * rii * rii / 2;
        for (let j = i + 1; j < s2; j++) {
          const f = r[ri + j] / r[j * n + j];
          if (f === 0) continue;
          const jo = (j - i1) * out;
          for (let c = 0; c < out; c++) block[jo + c] += f * delta[ro + c];
        }
      }
      if (s2 < i2) await addSpread(weight, block, s2 - i1, r, n, s1, s2, i2, delta, s1 - i1, out);
    }
    if (i2 < n) await addSpread(weight, ww, i2, r, n, i1, i2, n, delta, 0, out);
  }
  const result = order ? unpermuteRows(q, out, order) : q;
  const resultCodes = order ? unpermuteRows(codes, out, order) : codes;
  const errors = order ? unpermute(columnError, order) : columnError;
  return {
    weight: tensor(result, { backend: weight.backend, shape: [n, out] }),
    quantized: grid.record(groups, resultCodes, weight.backend),
    columnError: errors,
    damp,
    retries,
    order,
  };
}

/**
 * The spread of rows [r0, r1) over the rows [r1, c1) after them: row t0 + k of `target` (rows of `out`
 * values) += Σ_i (R[i, r1 + k]/R[r1 + k, r1 + k])·(row e0 + i − r0 of `delta`), as one matmul on the backend
 * of `like` (f32), added on the host in f32.
 */
async function addSpread(
  like: Tensor,
  target: Float32Array,
  t0: number,
  r: Float64Array,
  n: number,
  r0: number,
  r1: number,
  c1: number,
  delta: Float32Array,
  e0: number,
  out: number,
): Promise<void> {
  const rows = r1 - r0, cols = c1 - r1;
  const a = new Float32Array(rows * cols);
  for (let c = 0; c < cols; c++) {
    const inv = 1 / r[(r1 + c) * n + r1 + c];
    for (let i = 0; i < rows; i++) a[i * cols + c] = r[(r0 + i) * n + r1 + c] * inv;
  }
  const backend = like.backend;
  const ta = tensor(a, { backend, shape: [rows, cols] });
  const td = tensor(delta.subarray(e0 * out, (e0 + rows) * out), { backend, shape: [rows, out] });
  const prod = matmul(ta, td, { transA: true });
  const spread = await prod.data();
  ta.dispose(), td.dispose(), prod.dispose();
  const base = t0 * out;
  for (let k = 0; k < spread.length; k++) target[base + k] += spread[k];
}

/** R of H + λI = R·Rᵀ with λ raised ×10 on each failure, as {@link GptqOptions.dampRetries} says. */
function dampedFactor(
  h: Float64Array,
  n: number,
  dampPercent: number,
  dampRetries: number,
  name: string,
  onMessage?: (text: string) => void,
): { r: Float64Array; damp: number; retries: number } {
  let meanDiag = 0;
  for (let d = 0; d < n; d++) meanDiag += h[d * n + d];
  meanDiag /= n;
  let damp = dampPercent * meanDiag;
  const damped = new Float64Array(h.length);
  const pct = (x: number) => `${Number((100 * x / meanDiag).toPrecision(4))}%`;
  for (let retries = 0;; retries++) {
    damped.set(h);
    for (let d = 0; d < n; d++) damped[d * n + d] += damp;
    try {
      return { r: reverseCholesky(damped, n), damp, retries };
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
      if (retries >= dampRetries || !(meanDiag > 0)) {
        throw new Error(
          `${name}: the Hessian is not positive definite even with dampening λ = ${damp} (${
            pct(damp)
          } of its mean diagonal ${meanDiag}) after ${retries} retries (pivot ${e.index} is ${e.pivot}); ` +
            `use more (or more varied) calibration samples, a larger dampPercent, or RTN for this layer`,
        );
      }
      const next = damp > 0 ? damp * 10 : DEFAULTS.dampPercent * meanDiag;
      onMessage?.(
        `${name}: Cholesky factorisation of H + λI failed at pivot ${e.index} (λ = ${damp}); ` +
          `retrying with λ = ${next} (${pct(next)} of the mean diagonal)`,
      );
      damp = next;
    }
  }
}

/** Row indices by descending diag(h), ties in index order (a stable sort; torch's argsort leaves ties open). */
function descendingDiagonal(h: Float64Array, n: number): Int32Array {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => h[b * n + b] - h[a * n + a] || a - b);
  return Int32Array.from(idx);
}

/** H[perm][:, perm]. */
function permuteSymmetric(h: Float64Array, n: number, perm: Int32Array): Float64Array {
  const p = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const src = perm[i] * n;
    for (let j = 0; j < n; j++) p[i * n + j] = h[src + perm[j]];
  }
  return p;
}

/** Rows of a [n, out] matrix in the order `perm` (row i of the result is row perm[i]). */
function permuteRows(w: Float32Array, out: number, perm: Int32Array): Float32Array {
  const p = new Float32Array(w.length);
  for (let i = 0; i < perm.length; i++) p.set(w.subarray(perm[i] * out, (perm[i] + 1) * out), i * out);
  return p;
}

/** The inverse of {@link permuteRows}. */
function unpermuteRows<A extends Float32Array | Uint32Array>(w: A, out: number, perm: Int32Array): A {
  const p = new (w.constructor as new (n: number) => A)(w.length);
  for (let i = 0; i < perm.length; i++) p.set(w.subarray(i * out, (i + 1) * out), perm[i] * out);
  return p;
}

function unpermute(x: Float64Array, perm: Int32Array): Float64Array {
  const p = new Float64Array(x.length);
  for (let i = 0; i < perm.length; i++) p[perm[i]] = x[i];
  return p;
}
