/** The CI-sized LM recipe shared by the training tests (two small blocks on short byte windows). */
import type { LMRecipe } from "@lowp/recipes";

/** A CI-sized recipe: two small blocks on short byte windows. */
export function smallRecipe(overrides: Partial<LMRecipe["train"]> = {}, seed = 0): LMRecipe {
  return {
    kind: "lm",
    name: "test",
    seed,
    backend: "cpu",
    out_dir: "runs",
    data: { corpus: "brown", path: "", url: "", max_bytes: 2_000_000, val_fraction: 0.05 },
    model: {
      d_model: 48,
      n_layers: 2,
      n_heads: 2,
      context: 24,
      mlp_ratio: 4,
      norm: "layernorm",
      mlp: "gelu",
      position: "learned",
      tie_embeddings: true,
    },
    train: {
      steps: 12,
      batch_size: 8,
      optimizer: "adamw",
      lr: 5e-3,
      min_lr: 5e-4,
      warmup: 5,
      weight_decay: 0.1,
      beta1: 0.9,
      beta2: 0.99,
      momentum: 0.9,
      grad_clip: 1,
      log_every: 1,
      eval_every: 1000,
      eval_batches: 2,
      checkpoint_every: 0,
      ...overrides,
    },
  };
}
