/**
 * MX block formats (OCP Microscaling Formats (MX) v1.0): `mxfp8_e4m3`,
 * `mxfp8_e5m2`, `mxfp6_e2m3`, `mxfp6_e3m2`, `mxfp4` (E2M1) and `mxint8`.
 * Blocks of k = 32 values along one axis (option `axis`, default -1, the
 * last) share one E8M0 scale X (see `scales.ts`). Along axis a the scales
 * have the shape of x with `shape[a]` divided by 32 (row-major), and a block
 * holds values `stride` apart (the product of the dimensions after a; see
 * `scaling.ts`): quantizing along a gives the same bits as moving a last,
 * quantizing, and moving it back, stochastic rounding included.
 *
 * Conversion (MX v1.0 §6.3): `shared_exp = floor(log2(amax_block)) -
 * emax_elem`, X = 2^shared_exp, `P_i = quantize_elem(V_i / X)` with
 * saturation. Here:
 * - amax is an integer max over the magnitude bits (for non-NaN f32,
 *   `bits & 0x7fffffff` orders like |x|);
 * - an exponent above 127 makes the block NaN, below -127 clamps to -127; a
 *   block of zeros gets the smallest scale 2^-127;
 * - one NaN or Inf in a block makes the whole block NaN (scale code 0xFF,
 *   element codes 0, every value the canonical NaN);
 * - V_i / X is computed as V_i · 2^-shared_exp with the correctly rounded
 *   `f32MulBits` (exact unless it falls below f32's subnormal range, far
 *   below any element's smallest subnormal), and dequantization is
 *   `P_i · X` the same way, so CPU and WebGPU agree bit for bit;
 * - element rounding: `nearest` (RNE, default), `nearest-away`,
 *   `stochastic` (Philox word of the element's flat index, or of its index
 *   in the blocked order along another axis: `drawIndex`); `saturate`
 *   (default true) as in `quantParams`.
 *
 * Scale rounding (option `scaleRounding`, see FORMATS.md and torchao's
 * `ScaleCalculationMode`): `floor` (default, the spec), `ceil` (ceil(log2
 * amax) - emax_elem), `even` (amax rounded to the element's mantissa width,
 * half-ulp added on the integer bits and the mantissa truncated, as torchao
 * does, then floor), `rceil` (NVIDIA hardware: 2^ceil(log2(amax /
 * max_elem)), computed exactly on the significands; for these max_elem values
 * it equals ceil(log2) of the f32 quotient, as f32 division cannot land on a
 * power of two from above).
 *
 * MXINT8 (MX v1.0 element format INT8): 8-bit two's complement with an implicit scale
 * 2^-6, emax_elem = 0. Elements round to the 2^-6 grid (RNE unless asked
 * otherwise) and clamp to [-128, 127]·2^-6 = [-2, 1.984375]: the clamp is
 * asymmetric like two's complement (microsoft/microxcaling clamps
 * symmetrically to ±1.984375; with FLOOR scaling -2 only arises from rounding
 * -1.99.. up in magnitude). It has no -0: a negative value that rounds to 0
 * gives +0.
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { PHILOX_WGSL, type WordKernel } from "@lowp/kernels";
import {
  codeFormatAt,
  CODES_WGSL,
  codeWords,
  decodeBits,
  ELEMENT_FORMATS,
  ELEMENT_WGSL,
  encodeBits,
  type FloatFormat,
  quantizeBits,
  type QuantParams,
  quantParams,
  quantParamsAt,
  quantWords,
} from "./element.ts";
import { EXACT_WGSL, f32MulBits } from "./exact.ts";
import { hostMx } from "./host_quant.ts";
import {
  AXIS_WGSL,
  blockBase,
  blockOf,
  blockScaleShape,
  drawIndex,
  resolveAxis,
  roundingParams,
  strideOf,
} from "./scaling.ts";
import { randomWord } from "./kernels.ts";
import { decodeScaleBits, pow2Bits, SCALE_FORMATS, SCALES_WGSL } from "./scales.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

/** MX block size k = 32 (MX v1.0 concrete formats). */
export const MX_BLOCK = 32;

/** How the shared exponent is chosen from the block's amax (`floor` is the spec's rule). */
export type MxScaleRounding = "floor" | "ceil" | "even" | "rceil";

/** Scale rounding modes as the integers the kernel uses. */
export const MX_SCALE_ROUNDING_CODE: Readonly<Record<MxScaleRounding, number>> = {
  floor: 0,
  ceil: 1,
  even: 2,
  rceil: 3,
};

/** Options of the MX quantizers: the common ones plus the scale rounding. */
export interface MxQuantizeOptions extends QuantizeOptions {
  /** Shared-exponent rule (default `floor`, MX v1.0 §6.3). */
  readonly scaleRounding?: MxScaleRounding;
}

/** An MX {@link Quantizer}: its quantize calls also take {@link MxQuantizeOptions} (`scaleRounding`). */
export interface MxQuantizer extends Quantizer {
  /** quantize → dequantize in one go. */
  quantDequant(x: Tensor, opts?: MxQuantizeOptions): Tensor;
  /** Element codes and E8M0 scale codes. */
  quantize(x: Tensor, opts?: MxQuantizeOptions): Quantized;
}

/** The element type of an MX format: a float format, or MXINT8. */
export interface MxElement {
  /** Element name as stored in the `codes` part (`e4m3`, ..., `int8`). */
  readonly name: string;
  /** Bits per element code. */
  readonly bits: number;
  /** emax_elem: exponent of the element's largest normal (MX v1.0 §6.3). */
  readonly emax: number;
  /** The float format, or null for MXINT8. */
  readonly float: FloatFormat | null;
}

/** MXINT8 as a quantizer grid: quantum 2^-6 below 2 (emin 0, 6 fraction bits), largest 127/64. */
const INT8_QUANT: QuantParams = { emin: 0, mbits: 6, maxBits: 0x3ffe0000, overflow: 0 };
/** f32 bits of 2 = 128·2^-6, the most negative MXINT8 magnitude. */
const INT8_NEG_MAX = 0x40000000;

const floatElement = (f: FloatFormat): MxElement => ({ name: f.name, bits: f.bits, emax: f.emax, float: f });

/** The MX formats by name (the concrete formats of OCP MX v1.0). */
export const MX_FORMATS: Readonly<Record<string, MxElement>> = {
  mxfp8_e4m3: floatElement(ELEMENT_FORMATS.e4m3),
  mxfp8_e5m2: floatElement(ELEMENT_FORMATS.e5m2),
  mxfp6_e2m3: floatElement(ELEMENT_FORMATS.e2m3),
  mxfp6_e3m2: floatElement(ELEMENT_FORMATS.e3m2),
  mxfp4: floatElement(ELEMENT_FORMATS.e2m1),
  mxint8: { name: "int8", bits: 8, emax: 0, float: null },
};

const QNAN = 0x7fc00000;
const INF = 0x7f800000;
/** Shared exponent meaning "this block is NaN". */
const NAN_EXP = 128;

/** floor(log2 m) of a positive finite magnitude m (f32 bits). */
function floorLog2(m: number): number {
  const ef = m >>> 23;
  return ef !== 0 ? ef - 127 : 31 - Math.clz32(m) - 149;
}

/** The significand of a positive finite magnitude normalised to [2^23, 2^24). */
function normSig(m: number): number {
  return m >>> 23 !== 0 ? (m & 0x7fffff) | 0x800000 : (m << (Math.clz32(m) - 8)) >>> 0;
}

/**
 * The shared exponent of a block with amax bits `amax` under scale rounding
 * `mode` (a {@link MX_SCALE_ROUNDING_CODE}), clamped to [-127, 127], or 128
 * when the block is NaN (amax NaN or Inf, or an exponent above 127). `q` is
 * the element's quantizer (its mantissa width serves `even`, its largest
 * value `rceil`).
 */
export function mxSharedExponent(amax: number, mode: number, emax: number, q: QuantParams): number {
  if (amax >= INF) return NAN_EXP;
  if (amax === 0) return -127;
  let e: number;
  if (mode === 0) e = floorLog2(amax) - emax;
  else if (mode === 1) e = floorLog2(amax) + (normSig(amax) === 0x800000 ? 0 : 1) - emax;
  else if (mode === 2) {
    const ef = (amax + (1 << (22 - q.mbits))) >>> 23; // carries into the exponent when amax rounds up a binade
    e = (ef === 0 ? -127 : ef - 127) - emax;
  } else e = floorLog2(amax) - floorLog2(q.maxBits) + (normSig(amax) > normSig(q.maxBits) ? 1 : 0);
  return e > 127 ? NAN_EXP : Math.max(e, -127);
}

/** Element code of quantized f32 bits `q` (float: `encodeBits`; int8: two's complement of q·64). */
function encodeElement(q: number, p: Uint32Array, k: number): number {
  if (p[k] === 0) return encodeBits(q, codeFormatAt(p, k + 1));
  const mag = (q & 0x7fffffff) >>> 0;
  const n = mag === 0 ? 0 : ((mag & 0x7fffff) | 0x800000) >>> (144 - (mag >>> 23)); // |q|·2^6, an integer <= 128
  return (q >>> 31 ? -n : n) & 0xff;
}

/** f32 bits of element code `c` (inverse of {@link encodeElement}). */
function decodeElement(c: number, p: Uint32Array, k: number): number {
  if (p[k] === 0) return decodeBits(c, codeFormatAt(p, k + 1));
  const n = c & 0x80 ? 256 - c : c;
  if (n === 0) return 0;
  const top = 31 - Math.clz32(n); // n·2^-6 = 1.xxx · 2^(top - 6)
  return ((c & 0x80 ? 0x80000000 : 0) | ((top - 6 + 127) << 23) | ((n << (23 - top)) & 0x7fffff)) >>> 0;
}

/** Element words of a kernel call: [is int8, code format (5 words)]. */
function elementWords(el: MxElement): number[] {
  return el.float ? [0, ...codeWords(el.float)] : [1, 0, 0, 0, 0, 0];
}

/** WGSL of the shared exponent and the element codes (`mx_encode`, `mx_decode`): twins of the TypeScript above. */
const WGSL_HELPERS: string = ELEMENT_WGSL + CODES_WGSL + EXACT_WGSL + SCALES_WGSL + AXIS_WGSL + /* wgsl */ `
fn floor_log2(m: u32) -> i32 {
  let ef = i32(m >> 23u);
  if (ef != 0) { return ef - 127; }
  return 31 - i32(countLeadingZeros(m)) - 149;
}
fn norm_sig(m: u32) -> u32 {
  if ((m >> 23u) != 0u) { return (m & 0x7fffffu) | 0x800000u; }
  return m << (countLeadingZeros(m) - 8u);
}
fn mx_shared_exponent(amax: u32, mode: u32, emax: i32, q: Fmt) -> i32 {
  if (amax >= 0x7f800000u) { return 128; }
  if (amax == 0u) { return -127; }
  var e: i32;
  if (mode == 0u) { e = floor_log2(amax) - emax; }
  else if (mode == 1u) { e = floor_log2(amax) - emax; if (norm_sig(amax) != 0x800000u) { e = e + 1; } }
  else if (mode == 2u) {
    let ef = i32((amax + (1u << u32(22 - q.mbits))) >> 23u);
    if (ef == 0) { e = -127 - emax; } else { e = ef - 127 - emax; }
  } else {
    e = floor_log2(amax) - floor_log2(q.max_bits);
    if (norm_sig(amax) > norm_sig(q.max_bits)) { e = e + 1; }
  }
  if (e > 127) { return 128; }
  return max(e, -127);
}
fn mx_encode(q: u32, k: u32) -> u32 {
  if (Q(k) == 0u) { return encode_bits(q, Q(k + 1u), Q(k + 2u), bitcast<i32>(Q(k + 3u)), bitcast<i32>(Q(k + 4u))); }
  let mag = q & 0x7fffffffu;
  var n = 0u;
  if (mag != 0u) { n = ((mag & 0x7fffffu) | 0x800000u) >> (144u - (mag >> 23u)); }
  if ((q >> 31u) != 0u) { n = 0u - n; }
  return n & 0xffu;
}
fn mx_decode(c: u32, k: u32) -> u32 {
  if (Q(k) == 0u) {
    return decode_bits(c, Q(k + 1u), Q(k + 2u), bitcast<i32>(Q(k + 3u)), bitcast<i32>(Q(k + 4u)), Q(k + 5u));
  }
  var n = c; var sign = 0u;
  if ((c & 0x80u) != 0u) { n = 256u - c; sign = 0x80000000u; }
  if (n == 0u) { return 0u; }
  let top = 31u - countLeadingZeros(n);
  return sign | ((top + 121u) << 23u) | ((n << (23u - top)) & 0x7fffffu);
}
`;

/**
 * Quantizes one block of 32 (item = block). Params: [element quant (4),
 * rounding (mode, seed, stream, offset lo, offset hi), emax_elem, scale
 * rounding, emit (0 = dequantized f32 bits, 1 = codes), element words (6, see
 * `elementWords`), stride, run (the blocked axis: see `scaling.ts`)].
 * Outputs: out0 one word per element, out1 the E8M0 code.
 */
const QUANT_KERNEL: WordKernel = {
  name: "mx_quantize",
  inputs: 1,
  outputs: 2,
  cpu: (b, [x], [out, scales], p) => {
    const s = p[18], base = blockBase(b, MX_BLOCK, s), drawn = drawIndex(base, s, p[19]);
    let amax = 0;
    for (let j = 0; j < MX_BLOCK; j++) amax = Math.max(amax, (x[base + j * s] & 0x7fffffff) >>> 0);
    const q = quantParamsAt(p, 0);
    const e = mxSharedExponent(amax, p[10], p[9] | 0, q);
    if (e === NAN_EXP) {
      scales[b] = 0xff;
      for (let j = 0; j < MX_BLOCK; j++) out[base + j * s] = p[11] ? 0 : QNAN;
      return;
    }
    scales[b] = e + 127;
    const inv = pow2Bits(-e), xBits = pow2Bits(e);
    const negQ = p[12] ? { ...q, maxBits: INT8_NEG_MAX } : q;
    for (let j = 0; j < MX_BLOCK; j++) {
      const v = f32MulBits(x[base + j * s], inv);
      const rand = p[4] === 2 ? randomWord(p[5], p[6], p[7], p[8], drawn + j) : 0;
      const c = encodeElement(quantizeBits(v, v >>> 31 ? negQ : q, p[4], rand), p, 12);
      out[base + j * s] = p[11] ? c : f32MulBits(decodeElement(c, p, 12), xBits);
    }
  },
  wgslHelpers: WGSL_HELPERS + PHILOX_WGSL,
  wgsl: `  let s = Q(18u);
  let base = block_base(i, ${MX_BLOCK}u, s);
  let drawn = draw_index(base, s, Q(19u));
  var amax = 0u;
  for (var j = 0u; j < ${MX_BLOCK}u; j++) { amax = max(amax, in0[base + j * s] & 0x7fffffffu); }
  let q = fmt_at(0u);
  let e = mx_shared_exponent(amax, Q(10u), bitcast<i32>(Q(9u)), q);
  if (e == 128) {
    out1[i] = 0xffu;
    var fill = 0x7fc00000u;
    if (Q(11u) != 0u) { fill = 0u; }
    for (var j = 0u; j < ${MX_BLOCK}u; j++) { out0[base + j * s] = fill; }
    return;
  }
  out1[i] = u32(e + 127);
  let inv = pow2_bits(-e); let x_bits = pow2_bits(e);
  var neg_q = q;
  if (Q(12u) != 0u) { neg_q.max_bits = ${INT8_NEG_MAX}u; }
  for (var j = 0u; j < ${MX_BLOCK}u; j++) {
    let at = base + j * s;
    let v = f32_mul_bits(in0[at], inv);
    var rand = 0u;
    if (Q(4u) == 2u) { rand = philox_word(Q(5u), Q(6u), Q(7u), Q(8u), drawn + j); }
    var fq = q;
    if ((v >> 31u) != 0u) { fq = neg_q; }
    let c = mx_encode(quantize_bits(v, fq, Q(4u), rand), 12u);
    if (Q(11u) != 0u) { out0[at] = c; } else { out0[at] = f32_mul_bits(mx_decode(c, 12u), x_bits); }
  }`,
};

/** Dequantizes element codes (item = element). Params: element words (6), stride. Inputs: codes, E8M0 scales. */
const DEQUANT_KERNEL: WordKernel = {
  name: "mx_dequantize",
  inputs: 2,
  outputs: 1,
  cpu: (i, [codes, scales], [out], p) => {
    const scale = decodeScaleBits(scales[blockOf(i, MX_BLOCK, p[6])], SCALE_FORMATS.e8m0);
    out[i] = f32MulBits(decodeElement(codes[i], p, 0), scale);
  },
  wgslHelpers: WGSL_HELPERS,
  wgsl: `  out0[i] = f32_mul_bits(mx_decode(in0[i], 0u), scale_decode(in1[block_of(i, ${MX_BLOCK}u, Q(6u))], 0u));`,
};

/** Where a block format's blocks lie in its input: the axis, the stride of its neighbours, the axis length. */
export interface BlockAxis {
  /** Number of blocks (= values / block size). */
  readonly blocks: number;
  /** The non-negative axis blocks run along. */
  readonly axis: number;
  /** Distance between consecutive values of a block (the product of the dimensions after `axis`). */
  readonly stride: number;
  /** Length of `axis` (orders the stochastic draws, see `drawIndex` in scaling.ts). */
  readonly run: number;
}

/**
 * Checks what every block format requires of its input: f32, rank >= 1, an
 * axis in range (option `axis`, default -1) whose size is divisible by
 * `block`, and no granularity other than its own (`group:block`). Returns
 * where the blocks lie.
 */
export function checkBlockInput(format: string, x: Tensor, block: number, opts: QuantizeOptions): BlockAxis {
  if (x.dtype !== "f32") throw new Error(`${format}: ${x.describe()} must be f32`);
  if (x.shape.length === 0) {
    throw new Error(
      `${format}: blocks of ${block} need an axis whose size is divisible by ${block}; got ${x.describe()}`,
    );
  }
  const axis = resolveAxis(format, x.shape, opts.axis);
  if (x.shape[axis] % block !== 0) {
    throw new Error(
      `${format}: blocks of ${block} run along axis ${axis}, so its size must be divisible by ${block}; got ${x.describe()}`,
    );
  }
  const g = opts.granularity;
  if (g && !(g.kind === "group" && g.size === block)) {
    throw new Error(`${format}: the block format fixes its granularity (group:${block} along option axis)`);
  }
  return { blocks: x.size / block, axis, stride: strideOf(x.shape, axis), run: x.shape[axis] };
}

/** The axis a stored block-format tensor was blocked along (`meta.axis`; the last one when absent). */
export function storedAxis(q: Quantized): number {
  return q.meta.axis === undefined ? q.shape.length - 1 : Number(q.meta.axis);
}

/** The stored part called `name` of `q`, checked to belong to `format`. */
export function storedPart(q: Quantized, format: string, name: string): Tensor {
  if (q.format !== format) throw new Error(`${format}: cannot dequantize a '${q.format}' tensor`);
  const part = q.parts.find((p) => p.name === name);
  if (!part) throw new Error(`${format}: the quantized tensor has no '${name}' part`);
  return part.codes;
}

/** The {@link Quantizer} of an MX format, or null when `name` is not one (see {@link MX_FORMATS}). */
export function mxQuantizer(name: string): MxQuantizer | null {
  if (!Object.hasOwn(MX_FORMATS, name)) return null;
  const el = MX_FORMATS[name];
  /** Values or codes, and the scale codes (null when the fused host kernel made the values). */
  const run = (x: Tensor, opts: MxQuantizeOptions, codes: boolean): [Tensor, Tensor | null] => {
    const where = checkBlockInput(name, x, MX_BLOCK, opts);
    const rounding = opts.scaleRounding ?? "floor";
    if (!Object.hasOwn(MX_SCALE_ROUNDING_CODE, rounding)) {
      throw new Error(`${name}: unknown scaleRounding '${rounding}' (floor, ceil, even, rceil)`);
    }
    const q = el.float ? quantParams(el.float, opts.saturate ?? true) : INT8_QUANT;
    const params = [
      ...quantWords(q),
      ...roundingParams(opts),
      el.emax >>> 0,
      MX_SCALE_ROUNDING_CODE[rounding],
      codes ? 1 : 0,
      ...elementWords(el),
      where.stride,
      where.run,
    ];
    const fused = codes || !el.float ? null : hostMx(x, where, q, el.emax, rounding, opts);
    if (fused) return [fused, null];
    const out = emptyTensor(x.backend, x.shape, codes ? "u32" : "f32");
    const scales = emptyTensor(x.backend, blockScaleShape(x.shape, MX_BLOCK, where.axis), "u32");
    if (where.blocks > 0) {
      x.backend.runWords(QUANT_KERNEL, [x.storage], [out.storage, scales.storage], where.blocks, params);
    }
    return [out, scales];
  };
  return {
    name,
    elementBits: el.bits,
    blockSize: MX_BLOCK,
    quantDequant(x, opts = {}) {
      const [out, scales] = run(x, opts, false);
      scales?.dispose();
      return out;
    },
    quantize(x, opts = {}): Quantized {
      const [codes, scales] = run(x, opts, true);
      return {
        format: name,
        shape: x.shape,
        parts: [
          { name: "codes", codes, bits: el.bits, format: el.name },
          { name: "scales", codes: scales!, bits: 8, format: "e8m0" },
        ],
        meta: {
          blockSize: MX_BLOCK,
          scaleRounding: opts.scaleRounding ?? "floor",
          axis: resolveAxis(name, x.shape, opts.axis),
        },
      };
    },
    dequantize(q) {
      const codes = storedPart(q, name, "codes"), scales = storedPart(q, name, "scales");
      const out = emptyTensor(codes.backend, q.shape, "f32");
      if (codes.size > 0) {
        codes.backend.runWords(
          DEQUANT_KERNEL,
          [codes.storage, scales.storage],
          [out.storage],
          codes.size,
          [...elementWords(el), strideOf(q.shape, storedAxis(q))],
        );
      }
      return out;
    },
  };
}

// For kernels that fetch the codes their own way (formats/quant_tensor.ts reads them bit-packed).
export { decodeElement as mxDecodeElement, elementWords as mxElementWords, WGSL_HELPERS as MX_WGSL };
// For per-group quantizers on the host (formats/ptq/grid.ts): the element code and MXINT8's grid.
export { encodeElement as mxEncodeElement, INT8_NEG_MAX as MXINT8_NEG_MAX_BITS, INT8_QUANT as MXINT8_QUANT };
