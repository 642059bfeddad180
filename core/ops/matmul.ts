/**
 * Batched matrix product with broadcasting batch dims and transposes that
 * are read in place (no transposed copies in the backward pass).
 *
 * @module
 */
import { emptyTensor, record, sameBackend, type Tensor } from "../tensor.ts";
import { broadcastShapes } from "./broadcast.ts";
import { sumTo } from "./reduce.ts";
import { broadcastTo, reshape } from "./shape.ts";

/** Transpose flags for {@link matmul}. */
export interface MatmulOptions {
  /** Use the transpose of `a`'s last two dims. */
  transA?: boolean;
  /** Use the transpose of `b`'s last two dims. */
  transB?: boolean;
}

/**
 * `op(a) · op(b)` over the last two dims, broadcasting the leading (batch) dims.
 * A 1-D operand is not promoted: pass at least 2-D tensors.
 *
 * @example
 * ```ts
 * import { matmul, tensor } from "@lowp/core";
 * const c = matmul(tensor([[1, 2], [3, 4]]), tensor([[5], [6]])); // [[17], [39]]
 * ```
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  const backend = sameBackend("matmul", a, b);
  if (a.rank < 2 || b.rank < 2 || a.dtype !== "f32" || b.dtype !== "f32") {
    throw new Error(`matmul: needs f32 tensors of rank >= 2, got ${a.describe()} and ${b.describe()}`);
  }
  const [m, ka] = transA ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : a.shape.slice(-2);
  const [kb, n] = transB ? [b.shape[b.rank - 1], b.shape[b.rank - 2]] : b.shape.slice(-2);
  if (ka !== kb) {
    throw new Error(
      `matmul: inner dims differ: ${a.describe()}${transA ? "ᵀ" : ""} · ${b.describe()}${transB ? "ᵀ" : ""}`,
    );
  }
  // [..., M, K] · [K, N]: fold the batch into M (one large product).
  if (b.rank === 2 && a.rank > 2 && !transA) {
    const lead = a.shape.slice(0, -2);
    const flat = matmul(reshape(a, [-1, ka]), b, opts);
    return reshape(flat, [...lead, m, n]);
  }
  const batchA = a.shape.slice(0, -2), batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes("matmul", batchA, batchB);
  const count = batch.reduce((x, y) => x * y, 1);
  // Each side is either one matrix reused for the whole batch (stride 0) or a full batch.
  const operand = (t: Tensor, own: readonly number[]): [Tensor, number] => {
    const per = t.shape[t.rank - 1] * t.shape[t.rank - 2];
    if (own.reduce((x, y) => x * y, 1) === 1) return [t, 0];
    if (own.length === batch.length && own.every((d, i) => d === batch[i])) return [t, per];
    return [broadcastTo(t, [...batch, ...t.shape.slice(-2)]), per];
  };
  const [ea, strideA] = operand(a, batchA);
  const [eb, strideB] = operand(b, batchB);
  const out = emptyTensor(backend, [...batch, m, n]);
  const shape = { batch: count, m, n, k: ka, transA, transB, strideA, strideB };
  if (count * m * n > 0) {
    if (ka === 0) backend.fill(out.storage, 0, "f32");
    else backend.matmul(ea.storage, eb.storage, out.storage, shape);
  }
  return record(out, "matmul", [a, b], (g) => {
    // C = op(A)·op(B): d op(A) = dC·op(B)ᵀ, d op(B) = op(A)ᵀ·dC, transposed back where stored transposed.
    // Inputs that take no gradient (frozen weights, data) get none computed.
    const ga = !a.requiresGrad
      ? null
      : transA
      ? matmul(b, g, { transA: transB, transB: true })
      : matmul(g, b, { transB: !transB });
    const gb = !b.requiresGrad
      ? null
      : transB
      ? matmul(g, a, { transA: true, transB: transA })
      : matmul(a, g, { transA: !transA });
    return [ga && sumTo(ga, a.shape), gb && sumTo(gb, b.shape)];
  });
}
