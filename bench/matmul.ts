/**
 * f32 square matmul throughput on one backend.
 *
 * Batched: `perSync` matmuls are recorded back to back and followed by one
 * `await backend.sync()`, all inside the timed region; `perSync` is doubled
 * until a batch takes at least the target time, so a GPU's submit latency is
 * amortised and the figure is throughput. Single: one matmul then a sync per
 * timing (WebGPU only; on the CPU backend the two are the same).
 *
 * @module
 */
import { type Backend, matmul, randn, type Tensor, tidy } from "@lowp/core";
import { median } from "./report.ts";

/** Timing knobs. */
export interface MatmulTiming {
  /** Timed repetitions (of a batch, or of one matmul + sync). */
  reps: number;
  /** Seconds a batch should last at least. */
  targetS: number;
  /** Upper bound on matmuls per sync. */
  maxPerSync: number;
}

/** One size's result. */
export interface MatmulResult {
  /** Median GFLOP/s over the batched repetitions (2·n³ flops per matmul). */
  gflops: number;
  /** Best batched repetition. */
  bestGflops: number;
  /** Matmuls per sync in the batched timing. */
  perSync: number;
  /** Milliseconds per matmul (median, batched). */
  msPerMatmul: number;
  /** One matmul followed by one sync, median (when measured). */
  single?: { gflops: number; ms: number };
}

async function timeBatch(backend: Backend, a: Tensor, b: Tensor, count: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) tidy(() => void matmul(a, b)); // the output goes back to the pool at once
  await backend.sync();
  return (performance.now() - t0) / 1000;
}

/** Times `n`×`n` · `n`×`n` on `backend`; `single` adds the one-matmul-per-sync latency figure. */
export async function benchMatmul(
  backend: Backend,
  n: number,
  t: MatmulTiming,
  single: boolean,
): Promise<MatmulResult> {
  const a = randn([n, n], { seed: 7, stream: 1 }, 1, { backend }).keep();
  const b = randn([n, n], { seed: 7, stream: 2 }, 1, { backend }).keep();
  try {
    const flops = 2 * n ** 3;
    await timeBatch(backend, a, b, 1); // warm-up: pipeline compilation, pool buffers, caches
    let perSync = 1;
    for (;;) {
      const s = await timeBatch(backend, a, b, perSync);
      if (s >= t.targetS || perSync >= t.maxPerSync) break;
      perSync = Math.min(t.maxPerSync, perSync * Math.max(2, Math.ceil(t.targetS / Math.max(s, 1e-4) / 2)));
    }
    const times: number[] = [];
    for (let r = 0; r < t.reps; r++) times.push(await timeBatch(backend, a, b, perSync));
    const mid = median(times);
    const result: MatmulResult = {
      gflops: (flops * perSync) / mid / 1e9,
      bestGflops: (flops * perSync) / Math.min(...times) / 1e9,
      perSync,
      msPerMatmul: (mid * 1000) / perSync,
    };
    if (single) {
      const singles: number[] = [];
      for (let r = 0; r < Math.max(3, t.reps); r++) singles.push(await timeBatch(backend, a, b, 1));
      const s = median(singles);
      result.single = { gflops: flops / s / 1e9, ms: s * 1000 };
    }
    return result;
  } finally {
    a.dispose();
    b.dispose();
  }
}
