/**
 * Index ops: row gather (embedding lookup) with a deterministic scatter-add
 * backward, and one-hot encoding.
 *
 * @module
 */
import { emptyTensor, record, sameBackend, type Tensor } from "../tensor.ts";

function requireIndices(op: string, indices: Tensor): void {
  if (indices.dtype !== "i32") throw new Error(`${op}: indices ${indices.describe()} must be i32`);
}

/**
 * Rows of a 2-D `table` picked by i32 `indices` of any shape: the result has
 * shape `[...indices.shape, table.shape[1]]`. Out-of-range indices give zero
 * rows on every backend (validate indices on the host, see {@link checkIndices}).
 *
 * @example
 * ```ts
 * import { gather, tensor } from "@lowp/core";
 * const rows = gather(tensor([[1, 2], [3, 4], [5, 6]]), tensor([2, 0], { dtype: "i32" })); // [[5,6],[1,2]]
 * ```
 */
export function gather(table: Tensor, indices: Tensor): Tensor {
  const backend = sameBackend("gather", table, indices);
  requireIndices("gather", indices);
  if (table.rank !== 2 || table.dtype !== "f32") throw new Error(`gather: table ${table.describe()} must be 2-D f32`);
  const [rows, width] = table.shape;
  const out = emptyTensor(backend, [...indices.shape, width]);
  if (out.size > 0) backend.gather(table.storage, indices.storage, indices.size, width, rows, out.storage);
  return record(out, "gather", [table], (g) => {
    const grad = emptyTensor(backend, table.shape);
    backend.scatterAddRows(g.storage, indices.storage, indices.size, width, rows, grad.storage);
    return [grad];
  });
}

/** f32 one-hot rows of width `depth` for i32 `indices`; out-of-range (e.g. an ignore index) gives a zero row. */
export function oneHot(indices: Tensor, depth: number): Tensor {
  requireIndices("oneHot", indices);
  const out = emptyTensor(indices.backend, [...indices.shape, depth]);
  if (out.size > 0) indices.backend.oneHot(indices.storage, indices.size, depth, out.storage);
  return out;
}

/** Throws a clear error when any host-side index is outside [0, limit) (ignoring `allowed`). */
export function checkIndices(name: string, values: ArrayLike<number>, limit: number, allowed?: number): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v !== allowed && (!Number.isInteger(v) || v < 0 || v >= limit)) {
      throw new Error(`${name}: index ${v} at position ${i} is outside [0, ${limit})`);
    }
  }
}
