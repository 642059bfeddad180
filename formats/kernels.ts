/**
 * Word kernels (see `WordKernel` in `@lowp/kernels`) for the element formats:
 * each written once in TypeScript and once in WGSL over the same integer
 * operations, so both backends produce the same bits.
 *
 * @module
 */
import { philox4x32, PHILOX_WGSL, rangeKernel, type WordKernel, type WordRange } from "@lowp/kernels";
import { ELEMENT_WGSL, quantizeBits, quantParamsAt } from "./element.ts";

/** The Philox word for element `i` of a draw keyed (seed, stream) starting at word offset lo + 2^32·hi. */
export function randomWord(seed: number, stream: number, lo: number, hi: number, i: number): number {
  const word = lo + hi * 4294967296 + i;
  const block = Math.floor(word / 4);
  // Kernels walk words in order: one Philox call serves four consecutive words.
  if (block !== cached.block || seed !== cached.seed || stream !== cached.stream) {
    cached.words = philox4x32([block >>> 0, Math.floor(block / 4294967296) >>> 0, 0, 0], [seed, stream]);
    cached.block = block;
    cached.seed = seed;
    cached.stream = stream;
  }
  return cached.words[word % 4];
}

const cached: { block: number; seed: number; stream: number; words: Uint32Array } = {
  block: -1,
  seed: 0,
  stream: 0,
  words: new Uint32Array(4),
};

const elementRange: WordRange = (start, end, [x], [out], p) => {
  const q = quantParamsAt(p, 0), mode = p[4];
  for (let i = start; i < end; i++) {
    out[i] = quantizeBits(x[i], q, mode, mode === 2 ? randomWord(p[5], p[6], p[7], p[8], i) : 0);
  }
};

/**
 * Elementwise quantize-dequantize of f32 bits to an element format, no scale.
 * Params: [fmt (4 words), rounding mode, seed, stream, offset lo, offset hi].
 */
export const ELEMENT_KERNEL: WordKernel = rangeKernel({
  name: "quantize_element",
  inputs: 1,
  outputs: 1,
  range: elementRange,
  wgslHelpers: ELEMENT_WGSL + PHILOX_WGSL,
  wgsl: `  var rand = 0u;
  if (Q(4u) == 2u) { rand = philox_word(Q(5u), Q(6u), Q(7u), Q(8u), i); }
  out0[i] = quantize_bits(in0[i], fmt_at(0u), Q(4u), rand);`,
});
