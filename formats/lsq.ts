/**
 * LSQ, learned step size quantization (Esser et al., ICLR 2020,
 * arXiv 1902.08153), on the layouts of INT-k scales: a signed INT-k
 * quantizer whose steps s (one per tensor, channel, or group of G along an
 * axis) are trained by backpropagation. This is what `lsq: true` in a
 * training precision runs; `lsqQuant` (fake_quant.ts) is the same estimator
 * with a step broadcast to the input.
 *
 * With Qn = 2^(k-1) and Qp = 2^(k-1) - 1 (the paper's signed case, eq. 1):
 * `v̂ = round(clip(v/s, -Qn, Qp)) · s`. The gradients (eq. 3 and the STE
 * of section 2.1, round passing the gradient straight through):
 * - `∂v̂/∂v = 1` where `-Qn < v/s < Qp`, else 0;
 * - `∂v̂/∂s = round(v/s) - v/s` there, `-Qn` where `v/s ≤ -Qn`, `Qp` where
 *   `v/s ≥ Qp` (the paper's strict inequalities: at `v/s = Qp` exactly the
 *   step gets Qp and v nothing);
 * - the step's gradient is multiplied by `g = 1/sqrt(N·Qp)` (section 2.2),
 *   N the number of values sharing the step (see {@link lsqGradScale}).
 *
 * Exactness: `v/s` is `v · fround(1/s)` with the correctly rounded
 * reciprocal and product (`f32RecipBits`, `f32MulBits`), rounding is to
 * nearest even on the integer grid and `round(v/s) - v/s` is exact in f32,
 * so values and `∂v̂/∂s` terms are bit-identical on the CPU and WebGPU for a
 * given s (WGSL division is not correctly rounded). The step's gradient sums
 * those terms times the incoming gradient: a float reduction, whose order
 * differs between backends.
 *
 * A step that is not a positive normal f32 (≤ 0, subnormal, Inf or NaN)
 * makes every value sharing it NaN, and a NaN value stays NaN, so a step
 * trained below zero stops a run at its non-finite loss instead of silently
 * flipping signs; ±Inf values clip.
 *
 * @module
 */
import { abs, emptyTensor, maximum, mul, noGrad, record, reshape, sum, Tensor, tensor } from "@lowp/core";
import { asF32, rangeKernel, type WordKernel } from "@lowp/kernels";
import { f32RecipBits } from "./exact.ts";
import { lsqRange } from "./fake_quant.ts";
import { parseIntFormat } from "./int.ts";
import { blockOf, type Layout, layoutOf, SCALED_WGSL } from "./scaling.ts";
import type { Granularity } from "./spec.ts";

const fr = Math.fround;
const QNAN = 0x7fc00000;
/** Bits of the smallest positive normal f32: the least valid step, and the floor of an initial step. */
const MIN_NORMAL = 0x00800000;
const INF = 0x7f800000;
/** 1.5·2^52: adding and subtracting it rounds an f64 below 2^51 in magnitude to an integer, ties to even. */
const ROUND_EVEN = 6755399441055744;

/** 1/s per step (f32 bits, correctly rounded). */
const RECIP_KERNEL: WordKernel = rangeKernel({
  name: "lsq_recip",
  inputs: 1,
  outputs: 1,
  range: (start, end, [s], [inv]) => {
    for (let i = start; i < end; i++) inv[i] = f32RecipBits(s[i]);
  },
  wgslHelpers: SCALED_WGSL,
  wgsl: `  out0[i] = f32_recip_bits(in0[i]);`,
});

/**
 * Values `clamp(round(x·(1/s)), qmin, qmax)·s` and the step terms `∂v̂/∂s`. Ins: x, s, 1/s (per step). Outs: values,
 * terms. Params: [qmin (i32 bits), qmax, steps, inner, stride] (the layout's, as INT-k scales).
 */
const ELEMENT_KERNEL: WordKernel = rangeKernel({
  name: "lsq_element",
  inputs: 3,
  outputs: 2,
  range: (start, end, [x, s, inv], [val, term], p) => {
    const xf = asF32(x), sf = asF32(s), invf = asF32(inv), vf = asF32(val), tf = asF32(term);
    const qmin = p[0] | 0, qmax = p[1], steps = p[2], inner = p[3], stride = p[4];
    // Runs of consecutive values that share a step: a block of `inner` (stride 1), else one value.
    for (let i = start; i < end;) {
      const c = blockOf(i, inner, stride) % steps;
      const stop = stride === 1 ? Math.min(end, (Math.floor(i / inner) + 1) * inner) : i + 1;
      const sb = s[c], step = sf[c], recip = invf[c];
      if (sb < MIN_NORMAL || sb >= INF) {
        for (; i < stop; i++) val[i] = term[i] = QNAN;
        continue;
      }
      for (; i < stop; i++) {
        // An f32 product computed in f64 is exact; fround rounds it once: the bits of f32_mul_bits.
        const t = fr(xf[i] * recip);
        let q: number;
        if (t <= qmin) tf[i] = q = qmin;
        else if (t >= qmax) tf[i] = q = qmax;
        else if (t === t) {
          q = (t + ROUND_EVEN) - ROUND_EVEN + 0; // ties to even; + 0 turns -0 into +0 (a code has no -0)
          tf[i] = q - t; // exact: |q - t| ≤ 1/2 and q, t within a factor 2 (or q = 0)
        } else {
          val[i] = term[i] = QNAN;
          continue;
        }
        vf[i] = fr(q * step);
      }
    }
  },
  wgslHelpers: SCALED_WGSL,
  wgsl: `  let c = block_of(i, Q(3u), Q(4u)) % Q(2u);
  let sb = in1[c];
  let t = f32_mul_bits(in0[i], in2[c]);
  if (sb < 0x00800000u || sb >= INF || (t & 0x7fffffffu) > INF) {
    out0[i] = QNAN; out1[i] = QNAN;
  } else {
    let qmin = bitcast<i32>(Q(0u)); let qmax = i32(Q(1u));
    let tf = bitcast<f32>(t);
    var q = 0; var d = 0u;
    if (tf <= f32(qmin)) { q = qmin; d = int_to_bits(qmin); }
    else if (tf >= f32(qmax)) { q = qmax; d = int_to_bits(qmax); }
    else { q = round_to_int(t, 0u, 0u); d = f32_add_bits(int_to_bits(q), t ^ SIGN); }
    out0[i] = f32_mul_bits(int_to_bits(q), sb); out1[i] = d;
  }`,
});

/** The code range [-Qn, Qp] = [-2^(k-1), 2^(k-1) - 1] of a signed INT-k; throws for any other format. */
export function lsqCodeRange(format: string): [number, number] {
  const spec = parseIntFormat(format);
  if (!spec?.signed) throw new Error(`lsq: format '${format}' is not a signed int (int2 … int8)`);
  const { qn, qp } = lsqRange(spec.bits);
  return [qn, qp];
}

/**
 * The paper's step-gradient scale `g = 1/sqrt(N·Qp)` for steps shared by `n` values each. The paper takes N =
 * the layer's weight count for the weight step and its feature count (the values of one example) for the
 * activation step; with a step per channel or group, N is the values that step covers, which keeps the
 * step's update in proportion to its weights' updates as the paper's argument asks.
 */
export function lsqGradScale(n: number, format: string): number {
  return 1 / Math.sqrt(n * lsqCodeRange(format)[1]);
}

/** Options of the LSQ functions. */
export interface LsqGroupOptions {
  /** Signed INT-k format (`int2` … `int8`). */
  readonly format: string;
  /** Which values share a step, as INT-k scales (default per tensor). */
  readonly granularity?: Granularity;
  /** The axis `group:G` groups run along (default -1, the last). */
  readonly axis?: number;
  /**
   * Factor on the step's gradient (default {@link lsqGradScale} of the values sharing each step in `v`; pass
   * the values of one example instead when a batch shares it, as the paper's activation steps).
   */
  readonly gradScale?: number;
}

/** The steps' layout over `shape`: one step per INT-k scale of the granularity. */
export function lsqLayout(shape: readonly number[], opts: LsqGroupOptions): Layout {
  lsqCodeRange(opts.format);
  return layoutOf(shape, opts.granularity ?? { kind: "tensor" }, `lsq ${opts.format}`, opts.axis);
}

/** LSQ values and step terms of `v` (no autograd): see the module doc. */
export interface LsqParts {
  /** v̂ = clamp(round(v/s), -Qn, Qp)·s. */
  readonly values: Tensor;
  /** ∂v̂/∂s: round(v/s) - v/s inside the range, -Qn or Qp where clipped (|term| ≤ 1/2 exactly inside). */
  readonly terms: Tensor;
  /** The steps' layout. */
  readonly layout: Layout;
}

/** Quantizes `v` with the given steps (1-D, one per scale of the layout, in its order), without autograd. */
export function lsqQuantDequant(v: Tensor, step: Tensor, opts: LsqGroupOptions): LsqParts {
  if (v.dtype !== "f32" || step.dtype !== "f32") throw new Error(`lsq: ${v.describe()} and its step must be f32`);
  const layout = lsqLayout(v.shape, opts);
  if (step.rank !== 1 || step.size !== layout.channels) {
    throw new Error(`lsq: ${v.describe()} needs ${layout.channels} steps as a 1-D tensor, got ${step.describe()}`);
  }
  const [qmin, qmax] = lsqCodeRange(opts.format);
  const b = v.backend;
  const inv = b.alloc(layout.channels), values = b.alloc(layout.n), terms = b.alloc(layout.n);
  b.runWords(RECIP_KERNEL, [step.storage], [inv], layout.channels, []);
  if (layout.n > 0) {
    const params = [qmin >>> 0, qmax, layout.channels, layout.inner, layout.stride];
    b.runWords(ELEMENT_KERNEL, [v.storage, step.storage, inv], [values, terms], layout.n, params);
  }
  b.free(inv);
  return { values: new Tensor(b, values, v.shape, "f32"), terms: new Tensor(b, terms, v.shape, "f32"), layout };
}

/** grad where |term| ≤ 1/2 (f32 bits 0x3f000000), else +0; a NaN term gives 0. Ins: grad, terms. */
const VALUE_GRAD_KERNEL: WordKernel = rangeKernel({
  name: "lsq_value_grad",
  inputs: 2,
  outputs: 1,
  range: (start, end, [g, t], [out]) => {
    for (let i = start; i < end; i++) out[i] = (t[i] & 0x7fffffff) <= 0x3f000000 ? g[i] : 0;
  },
  wgsl: `  out0[i] = select(0u, in0[i], (in1[i] & 0x7fffffffu) <= 0x3f000000u);`,
});

/** `∂L/∂v`: the incoming gradient where `-Qn < v/s < Qp` (there |term| ≤ 1/2, elsewhere ≥ 1), else 0. */
export function lsqValueGrad(grad: Tensor, terms: Tensor): Tensor {
  if (grad.size !== terms.size) throw new Error(`lsq: gradient ${grad.describe()} does not match ${terms.describe()}`);
  const out = emptyTensor(grad.backend, grad.shape);
  if (out.size > 0) {
    grad.backend.runWords(VALUE_GRAD_KERNEL, [grad.storage, terms.storage], [out.storage], out.size, []);
  }
  return out;
}

/** `∂L/∂s`: `gradScale · Σ grad·term` over the values sharing each step, as a 1-D tensor of the steps. */
export function lsqStepGrad(grad: Tensor, terms: Tensor, layout: Layout, gradScale: number): Tensor {
  return mul(sumPerStep(mul(grad, terms), layout), gradScale);
}

/** Sums the values sharing each step of `layout` (any shape of `layout.n` values) into a 1-D tensor. */
export function sumPerStep(x: Tensor, layout: Layout): Tensor {
  if (layout.stride === 1) {
    return reshape(sum(reshape(x, [layout.outer, layout.channels, layout.inner]), [0, 2]), [
      layout.channels,
    ]);
  }
  // Groups of `inner` along an axis of length `run` whose neighbours are `stride` apart.
  const before = layout.n / (layout.run * layout.stride);
  const grouped = reshape(x, [before, layout.run / layout.inner, layout.inner, layout.stride]);
  return reshape(sum(grouped, 2), [layout.channels]);
}

/**
 * The paper's initial steps `2·mean(|v|)/sqrt(Qp)`, one per scale of the layout (1-D), floored at the smallest
 * normal f32 so an all-zero group still gets a valid step. A float reduction (no autograd).
 */
export function lsqInitialStep(v: Tensor, opts: LsqGroupOptions): Tensor {
  const layout = lsqLayout(v.shape, opts), qp = lsqCodeRange(opts.format)[1];
  const shared = layout.n / layout.channels;
  return noGrad(() => {
    const s = mul(sumPerStep(abs(v), layout), 2 / (shared * Math.sqrt(qp)));
    return maximum(s, tensor([2 ** -126], { backend: v.backend }));
  });
}

/**
 * LSQ as an autograd op: `v̂` from `v` and its learned steps `step` (1-D, one per scale of the granularity,
 * in the scales' row-major order), with the gradients of the module doc for both.
 */
export function lsqGroupQuant(v: Tensor, step: Tensor, opts: LsqGroupOptions): Tensor {
  const { values, terms, layout } = noGrad(() => lsqQuantDequant(v, step, opts));
  const g = opts.gradScale ?? lsqGradScale(layout.n / layout.channels, opts.format);
  return record(values, "lsqGroupQuant", [v, step], (grad) => [
    v.requiresGrad ? lsqValueGrad(grad, terms) : null,
    step.requiresGrad ? lsqStepGrad(grad, terms, layout, g) : null,
  ]);
}
