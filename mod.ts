/**
 * lowp: a Deno/TypeScript framework for low-precision and
 * quantization-aware training. This entry re-exports the members:
 *
 * - `@lowp/kernels`: the backend contract, the CPU reference backend, the
 *   WebGPU backend (WGSL) and the Philox-4x32-10 generator;
 * - `@lowp/core`: tensors, autograd, ops, nn modules (GPT), checkpoints;
 * - `@lowp/formats`: number formats (FP8/6/4, INT-k, MX, NVFP4, NF4, Flexpoint), packing, STE fake-quant;
 * - `@lowp/optim`: SGD, AdamW, clipping, schedules;
 * - `@lowp/recipes`: YAML recipes, corpora, the training loop, plots.
 *
 * @example
 * ```ts
 * import { AdamW, backward, GPT, tensor, tidy, useBackend } from "./mod.ts";
 * await useBackend("cpu");
 * const model = new GPT({ vocabSize: 256, contextLength: 16, dModel: 32, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * const opt = new AdamW(model.namedParameters());
 * const tokens = tensor([[72, 101, 108, 108, 111]], { dtype: "i32" });
 * const targets = tensor([[101, 108, 108, 111, 33]], { dtype: "i32" });
 * const loss = tidy(() => {
 *   const loss = model.loss(tokens, targets);
 *   backward(loss);
 *   opt.step(1e-3);
 *   model.zeroGrad();
 *   return loss;
 * });
 * console.log(await loss.item());
 * ```
 *
 * @module
 */
export * from "@lowp/kernels";
export * from "@lowp/core";
export * from "@lowp/formats";
export * from "@lowp/optim";
export * from "@lowp/recipes";
