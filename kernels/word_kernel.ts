/**
 * Helpers for writing {@link WordKernel}s whose TypeScript side is a loop over
 * an item range (views set up once per call, not per item).
 *
 * @module
 */
import type { WordKernel, WordRange } from "./backend.ts";

/** A {@link WordKernel} from its range loop (`cpu` runs it for one item) and its WGSL. */
export function rangeKernel(def: Omit<WordKernel, "cpu" | "cpuRange"> & { readonly range: WordRange }): WordKernel {
  const { range, ...rest } = def;
  return { ...rest, cpu: (i, ins, outs, p) => range(i, i + 1, ins, outs, p), cpuRange: range };
}

const scratchF32 = new Float32Array(1), scratchU32 = new Uint32Array(scratchF32.buffer);

/** The bits of `v` rounded to f32 (kernel parameters carry floats this way). */
export function f32Bits(v: number): number {
  scratchF32[0] = v;
  return scratchU32[0];
}

/** The f32 value of `bits` (the inverse of {@link f32Bits}). */
export function bitsToF32(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0];
}

/** An f32 view of the same words. */
export function asF32(words: Uint32Array): Float32Array {
  return new Float32Array(words.buffer, words.byteOffset, words.length);
}
