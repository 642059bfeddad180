/**
 * Per-tensor scaled element formats, as FP8 training uses them (Transformer
 * Engine's `Float8CurrentScaling` and `DelayedScaling`): values are
 * multiplied by a scale `s = (max / amax) / 2^margin` before rounding to the
 * element format and by `1/s` after, so the tensor's largest magnitude lands
 * near the format's largest value.
 *
 * - current scaling: amax of the tensor itself (one reduction, no readback);
 * - delayed scaling: amax from a history of earlier steps (`max` or
 *   `most_recent`), kept on the device; a step whose history amax is 0 or not
 *   finite keeps the previous scale (TE's rule), and the first step uses 1.
 *
 * Arithmetic is exact on f32 bits: `s = fl(fl(max · fl(1/amax)) · 2^-margin)`
 * (TE divides once; the correctly rounded reciprocal then product can differ
 * from `fl(max/amax)` by one ulp, which moves no value across the grid by
 * more than the scale's own rounding) and `1/s` is the correctly rounded
 * reciprocal, so CPU and WebGPU give identical bits.
 *
 * @module
 */
import { abs, emptyTensor, max, type Tensor } from "@lowp/core";
import { asF32, CpuStorage, f32Bits, PHILOX_WGSL, rangeKernel, usesHostKernels, type WordKernel } from "@lowp/kernels";
import { ELEMENT_WGSL, parseFloatFormat, quantizeBits, quantParams, quantParamsAt, quantWords } from "./element.ts";
import { EXACT_WGSL, f32MulBits, f32RecipBits } from "./exact.ts";
import { hostScaledElement } from "./host_quant.ts";
import { randomWord } from "./kernels.ts";
import { roundingParams } from "./scaling.ts";
import type { QuantizeOptions } from "./spec.ts";

const INF = 0x7f800000;
const fr = Math.fround;
const ONE = 0x3f800000;
/** f32 bits of 2^127: the scale used when max/amax overflows. */
const MAX_POW2 = 0x7f000000;

/** Which amax of the history sets the scale (TE's `amax_compute_algo`). */
export type AmaxAlgo = "max" | "most_recent";

/**
 * Scale from amax. Ins: amax source (history of L values, or 1), previous [s, 1/s]. Out: [s, 1/s].
 * Params: [L, algo (0 max, 1 most_recent), format max bits, 2^-margin bits, keep previous on a bad amax].
 */
const SCALE_KERNEL: WordKernel = rangeKernel({
  name: "tensor_scale",
  inputs: 2,
  outputs: 1,
  range: (_start, _end, [src, prev], [out], p) => {
    let amax = 0;
    const n = p[1] === 1 ? 1 : p[0];
    // Non-negative f32 bits order like their values; NaN sorts above Inf.
    for (let j = 0; j < n; j++) amax = Math.max(amax, (src[j] & 0x7fffffff) >>> 0);
    let s: number;
    if (amax === 0 || amax >= INF) s = p[4] ? prev[0] : ONE;
    else {
      s = f32MulBits(f32MulBits(p[2], f32RecipBits(amax)), p[3]);
      if (s >= INF) s = MAX_POW2;
    }
    out[0] = s;
    out[1] = f32RecipBits(s);
  },
  wgslHelpers: EXACT_WGSL,
  wgsl: `  var n = Q(0u);
  if (Q(1u) == 1u) { n = 1u; }
  var amax = 0u;
  for (var j = 0u; j < n; j++) { amax = max(amax, in0[j] & 0x7fffffffu); }
  var s = 0x3f800000u;
  if (amax == 0u || amax >= 0x7f800000u) {
    if (Q(4u) != 0u) { s = in1[0]; }
  } else {
    s = f32_mul_bits(f32_mul_bits(Q(2u), f32_recip_bits(amax)), Q(3u));
    if (s >= 0x7f800000u) { s = 0x7f000000u; }
  }
  out0[0] = s;
  out0[1] = f32_recip_bits(s);`,
});

/** y = q(x·s)·(1/s). Ins: x, [s, 1/s]. Params: [fmt (4 words), mode, seed, stream, offset lo, offset hi]. */
const SCALED_QUANT_KERNEL: WordKernel = rangeKernel({
  name: "tensor_scaled_quant",
  inputs: 2,
  outputs: 1,
  range: (start, end, [x, sc], [y], p) => {
    // fround of a product of two f32 is the correctly rounded f32 product (it is exact in f64): the same bits as
    // the WGSL's f32_mul_bits, faster.
    const q = quantParamsAt(p, 0), mode = p[4], [xf, scf, yf] = [x, sc, y].map(asF32), s = scf[0], inv = scf[1];
    for (let i = start; i < end; i++) {
      const rand = mode === 2 ? randomWord(p[5], p[6], p[7], p[8], i) : 0;
      y[i] = quantizeBits(f32Bits(fr(xf[i] * s)), q, mode, rand);
      yf[i] = fr(yf[i] * inv);
    }
  },
  wgslHelpers: ELEMENT_WGSL + EXACT_WGSL + PHILOX_WGSL,
  wgsl: `  var rand = 0u;
  if (Q(4u) == 2u) { rand = philox_word(Q(5u), Q(6u), Q(7u), Q(8u), i); }
  out0[i] = f32_mul_bits(quantize_bits(f32_mul_bits(in0[i], in1[0]), fmt_at(0u), Q(4u), rand), in1[1]);`,
});

/** New history: [amax, history[0 .. L-2]] (newest first). Ins: history, amax. */
const ROLL_KERNEL: WordKernel = rangeKernel({
  name: "amax_roll",
  inputs: 2,
  outputs: 1,
  range: (start, end, [h, a], [out]) => {
    for (let i = start; i < end; i++) out[i] = i === 0 ? a[0] : h[i - 1];
  },
  wgsl: `  if (i == 0u) { out0[0] = in1[0]; } else { out0[i] = in0[i - 1u]; }`,
});

/** The element format of a per-tensor scaled quantizer; throws for anything else. */
function elementFormat(format: string) {
  const f = parseFloatFormat(format);
  if (!f) {
    throw new Error(`per-tensor scaling needs a plain element format (e4m3, e5m2, ...), got '${format}'`);
  }
  return f;
}

/** f32 bits of 2^-margin (margin an integer in [0, 126]). */
function marginBits(margin: number): number {
  if (!Number.isInteger(margin) || margin < 0 || margin > 126) {
    throw new Error(`margin ${margin}: expected an integer from 0 to 126`);
  }
  return ((127 - margin) << 23) >>> 0;
}

function scaleFrom(src: Tensor, prev: Tensor | null, format: string, algo: AmaxAlgo, margin: number): Tensor {
  const f = elementFormat(format);
  const out = emptyTensor(src.backend, [2]);
  const maxBits = quantParams(f).maxBits;
  const params = [src.size, algo === "most_recent" ? 1 : 0, maxBits, marginBits(margin), prev ? 1 : 0];
  src.backend.runWords(SCALE_KERNEL, [src.storage, (prev ?? src).storage], [out.storage], 1, params);
  return out;
}

/**
 * `max(abs(x))`, the same value (the first NaN wins) or error (an empty tensor); on a CPU backend that takes
 * fused host kernels one loop over the values instead of an abs tensor and a reduction.
 */
export function amaxOf(x: Tensor): Tensor {
  const host = usesHostKernels(x.backend) && x.storage instanceof CpuStorage && x.dtype === "f32" && x.size > 0;
  if (!host) return max(abs(x));
  const xs = (x.storage as CpuStorage).f32, n = x.size;
  let best = Math.abs(xs[0]);
  for (let i = 1; i < n && best === best; i++) {
    const v = Math.abs(xs[i]);
    if (v > best || v !== v) best = v;
  }
  const out = emptyTensor(x.backend, []);
  (out.storage as CpuStorage).f32[0] = best;
  return out;
}

/** `[s, 1/s]` for `x` scaled to `format` by its own amax (current scaling), as a 2-element f32 tensor. */
export function currentScale(x: Tensor, format: string, margin = 0): Tensor {
  return scaleFrom(amaxOf(x), null, format, "max", margin);
}

/**
 * `[s, 1/s]` from an amax history (delayed scaling); `previous` is the last
 * `[s, 1/s]`, kept when the history's amax is 0 or not finite.
 */
export function delayedScale(history: Tensor, previous: Tensor, format: string, algo: AmaxAlgo, margin = 0): Tensor {
  return scaleFrom(history, previous, format, algo, margin);
}

/** The history with `x`'s amax put first and the oldest entry dropped. */
export function pushAmax(history: Tensor, x: Tensor): Tensor {
  const out = emptyTensor(history.backend, history.shape);
  const amax = amaxOf(x);
  if (history.size > 0) {
    history.backend.runWords(ROLL_KERNEL, [history.storage, amax.storage], [out.storage], history.size, []);
  }
  amax.dispose();
  return out;
}

/** q(x·s)·(1/s) with `scale` = `[s, 1/s]` (no autograd); rounding options as every quantizer's. */
export function scaledQuantDequant(x: Tensor, format: string, scale: Tensor, opts: QuantizeOptions = {}): Tensor {
  const f = elementFormat(format);
  if (x.dtype !== "f32") throw new Error(`${format}: ${x.describe()} must be f32`);
  const q = quantParams(f, opts.saturate ?? true);
  const fused = hostScaledElement(x, q, scale, opts);
  if (fused) return fused;
  const y = emptyTensor(x.backend, x.shape);
  const params = [...quantWords(q), ...roundingParams(opts)];
  if (x.size > 0) x.backend.runWords(SCALED_QUANT_KERNEL, [x.storage, scale.storage], [y.storage], x.size, params);
  return y;
}

/** The scale s of a `[s, 1/s]` tensor as a host number, for tests and reports (reads back). */
export async function scaleValue(scale: Tensor): Promise<number> {
  return (await scale.data())[0];
}
