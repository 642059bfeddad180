/**
 * Gradient clipping by global norm, done on the device: the norm stays a
 * tensor, so no readback interrupts a training step.
 *
 * @module
 */
import { add, concat, div, minimum, mul, noGrad, reshape, sqrt, square, sum, type Tensor } from "@lowp/core";

/** The global gradient norm and the factor that clips it, as {@link gradClip} returns them. */
export interface GradClip {
  /** ‖g‖ over all gradients together, before clipping (0-d). */
  readonly norm: Tensor;
  /** min(1, maxNorm / (‖g‖ + 1e-6)) (0-d): multiply every gradient by it to clip. */
  readonly scale: Tensor;
}

/**
 * The global L2 norm of the gradients of `params` and the clipping factor
 * min(1, maxNorm / (‖g‖ + 1e-6)) (PyTorch's `clip_grad_norm_`), without
 * touching the gradients: pass `scale` to an optimizer's `step` as
 * `gradScale` (AdamW applies it inside its update kernel). The squares are
 * summed over all gradients flattened into one vector (one copy per
 * gradient, then one square and one sum), in a fixed order.
 */
export function gradClip(params: readonly Tensor[], maxNorm: number): GradClip {
  return noGrad(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (grads.length === 0) throw new Error("clipGradNorm: no parameter has a gradient");
    const flat = concat(grads.map((g) => reshape(g, [g.size])));
    const norm = sqrt(sum(square(flat)));
    return { norm, scale: minimum(div(maxNorm, add(norm, 1e-6)), 1) };
  });
}

/**
 * Scales every gradient by min(1, maxNorm / (‖g‖ + 1e-6)) where ‖g‖ is the
 * L2 norm over all gradients together (PyTorch's `clip_grad_norm_`). Returns
 * the norm before clipping as a 0-d tensor (read it when you log). A training
 * loop can skip the separate scaling with {@link gradClip} and
 * `opt.step(lr, { gradScale })`.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  const { norm, scale } = gradClip(params, maxNorm);
  noGrad(() => {
    for (const p of params) if (p.grad) p.grad.assign(mul(p.grad, scale));
  });
  scale.dispose();
  return norm;
}
