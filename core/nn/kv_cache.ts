/**
 * A key/value cache for incremental decoding: each attention layer keeps the
 * keys and values of the positions seen so far, so a decode step computes
 * only the new token's projections (prefill once, then one token per call).
 *
 * @module
 */
import { isGradEnabled } from "../runtime.ts";
import { concat } from "../ops/shape.ts";
import type { Tensor } from "../tensor.ts";

/**
 * Keys and values per attention layer (by module name), each [B, H, T, hd].
 * For inference: appending a tensor that records gradients throws, since a
 * cache would keep its whole graph alive. Dispose the cache when done.
 *
 * @example
 * ```ts
 * import { GPT, KVCache, noGrad, tensor } from "@lowp/core";
 * const model = new GPT({ vocabSize: 16, contextLength: 8, dModel: 16, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * const cache = new KVCache();
 * noGrad(() => {
 *   model.forward(tensor([[1, 2, 3]], { dtype: "i32" }), { cache }); // prefill: positions 0..2
 *   model.forward(tensor([[4]], { dtype: "i32" }), { cache }); // decode: position 3
 * });
 * console.assert(cache.length === 4);
 * cache.dispose();
 * ```
 */
export class KVCache {
  readonly #entries = new Map<string, [Tensor, Tensor]>();

  /** Positions cached (the longest layer's; all layers agree after a whole forward pass). */
  get length(): number {
    let n = 0;
    for (const [k] of this.#entries.values()) n = Math.max(n, k.shape[2]);
    return n;
  }

  /** Positions cached for layer `name` (0 when it has none yet). */
  lengthOf(name: string): number {
    return this.#entries.get(name)?.[0].shape[2] ?? 0;
  }

  /**
   * Appends `k`, `v` ([B, H, t, hd]) to layer `name`'s entries; returns every
   * cached position's keys and values ([B, H, T + t, hd]).
   */
  append(name: string, k: Tensor, v: Tensor): [Tensor, Tensor] {
    if (isGradEnabled() && (k.requiresGrad || v.requiresGrad)) {
      throw new Error(`KVCache: layer '${name}' appends tensors that record gradients; decode inside noGrad()`);
    }
    const prev = this.#entries.get(name);
    if (prev && (prev[0].shape[0] !== k.shape[0] || prev[0].shape[3] !== k.shape[3])) {
      throw new Error(`KVCache: layer '${name}' holds ${prev[0].describe()}, cannot append ${k.describe()}`);
    }
    const next: [Tensor, Tensor] = prev
      ? [concat([prev[0], k], 2).keep(), concat([prev[1], v], 2).keep()]
      : [k.alias().keep(), v.alias().keep()];
    if (prev) prev.forEach((t) => t.dispose());
    this.#entries.set(name, next);
    return next;
  }

  /** Frees every cached tensor and empties the cache. */
  dispose(): void {
    for (const [k, v] of this.#entries.values()) {
      k.dispose();
      v.dispose();
    }
    this.#entries.clear();
  }
}
