/**
 * Floating-point element formats (sign + E exponent bits + M mantissa bits) as
 * data, and their exact conversion from f32, written on the integer bits of
 * the input so the TypeScript reference and the WGSL twin
 * ({@link elementWgsl}) give the same bits on every backend: no float
 * arithmetic is involved, so neither flush-to-zero nor fused operations can
 * change a result.
 *
 * Constants: OCP 8-bit Floating Point Specification (OFP8) rev 1.0 (E4M3 =
 * "E4M3FN": no infinities, only S.1111.111 is NaN, max 448; E5M2: IEEE-like,
 * max 57344) and OCP Microscaling Formats (MX) v1.0 §5.3 (FP6 E2M3 max 7.5,
 * E3M2 max 28, FP4 E2M1 max 6; no infinities or NaN).
 *
 * @module
 */

/** Which codes are special: `ieee` (top exponent = Inf/NaN), `fn` (only all-ones = NaN), `none`. */
export type Specials = "ieee" | "fn" | "none";

/** A floating-point element format. */
export interface FloatFormat {
  /** Always "float". */
  readonly kind: "float";
  /** Canonical name, e.g. "e4m3". */
  readonly name: string;
  /** Exponent bits E (1 to 8). */
  readonly ebits: number;
  /** Mantissa bits M (0 to 23). */
  readonly mbits: number;
  /** Exponent bias 2^(E-1) - 1. */
  readonly bias: number;
  /** Special-value policy. */
  readonly specials: Specials;
  /** Total bits including the sign. */
  readonly bits: number;
  /** Unbiased exponent of the smallest normal: 1 - bias. */
  readonly emin: number;
  /** Unbiased exponent of the largest normal. */
  readonly emax: number;
  /** Largest finite magnitude. */
  readonly maxNormal: number;
  /** Smallest normal magnitude. */
  readonly minNormal: number;
  /** Smallest subnormal magnitude (0 when M = 0). */
  readonly minSubnormal: number;
}

/** Builds a format record from its parameters. */
export function floatFormat(name: string, ebits: number, mbits: number, specials: Specials): FloatFormat {
  if (!Number.isInteger(ebits) || ebits < 1 || ebits > 8 || !Number.isInteger(mbits) || mbits < 0 || mbits > 23) {
    throw new Error(`format '${name}': need 1 <= E <= 8 and 0 <= M <= 23, got E=${ebits} M=${mbits}`);
  }
  // "fn" reserves the all-ones mantissa of the top exponent for NaN: with no mantissa bits nothing finite is left there.
  if (specials === "fn" && mbits < 1) throw new Error(`format '${name}': an fn format needs at least one mantissa bit`);
  const bias = 2 ** (ebits - 1) - 1;
  const topExponentField = 2 ** ebits - 1;
  // IEEE reserves the top exponent; E4M3FN-like formats reserve only the all-ones mantissa under it.
  const emax = (specials === "ieee" ? topExponentField - 1 : topExponentField) - bias;
  const topMantissa = specials === "fn" ? 2 ** mbits - 2 : 2 ** mbits - 1;
  const maxNormal = 2 ** emax * (1 + topMantissa / 2 ** mbits);
  const emin = 1 - bias;
  return {
    kind: "float",
    name,
    ebits,
    mbits,
    bias,
    specials,
    bits: 1 + ebits + mbits,
    emin,
    emax,
    maxNormal,
    minNormal: 2 ** emin,
    minSubnormal: mbits > 0 ? 2 ** (emin - mbits) : 0,
  };
}

/** The named element formats (OCP OFP8 and MX v1.0 names). */
export const ELEMENT_FORMATS: Readonly<Record<string, FloatFormat>> = {
  e4m3: floatFormat("e4m3", 4, 3, "fn"), // OFP8 E4M3 ("E4M3FN"): max S.1111.110 = 448
  e5m2: floatFormat("e5m2", 5, 2, "ieee"), // OFP8 E5M2: max 57344, Inf S.11111.00
  e2m3: floatFormat("e2m3", 2, 3, "none"), // MX FP6 E2M3: max 7.5
  e3m2: floatFormat("e3m2", 3, 2, "none"), // MX FP6 E3M2: max 28
  e2m1: floatFormat("e2m1", 2, 1, "none"), // MX FP4 E2M1: max 6
};

/**
 * Parses an element format name: the named ones above, or `eXmY`
 * (1 ≤ X ≤ 8, 0 ≤ Y ≤ 23; IEEE-like Inf/NaN), `eXmYfn` (only all-ones is
 * NaN) or `eXmYnone` (no specials).
 */
export function parseFloatFormat(name: string): FloatFormat | null {
  const named = ELEMENT_FORMATS[name];
  if (named) return named;
  const m = /^e(\d)m(\d{1,2})(fn|none)?$/.exec(name);
  if (!m) return null;
  return floatFormat(name, Number(m[1]), Number(m[2]), (m[3] as Specials | undefined) ?? "ieee");
}

/** How a value between two representable neighbours is rounded. */
export type Rounding = "nearest" | "nearest-away" | "stochastic";

/** Conversion options. */
export interface ConvertOptions {
  /** `nearest` (ties to even, default), `nearest-away` (ties away from zero, as microxcaling's "nearest"), `stochastic`. */
  rounding?: Rounding;
  /** Clamp overflow to ±max (default true); false maps it to Inf (ieee) or NaN (fn); `none` formats always clamp. */
  saturate?: boolean;
}

/** Rounding modes as the integers the kernels use. */
export const ROUNDING_CODE: Readonly<Record<Rounding, number>> = { nearest: 0, "nearest-away": 1, stochastic: 2 };

/** f32 bit pattern of the largest finite value of `f`. */
export function maxBits(f: FloatFormat): number {
  const e = f.emax + 127;
  const topMantissa = f.specials === "fn" ? 2 ** f.mbits - 2 : 2 ** f.mbits - 1;
  return ((e << 23) | (topMantissa << (23 - f.mbits))) >>> 0;
}

const QNAN = 0x7fc00000;
const INF = 0x7f800000;

/**
 * What the quantizer needs to know of a format and overflow policy: the same
 * four words the WGSL `Fmt` holds (see {@link quantParams}).
 */
export interface QuantParams {
  /** Unbiased exponent of the smallest normal. */
  readonly emin: number;
  /** Mantissa bits. */
  readonly mbits: number;
  /** f32 bits of the largest finite value. */
  readonly maxBits: number;
  /** What overflow becomes: 0 = ±max, 1 = ±Inf, 2 = NaN. */
  readonly overflow: 0 | 1 | 2;
}

/** Whether `q` is E2M1 with saturation: {@link e2m1Nearest} applies to it. */
export function isSaturatingE2M1(q: QuantParams): boolean {
  return q.emin === 0 && q.mbits === 1 && q.maxBits === 0x40c00000 && q.overflow === 0;
}

/**
 * `quantizeBits(v, E2M1 saturating, nearest)` as a value, for a non-NaN `v` (f32): the E2M1 grid
 * {0, 0.5, 1, 1.5, 2, 3, 4, 6} with ties to the even code, ±6 beyond, the sign kept (−0 for small negatives).
 * The word kernels' bit-exact rounding costs tens of nanoseconds a value in JS; this is one comparison chain.
 */
export function e2m1Nearest(v: number): number {
  const a = Math.abs(v);
  const r = a <= 0.25
    ? 0
    : a < 0.75
    ? 0.5
    : a <= 1.25
    ? 1
    : a < 1.75
    ? 1.5
    : a <= 2.5
    ? 2
    : a < 3.5
    ? 3
    : a <= 5
    ? 4
    : 6;
  return v < 0 || Object.is(v, -0) ? -r : r;
}

/** The {@link QuantParams} of `f`: overflow saturates when `saturate` (always for formats without specials). */
export function quantParams(f: FloatFormat, saturate = true): QuantParams {
  const overflow = saturate || f.specials === "none" ? 0 : f.specials === "ieee" ? 1 : 2;
  return { emin: f.emin, mbits: f.mbits, maxBits: maxBits(f), overflow };
}

/** The four u32 words of `q` as kernels receive them (emin as i32 bits). */
export function quantWords(q: QuantParams): number[] {
  return [q.emin >>> 0, q.mbits, q.maxBits, q.overflow];
}

/** Reads {@link QuantParams} from kernel parameters k..k+3 (inverse of {@link quantWords}). */
export function quantParamsAt(p: Uint32Array, k: number): QuantParams {
  return { emin: p[k] | 0, mbits: p[k + 1], maxBits: p[k + 2], overflow: p[k + 3] as 0 | 1 | 2 };
}

/**
 * Rounds the f32 with bits `x` to the nearest value of the format `q` (as f32
 * bits). `mode` is a {@link ROUNDING_CODE}; `rand` is a uniform u32 used only
 * by stochastic rounding (round up with probability (x - lo)/(hi - lo),
 * resolved to 2^-32). NaN gives the canonical NaN 0x7fc00000; overflow
 * follows `q.overflow`. The sign is kept (also on zero).
 */
export function quantizeBits(x: number, q: QuantParams, mode: number, rand: number): number {
  const sign = (x & 0x80000000) >>> 0;
  const mag = (x & 0x7fffffff) >>> 0;
  if (mag > INF) return QNAN;
  const overflow = q.overflow === 0 ? (q.maxBits | sign) >>> 0 : q.overflow === 1 ? (INF | sign) >>> 0 : QNAN;
  if (mag === INF) return overflow;
  if (mag === 0) return sign;
  // value = sig · 2^exp with an integer significand.
  const ef = mag >>> 23;
  const sig = ef === 0 ? mag & 0x7fffff : (mag & 0x7fffff) | 0x800000;
  const exp = ef === 0 ? -149 : ef - 150;
  const log2 = ef === 0 ? 31 - Math.clz32(sig) - 149 : ef - 127;
  const qexp = Math.max(log2, q.emin) - q.mbits; // exponent of the target's quantum at this magnitude
  const shift = qexp - exp;
  let out = mag;
  if (shift > 0) {
    let keep = shift >= 32 ? 0 : sig >>> shift;
    const rest = shift >= 32 ? sig : (sig & ((1 << shift) - 1)) >>> 0; // the dropped bits, out of 2^shift
    let up = false;
    if (mode === 2) {
      // Round up iff rand < rest · 2^(32 - shift), i.e. with probability rest / 2^shift.
      const threshold = shift < 32
        ? rest * 2 ** (32 - shift)
        : shift === 32
        ? rest
        : shift < 56
        ? rest >>> (shift - 32)
        : 0;
      up = rand < threshold;
    } else if (shift <= 32) {
      const half = 2 ** (shift - 1);
      up = rest > half || (rest === half && (mode === 1 || (keep & 1) === 1));
    }
    if (up) keep++;
    out = bitsOf(keep, qexp);
  }
  if (out > q.maxBits) return overflow;
  return (out | sign) >>> 0;
}

/** f32 bits of keep · 2^e (exact: keep < 2^25 and the result lies in f32's range). */
function bitsOf(keep: number, e: number): number {
  if (keep === 0) return 0;
  const top = 31 - Math.clz32(keep);
  const eRes = e + top;
  if (eRes < -126) return (keep << (e + 149)) >>> 0; // f32 subnormal
  const mant = top <= 23 ? (keep << (23 - top)) & 0x7fffff : (keep >>> (top - 23)) & 0x7fffff;
  return (((eRes + 127) << 23) | mant) >>> 0;
}

/** The parts of a format that code conversion reads. */
export type CodeFormat = Pick<FloatFormat, "ebits" | "mbits" | "bias" | "emin" | "specials">;

/**
 * The code (sign in the top bit, above E + M bits) of a value already
 * representable in `f` (f32 bits). NaN becomes the all-ones code; a format
 * without NaN has none, so NaN is stored as ±max (`none`) or as ±Inf (IEEE-like
 * with M = 0): storing NaN in such a format loses it.
 */
export function encodeBits(v: number, f: CodeFormat): number {
  const signBit = (v >>> 31) * 2 ** (f.ebits + f.mbits);
  const mag = (v & 0x7fffffff) >>> 0;
  const topExp = 2 ** f.ebits - 1, mantMask = 2 ** f.mbits - 1;
  // NaN: all ones. A format without NaN has no code for it; all ones there means ±max (documented).
  if (mag > INF) return (signBit + ((topExp << f.mbits) | mantMask)) >>> 0;
  if (mag === INF) return (signBit + (topExp << f.mbits)) >>> 0;
  if (mag === 0) return signBit;
  const ef = mag >>> 23;
  const e = ef === 0 ? -126 : ef - 127;
  const full = ef === 0 ? mag & 0x7fffff : (mag & 0x7fffff) | 0x800000; // significand with hidden bit, 2^23 = 1.0
  // An f32 subnormal (ef = 0) is subnormal in the target too (emin >= -126).
  if (ef !== 0 && e >= f.emin) {
    return (signBit + (((e + f.bias) << f.mbits) | ((full >>> (23 - f.mbits)) & mantMask))) >>> 0;
  }
  // Subnormal in the target: mantissa = value / 2^(emin - M).
  return (signBit + (full >>> (23 - f.mbits + (f.emin - e)))) >>> 0;
}

/** f32 bits of the value of code `c` of format `f` (NaN codes give the canonical NaN 0x7fc00000). */
export function decodeBits(c: number, f: CodeFormat): number {
  const sign = ((c >>> (f.ebits + f.mbits)) & 1) << 31;
  const mantMask = 2 ** f.mbits - 1;
  const ef = (c >>> f.mbits) & (2 ** f.ebits - 1);
  const m = c & mantMask;
  const topExp = 2 ** f.ebits - 1;
  if (f.specials === "ieee" && ef === topExp) return m === 0 ? (INF | sign) >>> 0 : QNAN;
  if (f.specials === "fn" && ef === topExp && m === mantMask) return QNAN;
  if (ef === 0) return (bitsOf(m, f.emin - f.mbits) | sign) >>> 0;
  return (bitsOf(m | (1 << f.mbits), ef - f.bias - f.mbits) | sign) >>> 0;
}

/**
 * WGSL twin of {@link quantizeBits} (integer operations only), plus
 * `fmt_at(k)` to read a `Fmt` from kernel parameters k..k+3 (see
 * {@link quantWords}). Kept line for line parallel to the TypeScript.
 */
export const ELEMENT_WGSL = /* wgsl */ `
const QNAN: u32 = 0x7fc00000u;
const INF: u32 = 0x7f800000u;
struct Fmt { emin: i32, mbits: i32, max_bits: u32, overflow_kind: u32 }
fn fmt_at(k: u32) -> Fmt { return Fmt(bitcast<i32>(Q(k)), i32(Q(k + 1u)), Q(k + 2u), Q(k + 3u)); }
fn bits_of(keep: u32, e: i32) -> u32 {
  if (keep == 0u) { return 0u; }
  let top = 31 - i32(countLeadingZeros(keep));
  let e_res = e + top;
  if (e_res < -126) { return keep << u32(e + 149); }
  var mant: u32;
  if (top <= 23) { mant = (keep << u32(23 - top)) & 0x7fffffu; } else { mant = (keep >> u32(top - 23)) & 0x7fffffu; }
  return (u32(e_res + 127) << 23u) | mant;
}
fn quantize_bits(x: u32, f: Fmt, mode: u32, rand: u32) -> u32 {
  let sign = x & 0x80000000u;
  let mag = x & 0x7fffffffu;
  if (mag > INF) { return QNAN; }
  var overflow = QNAN;
  if (f.overflow_kind == 0u) { overflow = f.max_bits | sign; } else if (f.overflow_kind == 1u) { overflow = INF | sign; }
  if (mag == INF) { return overflow; }
  if (mag == 0u) { return sign; }
  let ef = i32(mag >> 23u);
  var sig = (mag & 0x7fffffu) | 0x800000u; var ex = ef - 150; var lg = ef - 127;
  if (ef == 0) { sig = mag & 0x7fffffu; ex = -149; lg = 31 - i32(countLeadingZeros(sig)) - 149; }
  let qexp = max(lg, f.emin) - f.mbits;
  let shift = qexp - ex;
  var out = mag;
  if (shift > 0) {
    var keep = 0u; var rest = sig;
    if (shift < 32) { keep = sig >> u32(shift); rest = sig & ((1u << u32(shift)) - 1u); }
    var up = false;
    if (mode == 2u) {
      var threshold = 0u;
      if (shift < 32) { threshold = rest << u32(32 - shift); } else if (shift == 32) { threshold = rest; } else if (shift < 56) { threshold = rest >> u32(shift - 32); }
      up = rand < threshold;
    } else if (shift <= 32) {
      let half = 1u << u32(shift - 1);
      up = rest > half || (rest == half && (mode == 1u || (keep & 1u) == 1u));
    }
    if (up) { keep = keep + 1u; }
    out = bits_of(keep, qexp);
  }
  if (out > f.max_bits) { return overflow; }
  return out | sign;
}
`;

/**
 * WGSL twins of {@link encodeBits} and {@link decodeBits}: `encode_bits(v, e, m, bias, emin)` and
 * `decode_bits(c, e, m, bias, emin, specials)` with specials 0 = ieee, 1 = fn, 2 = none. Needs `bits_of`
 * from {@link ELEMENT_WGSL}.
 */
export const CODES_WGSL = /* wgsl */ `
fn encode_bits(v: u32, ebits: u32, mbits: u32, bias: i32, emin: i32) -> u32 {
  let sign_bit = (v >> 31u) << (ebits + mbits);
  let mag = v & 0x7fffffffu;
  let top_exp = (1u << ebits) - 1u; let mant_mask = (1u << mbits) - 1u;
  if (mag > 0x7f800000u) { return sign_bit | (top_exp << mbits) | mant_mask; }
  if (mag == 0x7f800000u) { return sign_bit | (top_exp << mbits); }
  if (mag == 0u) { return sign_bit; }
  let ef = i32(mag >> 23u);
  var e = ef - 127; var full = (mag & 0x7fffffu) | 0x800000u;
  if (ef == 0) { e = -126; full = mag & 0x7fffffu; }
  if (ef != 0 && e >= emin) { return sign_bit | (u32(e + bias) << mbits) | ((full >> (23u - mbits)) & mant_mask); }
  return sign_bit | (full >> (23u - mbits + u32(emin - e)));
}
fn decode_bits(c: u32, ebits: u32, mbits: u32, bias: i32, emin: i32, specials: u32) -> u32 {
  let sign = ((c >> (ebits + mbits)) & 1u) << 31u;
  let mant_mask = (1u << mbits) - 1u;
  let ef = (c >> mbits) & ((1u << ebits) - 1u);
  let m = c & mant_mask;
  let top_exp = (1u << ebits) - 1u;
  if (specials == 0u && ef == top_exp) { if (m == 0u) { return 0x7f800000u | sign; } return 0x7fc00000u; }
  if (specials == 1u && ef == top_exp && m == mant_mask) { return 0x7fc00000u; }
  if (ef == 0u) { return bits_of(m, emin - i32(mbits)) | sign; }
  return bits_of(m | (1u << mbits), i32(ef) - bias - i32(mbits)) | sign;
}
`;

/** The five u32 words {@link CODES_WGSL} takes to describe `f`: E, M, bias, emin (i32 bits), specials code. */
export function codeWords(f: CodeFormat): number[] {
  return [f.ebits, f.mbits, f.bias >>> 0, f.emin >>> 0, f.specials === "ieee" ? 0 : f.specials === "fn" ? 1 : 2];
}

/** Reads the {@link CodeFormat} of {@link codeWords} at k (cached per parameter array and k: one call, one object). */
export function codeFormatAt(p: Uint32Array, k: number): CodeFormat {
  let byOffset = codeFormatCache.get(p);
  if (!byOffset) codeFormatCache.set(p, byOffset = new Map());
  let f = byOffset.get(k);
  if (!f) {
    const specials = p[k + 4] === 0 ? "ieee" : p[k + 4] === 1 ? "fn" : "none";
    f = { ebits: p[k], mbits: p[k + 1], bias: p[k + 2] | 0, emin: p[k + 3] | 0, specials };
    byOffset.set(k, f);
  }
  return f;
}
const codeFormatCache = new WeakMap<Uint32Array, Map<number, CodeFormat>>();
