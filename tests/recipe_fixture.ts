/** The CI-sized LM recipe shared by the training tests (two small blocks on short byte windows). */
import { LM_SCHEMA, type LMRecipe, parseRecipe } from "@lowp/recipes";

const SMALL = `
name: test
backend: cpu
data: { corpus: brown, max_bytes: 2000000 }
model: { d_model: 48, n_layers: 2, n_heads: 2, context: 24 }
train:
  steps: 12
  batch_size: 8
  lr: 0.005
  min_lr: 0.0005
  warmup: 5
  log_every: 1
  eval_every: 1000
  eval_batches: 2
`;

/**
 * A CI-sized recipe: two small blocks on short byte windows; every other key at its schema default (so a key
 * added to the schema needs no change here). `overrides` replace train keys; `precision` sets that section.
 */
export function smallRecipe(
  overrides: Partial<LMRecipe["train"]> = {},
  seed = 0,
  precision?: string,
): LMRecipe {
  const r = parseRecipe(SMALL, LM_SCHEMA, "small-recipe", precision ? { precision } : {}) as LMRecipe;
  return { ...r, seed, train: { ...r.train, ...overrides } };
}
