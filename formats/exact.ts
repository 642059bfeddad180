/**
 * Correctly rounded f32 multiplication and reciprocal on integer bits, in
 * TypeScript and WGSL. Scaled formats need `x · (1/s)` and `q · s`; WGSL
 * allows 2.5 ulp for division and lets a GPU flush subnormals, so doing these
 * on integers is what makes CPU and WebGPU agree bit for bit. Results are IEEE
 * round-to-nearest-even, subnormals included (checked against `Math.fround`
 * in the tests).
 *
 * @module
 */

const QNAN = 0x7fc00000;
const INF = 0x7f800000;

/**
 * Rounds (keep + fraction)·2^(e - 23) to f32 bits, with keep in [2^23, 2^24)
 * and the fraction given by its first dropped bit (`guard`) and whether any
 * later bit is set (`sticky`). One rounding, also for subnormal results.
 */
function roundPack(sign: number, keep: number, e: number, guard: number, sticky: boolean): number {
  if (e > 127) return (INF | sign) >>> 0;
  if (e >= -126) {
    if (guard && (sticky || (keep & 1))) keep++;
    if (keep === 0x1000000) {
      keep = 0x800000;
      e++;
      if (e > 127) return (INF | sign) >>> 0;
    }
    return (sign | ((e + 127) << 23) | (keep & 0x7fffff)) >>> 0;
  }
  const d = -126 - e; // extra right shift into the subnormal range
  if (d > 24) return sign >>> 0;
  const g = (keep >>> (d - 1)) & 1;
  const s = (keep & ((1 << (d - 1)) - 1)) !== 0 || guard !== 0 || sticky;
  let k = keep >>> d;
  if (g && (s || (k & 1))) k++;
  return (sign | k) >>> 0;
}

/** Significand in [2^23, 2^24) and exponent with value = sig · 2^exp, for a finite non-zero magnitude. */
function unpack(mag: number): [number, number] {
  const ef = mag >>> 23;
  if (ef !== 0) return [(mag & 0x7fffff) | 0x800000, ef - 150];
  const lead = Math.clz32(mag) - 8; // shift that brings the top bit to position 23
  return [(mag << lead) >>> 0, -149 - lead];
}

/** Bits of the correctly rounded f32 product a·b (inputs and result as f32 bits). */
export function f32MulBits(a: number, b: number): number {
  const sign = ((a ^ b) & 0x80000000) >>> 0;
  const ma = (a & 0x7fffffff) >>> 0, mb = (b & 0x7fffffff) >>> 0;
  if (ma > INF || mb > INF) return QNAN;
  if (ma === INF || mb === INF) return ma === 0 || mb === 0 ? QNAN : (INF | sign) >>> 0;
  if (ma === 0 || mb === 0) return sign;
  const [sa, ea] = unpack(ma), [sb, eb] = unpack(mb);
  // 24x24-bit product from 12-bit pieces: P = high·2^24 + low, every partial fits 32 bits.
  const a1 = sa >>> 12, a0 = sa & 0xfff, b1 = sb >>> 12, b0 = sb & 0xfff;
  const mid = a1 * b0 + a0 * b1;
  const lowSum = a0 * b0 + ((mid & 0xfff) << 12);
  const low = lowSum & 0xffffff;
  const high = a1 * b1 + (mid >>> 12) + (lowSum >>> 24);
  const e = ea + eb + 46; // unbiased exponent of P's bit 47 position... adjusted below
  if (high >= 0x800000) return roundPack(sign, high, e + 1, low >>> 23, (low & 0x7fffff) !== 0);
  return roundPack(sign, ((high << 1) | (low >>> 23)) >>> 0, e, (low >>> 22) & 1, (low & 0x3fffff) !== 0);
}

/** Bits of the correctly rounded f32 reciprocal 1/a. */
export function f32RecipBits(a: number): number {
  const sign = (a & 0x80000000) >>> 0;
  const m = (a & 0x7fffffff) >>> 0;
  if (m > INF) return QNAN;
  if (m === INF) return sign;
  if (m === 0) return (INF | sign) >>> 0;
  const [sig, exp] = unpack(m);
  if (sig === 0x800000) return roundPack(sign, 0x800000, -exp - 23, 0, false); // a power of two: exact
  // q = floor(2^47 / sig) by restoring division, one quotient bit per step; then a guard bit and the remainder.
  let rem = 0x800000, q = 0;
  for (let i = 0; i < 24; i++) {
    rem *= 2;
    q = q * 2;
    if (rem >= sig) {
      rem -= sig;
      q += 1;
    }
  }
  rem *= 2;
  const guard = rem >= sig ? 1 : 0;
  if (guard) rem -= sig;
  // 1/a = (2^47/sig)·2^(-47-exp) with q ∈ [2^23, 2^24) since 2^23 < sig < 2^24.
  return roundPack(sign, q, -exp - 24, guard, rem !== 0);
}

/** WGSL twins: `f32_mul_bits(a, b)` and `f32_recip_bits(a)`, line for line with the TypeScript. */
export const EXACT_WGSL = /* wgsl */ `
fn round_pack(sign: u32, keep_in: u32, e_in: i32, guard: u32, sticky: bool) -> u32 {
  var keep = keep_in; var e = e_in;
  if (e > 127) { return 0x7f800000u | sign; }
  if (e >= -126) {
    if (guard != 0u && (sticky || (keep & 1u) != 0u)) { keep = keep + 1u; }
    if (keep == 0x1000000u) { keep = 0x800000u; e = e + 1; if (e > 127) { return 0x7f800000u | sign; } }
    return sign | (u32(e + 127) << 23u) | (keep & 0x7fffffu);
  }
  let d = -126 - e;
  if (d > 24) { return sign; }
  let g = (keep >> u32(d - 1)) & 1u;
  let s = (keep & ((1u << u32(d - 1)) - 1u)) != 0u || guard != 0u || sticky;
  var k = keep >> u32(d);
  if (g != 0u && (s || (k & 1u) != 0u)) { k = k + 1u; }
  return sign | k;
}
fn unpack_sig(mag: u32) -> vec2<i32> {
  let ef = mag >> 23u;
  if (ef != 0u) { return vec2<i32>(i32((mag & 0x7fffffu) | 0x800000u), i32(ef) - 150); }
  let lead = i32(countLeadingZeros(mag)) - 8;
  return vec2<i32>(i32(mag << u32(lead)), -149 - lead);
}
fn f32_mul_bits(a: u32, b: u32) -> u32 {
  let sign = (a ^ b) & 0x80000000u;
  let ma = a & 0x7fffffffu; let mb = b & 0x7fffffffu;
  if (ma > 0x7f800000u || mb > 0x7f800000u) { return 0x7fc00000u; }
  if (ma == 0x7f800000u || mb == 0x7f800000u) {
    if (ma == 0u || mb == 0u) { return 0x7fc00000u; }
    return 0x7f800000u | sign;
  }
  if (ma == 0u || mb == 0u) { return sign; }
  let ua = unpack_sig(ma); let ub = unpack_sig(mb);
  let sa = u32(ua.x); let sb = u32(ub.x);
  let a1 = sa >> 12u; let a0 = sa & 0xfffu; let b1 = sb >> 12u; let b0 = sb & 0xfffu;
  let mid = a1 * b0 + a0 * b1;
  let low_sum = a0 * b0 + ((mid & 0xfffu) << 12u);
  let low = low_sum & 0xffffffu;
  let high = a1 * b1 + (mid >> 12u) + (low_sum >> 24u);
  let e = ua.y + ub.y + 46;
  if (high >= 0x800000u) { return round_pack(sign, high, e + 1, low >> 23u, (low & 0x7fffffu) != 0u); }
  return round_pack(sign, (high << 1u) | (low >> 23u), e, (low >> 22u) & 1u, (low & 0x3fffffu) != 0u);
}
fn f32_recip_bits(a: u32) -> u32 {
  let sign = a & 0x80000000u;
  let m = a & 0x7fffffffu;
  if (m > 0x7f800000u) { return 0x7fc00000u; }
  if (m == 0x7f800000u) { return sign; }
  if (m == 0u) { return 0x7f800000u | sign; }
  let u = unpack_sig(m);
  let sig = u32(u.x);
  if (sig == 0x800000u) { return round_pack(sign, 0x800000u, -u.y - 23, 0u, false); }
  var rem = 0x800000u; var q = 0u;
  for (var i = 0; i < 24; i++) {
    rem = rem * 2u; q = q * 2u;
    if (rem >= sig) { rem = rem - sig; q = q + 1u; }
  }
  rem = rem * 2u;
  var guard = 0u;
  if (rem >= sig) { guard = 1u; rem = rem - sig; }
  return round_pack(sign, q, -u.y - 24, guard, rem != 0u);
}
`;
