/**
 * Philox-4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3",
 * SC'11; Random123), written twice: in TypeScript and in WGSL. Both produce the
 * same 32-bit words for the same (key, counter), so every backend draws the
 * same random numbers. Known-answer vectors from Random123's `kat_vectors` are
 * checked in the tests.
 *
 * Stream layout used across the project: key = (seed, stream); the i-th
 * 32-bit word of a draw starting at `offset` comes from counter
 * `((offset + i) >> 2)` split into (low 32 bits, high 32 bits, 0, 0), lane
 * `(offset + i) & 3`.
 *
 * @module
 */

// Multipliers and Weyl key increments from Random123 (philox.h).
const M0 = 0xD2511F53;
const M1 = 0xCD9E8D57;
const W0 = 0x9E3779B9;
const W1 = 0xBB67AE85;

/** High 32 bits of the 64-bit product of two u32 (exact, via 16-bit halves). */
function mulhi(a: number, b: number): number {
  const aLo = a & 0xffff, aHi = a >>> 16, bLo = b & 0xffff, bHi = b >>> 16;
  const loLo = aLo * bLo, loHi = aLo * bHi, hiLo = aHi * bLo, hiHi = aHi * bHi;
  const cross = (loLo >>> 16) + (loHi & 0xffff) + (hiLo & 0xffff);
  return (hiHi + (loHi >>> 16) + (hiLo >>> 16) + (cross >>> 16)) >>> 0;
}

/**
 * One Philox-4x32-10 block: four u32 words from a 4-word counter and 2-word key.
 *
 * @example
 * ```ts
 * import { philox4x32 } from "@lowp/kernels";
 * const words = philox4x32([0, 0, 0, 0], [0, 0]);
 * console.assert(words[0] === 0x6627e8d5);
 * ```
 */
export function philox4x32(counter: readonly number[], key: readonly number[]): Uint32Array {
  let c0 = counter[0] >>> 0, c1 = counter[1] >>> 0, c2 = counter[2] >>> 0, c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

/** Fills `out` with consecutive Philox words of stream (seed, stream) starting at word `offset`. */
export function philoxWords(out: Uint32Array, seed: number, stream: number, offset: number): Uint32Array {
  const key = [seed >>> 0, stream >>> 0];
  let block: Uint32Array | null = null;
  let blockIndex = -1;
  for (let i = 0; i < out.length; i++) {
    const word = offset + i;
    const b = Math.floor(word / 4);
    if (b !== blockIndex) {
      block = philox4x32([b >>> 0, Math.floor(b / 4294967296) >>> 0, 0, 0], key);
      blockIndex = b;
    }
    out[i] = block![word & 3];
  }
  return out;
}

/** Maps a u32 word to a float in [0, 1) using its top 24 bits (exact in f32). */
export function wordToUniform(word: number): number {
  return (word >>> 8) * 5.9604644775390625e-8; // 2^-24
}

/**
 * WGSL twin of {@link philox4x32} and the word/uniform helpers. Include it in a
 * shader and call `philox_word(seed, stream, offset_lo, offset_hi, i)`.
 */
export const PHILOX_WGSL = /* wgsl */ `
fn philox_mulhi(a: u32, b: u32) -> u32 {
  let a_lo = a & 0xffffu; let a_hi = a >> 16u;
  let b_lo = b & 0xffffu; let b_hi = b >> 16u;
  let lo_lo = a_lo * b_lo; let lo_hi = a_lo * b_hi;
  let hi_lo = a_hi * b_lo; let hi_hi = a_hi * b_hi;
  let cross = (lo_lo >> 16u) + (lo_hi & 0xffffu) + (hi_lo & 0xffffu);
  return hi_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (cross >> 16u);
}
fn philox4x32(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
  var c = ctr_in; var k = key_in;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u); }
    let hi0 = philox_mulhi(0xD2511F53u, c.x); let lo0 = 0xD2511F53u * c.x;
    let hi1 = philox_mulhi(0xCD9E8D57u, c.z); let lo1 = 0xCD9E8D57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}
// Word (offset + i) of stream (seed, stream); offset = offset_lo + 2^32 * offset_hi.
fn philox_word(seed: u32, stream: u32, offset_lo: u32, offset_hi: u32, i: u32) -> u32 {
  let lo = offset_lo + i;
  let hi = offset_hi + select(0u, 1u, lo < offset_lo);
  let block = vec4<u32>((lo >> 2u) | (hi << 30u), hi >> 2u, 0u, 0u);
  let words = philox4x32(block, vec2<u32>(seed, stream));
  return words[lo & 3u];
}
fn philox_uniform(word: u32) -> f32 { return f32(word >> 8u) * 5.9604644775390625e-8; }
`;
