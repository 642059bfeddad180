/**
 * Fake quantization as autograd ops: {@link fakeQuant} (any {@link Quantizer},
 * straight-through estimator backward, plain or clipped) and {@link lsqQuant}
 * (Learned Step Size Quantization, Esser et al. 2020, arXiv 1902.08153: a
 * uniform integer quantizer whose step size s is trained; lsq.ts runs the
 * same estimator with steps laid out as INT-k scales, for training precisions).
 *
 * Both forwards are identical bit for bit on every backend: `fakeQuant` runs
 * the quantizer's integer kernels; `lsqQuant` divides by multiplying with a
 * correctly rounded reciprocal computed on integer bits (WGSL's `/` may be
 * 2.5 ulp off), and every other step is a correctly rounded f32 multiply,
 * clamp or round-half-to-even.
 *
 * @module
 */
import {
  abs,
  broadcastShapes,
  emptyTensor,
  greater,
  less,
  lessEqual,
  mul,
  noGrad,
  record,
  sub,
  sumTo,
  type Tensor,
  where,
} from "@lowp/core";
import { contiguousStrides, type MapOp, type WordKernel } from "@lowp/kernels";
import { parseFloatFormat } from "./element.ts";
import { EXACT_WGSL, f32RecipBits } from "./exact.ts";
import type { QuantizeOptions, Quantizer } from "./spec.ts";

// ---------------------------------------------------------------- STE fake-quant

/** Backward of {@link fakeQuant}: `plain` passes the gradient through; `clipped` zeroes it where |x| > clip. */
export type SteMode = "plain" | "clipped";

/** Options of {@link fakeQuant}: the quantizer's options plus the estimator. */
export interface FakeQuantOptions extends QuantizeOptions {
  /** Straight-through estimator (default `plain`). */
  readonly ste?: SteMode;
  /**
   * Clip range of the clipped STE: the gradient flows where |x| ≤ clip. Default for a plain element format
   * (`e4m3`, `e2m1`, `eXmY`...): its largest finite value. Other quantizers (scaled, block) need it given, as
   * their clip point depends on the scale; only `clipped` reads it.
   */
  readonly clip?: number;
}

/**
 * The clip range the clipped STE uses for `q`: `clip` when given, else the
 * largest finite value of a plain element format. Throws for other formats
 * without an explicit `clip`.
 */
export function steClipRange(q: Quantizer, clip?: number): number {
  if (clip !== undefined) {
    if (!(clip >= 0)) throw new Error(`fakeQuant: clip must be a non-negative number, got ${clip}`);
    return clip;
  }
  const f = q.blockSize === null ? parseFloatFormat(q.name) : null;
  if (!f) {
    throw new Error(
      `fakeQuant: the clipped STE of '${q.name}' needs an explicit clip range (opts.clip): ` +
        `only plain element formats have a fixed one (their max normal)`,
    );
  }
  return f.maxNormal;
}

/**
 * Fake quantization with a straight-through estimator (Bengio et al. 2013;
 * FORMATS.md "Granularity and the STE"): forward `q.quantDequant(x, opts)`;
 * backward `g` (`plain`) or `g · 1[|x| ≤ clip]` (`clipped`, see
 * {@link steClipRange}; NaN inputs get no gradient). The mask is computed on
 * the input, so values just above the clip range that round down to ±max get
 * no gradient either, as in the usual `|x| ≤ clip` definition.
 *
 * @example
 * ```ts
 * import { backward, sum, tensor } from "@lowp/core";
 * import { floatQuantizer } from "./float.ts";
 * import { fakeQuant } from "./fake_quant.ts";
 * const x = tensor([0.3, 2.6, 9], { requiresGrad: true });
 * const y = fakeQuant(x, floatQuantizer("e2m1")!, { ste: "clipped" }); // [0.5, 3, 6]
 * backward(sum(y)); // x.grad = [1, 1, 0]
 * ```
 */
export function fakeQuant(x: Tensor, q: Quantizer, opts: FakeQuantOptions = {}): Tensor {
  const { ste = "plain", clip, ...quantOpts } = opts;
  if (ste !== "plain" && ste !== "clipped") {
    throw new Error(`fakeQuant: unknown ste '${ste}': expected plain or clipped`);
  }
  if (ste === "plain" && clip !== undefined) throw new Error("fakeQuant: clip is only used by the clipped STE");
  const range = ste === "clipped" ? steClipRange(q, clip) : Infinity;
  const y = q.quantDequant(x, quantOpts);
  return record(y, `fakeQuant(${q.name})`, [x], (g) => [ste === "plain" ? g : where(lessEqual(abs(x), range), g, 0)]);
}

// ---------------------------------------------------------------- LSQ

/** Options of {@link lsqQuant}. */
export interface LsqOptions {
  /** Signed levels [-2^(b-1), 2^(b-1) - 1] (default) or unsigned [0, 2^b - 1]. */
  readonly signed?: boolean;
  /** Factor on the step size's gradient (default 1/√(N·Qp), N = elements per step size, as in the paper). */
  readonly gradScale?: number;
}

/** The integer levels of a b-bit LSQ quantizer: Qn (≤ 0) and Qp (the paper's -Q_N and Q_P). */
export function lsqRange(bits: number, signed = true): { qn: number; qp: number } {
  if (!Number.isInteger(bits) || bits < (signed ? 2 : 1) || bits > 16) {
    throw new Error(`lsqQuant: bits must be an integer from ${signed ? 2 : 1} to 16, got ${bits}`);
  }
  return signed ? { qn: -(2 ** (bits - 1)), qp: 2 ** (bits - 1) - 1 } : { qn: 0, qp: 2 ** bits - 1 };
}

/** Bits of the correctly rounded f32 reciprocal, elementwise (formats/exact.ts on both backends). */
const RECIP_KERNEL: WordKernel = {
  name: "f32_recip",
  inputs: 1,
  outputs: 1,
  cpu: (i, [a], [out]) => {
    out[i] = f32RecipBits(a[i]);
  },
  wgslHelpers: EXACT_WGSL,
  wgsl: "  out0[i] = f32_recip_bits(in0[i]);",
};

/** Round half to even, keeping the sign of zero (as WGSL's `round`, which is roundEven). */
function roundHalfEven(a: number): number {
  const m = Math.abs(a), f = Math.floor(m), d = m - f;
  const r = d < 0.5 || (d === 0.5 && f % 2 === 0) ? f : f + 1;
  return a < 0 || Object.is(a, -0) ? -r : r;
}

/** round(clamp(v, Qn, Qp)) with ties to even; p0 = Qn, p1 = Qp. */
const LEVEL_OP: MapOp = {
  name: "lsq_level",
  arity: 1,
  cpu: (a, _b, _c, qn, qp) => roundHalfEven(Math.min(Math.max(a, qn), qp)),
  wgsl: "round(min(max(a, p0), p1))",
};

/**
 * LSQ fake quantization (Esser et al., "Learned Step Size Quantization",
 * ICLR 2020) with a learnable step size `s` (shape broadcastable to `x`: a
 * scalar, or per channel such as `[C, 1]` for `x` of `[C, K]`; s must be
 * positive). Forward: v = x·fl(1/s), y = round(clamp(v, Qn, Qp))·s with ties
 * to even (see {@link lsqRange}). Backward (paper eqs. 3 and 5):
 * - dx = g where Qn < v < Qp, else 0 (straight-through inside the range);
 * - ds = gradScale · Σ g·(round(v) - v) inside, g·Qn where v ≤ Qn, g·Qp where
 *   v ≥ Qp, summed over the elements sharing each s; gradScale defaults to
 *   1/√(N·Qp) with N = x.size / s.size.
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { lsqQuant } from "./fake_quant.ts";
 * const s = tensor([0.5], { requiresGrad: true });
 * const y = lsqQuant(tensor([0.2, 0.8, 9]), s, 4); // [0, 1, 3.5]
 * ```
 */
export function lsqQuant(x: Tensor, s: Tensor, bits: number, opts: LsqOptions = {}): Tensor {
  const { qn, qp } = lsqRange(bits, opts.signed ?? true);
  if (x.dtype !== "f32" || s.dtype !== "f32") {
    throw new Error(`lsqQuant: ${x.describe()} and ${s.describe()} must be f32`);
  }
  const shape = broadcastShapes("lsqQuant", x.shape, s.shape);
  if (shape.length !== x.rank || shape.some((d, i) => d !== x.shape[i])) {
    throw new Error(`lsqQuant: the step size ${s.describe()} must broadcast to ${x.describe()}`);
  }
  const n = s.size === 0 ? 0 : x.size / s.size;
  const gradScale = opts.gradScale ?? 1 / Math.sqrt(n * qp);
  const { v, level, y } = noGrad(() => {
    const r = emptyTensor(s.backend, s.shape);
    if (s.size > 0) s.backend.runWords(RECIP_KERNEL, [s.storage], [r.storage], s.size, []);
    const v = mul(x, r);
    const level = emptyTensor(x.backend, x.shape);
    if (x.size > 0) {
      x.backend.map(
        LEVEL_OP,
        [{ storage: v.storage, strides: contiguousStrides(x.shape) }],
        x.shape,
        level.storage,
        qn,
        qp,
      );
    }
    r.dispose();
    return { v, level, y: mul(level, s) };
  });
  return record(y, "lsqQuant", [x, s], (g) => {
    const inside = mul(greater(v, qn), less(v, qp));
    // round(v) - v inside; outside, the clamped level is Qn or Qp already. `where`, not a product with the
    // mask, so an infinite v or g outside the range gives 0, not NaN.
    const dlevel = sub(level, where(inside, v, 0));
    return [where(inside, g, 0), mul(sumTo(mul(g, dlevel), s.shape), gradScale)];
  });
}
