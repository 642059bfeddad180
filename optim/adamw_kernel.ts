/**
 * The AdamW update of one parameter as a single kernel (one dispatch instead
 * of about ten on WebGPU), written once in TypeScript and once in WGSL with
 * the same operation order. Float arithmetic: the backends agree within a few
 * ulp (a GPU may fuse a multiply-add), and each backend is deterministic.
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { asF32, f32Bits, rangeKernel, type WordKernel, type WordRange } from "@lowp/kernels";

const fr = Math.fround;

/** The CPU twin of the WGSL below, every operation rounded to f32 in the same order. */
const adamwRange: WordRange = (start, end, ins, outs, q) => {
  const k = asF32(q);
  const [p, g, m, v, scale] = ins.map(asF32);
  const [pOut, mOut, vOut] = outs.map(asF32);
  const s = scale ? scale[0] : 1;
  for (let i = start; i < end; i++) {
    const gi = scale ? fr(g[i] * s) : g[i];
    const mi = fr(fr(k[0] * m[i]) + fr(k[1] * gi));
    const vi = fr(fr(k[2] * v[i]) + fr(k[3] * fr(gi * gi)));
    const denom = fr(fr(Math.sqrt(vi) * k[4]) + k[5]);
    mOut[i] = mi;
    vOut[i] = vi;
    pOut[i] = fr(fr(p[i] * k[6]) - fr(k[7] * fr(mi / denom)));
  }
};

/**
 * Inputs p, g, m, v (and with `scaled` a 1-element gradient scale, applied to g first); outputs p', m',
 * v'. Params (f32 bits): β1, 1-β1, β2, 1-β2, 1/sqrt(1-β2^t), ε, decay factor (1 - lr·λ), step size
 * lr/(1-β1^t).
 */
function adamwKernel(scaled: boolean): WordKernel {
  return rangeKernel({
    name: scaled ? "adamw_step_scaled" : "adamw_step",
    inputs: scaled ? 5 : 4,
    outputs: 3,
    range: adamwRange,
    wgsl: `  let k0 = bitcast<f32>(Q(0u)); let k1 = bitcast<f32>(Q(1u)); let k2 = bitcast<f32>(Q(2u));
  let k3 = bitcast<f32>(Q(3u)); let k4 = bitcast<f32>(Q(4u)); let k5 = bitcast<f32>(Q(5u));
  let k6 = bitcast<f32>(Q(6u)); let k7 = bitcast<f32>(Q(7u));
  let g = bitcast<f32>(in1[i])${scaled ? " * bitcast<f32>(in4[0])" : ""};
  let m = k0 * bitcast<f32>(in2[i]) + k1 * g;
  let v = k2 * bitcast<f32>(in3[i]) + k3 * (g * g);
  let denom = sqrt(v) * k4 + k5;
  out1[i] = bitcast<u32>(m);
  out2[i] = bitcast<u32>(v);
  out0[i] = bitcast<u32>(bitcast<f32>(in0[i]) * k6 - k7 * (m / denom));`,
  });
}

const ADAMW_KERNEL = adamwKernel(false);
const ADAMW_SCALED_KERNEL = adamwKernel(true);

/** The constants of one AdamW step, as {@link adamwUpdate} takes them. */
export interface AdamWConstants {
  /** β1 and β2. */
  readonly betas: readonly [number, number];
  /** ε. */
  readonly eps: number;
  /** 1-based step number (bias correction). */
  readonly step: number;
  /** Learning rate. */
  readonly lr: number;
  /** Decoupled weight decay λ for this parameter (0: none). */
  readonly weightDecay: number;
  /** A 1-element tensor the gradient is multiplied by first (a clipping factor), if any. */
  readonly gradScale?: Tensor;
}

/**
 * One fused AdamW step: returns new (p, m, v) tensors; PyTorch's update with
 * bias correction, `p·(1 - lr·λ) - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)`.
 */
export function adamwUpdate(p: Tensor, g: Tensor, m: Tensor, v: Tensor, c: AdamWConstants): [Tensor, Tensor, Tensor] {
  const [b1, b2] = c.betas;
  const params = [
    b1,
    1 - b1,
    b2,
    1 - b2,
    1 / Math.sqrt(1 - Math.pow(b2, c.step)),
    c.eps,
    1 - c.lr * c.weightDecay,
    c.lr / (1 - Math.pow(b1, c.step)),
  ].map(f32Bits);
  const outs = [emptyTensor(p.backend, p.shape), emptyTensor(p.backend, p.shape), emptyTensor(p.backend, p.shape)];
  if (p.size > 0) {
    const ins = (c.gradScale ? [p, g, m, v, c.gradScale] : [p, g, m, v]).map((t) => t.storage);
    const kernel = c.gradScale ? ADAMW_SCALED_KERNEL : ADAMW_KERNEL;
    p.backend.runWords(kernel, ins, outs.map((t) => t.storage), p.size, params);
  }
  return outs as [Tensor, Tensor, Tensor];
}
