/**
 * Reverse-mode differentiation over the graph recorded by the ops.
 *
 * @module
 */
import { full } from "./creation.ts";
import { add } from "./ops/elementwise.ts";
import { noGrad } from "./runtime.ts";
import type { Tensor } from "./tensor.ts";

/** Tensors reachable from `root` through recorded nodes, inputs before outputs. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: deep models would overflow a recursive one.
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const inputs = top[0].node?.inputs ?? [];
    if (top[1] < inputs.length) {
      const next = inputs[top[1]++];
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(top[0]);
      stack.pop();
    }
  }
  return order;
}

/**
 * Accumulates d(root)/d(leaf) into every leaf's `.grad` (and into non-leaves
 * that asked with `retainGrad()`). `root` must be a single element unless
 * `grad` is given. Gradients are added to what `.grad` already holds.
 *
 * @example
 * ```ts
 * import { backward, mul, sum, tensor } from "@lowp/core";
 * const w = tensor([1, 2, 3], { requiresGrad: true });
 * backward(sum(mul(w, w)));
 * // w.grad holds [2, 4, 6]
 * ```
 */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error(`backward: ${root.describe()} does not require gradients`);
  if (!grad && root.size !== 1) {
    throw new Error(`backward: ${root.describe()} is not a scalar; pass the output gradient explicitly`);
  }
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, grad ?? full(root.shape, 1, { backend: root.backend }));
  const order = topologicalOrder(root);
  noGrad(() => {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      if (!t.node || t.retainsGrad) storeGrad(t, g);
      if (!t.node) continue;
      const inputGrads = t.node.backward(g);
      t.node.inputs.forEach((input, k) => {
        const gi = inputGrads[k];
        if (!gi || !input.requiresGrad) return;
        if (gi.shape.length !== input.shape.length || gi.shape.some((d, j) => d !== input.shape[j])) {
          throw new Error(`backward: ${t.node!.op} gave a gradient of shape [${gi.shape}] for ${input.describe()}`);
        }
        const prev = grads.get(input);
        grads.set(input, prev ? add(prev, gi) : gi);
      });
    }
  });
}

/** Adds `g` into `t.grad`, keeping the result alive beyond the current scope. */
function storeGrad(t: Tensor, g: Tensor): void {
  const next = t.grad ? add(t.grad, g) : g.alias();
  t.grad?.dispose();
  t.grad = next.keep();
}
