/**
 * Gradient clipping by global norm, done on the device: the norm stays a
 * tensor, so no readback interrupts a training step.
 *
 * @module
 */
import { add, div, minimum, mul, noGrad, sqrt, square, sum, type Tensor } from "@lowp/core";

/**
 * Scales every gradient by min(1, maxNorm / (‖g‖ + 1e-6)) where ‖g‖ is the
 * L2 norm over all gradients together (PyTorch's `clip_grad_norm_`). Returns
 * the norm before clipping as a 0-d tensor (read it when you log).
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  return noGrad(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (grads.length === 0) throw new Error("clipGradNorm: no parameter has a gradient");
    const total = grads.map((g) => sum(square(g))).reduce((a, b) => add(a, b));
    const norm = sqrt(total);
    const scale = minimum(div(maxNorm, add(norm, 1e-6)), 1);
    for (const p of params) if (p.grad) p.grad.assign(mul(p.grad, scale));
    return norm;
  });
}
