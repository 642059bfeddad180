/**
 * QuEST's MXFP4 quantizer, the forward pass of Quartet (arXiv 2505.14669;
 * IST-DASLab/Quartet `mxfp4_forward_kernel` with `quest=True`): per block of
 * 32 values along the last axis, a power-of-two scale from the block's
 * standard deviation, `2^floor(log2(c·σ + 1e-8))` with c = 2.92247856/6 (the
 * MSE-optimal clipping of a Gaussian for E2M1, so ≈ 2.92σ maps to the top code
 * 6), then E2M1 with saturation at ±6. It also returns the trust mask
 * `|x/scale| < 6`: entries that clipped get no gradient.
 *
 * Bits: σ² = mean(x²) − mean(x)² in f32, index order (as the reference). The
 * exponent comes from the bits of u = c²·σ², floor(log2 √u) = ⌊E(u)/2⌋, which
 * avoids WGSL's inexact sqrt; the 1e-8 guard decides only when c·σ < 1e-8 (u
 * below 1e-16), where the scale is 2^-27 as in the reference. Scales are kept
 * within [2^-126, 2^126] so that both the scale and its reciprocal are normal
 * f32 (E8M0 allows 2^-127 and 2^127). Scaling by powers of two is exact, so the
 * CPU and WebGPU backends agree bit for bit.
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { asF32, bitsToF32, f32Bits, PHILOX_WGSL, rangeKernel, type WordKernel } from "@lowp/kernels";
import { ELEMENT_WGSL, parseFloatFormat, quantizeBits, quantParams, quantParamsAt, quantWords } from "./element.ts";
import { EXACT_WGSL } from "./exact.ts";
import { hostQuest } from "./host_quant.ts";
import { randomWord } from "./kernels.ts";
import { roundingParams } from "./scaling.ts";
import type { QuantizeOptions } from "./spec.ts";

/** QuEST's block (the MX block size). */
export const QUEST_BLOCK = 32;
/** Quartet's Gaussian clipping factor for E2M1: 2.92247856 / 6 (the MSE-optimal clip, in units of σ, over 6). */
export const QUEST_GAUSSIAN_SCALE = 2.92247856 / 6;

const fr = Math.fround;
/** f32 bits of (1e-8)², below which the reference's +1e-8 decides the scale. */
const TINY_U = f32Bits(1e-16);
/** f32 bits of 6, E2M1's largest value: |x/scale| below it is trusted. */
const SIX = f32Bits(6);

/**
 * floor(log2(c·σ)) from the bits of u = c²σ², clamped to [-126, 126] (see the module doc). The sign bit is
 * dropped: it is 0 but for a NaN σ², whose sign differs between hosts (a block with NaN or Inf gets e = 64).
 */
function questExponent(uBits: number): number {
  uBits &= 0x7fffffff;
  const e = uBits < TINY_U ? -27 : ((uBits >>> 23) - 127) >> 1;
  return Math.min(126, Math.max(-126, e));
}

/** Ins: x. Outs: y, mask (1.0 trusted / 0.0 clipped). Params: [fmt (4), mode, seed, stream, lo, hi, c² bits]. */
const QUEST_KERNEL: WordKernel = rangeKernel({
  name: "quest_mxfp4",
  inputs: 1,
  outputs: 2,
  range: (start, end, [x], [y, mask], p) => {
    const q = quantParamsAt(p, 0), mode = p[4], c2 = bitsToF32(p[9]), inv = 1 / QUEST_BLOCK;
    const xf = asF32(x), yf = asF32(y);
    for (let b = start; b < end; b++) {
      const base = b * QUEST_BLOCK;
      let sum = 0, sq = 0;
      for (let j = 0; j < QUEST_BLOCK; j++) {
        const v = xf[base + j];
        sum = fr(sum + v);
        sq = fr(sq + fr(v * v));
      }
      const mean = fr(sum * inv), variance = Math.max(0, fr(fr(sq * inv) - fr(mean * mean)));
      const e = questExponent(f32Bits(fr(c2 * variance)));
      // Scaling by a power of two within the normal range is exact: plain products give the f32_mul_bits bits.
      const scale = bitsToF32(((e + 127) << 23) >>> 0), recip = bitsToF32(((127 - e) << 23) >>> 0);
      for (let j = base; j < base + QUEST_BLOCK; j++) {
        const v = f32Bits(fr(xf[j] * recip));
        const rand = mode === 2 ? randomWord(p[5], p[6], p[7], p[8], j) : 0;
        yf[j] = fr(bitsToF32(quantizeBits(v, q, mode, rand)) * scale);
        mask[j] = ((v & 0x7fffffff) >>> 0) < SIX ? 0x3f800000 : 0;
      }
    }
  },
  wgslHelpers: ELEMENT_WGSL + EXACT_WGSL + PHILOX_WGSL,
  wgsl: `  let base = i * ${QUEST_BLOCK}u;
  var sum = 0.0; var sq = 0.0;
  for (var j = 0u; j < ${QUEST_BLOCK}u; j++) {
    let v = bitcast<f32>(in0[base + j]);
    sum = sum + v;
    sq = sq + v * v;
  }
  let mean = sum * ${1 / QUEST_BLOCK};
  // max(0, d) with NaN kept (WGSL's max may drop it) and -0 made +0, as Math.max and WebAssembly's f32.max do.
  let d = sq * ${1 / QUEST_BLOCK} - mean * mean;
  let variance = select(d, 0.0, d <= 0.0);
  let u = bitcast<u32>(bitcast<f32>(Q(9u)) * variance) & 0x7fffffffu;
  var e = -27;
  if (u >= ${TINY_U}u) { e = (i32(u >> 23u) - 127) >> 1u; }
  e = clamp(e, -126, 126);
  let scale = u32(e + 127) << 23u; let recip = u32(127 - e) << 23u;
  for (var j = base; j < base + ${QUEST_BLOCK}u; j++) {
    let v = f32_mul_bits(in0[j], recip);
    var rand = 0u;
    if (Q(4u) == 2u) { rand = philox_word(Q(5u), Q(6u), Q(7u), Q(8u), j); }
    out0[j] = f32_mul_bits(quantize_bits(v, fmt_at(0u), Q(4u), rand), scale);
    out1[j] = select(0u, 0x3f800000u, (v & 0x7fffffffu) < ${SIX}u);
  }`,
});

/**
 * QuEST MXFP4 quantize-dequantize of `x` along its last axis (a multiple of
 * 32), with the trust mask (1 where `|x/scale| < 6`, else 0). No autograd.
 */
export function questQuantDequant(x: Tensor, opts: QuantizeOptions = {}): { values: Tensor; trust: Tensor } {
  const last = x.shape[x.rank - 1] ?? 0;
  if (x.dtype !== "f32" || x.rank === 0 || last % QUEST_BLOCK !== 0) {
    throw new Error(`quest: ${x.describe()} must be f32 with a last axis divisible by ${QUEST_BLOCK}`);
  }
  const e2m1 = quantParams(parseFloatFormat("e2m1")!, true);
  const c2 = f32Bits(fr(QUEST_GAUSSIAN_SCALE * QUEST_GAUSSIAN_SCALE));
  const params = [...quantWords(e2m1), ...roundingParams(opts), c2];
  const fused = hostQuest(x, e2m1, c2, TINY_U, opts);
  if (fused) return fused;
  const values = emptyTensor(x.backend, x.shape), trust = emptyTensor(x.backend, x.shape);
  const blocks = x.size / QUEST_BLOCK;
  if (blocks > 0) x.backend.runWords(QUEST_KERNEL, [x.storage], [values.storage, trust.storage], blocks, params);
  return { values, trust };
}
