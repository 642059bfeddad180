/**
 * Number formats: element formats (FP8 E4M3/E5M2, FP6, FP4, any ExMy), INT-k,
 * MX block formats, NVFP4, NF4 and Flexpoint, with exact quantize/dequantize
 * on both backends (identical bits), rounding modes and scale formats.
 *
 * @module
 */
export * from "./spec.ts";
export * from "./element.ts";
export * from "./exact.ts";
export * from "./kernels.ts";
export * from "./float.ts";
export * from "./registry.ts";
export * from "./scales.ts";
export * from "./mx.ts";
export * from "./nvfp4.ts";
export * from "./fake_quant.ts";
export * from "./hadamard.ts";
export * from "./scaling.ts";
export * from "./int.ts";
export * from "./nf4.ts";
export * from "./flex.ts";
export * from "./autoflex.ts";
export * from "./pack.ts";
export * from "./quant_tensor.ts";
export * from "./scale_quantizer.ts";
export * from "./quantize_file.ts";
export * from "./tensor_scale.ts";
export * from "./quest.ts";
export * from "./precision.ts";
export * from "./lsq.ts";
export * from "./quantized_linear.ts";
export * from "./qlora.ts";
export { HOST_QUANT_AVAILABLE } from "./host_quant.ts";
export * from "./ptq/weight_spec.ts";
export * from "./ptq/grid.ts";
export * from "./ptq/linalg.ts";
export * from "./ptq/hessian.ts";
export * from "./ptq/gptq.ts";
export * from "./ptq/layer_error.ts";
export * from "./ptq/awq.ts";
export * from "./ptq/awq_model.ts";
