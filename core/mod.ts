/**
 * The engine: tensors, reverse-mode autograd, ops, neural-network modules,
 * random initialisation and safetensors checkpoints, over the CPU reference
 * backend or WebGPU.
 *
 * @example
 * ```ts
 * import { backward, matmul, sum, tensor, useBackend } from "@lowp/core";
 * await useBackend("cpu");
 * const w = tensor([[1, 2], [3, 4]], { requiresGrad: true });
 * backward(sum(matmul(w, w)));
 * console.log(await w.grad!.toArray());
 * ```
 *
 * @module
 */
export type { Backend, BackendName, DType, TypedArray } from "@lowp/kernels";
export * from "./runtime.ts";
export * from "./tensor.ts";
export * from "./creation.ts";
export * from "./autograd.ts";
export * from "./ops/broadcast.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/reduce.ts";
export * from "./ops/shape.ts";
export * from "./ops/matmul.ts";
export * from "./ops/index.ts";
export * from "./ops/nn.ts";
export * from "./ops/layernorm.ts";
export * from "./ops/softmax.ts";
export * from "./safetensors.ts";
export * from "./nn/module.ts";
export * from "./nn/layers.ts";
export * from "./nn/gpt.ts";
export * from "./nn/kv_cache.ts";
export * from "./nn/lora.ts";
export * from "./nn/generate.ts";
export * from "./checkpoint.ts";
