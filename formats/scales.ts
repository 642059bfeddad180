/**
 * Scale formats of the block formats, with encode/decode on f32 bits in
 * TypeScript and WGSL ({@link SCALES_WGSL}):
 *
 * - `e8m0`: OCP Microscaling Formats (MX) v1.0 scale format: 8 exponent bits, no
 *   sign, no mantissa, value 2^(e-127); 0xFF is NaN; there is no zero (code 0
 *   is 2^-127, an f32 subnormal).
 * - `ue4m3`: the NVFP4 block scale: OFP8 E4M3 ("E4M3FN") stored with sign 0
 *   (codes 0x00-0x7F; 0x7E = 448 is the largest, 0x7F is NaN).
 * - `ue5m3`: unsigned, 5 exponent and 3 mantissa bits, proposed as an FP4 block
 *   scale (FP4 design-space paper, arXiv 2509.17791; also "Is Finer Better?",
 *   arXiv 2601.19026). Bias and specials are not standardised. Chosen here:
 *   bias 15 (IEEE-style 2^(5-1) - 1), subnormals, no infinities, only the
 *   all-ones code 0xFF is NaN (as E4M3FN), so the largest value is 0xFE =
 *   2^16 · 1.75 = 114688 and the smallest 0x01 = 2^-17.
 *
 * The two float-like scales reuse the element code conversion of
 * `element.ts` (`encodeBits`/`decodeBits` and their WGSL twins): they are
 * float formats whose sign bit is always 0.
 *
 * @module
 */
import {
  codeWords,
  decodeBits,
  ELEMENT_FORMATS,
  encodeBits,
  type FloatFormat,
  floatFormat,
  type QuantParams,
  quantParams,
} from "./element.ts";

/** Names of the scale formats. */
export type ScaleFormatName = "e8m0" | "ue4m3" | "ue5m3";

/** A block-scale format: 8-bit codes of non-negative values. */
export interface ScaleFormat {
  /** Canonical name. */
  readonly name: ScaleFormatName;
  /** Bits of one code (8 for all three). */
  readonly bits: number;
  /** Which branch of `scale_encode`/`scale_decode` in {@link SCALES_WGSL} handles it (0 e8m0, 1 ue4m3, 2 ue5m3). */
  readonly kind: number;
  /** Float layout (exponent/mantissa fields, bias) of `ue4m3`/`ue5m3`; null for E8M0, a bare exponent. */
  readonly float: FloatFormat | null;
  /** f32 bits of the largest finite scale. */
  readonly maxBits: number;
  /** f32 bits of the smallest positive scale. */
  readonly minBits: number;
  /** The NaN code. */
  readonly nanCode: number;
}

const QNAN = 0x7fc00000;
const INF = 0x7f800000;

/** UE5M3 as a float format: bias 15, no infinities, all-ones NaN (the choice documented in the module doc). */
const UE5M3_FLOAT: FloatFormat = floatFormat("ue5m3", 5, 3, "fn");

function floatScale(name: ScaleFormatName, kind: number, f: FloatFormat): ScaleFormat {
  const q = quantParams(f, true);
  const minBits = decodeBits(1, f);
  return { name, bits: 8, kind, float: f, maxBits: q.maxBits, minBits, nanCode: encodeBits(QNAN, f) };
}

/** The scale formats by name. */
export const SCALE_FORMATS: Readonly<Record<ScaleFormatName, ScaleFormat>> = {
  e8m0: { name: "e8m0", bits: 8, kind: 0, float: null, maxBits: 254 << 23, minBits: 0x00400000, nanCode: 0xff },
  ue4m3: floatScale("ue4m3", 1, ELEMENT_FORMATS.e4m3),
  ue5m3: floatScale("ue5m3", 2, UE5M3_FLOAT),
};

/** The scale format called `name`, or null. */
export function parseScaleFormat(name: string): ScaleFormat | null {
  return Object.hasOwn(SCALE_FORMATS, name) ? SCALE_FORMATS[name as ScaleFormatName] : null;
}

/**
 * f32 bits of 2^e for an E8M0 exponent e in [-127, 127] (2^-127 is the f32
 * subnormal 0x00400000). Built from bits, so no float arithmetic is involved.
 */
export function pow2Bits(e: number): number {
  return e === -127 ? 0x00400000 : ((e + 127) << 23) >>> 0;
}

/**
 * The code of the f32 (bits) `v` in scale format `f`; the sign is ignored
 * (scales are magnitudes). Exact for representable values. E8M0 takes
 * floor(log2 |v|) clamped to [-127, 127] (so 0 and values below 2^-127 give
 * code 0, as MX clamps scales), and NaN or Inf give 0xFF. For `ue4m3`/`ue5m3`
 * round first (see {@link scaleQuantParams}); NaN gives the NaN code.
 */
export function encodeScaleBits(v: number, f: ScaleFormat): number {
  const mag = (v & 0x7fffffff) >>> 0;
  if (f.float) return encodeBits(mag, f.float);
  if (mag >= INF) return 0xff;
  return mag >>> 23; // the f32 exponent field is e + 127; subnormals and zero clamp to code 0
}

/** f32 bits of scale code `c` of format `f` (NaN codes give the canonical NaN 0x7fc00000). */
export function decodeScaleBits(c: number, f: ScaleFormat): number {
  if (f.float) return decodeBits(c, f.float);
  if (c === 0xff) return QNAN;
  return c === 0 ? 0x00400000 : (c << 23) >>> 0;
}

/**
 * How to round an f32 to a float-like scale format: RNE, saturating to the
 * largest finite value (NVFP4 clamps the block scale to 448 before the cast).
 * Use with `quantizeBits` on a non-negative input. E8M0 scales are chosen by
 * the MX rules instead, so it has none.
 */
export function scaleQuantParams(f: ScaleFormat): QuantParams {
  if (!f.float) throw new Error(`${f.name}: a bare exponent scale is chosen by the MX rules, not rounded`);
  return quantParams(f.float, true);
}

/** WGSL literals `E, M, bias, emin` (then `specials` when decoding) of a float-like scale, as `CODES_WGSL` takes them. */
function codeArgs(f: ScaleFormat, decode = false): string {
  const [ebits, mbits, , , specials] = codeWords(f.float!);
  const args = `${ebits}u, ${mbits}u, ${f.float!.bias}, ${f.float!.emin}`;
  return decode ? `${args}, ${specials}u` : args;
}

/**
 * WGSL twins of {@link pow2Bits}, {@link encodeScaleBits} and
 * {@link decodeScaleBits}: `pow2_bits(e)`, `scale_encode(v, kind)`,
 * `scale_decode(c, kind)` with kind = {@link ScaleFormat.kind}. Needs
 * `ELEMENT_WGSL` and `CODES_WGSL` from `element.ts` (for `encode_bits`,
 * `decode_bits`).
 */
export const SCALES_WGSL = /* wgsl */ `
fn pow2_bits(e: i32) -> u32 {
  if (e == -127) { return 0x00400000u; }
  return u32(e + 127) << 23u;
}
fn scale_encode(v: u32, kind: u32) -> u32 {
  let mag = v & 0x7fffffffu;
  if (kind == 1u) { return encode_bits(mag, ${codeArgs(SCALE_FORMATS.ue4m3)}); }
  if (kind == 2u) { return encode_bits(mag, ${codeArgs(SCALE_FORMATS.ue5m3)}); }
  if (mag >= 0x7f800000u) { return 0xffu; }
  return mag >> 23u;
}
fn scale_decode(c: u32, kind: u32) -> u32 {
  if (kind == 1u) { return decode_bits(c, ${codeArgs(SCALE_FORMATS.ue4m3, true)}); }
  if (kind == 2u) { return decode_bits(c, ${codeArgs(SCALE_FORMATS.ue5m3, true)}); }
  if (c == 0xffu) { return 0x7fc00000u; }
  if (c == 0u) { return 0x00400000u; }
  return c << 23u;
}
`;
