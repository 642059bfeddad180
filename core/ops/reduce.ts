/**
 * Reductions over axes. Each reduction runs in a fixed order (index order
 * along the reduced axis), so results are deterministic on every backend.
 *
 * @module
 */
import type { ReduceOp } from "@lowp/kernels";
import { emptyTensor, record, type Tensor } from "../tensor.ts";
import { normalizeAxis, sameShape } from "./broadcast.ts";
import { div, equal, mul, square, sub } from "./elementwise.ts";
import { broadcastTo, reshape } from "./shape.ts";

/** Options shared by the reductions. */
export interface ReduceOptions {
  /** Keep reduced axes as size 1 (default false). */
  keepDims?: boolean;
}

/** Axes argument: one axis, several, or all when omitted. */
export type Axes = number | readonly number[] | undefined;

function normalizeAxes(op: string, axes: Axes, rank: number): number[] {
  const list = axes === undefined ? [...Array(rank).keys()] : typeof axes === "number" ? [axes] : [...axes];
  const norm = [...new Set(list.map((a) => normalizeAxis(op, a, rank)))];
  return norm.sort((a, b) => a - b);
}

/** Shape after reducing `axes` with keepDims. */
function keptShape(shape: readonly number[], axes: readonly number[]): number[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** One kernel call reducing the contiguous axis run [first, last] of `x` (keepDims shape). */
function reduceRun(op: ReduceOp, x: Tensor, first: number, last: number): Tensor {
  const shape = x.shape;
  const outer = shape.slice(0, first).reduce((a, b) => a * b, 1);
  const size = shape.slice(first, last + 1).reduce((a, b) => a * b, 1);
  const inner = shape.slice(last + 1).reduce((a, b) => a * b, 1);
  const outShape = shape.map((d, i) => (i >= first && i <= last ? 1 : d));
  const isArg = op === "argmax" || op === "argmin";
  if (size === 0 && op !== "sum") throw new Error(`${op}: cannot reduce an empty axis of ${x.describe()}`);
  const out = emptyTensor(x.backend, outShape, isArg ? "i32" : "f32");
  if (outer * inner > 0) x.backend.reduce(op, x.storage, outer, size, inner, out.storage);
  return out;
}

/** Reduces `axes` (sorted, distinct) run by run, from the last run to the first; keepDims result. */
function reduceRaw(op: ReduceOp, x: Tensor, axes: readonly number[]): Tensor {
  if (x.dtype !== "f32") throw new Error(`${op}: ${x.describe()} must be f32`);
  if (axes.length === 0) return x.alias();
  const runs: [number, number][] = [];
  for (const a of axes) {
    const last = runs[runs.length - 1];
    if (last && last[1] === a - 1) last[1] = a;
    else runs.push([a, a]);
  }
  let y = x;
  for (let r = runs.length - 1; r >= 0; r--) {
    const next = reduceRun(op, y, runs[r][0], runs[r][1]);
    if (y !== x) y.dispose();
    y = next;
  }
  return y;
}

function finish(y: Tensor, shape: readonly number[], axes: readonly number[], keepDims?: boolean): Tensor {
  if (keepDims) return y;
  const squeezed = shape.filter((_, i) => !axes.includes(i));
  return reshape(y, squeezed);
}

/**
 * Sum over `axes` (all when omitted).
 *
 * @example
 * ```ts
 * import { sum, tensor } from "@lowp/core";
 * const s = sum(tensor([[1, 2], [3, 4]]), 1); // [3, 7]
 * ```
 */
export function sum(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes("sum", axes, x.rank);
  const kept = reduceRaw("sum", x, ax);
  const y = finish(kept, x.shape, ax, opts.keepDims);
  if (y !== kept) kept.dispose();
  return record(y, "sum", [x], (g) => [broadcastTo(reshape(g, keptShape(x.shape, ax)), x.shape)]);
}

/** Mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes("mean", axes, x.rank);
  const count = ax.reduce((n, a) => n * x.shape[a], 1);
  return div(sum(x, ax, opts), count);
}

/** Population variance over `axes` (divides by N, as LayerNorm does). */
export function variance(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes("variance", axes, x.rank);
  const centered = sub(x, mean(x, ax, { keepDims: true }));
  return mean(square(centered), ax, opts);
}

function extremum(op: "max" | "min", x: Tensor, axes: Axes, opts: ReduceOptions): Tensor {
  const ax = normalizeAxes(op, axes, x.rank);
  const kept = reduceRaw(op, x, ax);
  const y = finish(kept, x.shape, ax, opts.keepDims);
  // The gradient goes to every element equal to the extremum (split evenly on ties).
  return record(y, op, [x], (g) => {
    const hit = equal(x, broadcastTo(kept, x.shape));
    const share = div(hit, broadcastTo(sum(hit, ax, { keepDims: true }), x.shape));
    return [mul(share, broadcastTo(reshape(g, keptShape(x.shape, ax)), x.shape))];
  });
}

/** Maximum over `axes`; NaN propagates. */
export function max(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): Tensor {
  return extremum("max", x, axes, opts);
}

/** Minimum over `axes`; NaN propagates. */
export function min(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): Tensor {
  return extremum("min", x, axes, opts);
}

/** Index (i32) of the maximum along `axis`; the first index wins ties. */
export function argmax(x: Tensor, axis = -1, opts: ReduceOptions = {}): Tensor {
  const a = normalizeAxis("argmax", axis, x.rank);
  const kept = reduceRaw("argmax", x, [a]);
  return finish(kept, x.shape, [a], opts.keepDims);
}

/** Index (i32) of the minimum along `axis`; the first index wins ties. */
export function argmin(x: Tensor, axis = -1, opts: ReduceOptions = {}): Tensor {
  const a = normalizeAxis("argmin", axis, x.rank);
  const kept = reduceRaw("argmin", x, [a]);
  return finish(kept, x.shape, [a], opts.keepDims);
}

/** Sums `g` down to `shape` (undoes broadcasting); returns `g` itself when shapes match. */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  return reshape(sum(g, axes, { keepDims: true }), shape);
}
