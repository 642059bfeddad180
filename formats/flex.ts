/**
 * Flexpoint `flex16+5` (Köster et al., "Flexpoint: An Adaptive Numerical
 * Format for Efficient Training of Deep Neural Networks", NeurIPS 2017,
 * arXiv 1711.02213): a tensor of 16-bit two's-complement integer mantissas
 * m ∈ [-32768, 32767] sharing one exponent e, value m · 2^e.
 *
 * Exponent range: the shared exponent is a 5-bit field; the paper and
 * FORMATS.md fix its width, not its offset. Chosen: field E ∈ [0, 31] with
 * e = E − 31, i.e. e ∈ [{@link FLEX_EXP_MIN}, {@link FLEX_EXP_MAX}] = [−31, 0]:
 * magnitudes up to 32767 and a resolution down to 2^−31, which covers the
 * weights, activations and gradients of the models trained here. An exponent
 * outside is clamped (larger tensors saturate to ±32767; tensors with
 * max-abs below 2^−17 keep fewer significant bits).
 *
 * Per tensor (`quantDequant`): `e = floor(log2 amax) − 14`, so the largest
 * magnitude lands in [2^14, 2^15) mantissa units (an all-zero tensor gets
 * e = −31); `m = clamp(round(x · 2^−e), −32768, 32767)`, exact on f32 bits
 * (powers of two built from the exponent, `f32MulBits`, integer rounding in
 * any rounding mode). Across steps, Autoflex (formats/autoflex.ts) predicts
 * e from a history of max-abs values instead (the paper's algorithm, with
 * the constants of the original simulator: ALGORITHMS.md finding 7), and
 * {@link FlexQuantizer.quantDequantWith} applies a given exponent.
 *
 * Specials: Flexpoint has no NaN or Inf codes; as for the other scaled
 * formats here, a NaN or ±Inf anywhere makes the stored scale NaN and the
 * whole tensor NaN (codes 0). −0 comes back as +0.
 *
 * @module
 */
import type { Backend, Storage, WordKernel } from "@lowp/kernels";
import { Tensor } from "@lowp/core";
import { applyIntScales, dequantIntCodes, type IntSpec, partOf, requireF32, type ScaleSet } from "./int.ts";
import { checkAxisOption, freeAll, INF_BITS, layoutOf, NAN_BITS, reduceRanges, SCALED_WGSL } from "./scaling.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

/** Smallest shared exponent (5-bit field 0). */
export const FLEX_EXP_MIN: number = -31;
/** Largest shared exponent (5-bit field 31). */
export const FLEX_EXP_MAX: number = 0;
/** Mantissa bits. */
export const FLEX_MANTISSA_BITS: number = 16;

/** The mantissas as an INT-k spec: 16-bit two's complement. */
export const FLEX_MANTISSA_SPEC: IntSpec = { name: "int16", bits: FLEX_MANTISSA_BITS, signed: true };
const MANTISSA = FLEX_MANTISSA_SPEC;
const clampExp = (e: number) => Math.min(FLEX_EXP_MAX, Math.max(FLEX_EXP_MIN, e));

/** floor(log2 |x|) of a finite non-zero f32 given by its magnitude bits. */
function floorLog2Bits(mag: number): number {
  const ef = mag >>> 23;
  return ef === 0 ? 31 - Math.clz32(mag) - 149 : ef - 127;
}

/**
 * The per-tensor exponent of a tensor whose largest `|bits|` is `amax`:
 * floor(log2 amax) − 14 clamped to the allowed range (−31 for zeros; NaN/Inf
 * have none, see {@link flexScaleBits}).
 */
export function flexExponentOf(amax: number): number {
  return amax === 0 ? FLEX_EXP_MIN : clampExp(floorLog2Bits(amax) - 14);
}

/** Scale 2^e, its inverse 2^−e (f32 bits), or NaN for a tensor with NaN/Inf; `fixed` overrides the exponent. */
export function flexScaleBits(amax: number, fixed: number | null): [number, number] {
  if (amax >= INF_BITS) return [NAN_BITS, NAN_BITS];
  const e = fixed ?? flexExponentOf(amax);
  return [(e + 127) << 23, (127 - e) << 23];
}

/** Scale words from the tensor's max-abs; params [fixed exponent given (1/0), exponent (i32 bits)]. */
const FLEX_SCALE_KERNEL: WordKernel = {
  name: "lowp_flex_scale",
  inputs: 1,
  outputs: 3,
  cpu: (_, [amax], [scale, inv, zp], p) => {
    [scale[0], inv[0]] = flexScaleBits(amax[0], p[0] === 1 ? p[1] | 0 : null);
    zp[0] = 0;
  },
  wgslHelpers: SCALED_WGSL,
  wgsl: `  let a = in0[0];
  out2[0] = 0u;
  if (a >= INF) { out0[0] = QNAN; out1[0] = QNAN; return; }
  var e = bitcast<i32>(Q(1u));
  if (Q(0u) == 0u) {
    if (a == 0u) { e = ${FLEX_EXP_MIN}; } else {
      var lg = i32(a >> 23u) - 127;
      if ((a >> 23u) == 0u) { lg = 31 - i32(countLeadingZeros(a)) - 149; }
      e = clamp(lg - 14, ${FLEX_EXP_MIN}, ${FLEX_EXP_MAX});
    }
  }
  out0[0] = u32(e + 127) << 23u; out1[0] = u32(127 - e) << 23u;`,
};

/** Per-tensor scale words on the backend, from x's max-abs (and a fixed exponent when given). */
function flexScales(backend: Backend, x: Storage, n: number, fixed: number | null): ScaleSet {
  const r = reduceRanges(backend, x, layoutOf([n], { kind: "tensor" }, "flex16+5"));
  const out = [backend.alloc(1), backend.alloc(1), backend.alloc(1)];
  backend.runWords(FLEX_SCALE_KERNEL, [r.amax], out, 1, [fixed === null ? 0 : 1, (fixed ?? 0) >>> 0]);
  freeAll(backend, r.hi, r.lo, r.amax);
  return { scale: out[0], inv: out[1], zp: out[2] };
}

/** The Flexpoint quantizer: the {@link Quantizer} calls plus quantization with a given shared exponent. */
export interface FlexQuantizer extends Quantizer {
  /**
   * quantize → dequantize with the shared exponent `exponent` (an integer in
   * [−31, 0], e.g. from Autoflex) instead of the tensor's own: values
   * beyond 32767 · 2^e saturate; NaN/Inf still make the tensor NaN.
   */
  quantDequantWith(x: Tensor, exponent: number, opts?: QuantizeOptions): Tensor;
}

function checkExponent(e: number): number {
  if (!Number.isInteger(e) || e < FLEX_EXP_MIN || e > FLEX_EXP_MAX) {
    throw new Error(`flex16+5: exponent ${e} is outside the 5-bit range [${FLEX_EXP_MIN}, ${FLEX_EXP_MAX}]`);
  }
  return e;
}

/**
 * The Flexpoint quantizer `flex16+5`, or null. Per tensor only (the format
 * shares one exponent per tensor). Parts: `codes` (16-bit two's complement
 * mantissas, `int16`) and `scale` (f32 bits of 2^e, one value; NaN for a
 * tensor with NaN/Inf). Every rounding mode is offered.
 */
export function flexQuantizer(name: string): FlexQuantizer | null {
  if (name !== "flex16+5") return null;
  const run = (x: Tensor, opts: QuantizeOptions, fixed: number | null, emit: "codes" | "values") => {
    requireF32(x, name);
    checkAxisOption(name, x.shape, opts.axis); // one exponent per tensor: no axis to run along
    if (opts.granularity && opts.granularity.kind !== "tensor") {
      throw new Error(`${name}: one shared exponent per tensor (got granularity ${JSON.stringify(opts.granularity)})`);
    }
    const layout = layoutOf(x.shape, { kind: "tensor" }, name);
    const scales = flexScales(x.backend, x.storage, x.size, fixed);
    return { scales, out: applyIntScales(x.backend, x.storage, layout, scales, MANTISSA, opts, emit) };
  };
  const values = (x: Tensor, opts: QuantizeOptions, fixed: number | null) => {
    const { scales, out } = run(x, opts, fixed, "values");
    freeAll(x.backend, scales.scale, scales.inv, scales.zp);
    return new Tensor(x.backend, out, x.shape, "f32");
  };
  return {
    name,
    elementBits: FLEX_MANTISSA_BITS,
    blockSize: null,
    quantDequant: (x, opts = {}) => values(x, opts, null),
    quantDequantWith: (x, exponent, opts = {}) => values(x, opts, checkExponent(exponent)),
    quantize(x, opts = {}): Quantized {
      const { scales, out } = run(x, opts, null, "codes"), b = x.backend;
      freeAll(b, scales.inv, scales.zp);
      const parts = [
        { name: "codes", codes: new Tensor(b, out, x.shape, "u32"), bits: FLEX_MANTISSA_BITS, format: "int16" },
        { name: "scale", codes: new Tensor(b, scales.scale, [1], "u32"), bits: 32, format: "f32" },
      ];
      return { format: name, shape: x.shape, parts, meta: { exponentMin: FLEX_EXP_MIN, exponentMax: FLEX_EXP_MAX } };
    },
    dequantize(q) {
      const codes = partOf(q, "codes"), b = codes.backend;
      const zp = b.upload(new Uint32Array(1));
      const layout = layoutOf(q.shape, { kind: "tensor" }, name);
      const out = dequantIntCodes(b, codes.storage, layout, partOf(q, "scale").storage, zp, MANTISSA);
      b.free(zp);
      return new Tensor(b, out, q.shape, "f32");
    },
  };
}

/** The largest |x| of a tensor as a number (NaN when it holds a NaN, Infinity for ±Inf): one readback. */
export async function maxAbs(x: Tensor): Promise<number> {
  requireF32(x, "maxAbs");
  if (x.size === 0) return 0;
  const r = reduceRanges(x.backend, x.storage, layoutOf([x.size], { kind: "tensor" }, "maxAbs"));
  const words = await x.backend.read(r.amax, "u32");
  freeAll(x.backend, r.hi, r.lo, r.amax);
  return new Float32Array(Uint32Array.of(words[0]).buffer)[0];
}
