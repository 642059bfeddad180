/**
 * Shape helpers shared by the ops: NumPy broadcasting and axis normalisation.
 *
 * @module
 */
import { contiguousStrides } from "@lowp/kernels";

/** Shape of broadcasting `a` with `b` (NumPy rules); throws naming both shapes when incompatible. */
export function broadcastShapes(op: string, ...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const d = rank - s.length + i, v = s[i];
      if (out[d] === 1) out[d] = v;
      else if (v !== 1 && v !== out[d]) {
        throw new Error(`${op}: shapes ${shapes.map((x) => `[${x.join(",")}]`).join(" and ")} do not broadcast`);
      }
    }
  }
  return out;
}

/** Strides that read a contiguous tensor of `shape` as if broadcast to `outShape` (0 on broadcast dims). */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const own = contiguousStrides(shape);
  const offset = outShape.length - shape.length;
  return outShape.map((_, i) => (i < offset || shape[i - offset] === 1 ? 0 : own[i - offset]));
}

/** Normalises a possibly negative axis against `rank`; throws naming the op when out of range. */
export function normalizeAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** True when two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
