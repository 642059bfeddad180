/**
 * Neural-network functions composed from the primitive ops (their gradients
 * follow from the parts): softmax, log-softmax, cross-entropy, layer/RMS
 * normalisation and causal self-attention.
 *
 * @module
 */
import { noGrad } from "../runtime.ts";
import type { Tensor } from "../tensor.ts";
import { normalizeAxis } from "./broadcast.ts";
import { add, div, exp, log, mul, neg, rsqrt, square, sub } from "./elementwise.ts";
import { oneHot } from "./index.ts";
import { matmul } from "./matmul.ts";
import { softmaxLastAxis } from "./softmax.ts";
import { max, mean, sum } from "./reduce.ts";

/** Subtracting the (gradient-free) max keeps exp() in range; it cancels in the result. */
function shifted(x: Tensor, axis: number): Tensor {
  const m = noGrad(() => max(x, axis, { keepDims: true }));
  return sub(x, m);
}

/** Softmax along `axis` (default last; the last axis runs as one fused kernel each way). */
export function softmax(x: Tensor, axis = -1): Tensor {
  const a = normalizeAxis("softmax", axis, x.rank);
  if (a === x.rank - 1) return softmaxLastAxis(x);
  const e = exp(shifted(x, a));
  return div(e, sum(e, a, { keepDims: true }));
}

/** log(softmax(x)) along `axis`, computed stably (the last axis as one fused kernel each way). */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const a = normalizeAxis("logSoftmax", axis, x.rank);
  if (a === x.rank - 1) return softmaxLastAxis(x, { log: true });
  const z = shifted(x, a);
  return sub(z, log(sum(exp(z), a, { keepDims: true })));
}

/** Options for {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /** Targets equal to this value are skipped (default -100, as in PyTorch). */
  ignoreIndex?: number;
}

/**
 * Mean cross-entropy of `logits` [..., V] against i32 `targets` [...],
 * skipping targets equal to `ignoreIndex`. The mean is over counted targets
 * (NaN when none count, as in PyTorch).
 *
 * @example
 * ```ts
 * import { crossEntropy, tensor } from "@lowp/core";
 * const loss = crossEntropy(tensor([[0, 0]]), tensor([1], { dtype: "i32" })); // ln 2
 * ```
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const v = logits.shape[logits.rank - 1];
  if (targets.rank !== logits.rank - 1 || targets.shape.some((d, i) => d !== logits.shape[i])) {
    throw new Error(`crossEntropy: targets ${targets.describe()} do not match logits ${logits.describe()}`);
  }
  const ignore = opts.ignoreIndex ?? -100;
  if (ignore >= 0 && ignore < v) {
    throw new Error(`crossEntropy: ignoreIndex ${ignore} is a valid class of ${v}; use a value outside [0, ${v})`);
  }
  // Ignored (out-of-range) targets give zero one-hot rows, so they drop out of both sums.
  const hot = oneHot(targets, v);
  const picked = sum(mul(logSoftmax(logits), hot));
  return neg(div(picked, sum(hot)));
}

/** RMS normalisation over the last axis: x / sqrt(mean(x²) + eps) · weight. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const normed = mul(x, rsqrt(add(mean(square(x), -1, { keepDims: true }), eps)));
  return weight ? mul(normed, weight) : normed;
}

/**
 * Scaled dot-product attention of [..., Tq, D] queries over [..., Tk, D] keys
 * and values, optionally causal: the queries are the last Tq of the Tk
 * positions (Tq = Tk in training; fewer when decoding with a KV cache), and
 * each attends to the positions up to its own.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: { causal?: boolean } = {}): Tensor {
  const d = q.shape[q.rank - 1];
  // Scale and causal mask are folded into the softmax kernel (masked scores are never exponentiated).
  const weights = softmaxLastAxis(matmul(q, k, { transB: true }), { scale: 1 / Math.sqrt(d), causal: opts.causal });
  return matmul(weights, v);
}
