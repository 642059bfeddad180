/**
 * INT-k: `int2` … `int8` (symmetric, two's complement) and `uint2` … `uint8`
 * (asymmetric, with a zero point), scaled per tensor, per channel or per
 * group of G values along one axis (FORMATS.md "INT-k"): `group:G` groups
 * run along option `axis` (default -1, the last; see `scaling.ts` for the
 * layout along another axis), `channel:AXIS` has one scale per index of AXIS
 * shared by every value with that index (the reduction runs over all other
 * axes; `axis` does not apply), and `tensor` has one scale.
 *
 * Symmetric: `s = amax · fround(1/qmax)` with qmax = 2^(k-1) - 1 (the
 * restricted-range scale `amax / qmax` of FORMATS.md; torchao's
 * `amax / ((qmax - qmin)/2)` puts ±amax on ±(qmax + 1/2), so +amax clips to
 * qmax and -amax rounds to qmin; not offered).
 * `q = clamp(round(x · (1/s)), -2^(k-1), 2^(k-1) - 1)`: as |x| ≤ amax, the
 * codes stay within ±qmax (the restricted range); -2^(k-1) is kept in the
 * clamp as FORMATS.md writes it, and only stochastic rounding can reach it,
 * when x · (1/s) lands an ulp beyond -qmax (probability about 2^-23).
 *
 * Asymmetric: the range always includes 0, as in PyTorch's observers:
 * `min = min(x_min, 0)`, `max = max(x_max, 0)`,
 * `s = (max - min) · fround(1/(2^k - 1))`, `zp = clamp(round(-min · (1/s)), 0, 2^k - 1)`
 * (zero point always ties to even), `q = clamp(round(x · (1/s)) + zp, 0, 2^k - 1)`,
 * value `(q - zp) · s`.
 *
 * Every step is exact on f32 bits (`f32MulBits`, `f32RecipBits`,
 * `f32AddBits`, integer rounding), so the CPU and WebGPU backends agree bit
 * for bit. Specials: a NaN or ±Inf among a scale's values makes its scale NaN
 * and every value sharing it NaN (codes 0, zero point 0), as MX does for a
 * block. A scale that is 0 (all values ±0, or amax so small that the scale
 * underflows) gives codes 0 and values +0. Integer codes have no -0, so -0
 * comes back as +0. Rounding: `nearest` (ties to even, default),
 * `nearest-away`, `stochastic` (Philox word of the element's flat index,
 * keyed by seed/stream/offset; for groups along another axis, of its index
 * in the blocked order, `drawIndex` in scaling.ts). `saturate` does not
 * apply: codes always clamp.
 *
 * @module
 */
import { asF32, type Backend, CpuStorage, f32Bits, rangeKernel, type Storage, type WordKernel } from "@lowp/kernels";
import { Tensor } from "@lowp/core";
import { f32MulBits, f32RecipBits } from "./exact.ts";
import { hostInt, hostIntGiven } from "./host_quant.ts";
import { randomWord } from "./kernels.ts";
import {
  blockOf,
  drawIndex,
  f32AddBits,
  freeAll,
  granularityText,
  INF_BITS,
  intToBits,
  keyToBits,
  type Layout,
  layoutOf,
  NAN_BITS,
  nearestEven,
  reduceRanges,
  resolveAxis,
  roundingParams,
  roundToInt,
  SCALED_WGSL,
  SIGN_BIT,
} from "./scaling.ts";
import { parseGranularity, type Quantized, type QuantizeOptions, type Quantizer } from "./spec.ts";

/** An integer code format: `bits` wide, two's complement when `signed`, else offset by a zero point. */
export interface IntSpec {
  /** Canonical name (`int4`, `uint8`, ...). */
  readonly name: string;
  /** Code width k. */
  readonly bits: number;
  /** Symmetric two's complement (true) or asymmetric with a zero point (false). */
  readonly signed: boolean;
}

/** Smallest and largest code value: [-2^(k-1), 2^(k-1) - 1] signed, [0, 2^k - 1] unsigned. */
export function intRange(spec: IntSpec): [number, number] {
  return spec.signed ? [-(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1] : [0, 2 ** spec.bits - 1];
}

/** f32 bits of fround(1/L) with L = qmax (signed) or 2^k - 1 (unsigned): the scale is range · this. */
function levelsRecipBits(spec: IntSpec): number {
  const [lo, hi] = intRange(spec);
  return f32RecipBits(intToBits(spec.signed ? hi : hi - lo));
}

/** A scale, its reciprocal and a zero point (f32 bits, f32 bits, integer). */
export interface ScaleWords {
  /** Scale s (f32 bits; NaN for a group with NaN/Inf). */
  readonly scale: number;
  /** 1/s, correctly rounded (0 when s = 0). */
  readonly inv: number;
  /** Zero point (0 for symmetric formats). */
  readonly zp: number;
}

/**
 * The INT-k scale from a group's range (order keys of max(x, 0), min(x, 0)
 * and the max of |bits|, see `reduceRanges`). `levelsRecip` is fround(1/L)
 * (f32 bits), `top` the largest code.
 */
export function intScaleBits(
  hi: number,
  lo: number,
  amax: number,
  signed: boolean,
  top: number,
  levelsRecip: number,
): ScaleWords {
  if (amax >= INF_BITS) return { scale: NAN_BITS, inv: NAN_BITS, zp: 0 };
  const negMin = (keyToBits(lo) ^ SIGN_BIT) >>> 0;
  const range = signed ? amax : f32AddBits(keyToBits(hi), negMin);
  const scale = f32MulBits(range, levelsRecip);
  if ((scale & 0x7fffffff) === 0) return { scale: 0, inv: 0, zp: 0 };
  if ((scale & 0x7fffffff) >= INF_BITS) return { scale: NAN_BITS, inv: NAN_BITS, zp: 0 }; // range overflowed f32
  const inv = f32RecipBits(scale);
  const zp = signed ? 0 : Math.min(top, Math.max(0, roundToInt(f32MulBits(negMin, inv), 0, 0)));
  return { scale, inv, zp };
}

/** The code value (before masking to k bits) of the f32 `x` under scale words; `mode`/`rand` as for `roundToInt`. */
export function intCodeOf(
  x: number,
  scale: number,
  inv: number,
  zp: number,
  qmin: number,
  qmax: number,
  mode: number,
  rand: number,
): number {
  if ((scale & 0x7fffffff) === 0) return zp;
  return Math.min(qmax, Math.max(qmin, roundToInt(f32MulBits(x, inv), mode, rand) + zp));
}

/** f32 bits of the value of code value `q`: (q - zp) · s. */
export function intValueBits(q: number, zp: number, scale: number): number {
  return f32MulBits(intToBits(q - zp), scale);
}

const SCALE_WGSL = /* wgsl */ `
struct ScaleWords { scale: u32, inv: u32, zp: i32 }
fn int_scale_bits(hi: u32, lo: u32, amax: u32, signed: bool, top: i32, levels_recip: u32) -> ScaleWords {
  if (amax >= INF) { return ScaleWords(QNAN, QNAN, 0); }
  let neg_min = key_bits(lo) ^ SIGN;
  var range = amax;
  if (!signed) { range = f32_add_bits(key_bits(hi), neg_min); }
  let scale = f32_mul_bits(range, levels_recip);
  if ((scale & 0x7fffffffu) == 0u) { return ScaleWords(0u, 0u, 0); }
  if ((scale & 0x7fffffffu) >= INF) { return ScaleWords(QNAN, QNAN, 0); }
  let inv = f32_recip_bits(scale);
  var zp = 0;
  if (!signed) { zp = min(top, max(0, round_to_int(f32_mul_bits(neg_min, inv), 0u, 0u))); }
  return ScaleWords(scale, inv, zp);
}
fn int_code_of(x: u32, scale: u32, inv: u32, zp: i32, qmin: i32, qmax: i32, mode: u32, rand: u32) -> i32 {
  if ((scale & 0x7fffffffu) == 0u) { return zp; }
  return min(qmax, max(qmin, round_to_int(f32_mul_bits(x, inv), mode, rand) + zp));
}
fn int_value_bits(q: i32, zp: i32, scale: u32) -> u32 { return f32_mul_bits(int_to_bits(q - zp), scale); }
fn scale_of(i: u32, channels: u32, inner: u32, stride: u32) -> u32 { return block_of(i, inner, stride) % channels; }
`;

/** WGSL twins of the scale, code and value functions above (`int_value_bits`, ...), with `SCALED_WGSL`. */
const INT_WGSL: string = SCALED_WGSL + SCALE_WGSL;

/** INT-k scales from ranges: params [signed, top code, fround(1/L) bits]; outputs scale, 1/scale, zero point. */
const INT_SCALE_KERNEL: WordKernel = {
  name: "lowp_int_scale",
  inputs: 3,
  outputs: 3,
  cpu: (c, [hi, lo, amax], [scale, inv, zp], p) => {
    const w = intScaleBits(hi[c], lo[c], amax[c], p[0] === 1, p[1], p[2]);
    [scale[c], inv[c], zp[c]] = [w.scale, w.inv, w.zp];
  },
  wgslHelpers: INT_WGSL,
  wgsl: `  let w = int_scale_bits(in0[i], in1[i], in2[i], Q(0u) == 1u, i32(Q(1u)), Q(2u));
  out0[i] = w.scale; out1[i] = w.inv; out2[i] = u32(w.zp);`,
};

const fr = Math.fround;

/**
 * Whether a scale (f32 bits) and its reciprocal take the plain path: scale finite and not 0, 1/scale finite.
 * Then every value sharing the scale is finite and |x · 1/s| ≤ 2^k; else (0 or NaN scale, 1/s overflowing)
 * the special cases of {@link intCodeOf} apply.
 */
function ordinaryScale(scale: number, inv: number): boolean {
  return (scale & 0x7fffffff) !== 0 && (scale & 0x7fffffff) < INF_BITS && (inv & 0x7fffffff) < INF_BITS;
}

/**
 * Quantizes x with given scales. Params: [emit values (1) or codes (0), qmin
 * (i32 bits), qmax, code mask, channels, inner, mode, seed, stream, offset lo, offset hi,
 * stride, run] (the last two: the layout's, see `Layout`).
 */
const INT_ELEMENT_KERNEL: WordKernel = rangeKernel({
  name: "lowp_int_element",
  inputs: 4,
  outputs: 1,
  range: (start, end, [x, scale, inv, zp], [out], p) => {
    const [xf, sf, invf, outF] = [x, scale, inv, out].map(asF32);
    const values = p[0] === 1, qmin = p[1] | 0, qmax = p[2], channels = p[4], inner = p[5], mode = p[6];
    const stride = p[11], run = p[12];
    for (let i = start; i < end; i++) {
      const c = blockOf(i, inner, stride) % channels, s = scale[c], z = zp[c];
      const rand = mode === 2 ? randomWord(p[7], p[8], p[9], p[10], drawIndex(i, stride, run)) : 0;
      let q: number;
      if (!ordinaryScale(s, inv[c])) {
        q = intCodeOf(x[i], s, inv[c], z, qmin, qmax, mode, rand);
        out[i] = values ? intValueBits(q, z, s) : (q & p[3]) >>> 0;
        continue;
      }
      // fround of an f32 product is the correctly rounded product (exact in f64): f32MulBits' bits, faster.
      const v = fr(xf[i] * invf[c]);
      q = Math.min(qmax, Math.max(qmin, (mode === 0 ? nearestEven(v) : roundToInt(f32Bits(v), mode, rand)) + z));
      if (values) outF[i] = fr((q - z) * sf[c]);
      else out[i] = (q & p[3]) >>> 0;
    }
  },
  wgslHelpers: INT_WGSL,
  wgsl: `  let c = scale_of(i, Q(4u), Q(5u), Q(11u));
  var rand = 0u;
  if (Q(6u) == 2u) { rand = philox_word(Q(7u), Q(8u), Q(9u), Q(10u), draw_index(i, Q(11u), Q(12u))); }
  let zp = i32(in3[c]);
  let q = int_code_of(in0[i], in1[c], in2[c], zp, bitcast<i32>(Q(1u)), i32(Q(2u)), Q(6u), rand);
  if (Q(0u) == 1u) { out0[i] = int_value_bits(q, zp, in1[c]); } else { out0[i] = bitcast<u32>(q) & Q(3u); }`,
});

/** Values of stored codes. Params: [signed, bits, channels, inner, stride]. */
const INT_DEQUANT_KERNEL: WordKernel = {
  name: "lowp_int_dequant",
  inputs: 3,
  outputs: 1,
  cpu: (i, [codes, scale, zp], [out], p) => {
    const c = blockOf(i, p[3], p[4]) % p[2];
    const q = p[0] === 1 ? (codes[i] << (32 - p[1])) >> (32 - p[1]) : codes[i];
    out[i] = intValueBits(q, zp[c], scale[c]);
  },
  wgslHelpers: INT_WGSL,
  wgsl: `  let c = scale_of(i, Q(2u), Q(3u), Q(4u));
  var q = i32(in0[i]);
  if (Q(0u) == 1u) { q = bitcast<i32>(in0[i] << (32u - Q(1u))) >> (32u - Q(1u)); }
  out0[i] = int_value_bits(q, i32(in2[c]), in1[c]);`,
};

/** Scales on the backend: one per channel of a layout. */
export interface ScaleSet {
  /** Scales (f32 bits). */
  readonly scale: Storage;
  /** Their reciprocals (f32 bits). */
  readonly inv: Storage;
  /** Zero points (u32; 0 for symmetric formats). */
  readonly zp: Storage;
}

/** INT-k scales of the f32 bits in `x` for every group of `layout`. */
export function intScales(backend: Backend, x: Storage, layout: Layout, spec: IntSpec): ScaleSet {
  const r = reduceRanges(backend, x, layout);
  const out = [backend.alloc(layout.channels), backend.alloc(layout.channels), backend.alloc(layout.channels)];
  const params = [spec.signed ? 1 : 0, intRange(spec)[1], levelsRecipBits(spec)];
  backend.runWords(INT_SCALE_KERNEL, [r.hi, r.lo, r.amax], out, layout.channels, params);
  freeAll(backend, r.hi, r.lo, r.amax);
  return { scale: out[0], inv: out[1], zp: out[2] };
}

/** Codes (`emit` = "codes", k low bits) or values (`emit` = "values", f32 bits) of x under `scales`. */
export function applyIntScales(
  backend: Backend,
  x: Storage,
  layout: Layout,
  scales: ScaleSet,
  spec: IntSpec,
  opts: QuantizeOptions,
  emit: "codes" | "values",
): Storage {
  const [qmin, qmax] = intRange(spec);
  if (emit === "values" && layout.channels === 1 && layout.stride === 1) {
    const fused = hostIntGiven(backend, x, layout.n, oneScale(scales), [qmin, qmax], opts);
    if (fused) return fused;
  }
  const out = backend.alloc(layout.n);
  const params = [
    emit === "values" ? 1 : 0,
    qmin >>> 0,
    qmax,
    2 ** spec.bits - 1,
    layout.channels,
    layout.inner,
    ...roundingParams(opts),
    layout.stride,
    layout.run,
  ];
  backend.runWords(INT_ELEMENT_KERNEL, [x, scales.scale, scales.inv, scales.zp], [out], layout.n, params);
  return out;
}

/**
 * The words of a single scale when the host can read them (the CPU backend) and they are ordinary: scale finite
 * and not 0, 1/scale finite. Else null: the word kernels handle the special cases.
 */
function oneScale(scales: ScaleSet): { scale: number; inv: number; zp: number } | null {
  if (!(scales.scale instanceof CpuStorage && scales.inv instanceof CpuStorage && scales.zp instanceof CpuStorage)) {
    return null;
  }
  const scale = scales.scale.u32[0], inv = scales.inv.u32[0];
  return ordinaryScale(scale, inv) ? { scale, inv, zp: scales.zp.u32[0] } : null;
}

/** f32 bits of stored codes under scales and zero points. */
export function dequantIntCodes(
  backend: Backend,
  codes: Storage,
  layout: Layout,
  scale: Storage,
  zp: Storage,
  spec: IntSpec,
): Storage {
  const out = backend.alloc(layout.n);
  const params = [spec.signed ? 1 : 0, spec.bits, layout.channels, layout.inner, layout.stride];
  backend.runWords(INT_DEQUANT_KERNEL, [codes, scale, zp], [out], layout.n, params);
  return out;
}

/** The {@link IntSpec} of `int2` … `int8` or `uint2` … `uint8`, or null. */
export function parseIntFormat(name: string): IntSpec | null {
  const m = /^(u?)int([2-8])$/.exec(name);
  return m ? { name, bits: Number(m[2]), signed: m[1] === "" } : null;
}

/** Throws unless `x` is a float tensor. */
export function requireF32(x: Tensor, what: string): void {
  if (x.dtype !== "f32") throw new Error(`${what}: expects an f32 tensor, got ${x.describe()}`);
}

/**
 * The INT-k quantizer `name` (`int2` … `int8`, `uint2` … `uint8`), or null.
 * Parts: `codes` (k bits; two's complement in the low k bits for `intK`),
 * `scales` (f32 bits, shape of the scales: [1], [channels] or, for
 * `group:G` along axis a, the shape with `shape[a]` divided by G, row-major),
 * and `zero_points` (`uintK` only, shaped as the scales). `meta.granularity`
 * is the granularity's text, `meta.axis` the non-negative axis groups run
 * along (group granularity only).
 */
export function intQuantizer(name: string): Quantizer | null {
  const spec = parseIntFormat(name);
  if (!spec) return null;
  const run = (x: Tensor, opts: QuantizeOptions, emit: "codes" | "values") => {
    requireF32(x, name);
    const granularity = opts.granularity ?? { kind: "tensor" };
    const layout = layoutOf(x.shape, granularity, name, opts.axis);
    const scales = intScales(x.backend, x.storage, layout, spec);
    const out = applyIntScales(x.backend, x.storage, layout, scales, spec, opts, emit);
    return { layout, scales, out, granularity };
  };
  /** The fused host kernel's result, or null where it does not apply (see host_quant.ts). */
  const fusedQuantDequant = (x: Tensor, opts: QuantizeOptions) => {
    requireF32(x, name);
    roundingParams(opts); // the same errors as the word kernels' path
    const layout = layoutOf(x.shape, opts.granularity ?? { kind: "tensor" }, name, opts.axis);
    return hostInt(x, layout, spec.signed, levelsRecipBits(spec), intRange(spec), opts);
  };
  return {
    name,
    elementBits: spec.bits,
    blockSize: null,
    quantDequant(x, opts = {}) {
      const fused = fusedQuantDequant(x, opts);
      if (fused) return fused;
      const { scales, out } = run(x, opts, "values");
      freeAll(x.backend, scales.scale, scales.inv, scales.zp);
      return new Tensor(x.backend, out, x.shape, "f32");
    },
    quantize(x, opts = {}): Quantized {
      const { layout, scales, out, granularity } = run(x, opts, "codes");
      const b = x.backend;
      const parts = [
        { name: "codes", codes: new Tensor(b, out, x.shape, "u32"), bits: spec.bits, format: name },
        { name: "scales", codes: new Tensor(b, scales.scale, layout.scaleShape, "u32"), bits: 32, format: "f32" },
      ];
      if (!spec.signed) {
        parts.push({
          name: "zero_points",
          codes: new Tensor(b, scales.zp, layout.scaleShape, "u32"),
          bits: spec.bits,
          format: `uint${spec.bits}`,
        });
      }
      freeAll(b, scales.inv, spec.signed ? scales.zp : null);
      const meta: Record<string, string | number> = { granularity: granularityText(granularity) };
      if (granularity.kind === "group") meta.axis = resolveAxis(name, x.shape, opts.axis);
      return { format: name, shape: x.shape, parts, meta };
    },
    dequantize(q) {
      const codes = partOf(q, "codes"), scales = partOf(q, "scales");
      const granularity = parseGranularity(String(q.meta.granularity ?? "tensor"));
      const axis = q.meta.axis === undefined ? undefined : Number(q.meta.axis);
      const layout = layoutOf(q.shape, granularity, name, axis);
      const b = codes.backend;
      const zp = spec.signed ? b.upload(new Uint32Array(layout.channels)) : partOf(q, "zero_points").storage;
      const out = dequantIntCodes(b, codes.storage, layout, scales.storage, zp, spec);
      if (spec.signed) b.free(zp);
      return new Tensor(b, out, q.shape, "f32");
    },
  };
}

/** The tensor of part `name` of `q`; throws naming the format when missing. */
export function partOf(q: Quantized, name: string): Tensor {
  const part = q.parts.find((p) => p.name === name);
  if (!part) throw new Error(`${q.format}: quantized tensor has no '${name}' part`);
  return part.codes;
}

// For kernels that fetch the codes their own way (formats/quant_tensor.ts reads them bit-packed).
export { INT_WGSL };
