/**
 * The relative layer-wise error `‖X·W − X·Ŵ‖² / ‖X·W‖²` of a quantized
 * [in, out] weight on the calibration inputs X, from their Hessian alone:
 * with H = (2/n)·XᵀX, `‖X·Δ‖² = (n/2)·tr(Δᵀ·H·Δ)`, so the ratio is
 * `tr(Δᵀ·H·Δ) / tr(Wᵀ·H·W)` with Δ = W − Ŵ (the factor cancels). No
 * calibration input needs to be kept.
 *
 * @module
 */
import { matmul, type Tensor, tensor } from "@lowp/core";

/**
 * `‖X·W − X·Ŵ‖² / ‖X·W‖²` for `weight` W and `quantized` Ŵ ([in, out], f32)
 * from `hessian` ([in·in], e.g. `HessianAccumulator.hessian()`): the two
 * products H·W and H·Δ run on the weight's backend (f32), the traces are
 * summed in f64 on the host. 0 when X·W is 0 and so is X·Ŵ's difference.
 */
export async function hessianLayerError(weight: Tensor, quantized: Tensor, hessian: Float64Array): Promise<number> {
  const [n, out] = weight.shape;
  if (weight.rank !== 2 || quantized.shape.join() !== weight.shape.join() || hessian.length !== n * n) {
    throw new Error(
      `hessianLayerError: needs W and Ŵ of one [in, out] shape and an in·in Hessian; got ${weight.describe()}, ` +
        `${quantized.describe()} and ${hessian.length} Hessian values`,
    );
  }
  const w = await weight.data(), q = await quantized.data();
  const delta = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) delta[i] = w[i] - q[i];
  const backend = weight.backend;
  const h = tensor(Float32Array.from(hessian), { backend, shape: [n, n] });
  const d = tensor(delta, { backend, shape: [n, out] });
  const hw = matmul(h, weight), hd = matmul(h, d);
  const [hwv, hdv] = [await hw.data(), await hd.data()];
  for (const t of [h, d, hw, hd]) t.dispose();
  let num = 0, den = 0;
  for (let i = 0; i < w.length; i++) num += delta[i] * hdv[i], den += w[i] * hwv[i];
  return den > 0 ? num / den : num > 0 ? Infinity : 0;
}
