/**
 * Bytes of weights and optimizer state per parameter for any optimizer: the
 * quantized-weight optimizers report theirs as if packed; the f32 ones
 * (AdamW, SGD) count 4 bytes per weight and per state element.
 *
 * @module
 */
import { namedParams, type Optimizer, type ParamList } from "./optimizer.ts";
import { type MemoryReport, QuantizedWeightOptimizer } from "./quantized_weights.ts";

/**
 * The {@link MemoryReport} of `opt` training `params`: `opt.memory()` for ECO and its baselines; for
 * other optimizers, f32 weights plus the f32 state tensors `opt.state()` lists (state created lazily
 * counts once the first step has run: AdamW then gives 4 + 8 = 12 bytes per parameter).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { AdamW, optimizerMemory } from "@lowp/optim";
 * const w = tensor([[1, 2]], { requiresGrad: true });
 * const opt = new AdamW([w]);
 * w.grad = tensor([[0.1, 0.1]]).keep();
 * opt.step(1e-3);
 * console.assert(optimizerMemory(opt, [w]).bytesPerParameter === 12);
 * ```
 */
export function optimizerMemory(opt: Optimizer, params: ParamList): MemoryReport {
  if (opt instanceof QuantizedWeightOptimizer) return opt.memory();
  const parameters = namedParams(params).reduce((n, [, p]) => n + p.size, 0);
  const stateBytes = opt.state().reduce((n, [, t]) => n + 4 * t.size, 0);
  const weightBytes = 4 * parameters;
  return { parameters, weightBytes, stateBytes, bytesPerParameter: (weightBytes + stateBytes) / parameters };
}
