/**
 * Optimizers (SGD with momentum/Nesterov, AdamW), optimizers for weights
 * that live in a low-precision format (ECO-Adam and ECO-SGD, and the
 * master-weight and naive baselines), gradient clipping by global norm, and
 * learning-rate schedules. Updates run on the parameters' backend with no
 * readback.
 *
 * @module
 */
export * from "./optimizer.ts";
export * from "./sgd.ts";
export * from "./adamw.ts";
export * from "./clip.ts";
export * from "./schedule.ts";
export * from "./train_step.ts";
export * from "./adamw_kernel.ts";
export * from "./quantized_weights.ts";
export * from "./eco.ts";
export * from "./baselines.ts";
export * from "./eco_kernels.ts";
export * from "./memory.ts";
