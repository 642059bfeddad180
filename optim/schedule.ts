/**
 * Learning-rate schedules as plain functions of the step.
 *
 * @module
 */

/** Options for {@link cosineSchedule}. */
export interface CosineOptions {
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warm-up from lr/warmup to lr (default 0). */
  warmup?: number;
  /** Total steps; the cosine reaches `minLr` here. */
  total: number;
  /** Final learning rate (default 0.1·lr). */
  minLr?: number;
}

/**
 * Linear warm-up, then cosine decay to `minLr` at `total` (held there after).
 *
 * @example
 * ```ts
 * import { cosineSchedule } from "@lowp/optim";
 * const lr = cosineSchedule({ lr: 1e-3, warmup: 10, total: 100 });
 * console.assert(lr(9) === 1e-3);
 * ```
 */
export function cosineSchedule(opts: CosineOptions): (step: number) => number {
  const { lr, warmup = 0, total, minLr = 0.1 * lr } = opts;
  if (!(total > warmup)) throw new Error(`cosineSchedule: total (${total}) must exceed warmup (${warmup})`);
  return (step) => {
    if (step < warmup) return (lr * (step + 1)) / warmup;
    const progress = Math.min(1, (step - warmup) / (total - warmup));
    return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * progress));
  };
}
