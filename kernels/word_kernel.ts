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

/** An f32 view of the same words. */
export function asF32(words: Uint32Array): Float32Array {
  return new Float32Array(words.buffer, words.byteOffset, words.length);
}
