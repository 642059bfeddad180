/**
 * Autoregressive generation from a {@link GPT}: greedy or temperature
 * sampling, with a KV cache (prefill once, then one token per forward) or by
 * re-running the whole sequence each step (the reference the cache is tested
 * against). Sampling draws come from Philox keyed by (seed, row, step), so a
 * seed gives the same text on every backend whose logits agree.
 *
 * @module
 */
import { philoxWords, wordToUniform } from "@lowp/kernels";
import { tensor } from "../creation.ts";
import { noGrad, tidy } from "../runtime.ts";
import { slice } from "../ops/shape.ts";
import { KVCache } from "./kv_cache.ts";
import type { GPT } from "./gpt.ts";
import { streamOf } from "./module.ts";

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Tokens to add to each prompt. */
  readonly maxNewTokens: number;
  /** Softmax temperature; 0 (default) picks the most likely token (ties: the lowest id). */
  readonly temperature?: number;
  /** Seed of the sampling draws (default 0). */
  readonly seed?: number;
  /** Decode with a KV cache (default true); false re-runs the whole sequence for every token. */
  readonly useCache?: boolean;
}

const SAMPLE_STREAM = streamOf("generate/sample");

/** Index of the largest value (the first on ties). */
function argmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/** A draw from softmax(row / temperature) using uniform `u` in [0, 1) (inverse CDF in index order). */
function sample(row: Float32Array, temperature: number, u: number): number {
  const m = row.reduce((a, b) => Math.max(a, b), -Infinity);
  const weights = Array.from(row, (v) => Math.exp((v - m) / temperature));
  let target = u * weights.reduce((a, b) => a + b, 0);
  for (let j = 0; j < weights.length; j++) {
    target -= weights[j];
    if (target < 0) return j;
  }
  return weights.length - 1;
}

/**
 * Continues each prompt (a batch of equally long token rows) by
 * `maxNewTokens` tokens; returns the new tokens per row. Runs without
 * gradients; reads back one [B, vocab] row of logits per generated token.
 *
 * @example
 * ```ts
 * import { generate, GPT } from "@lowp/core";
 * const model = new GPT({ vocabSize: 16, contextLength: 16, dModel: 16, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * const [tokens] = await generate(model, [[1, 2, 3]], { maxNewTokens: 4 }); // 4 greedy tokens
 * ```
 */
export async function generate(model: GPT, prompts: number[][], opts: GenerateOptions): Promise<number[][]> {
  const { maxNewTokens, temperature = 0, seed = 0, useCache = true } = opts;
  const b = prompts.length, t0 = prompts[0]?.length ?? 0, vocab = model.cfg.vocabSize;
  if (!b || !t0 || prompts.some((p) => p.length !== t0)) {
    throw new Error(`generate: prompts must be a non-empty batch of equally long, non-empty rows`);
  }
  if (t0 + maxNewTokens > model.cfg.contextLength) {
    throw new Error(
      `generate: ${t0} prompt tokens + ${maxNewTokens} new exceed the context length ${model.cfg.contextLength}`,
    );
  }
  if (!(temperature >= 0)) throw new Error(`generate: temperature must be >= 0, got ${temperature}`);
  const rows = prompts.map((p) => [...p]);
  const cache = useCache ? new KVCache() : undefined;
  const words = new Uint32Array(b);
  try {
    for (let step = 0; step < maxNewTokens; step++) {
      // With the cache, feed only what the cache has not seen; without it, the whole sequence.
      const start = cache ? cache.length : 0, t = rows[0].length - start;
      const input = Int32Array.from(rows.flatMap((r) => r.slice(start)));
      const last = noGrad(() =>
        tidy(() => {
          const logits = model.forward(tensor(input, { shape: [b, t], dtype: "i32" }), { cache });
          return slice(logits, [0, t - 1, 0], [b, 1, vocab]);
        })
      );
      const host = (await last.data()) as Float32Array;
      last.dispose();
      if (temperature > 0) philoxWords(words, seed, SAMPLE_STREAM, step * b);
      rows.forEach((row, i) => {
        const logits = host.subarray(i * vocab, (i + 1) * vocab);
        row.push(temperature > 0 ? sample(logits, temperature, wordToUniform(words[i])) : argmax(logits));
      });
    }
  } finally {
    cache?.dispose();
  }
  return rows.map((r) => r.slice(t0));
}
