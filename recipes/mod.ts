/**
 * Recipes: YAML configs checked against a schema, the corpora, the training
 * loop behind `deno task train`, progress display and SVG plots.
 *
 * @module
 */
export * from "./config.ts";
export * from "./progress.ts";
export * from "./schema.ts";
export * from "./kinds.ts";
export * from "./data.ts";
export * from "./trainer.ts";
export * from "./plot.ts";
export * from "./precision.ts";
export * from "./run_state.ts";
export * from "./run_dir.ts";
export * from "./finetune.ts";
export * from "./merge.ts";
export * from "./ptq.ts";
export * from "./ptq_output.ts";
