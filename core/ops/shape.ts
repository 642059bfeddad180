/**
 * Shape and movement ops: reshape (free), permute, slice, concat and
 * broadcast (strided copies), plus detach/clone.
 *
 * @module
 */
import { contiguousStrides, sizeOf } from "@lowp/kernels";
import { emptyTensor, record, type Tensor } from "../tensor.ts";
import { broadcastStrides, normalizeAxis, sameShape } from "./broadcast.ts";
import { sumTo } from "./reduce.ts";

/**
 * The same data under a new shape (no copy). One dimension may be -1.
 *
 * @example
 * ```ts
 * import { reshape, tensor } from "@lowp/core";
 * const m = reshape(tensor([1, 2, 3, 4, 5, 6]), [2, -1]); // shape [2, 3]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const free = shape.filter((d) => d === -1).length;
  const resolved = shape.map((d) => (d === -1 ? x.size / known : d));
  if (free > 1 || resolved.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(resolved) !== x.size) {
    throw new Error(`reshape: cannot view ${x.describe()} as [${shape.join(",")}]`);
  }
  if (sameShape(resolved, x.shape) && !x.requiresGrad) return x.alias();
  const y = x.alias(resolved);
  return record(y, "reshape", [x], (g) => [reshape(g, x.shape)]);
}

/** Copies a strided view of `x` into a new contiguous tensor of `shape`. */
function stridedCopy(x: Tensor, shape: readonly number[], strides: readonly number[], offset = 0): Tensor {
  const out = emptyTensor(x.backend, shape, x.dtype);
  if (sizeOf(shape) > 0) {
    x.backend.copy(
      x.storage,
      { offset, strides },
      out.storage,
      { offset: 0, strides: contiguousStrides(shape) },
      shape,
    );
  }
  return out;
}

/** Reorders dimensions: output dim i is input dim `perm[i]`. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const p = perm.map((a) => normalizeAxis("permute", a, x.rank));
  if (p.length !== x.rank || new Set(p).size !== p.length) {
    throw new Error(`permute: [${perm.join(",")}] is not a permutation of the ${x.rank} dims of ${x.describe()}`);
  }
  const own = contiguousStrides(x.shape);
  const y = stridedCopy(x, p.map((a) => x.shape[a]), p.map((a) => own[a]));
  const inverse = new Array<number>(p.length);
  p.forEach((a, i) => inverse[a] = i);
  return record(y, "permute", [x], (g) => [permute(g, inverse)]);
}

/** Swaps two dimensions (default: the last two). */
export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const perm = [...x.shape.keys()];
  const a = normalizeAxis("transpose", dim0, x.rank), b = normalizeAxis("transpose", dim1, x.rank);
  [perm[a], perm[b]] = [perm[b], perm[a]];
  return permute(x, perm);
}

/** Expands size-1 (or missing leading) dimensions to `shape` by copying. */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  const lead = shape.length - x.rank;
  if (lead < 0 || x.shape.some((d, i) => d !== 1 && d !== shape[lead + i])) {
    throw new Error(`broadcastTo: cannot broadcast ${x.describe()} to [${shape.join(",")}]`);
  }
  const y = stridedCopy(x, shape, broadcastStrides(x.shape, shape));
  return record(y, "broadcast_to", [x], (g) => [sumTo(g, x.shape)]);
}

/** Writes `src` into the region of a new zero tensor of `shape` starting at `begin`. */
function padInto(src: Tensor, shape: readonly number[], begin: readonly number[]): Tensor {
  const out = emptyTensor(src.backend, shape, src.dtype);
  out.backend.fill(out.storage, 0, src.dtype);
  const strides = contiguousStrides(shape);
  const offset = begin.reduce((o, b, d) => o + b * strides[d], 0);
  if (src.size > 0) {
    src.backend.copy(src.storage, { offset: 0, strides: contiguousStrides(src.shape) }, out.storage, {
      offset,
      strides,
    }, src.shape);
  }
  return out;
}

/**
 * The block of `x` starting at `begin` with extent `size` per dimension
 * (-1 means "to the end").
 */
export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  if (begin.length !== x.rank || size.length !== x.rank) {
    throw new Error(`slice: begin [${begin}] and size [${size}] must have one entry per dim of ${x.describe()}`);
  }
  const extent = size.map((s, d) => (s === -1 ? x.shape[d] - begin[d] : s));
  extent.forEach((s, d) => {
    if (begin[d] < 0 || s < 0 || begin[d] + s > x.shape[d]) {
      throw new Error(`slice: dim ${d} range [${begin[d]}, ${begin[d] + s}) is outside ${x.describe()}`);
    }
  });
  const strides = contiguousStrides(x.shape);
  const y = stridedCopy(x, extent, strides, begin.reduce((o, b, d) => o + b * strides[d], 0));
  return record(y, "slice", [x], (g) => [padInto(g, x.shape, begin)]);
}

/** Joins tensors along `axis`; all other dims must match. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error("concat: needs at least one tensor");
  const a = normalizeAxis("concat", axis, xs[0].rank);
  for (const t of xs) {
    if (t.rank !== xs[0].rank || t.shape.some((d, i) => i !== a && d !== xs[0].shape[i]) || t.dtype !== xs[0].dtype) {
      throw new Error(`concat: ${t.describe()} does not match ${xs[0].describe()} outside axis ${a}`);
    }
  }
  const shape = [...xs[0].shape];
  shape[a] = xs.reduce((n, t) => n + t.shape[a], 0);
  const out = emptyTensor(xs[0].backend, shape, xs[0].dtype);
  const strides = contiguousStrides(shape);
  const begins: number[] = [];
  let at = 0;
  for (const t of xs) {
    begins.push(at);
    if (t.size > 0) {
      t.backend.copy(t.storage, { offset: 0, strides: contiguousStrides(t.shape) }, out.storage, {
        offset: at * strides[a],
        strides,
      }, t.shape);
    }
    at += t.shape[a];
  }
  return record(out, "concat", xs, (g) =>
    xs.map((t, i) => {
      const begin = shape.map((_, d) => (d === a ? begins[i] : 0));
      return slice(g, begin, t.shape);
    }));
}

/** Splits `x` into pieces of the given sizes along `axis`. */
export function split(x: Tensor, sizes: readonly number[], axis = 0): Tensor[] {
  const a = normalizeAxis("split", axis, x.rank);
  if (sizes.reduce((s, n) => s + n, 0) !== x.shape[a]) {
    throw new Error(`split: sizes [${sizes}] do not add up to dim ${a} of ${x.describe()}`);
  }
  let at = 0;
  return sizes.map((n) => {
    const begin = x.shape.map((_, d) => (d === a ? at : 0));
    const size = x.shape.map((s, d) => (d === a ? n : s));
    at += n;
    return slice(x, begin, size);
  });
}

/** Inserts a size-1 dimension at `axis`. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normalizeAxis("unsqueeze", axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, a), 1, ...x.shape.slice(a)]);
}

/** Removes size-1 dimensions (`axis` given: only that one). */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normalizeAxis("squeeze", axis, x.rank);
  if (x.shape[a] !== 1) throw new Error(`squeeze: dim ${a} of ${x.describe()} is not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

/** The same data with no gradient history (shares storage). */
export function detach(x: Tensor): Tensor {
  return x.alias();
}

/** A copy with its own storage (gradient flows through). */
export function clone(x: Tensor): Tensor {
  const y = stridedCopy(x, x.shape, contiguousStrides(x.shape));
  return record(y, "clone", [x], (g) => [g]);
}
