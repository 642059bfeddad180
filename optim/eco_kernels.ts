/**
 * The two word kernels the quantized-weight optimizers add to the AdamW
 * kernel: the SGD step with EMA momentum (ECO paper arXiv 2601.22101,
 * Algorithm 2) and ECO's momentum correction, which folds the rounding error
 * of the step into the first moment. Each is written once in TypeScript
 * (every operation rounded to f32 with `Math.fround`, in the WGSL's order)
 * and once in WGSL, as `adamw_kernel.ts` does. Float arithmetic: the
 * backends agree within a few ulp (a GPU may fuse a multiply-add); each
 * backend is deterministic.
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { asF32, f32Bits, rangeKernel, type WordKernel, type WordRange } from "@lowp/kernels";

const fr = Math.fround;

/** CPU twin of the SGD-EMA WGSL: `m ← β·m + (1-β)·g`, `p ← p·(1 - η·λ) - η·m`. */
const sgdEmaRange: WordRange = (start, end, ins, outs, q) => {
  const k = asF32(q);
  const [p, g, m, scale] = ins.map(asF32);
  const [pOut, mOut] = outs.map(asF32);
  const s = scale ? scale[0] : 1;
  for (let i = start; i < end; i++) {
    const gi = scale ? fr(g[i] * s) : g[i];
    const mi = fr(fr(k[0] * m[i]) + fr(k[1] * gi));
    mOut[i] = mi;
    pOut[i] = fr(fr(p[i] * k[2]) - fr(k[3] * mi));
  }
};

/** Inputs p, g, m (and with `scaled` a 1-element gradient scale); outputs p', m'. Params (f32 bits): β, 1-β, 1-η·λ, η. */
function sgdEmaKernel(scaled: boolean): WordKernel {
  return rangeKernel({
    name: scaled ? "sgd_ema_step_scaled" : "sgd_ema_step",
    inputs: scaled ? 4 : 3,
    outputs: 2,
    range: sgdEmaRange,
    wgsl: `  let k0 = bitcast<f32>(Q(0u)); let k1 = bitcast<f32>(Q(1u));
  let k2 = bitcast<f32>(Q(2u)); let k3 = bitcast<f32>(Q(3u));
  let g = bitcast<f32>(in1[i])${scaled ? " * bitcast<f32>(in3[0])" : ""};
  let m = k0 * bitcast<f32>(in2[i]) + k1 * g;
  out1[i] = bitcast<u32>(m);
  out0[i] = bitcast<u32>(bitcast<f32>(in0[i]) * k2 - k3 * m);`,
  });
}

const SGD_EMA_KERNEL = sgdEmaKernel(false);
const SGD_EMA_SCALED_KERNEL = sgdEmaKernel(true);

/** The constants of one SGD-EMA step, as {@link sgdEmaUpdate} takes them. */
export interface SgdEmaConstants {
  /** Momentum β of the EMA `m ← β·m + (1-β)·g`. */
  readonly momentum: number;
  /** Learning rate η. */
  readonly lr: number;
  /** Decoupled weight decay λ for this parameter (0: none). */
  readonly weightDecay: number;
  /** A 1-element tensor the gradient is multiplied by first (a clipping factor), if any. */
  readonly gradScale?: Tensor;
}

/**
 * One fused step of SGD with EMA momentum (ECO paper, Algorithm 2, with decoupled decay):
 * `m' = β·m + (1-β)·g`, `p' = p·(1 - η·λ) - η·m'`. Returns new (p', m') tensors.
 */
export function sgdEmaUpdate(p: Tensor, g: Tensor, m: Tensor, c: SgdEmaConstants): [Tensor, Tensor] {
  const params = [c.momentum, 1 - c.momentum, 1 - c.lr * c.weightDecay, c.lr].map(f32Bits);
  const outs = [emptyTensor(p.backend, p.shape), emptyTensor(p.backend, p.shape)];
  if (p.size > 0) {
    const ins = (c.gradScale ? [p, g, m, c.gradScale] : [p, g, m]).map((t) => t.storage);
    const kernel = c.gradScale ? SGD_EMA_SCALED_KERNEL : SGD_EMA_KERNEL;
    p.backend.runWords(kernel, ins, outs.map((t) => t.storage), p.size, params);
  }
  return outs as [Tensor, Tensor];
}

/**
 * CPU twin of the correction WGSL. Inputs: W̃, Ŵ = q(W̃), M̃, then Ṽ (Adam) and E_prev (exact variant).
 * `e = W̃ - Ŵ`; `d = sqrt(Ṽ)·k1 + ε` (Adam: the AdamW kernel's denominator, same operations) or 1 (SGD);
 * `x = e` (ECO) or `E_prev - e·(1/β)` (exact); `M = x == 0 ? M̃ : M̃ + c·(d·x)`. The exact variant also
 * writes e. Params (f32 bits): c, k1 = 1/sqrt(1-β2^t), ε, 1/β.
 */
function correctionRange(adam: boolean, exact: boolean): WordRange {
  return (start, end, ins, outs, q) => {
    const k = asF32(q);
    const [wt, wq, m] = ins.map(asF32);
    const v = adam ? asF32(ins[3]) : null;
    const ePrev = exact ? asF32(ins[adam ? 4 : 3]) : null;
    const mOut = asF32(outs[0]), eOut = exact ? asF32(outs[1]) : null;
    for (let i = start; i < end; i++) {
      const e = fr(wt[i] - wq[i]);
      const d = v ? fr(fr(Math.sqrt(v[i]) * k[1]) + k[2]) : 1;
      const x = ePrev ? fr(ePrev[i] - fr(e * k[3])) : e;
      // x == 0: the step rounded nothing away (always so with a quantizer that rounds nothing), M stays M̃ bit for bit.
      mOut[i] = x === 0 ? m[i] : fr(m[i] + fr(k[0] * fr(d * x)));
      if (eOut) eOut[i] = e;
    }
  };
}

function correctionKernel(adam: boolean, exact: boolean): WordKernel {
  const ePrev = adam ? "in4" : "in3";
  return rangeKernel({
    name: `eco_correction${adam ? "_adam" : "_sgd"}${exact ? "_exact" : ""}`,
    inputs: 3 + (adam ? 1 : 0) + (exact ? 1 : 0),
    outputs: exact ? 2 : 1,
    range: correctionRange(adam, exact),
    wgsl: `  let c = bitcast<f32>(Q(0u)); let k1 = bitcast<f32>(Q(1u));
  let eps = bitcast<f32>(Q(2u)); let inv_beta = bitcast<f32>(Q(3u));
  let e = bitcast<f32>(in0[i]) - bitcast<f32>(in1[i]);
  let m = bitcast<f32>(in2[i]);
  let d = ${adam ? "sqrt(bitcast<f32>(in3[i])) * k1 + eps" : "1.0"};
  let x = ${exact ? `bitcast<f32>(${ePrev}[i]) - e * inv_beta` : "e"};
  out0[i] = select(bitcast<u32>(m + c * (d * x)), in2[i], x == 0.0);${exact ? "\n  out1[i] = bitcast<u32>(e);" : ""}`,
  });
}

const CORRECTION_KERNELS = new Map<string, WordKernel>();

/** The constants of one ECO correction, as {@link ecoCorrection} takes them. */
export interface EcoCorrectionConstants {
  /**
   * The factor c of the correction: ECO `(1-η·λ)·(1-β1^t)/η·(1 - 1/β1)` (Adam) or `(1-η·λ)/η·(1 - 1/β)`
   * (SGD); the exact variant leaves out the `(1 - 1/β)`.
   */
  readonly factor: number;
  /** Adam: (β2, ε, 1-based step) for the denominator `sqrt(Ṽ/(1-β2^t)) + ε`; absent for SGD. */
  readonly adam?: { readonly beta2: number; readonly eps: number; readonly step: number };
  /** Exact variant: β (β1 for Adam) and the previous step's error E_prev. */
  readonly exact?: { readonly beta: number; readonly previousError: Tensor };
}

/**
 * ECO's momentum correction in one kernel: with `E = W̃ - Ŵ` (the step's rounding error),
 * returns `M̃ + c·d⊙E` (ECO) or `M̃ + c·d⊙(E_prev - E/β)` (exact variant, which also returns E as the
 * next E_prev), where d is Adam's denominator `sqrt(Ṽ/(1-β2^t)) + ε` or 1 for SGD. Where the term is
 * exactly zero the momentum comes back bit for bit.
 */
export function ecoCorrection(
  wt: Tensor,
  wq: Tensor,
  m: Tensor,
  v: Tensor | null,
  c: EcoCorrectionConstants,
): [Tensor, Tensor | null] {
  const adam = c.adam !== undefined, exact = c.exact !== undefined;
  if (adam !== (v !== null)) {
    throw new Error("ecoCorrection: pass the second moment exactly when adam constants are given");
  }
  const key = `${adam}/${exact}`;
  const kernel = CORRECTION_KERNELS.get(key) ?? CORRECTION_KERNELS.set(key, correctionKernel(adam, exact)).get(key)!;
  const k1 = c.adam ? 1 / Math.sqrt(1 - Math.pow(c.adam.beta2, c.adam.step)) : 1;
  const params = [c.factor, k1, c.adam?.eps ?? 0, c.exact ? 1 / c.exact.beta : 1].map(f32Bits);
  const mOut = emptyTensor(m.backend, m.shape), eOut = exact ? emptyTensor(m.backend, m.shape) : null;
  if (m.size > 0) {
    const ins = [wt, wq, m, ...(v ? [v] : []), ...(c.exact ? [c.exact.previousError] : [])].map((t) => t.storage);
    m.backend.runWords(kernel, ins, [mOut, ...(eOut ? [eOut] : [])].map((t) => t.storage), m.size, params);
  }
  return [mOut, eOut];
}
