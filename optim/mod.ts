/**
 * Optimizers (SGD with momentum/Nesterov, AdamW), gradient clipping by global
 * norm, and learning-rate schedules. Updates run on the parameters' backend
 * with no readback.
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
