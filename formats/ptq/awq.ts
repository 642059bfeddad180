/**
 * AWQ (activation-aware weight quantization, Lin et al. 2023) for one linear
 * layer, or several that share one input (a fused QKV, SwiGLU's gate and up),
 * with no knowledge of the model: `awq_model.ts` walks a GPT with it.
 *
 * As AutoAWQ (`_search_best_scale`, `_compute_best_clip`):
 * 1. per input channel `s = x_mean^α / (w_mean^(1−α) + 1e-4)` clamped to
 *    ≥ 1e-4 ("duo scaling"; `duoScaling: false` is llm-awq's `x_mean^α`), with
 *    `x_mean` the mean |x| of the channel and `w_mean` the mean over output
 *    columns of |W| / (its group's max + 1e-6); s is normalised by
 *    `sqrt(max(s)·min(s))`; α runs over `i / nGrid`, i = 0…nGrid−1, and the
 *    α with the smallest output error `‖X·W − (X/s)·Q(W·s)‖²` wins;
 * 2. the clipping search on the scaled weight: each group's max shrunk by
 *    `1 − i / clipGrid`, i = 0…⌊maxShrink·clipGrid⌋−1 (up to 45% in steps of
 *    5% by default, as the reference's `range(int(max_shrink * n_grid))`),
 *    chosen per (group, output column) by the error of that group's share of
 *    the output. Clamping comes first and then the format's own RTN
 *    (`rtnWeight`), so every candidate is bit for bit what `deno task
 *    quantize` would give on the clamped weight.
 *
 * Weights are [in, out]; groups and blocks run along the input axis (see
 * `weight_spec.ts`); for per-channel and unscaled formats a "group" is a whole
 * column (llm-awq's `q_group_size <= 0`). Output errors are computed from the Gram matrix
 * `H = XᵀX` (`‖X·Δ‖² = Σ Δ ⊙ (H·Δ)`, a backend matmul), so a search costs
 * in²·out per candidate whatever the number of calibration tokens, and the
 * clip search can use every token (the reference subsamples 512).
 *
 * Guards against NaN (the reference tools' known failure): calibration tokens
 * with a non-finite value are left out of the statistics (and counted);
 * a non-finite weight is an error naming the layer; a scale that is not
 * finite becomes 1, as in AutoAWQ; all-zero groups get a zero clip and
 * quantize to zero; a candidate whose error is not finite is never chosen,
 * and when no α has a finite error, or no token was counted, the scales are
 * 1 (`alpha: null`, plain RTN before clipping).
 *
 * @module
 */
import { add, concat, div, matmul, mul, noGrad, reshape, sub, sum, type Tensor, tensor, tidy } from "@lowp/core";
import type { Backend } from "@lowp/kernels";
import { parseFormat } from "../registry.ts";
import { rtnWeight, type WeightQuantSpec } from "./weight_spec.ts";

/** Calibration statistics of a layer input: the Gram matrix and the mean magnitude per channel. */
export class AwqInputStats {
  #gram: Tensor | null = null;
  #backend: Backend | undefined;
  readonly #absSum: Float64Array;
  /** Tokens (rows) counted. */
  tokens = 0;
  /** Tokens left out because one of their values was not finite. */
  skippedTokens = 0;

  /**
   * Creates empty statistics of an input of `width` channels.
   * @param width input channels
   * @param name layer name for messages
   */
  constructor(readonly width: number, readonly name = "layer") {
    this.#absSum = new Float64Array(width);
  }

  /** Adds the rows of `x` ([..., width]): H += xᵀx, and the |x| sums. */
  async add(x: Tensor): Promise<void> {
    if (x.shape.at(-1) !== this.width || x.dtype !== "f32") {
      throw new Error(`${this.name}: calibration input ${x.describe()} must be f32 [..., ${this.width}]`);
    }
    this.#backend ??= x.backend;
    const w = this.width, rows = x.size / w;
    const data = (await x.data()) as Float32Array;
    const bad: number[] = [];
    for (let r = 0; r < rows; r++) {
      let finite = true;
      for (let c = r * w; c < (r + 1) * w; c++) if (!Number.isFinite(data[c])) finite = false;
      if (!finite) bad.push(r);
      else for (let c = 0; c < w; c++) this.#absSum[c] += Math.abs(data[r * w + c]);
    }
    this.tokens += rows - bad.length;
    this.skippedTokens += bad.length;
    if (bad.length === rows) return;
    const next = noGrad(() =>
      tidy(() => {
        let rowsX: Tensor;
        if (!bad.length) rowsX = reshape(x, [rows, w]);
        else {
          const kept = new Float32Array((rows - bad.length) * w), skip = new Set(bad);
          for (let r = 0, o = 0; r < rows; r++) if (!skip.has(r)) kept.set(data.subarray(r * w, (r + 1) * w), w * o++);
          rowsX = tensor(kept, { shape: [rows - bad.length, w], backend: x.backend });
        }
        const g = matmul(rowsX, rowsX, { transA: true });
        return this.#gram ? add(this.#gram, g) : g;
      })
    ).keep();
    this.#gram?.dispose();
    this.#gram = next;
  }

  /** H = XᵀX [width, width] over the counted tokens (zeros when none). */
  get gram(): Tensor {
    if (!this.#gram) {
      this.#gram = tensor(new Float32Array(this.width * this.width), {
        shape: [this.width, this.width],
        backend: this.#backend,
      }).keep();
    }
    return this.#gram;
  }

  /** Mean |x| per channel over the counted tokens (zeros when none). */
  get absMean(): Float64Array {
    return this.#absSum.map((v) => (this.tokens ? v / this.tokens : 0));
  }

  /** Releases the Gram matrix. */
  dispose(): void {
    this.#gram?.dispose();
    this.#gram = null;
  }
}

/** Options of the AWQ searches. */
export interface AwqOptions {
  /** Points of the α grid, α = i / nGrid (default 20). */
  readonly nGrid?: number;
  /** AutoAWQ's `x_mean^α / w_mean^(1−α)` (default true); false: llm-awq's `x_mean^α`. */
  readonly duoScaling?: boolean;
  /** Run the clipping search (default true). */
  readonly clip?: boolean;
  /** Clip grid: shrink factors `1 − i / clipGrid` (default 20). */
  readonly clipGrid?: number;
  /** Largest shrink, exclusive as in the reference (default 0.5). */
  readonly maxShrink?: number;
  /** Output columns [from, to) whose groups the clip search may shrink (default all); others keep their max. */
  readonly clipColumns?: readonly [number, number];
  /** Layer name for messages. */
  readonly name?: string;
  /**
   * The scale search's objective for candidate weights `Q(W·s) / s` (one per
   * weight): e.g. the error of a whole attention or MLP block's output, as
   * the references' `module2inspect`. Default: the layers' own output error.
   */
  readonly outputError?: (approx: readonly Tensor[]) => Promise<number>;
}

/** What {@link awqLayer} found for one layer (or group of layers sharing an input). */
export interface AwqLayerResult {
  /** Per input channel scale s: the layer computes `(x / s) · weight`. */
  readonly scales: Float32Array;
  /** The α chosen, or null when no α gave a finite error or no token was counted (then s = 1). */
  readonly alpha: number | null;
  /** Per (group, output column) clip max of the scaled weight, row-major [groups, out] (concatenated columns). */
  readonly clip: Float32Array;
  /** The quantized scaled weight `Q(clamp(W·s))` [in, Σout], on the format's grid: what the model uses. */
  readonly weight: Tensor;
  /** The same, one tensor per input weight. */
  readonly weights: Tensor[];
  /** ‖XW − XŴ‖² / ‖XW‖² on the calibration inputs, Ŵ = weight / s (rows). */
  readonly relError: number;
  /** The same for plain RTN of W. */
  readonly rtnRelError: number;
}

/**
 * Rows of W that share one scale along the input axis: the group or block
 * size, or the whole input width for per-channel and unscaled formats.
 */
export function awqGroupSize(spec: WeightQuantSpec, rows: number): number {
  const s = spec.sharing;
  if (typeof s === "object") return s.group;
  if (s === "block") return parseFormat(spec.format).blockSize!;
  return rows;
}

/** Throws naming the layer when a weight holds a value that is not finite. */
function checkFinite(data: Float32Array, rows: number, cols: number, name: string): void {
  const i = data.findIndex((v) => !Number.isFinite(v));
  if (i >= 0) {
    throw new Error(`${name}: weight [${rows}, ${cols}] has ${data[i]} at [${Math.floor(i / cols)}, ${i % cols}]`);
  }
}

/** w_mean per input channel: mean over the columns of all weights of |W| / (group max + 1e-6), as AutoAWQ. */
function weightMean(datas: Float32Array[], cols: number[], rows: number, group: number): Float64Array {
  const out = new Float64Array(rows);
  let total = 0;
  datas.forEach((d, k) => {
    const n = cols[k];
    total += n;
    for (let g = 0; g < rows; g += group) {
      for (let j = 0; j < n; j++) {
        let m = 0;
        for (let i = g; i < g + group; i++) m = Math.max(m, Math.abs(d[i * n + j]));
        for (let i = g; i < g + group; i++) out[i] += Math.abs(d[i * n + j]) / (m + 1e-6);
      }
    }
  });
  return out.map((v) => v / total);
}

/** The candidate scales of one α (f64 math; non-finite results become 1 as in AutoAWQ). */
export function awqScales(xMean: Float64Array, wMean: Float64Array | null, alpha: number): Float32Array {
  const s = xMean.map((x, i) =>
    Math.max(wMean ? Math.pow(x, alpha) / (Math.pow(wMean[i], 1 - alpha) + 1e-4) : Math.pow(x, alpha), 1e-4)
  );
  let hi = -Infinity, lo = Infinity;
  for (const v of s) if (Number.isFinite(v)) [hi, lo] = [Math.max(hi, v), Math.min(lo, v)];
  const norm = Math.sqrt(hi * lo);
  return Float32Array.from(s, (v) => {
    const r = Math.fround(v / norm);
    return Number.isFinite(r) && r > 0 ? r : 1;
  });
}

/** Σ Δ ⊙ (H·Δ) for Δ [in, out]: ‖X·Δ‖², read back (never below 0). */
async function quadratic(h: Tensor, delta: Tensor): Promise<number> {
  const e = noGrad(() => tidy(() => sum(mul(delta, matmul(h, delta)))));
  const v = await e.item();
  e.dispose();
  return Number.isNaN(v) ? v : Math.max(0, v);
}

/** `H / (s sᵀ)`: the Gram matrix of X / s. */
function scaledGram(h: Tensor, scales: Float32Array): Tensor {
  const n = scales.length;
  return noGrad(() =>
    tidy(() => {
      const col = tensor(scales, { shape: [n, 1], backend: h.backend });
      return div(div(h, col), reshape(col, [1, n]));
    })
  );
}

/**
 * ‖X·W − X·Ŵ‖² / ‖X·W‖² from the inputs' Gram matrix `h`; 0 when both are 0,
 * Infinity when only the reference output is 0.
 */
export async function relativeOutputError(h: Tensor, reference: Tensor, approx: Tensor): Promise<number> {
  const delta = noGrad(() => sub(reference, approx));
  const num = await quadratic(h, delta);
  delta.dispose();
  const den = await quadratic(h, reference);
  if (den === 0) return num === 0 ? 0 : Infinity;
  return num / den;
}

/**
 * Searches α (and so the per-channel scales) for weights sharing one input:
 * the α whose `Q(W·s) / s` has the smallest summed output error.
 */
export async function awqSearchScales(
  weights: readonly Tensor[],
  stats: AwqInputStats,
  spec: WeightQuantSpec,
  opts: AwqOptions = {},
): Promise<{ scales: Float32Array; alpha: number | null; errors: number[] }> {
  const rows = stats.width, name = opts.name ?? stats.name;
  const group = awqGroupSize(spec, rows);
  const datas: Float32Array[] = [], cols: number[] = [];
  for (const w of weights) {
    if (w.rank !== 2 || w.shape[0] !== rows) {
      throw new Error(`${name}: weight ${w.describe()} must be [${rows}, out] for an input of ${rows} channels`);
    }
    const d = (await w.data()) as Float32Array;
    checkFinite(d, rows, w.shape[1], name);
    datas.push(d);
    cols.push(w.shape[1]);
  }
  if (rows % group !== 0) rtnWeight(weights[0], spec, name); // throws the format's message
  if (!stats.tokens) return { scales: new Float32Array(rows).fill(1), alpha: null, errors: [] }; // no data: no scaling
  const xMean = stats.absMean;
  const wMean = opts.duoScaling ?? true ? weightMean(datas, cols, rows, group) : null;
  const nGrid = opts.nGrid ?? 20;
  let best = { error: Infinity, alpha: null as number | null, scales: new Float32Array(rows).fill(1) as Float32Array };
  const errors: number[] = [];
  for (let i = 0; i < nGrid; i++) {
    const alpha = i / nGrid;
    const scales = awqScales(xMean, wMean, alpha);
    const col = tensor(scales, { shape: [rows, 1], backend: stats.gram.backend });
    let error = 0;
    if (opts.outputError) {
      const approx = weights.map((w) => noGrad(() => tidy(() => div(rtnWeight(mul(w, col), spec, name), col))));
      error = await opts.outputError(approx);
      approx.forEach((t) => t.dispose());
    } else {
      for (const w of weights) {
        const delta = noGrad(() => tidy(() => sub(w, div(rtnWeight(mul(w, col), spec, name), col))));
        error += await quadratic(stats.gram, delta);
        delta.dispose();
      }
    }
    col.dispose();
    errors.push(error);
    if (error < best.error) best = { error, alpha, scales }; // NaN never wins
  }
  return { scales: best.scales, alpha: best.alpha, errors };
}

/** The weight with each (group, column) clamped to ±max (host math on f32 values). */
function clampGroups(data: Float32Array, rows: number, cols: number, group: number, max: Float32Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < rows; i++) {
    const g = Math.floor(i / group);
    for (let j = 0; j < cols; j++) {
      const m = max[g * cols + j], v = data[i * cols + j];
      out[i * cols + j] = v > m ? m : v < -m ? -m : v;
    }
  }
  return out;
}

/**
 * The clipping search on a scaled weight `ws` [in, out] (the layer computes
 * `(x / scales) · ws`): per (group, column) the shrink of the max whose group
 * output error is smallest. Returns the clip maxima, the clamped weight and
 * `Q(clamp(ws))` (its RTN: the format's `quantize` of `clamped` stores it
 * exactly). The caller disposes both tensors.
 */
export async function awqSearchClip(
  ws: Tensor,
  stats: AwqInputStats,
  scales: Float32Array,
  spec: WeightQuantSpec,
  opts: AwqOptions = {},
): Promise<{ clip: Float32Array; weight: Tensor; clamped: Tensor }> {
  const name = opts.name ?? stats.name;
  const [rows, cols] = ws.shape;
  const group = awqGroupSize(spec, rows), groups = rows / group;
  const data = (await ws.data()) as Float32Array;
  checkFinite(data, rows, cols, name);
  const orgMax = new Float32Array(groups * cols);
  for (let i = 0; i < rows; i++) {
    const g = Math.floor(i / group);
    for (let j = 0; j < cols; j++) orgMax[g * cols + j] = Math.max(orgMax[g * cols + j], Math.abs(data[i * cols + j]));
  }
  const best = orgMax.slice();
  const steps = opts.clip ?? true ? Math.floor((opts.maxShrink ?? 0.5) * (opts.clipGrid ?? 20)) : 0;
  if (steps > 1) {
    const [from, to] = opts.clipColumns ?? [0, cols];
    // The diagonal blocks of H / (s sᵀ): each group's share of the output error.
    const hs = scaledGram(stats.gram, scales);
    const hData = (await hs.data()) as Float32Array;
    hs.dispose();
    const blocks = new Float32Array(groups * group * group);
    for (let g = 0; g < groups; g++) {
      for (let r = 0; r < group; r++) {
        for (let c = 0; c < group; c++) {
          blocks[(g * group + r) * group + c] = hData[(g * group + r) * rows + g * group + c];
        }
      }
    }
    const hb = tensor(blocks, { shape: [groups, group, group], backend: ws.backend });
    const minErr = new Float64Array(groups * cols).fill(Infinity);
    for (let k = 0; k < steps; k++) {
      const shrink = 1 - k / (opts.clipGrid ?? 20);
      const max = orgMax.map((m) => m * shrink);
      const err = noGrad(() =>
        tidy(() => {
          const clamped = tensor(clampGroups(data, rows, cols, group, max), {
            shape: [rows, cols],
            backend: ws.backend,
          });
          const delta = reshape(sub(ws, rtnWeight(clamped, spec, name)), [groups, group, cols]);
          return sum(mul(delta, matmul(hb, delta)), 1);
        })
      );
      const e = (await err.data()) as Float32Array;
      err.dispose();
      for (let g = 0; g < groups; g++) {
        for (let j = from; j < to; j++) {
          const at = g * cols + j;
          if (e[at] < minErr[at]) [minErr[at], best[at]] = [e[at], max[at]]; // NaN never wins
        }
      }
    }
    hb.dispose();
  }
  const clamped = tensor(clampGroups(data, rows, cols, group, best), { shape: [rows, cols], backend: ws.backend });
  const weight = noGrad(() => rtnWeight(clamped, spec, name));
  return { clip: best, weight, clamped };
}

/**
 * AWQ of one layer, or of several weights sharing one input (their columns
 * side by side): the scale search, the clip search, and the errors of AWQ
 * and RTN on the calibration inputs `x` ([..., in] rows, or statistics
 * already gathered). Each weight is quantized on its own by `rtnWeight`.
 *
 * @example
 * ```ts
 * import { randn } from "@lowp/core";
 * import { awqLayer } from "@lowp/formats";
 * const w = randn([64, 32], { seed: 0, stream: 1 }, 0.02), x = randn([256, 64], { seed: 0, stream: 2 });
 * const r = await awqLayer(w, x, { format: "int4", sharing: { group: 32 } });
 * console.assert(r.relError <= r.rtnRelError * 1.5);
 * ```
 */
export async function awqLayer(
  weight: Tensor | readonly Tensor[],
  x: Tensor | AwqInputStats,
  spec: WeightQuantSpec,
  opts: AwqOptions = {},
): Promise<AwqLayerResult> {
  const weights = Array.isArray(weight) ? weight as readonly Tensor[] : [weight as Tensor];
  if (!weights.length) throw new Error(`${opts.name ?? "awqLayer"}: no weight given`);
  const name = opts.name ?? "layer";
  let stats: AwqInputStats;
  if (x instanceof AwqInputStats) stats = x;
  else {
    stats = new AwqInputStats(weights[0].shape[0], name);
    await stats.add(x);
  }
  try {
    const { scales, alpha } = await awqSearchScales(weights, stats, spec, { ...opts, name });
    const col = tensor(scales, { shape: [scales.length, 1], backend: weights[0].backend });
    const hs = scaledGram(stats.gram, scales);
    const quantized: Tensor[] = [], clips: Float32Array[] = [];
    let num = 0, den = 0, rtnNum = 0;
    let offset = 0;
    for (const w of weights) {
      const cols = w.shape[1];
      const [from, to] = opts.clipColumns ?? [0, Infinity];
      const local: [number, number] = [Math.max(0, from - offset), Math.max(0, Math.min(cols, to - offset))];
      const ws = noGrad(() => mul(w, col));
      const r = await awqSearchClip(ws, stats, scales, spec, { ...opts, name, clipColumns: local });
      r.clamped.dispose();
      quantized.push(r.weight);
      clips.push(r.clip);
      const delta = noGrad(() => sub(ws, r.weight));
      num += await quadratic(hs, delta);
      den += await quadratic(hs, ws);
      const rtn = noGrad(() => tidy(() => sub(w, rtnWeight(w, spec, name))));
      rtnNum += await quadratic(stats.gram, rtn);
      [delta, rtn, ws].forEach((t) => t.dispose());
      offset += cols;
    }
    // ‖XW‖² from the unscaled weights, as RTN's denominator.
    let rtnDen = 0;
    for (const w of weights) rtnDen += await quadratic(stats.gram, w);
    col.dispose();
    hs.dispose();
    const ratio = (n: number, d: number) => (d === 0 ? (n === 0 ? 0 : Infinity) : n / d);
    const groups = weights[0].shape[0] / awqGroupSize(spec, weights[0].shape[0]);
    const clip = new Float32Array(groups * offset);
    let c0 = 0;
    clips.forEach((c, k) => {
      const cols = weights[k].shape[1];
      for (let g = 0; g < groups; g++) clip.set(c.subarray(g * cols, (g + 1) * cols), g * offset + c0);
      c0 += cols;
    });
    const joined = quantized.length === 1 ? quantized[0] : noGrad(() => tidy(() => concat(quantized, 1)));
    return {
      scales,
      alpha,
      clip,
      weight: joined,
      weights: quantized,
      relError: ratio(num, den),
      rtnRelError: ratio(rtnNum, rtnDen),
    };
  } finally {
    if (!(x instanceof AwqInputStats)) stats.dispose();
  }
}
