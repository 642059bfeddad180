import assert from "node:assert/strict";
import { AdamW, EcoAdam, EcoSGD, MasterWeights, NaiveQuantized, SGD } from "@lowp/optim";
import { buildModel, checkLMRecipe, LM_SCHEMA, type LMRecipe, parseRecipe } from "@lowp/recipes";
import { buildOptimizer } from "./trainer.ts";

const recipe = (overrides: Record<string, string>) => {
  const r = parseRecipe(
    "name: t\nmodel: { d_model: 32, n_layers: 1, n_heads: 2, context: 8 }\n",
    LM_SCHEMA,
    "r.yaml",
    overrides,
  ) as LMRecipe;
  checkLMRecipe(r, "r.yaml");
  return r;
};

Deno.test("train.optimizer builds each optimizer family over the trainable parameters", () => {
  const cases = [
    ["adamw", AdamW],
    ["sgd", SGD],
    ["eco-adam", EcoAdam],
    ["eco-sgd", EcoSGD],
    ["master-adam", MasterWeights],
    ["naive-sgd", NaiveQuantized],
  ] as const;
  for (const [name, kind] of cases) {
    const weights: Record<string, string> = name.includes("-") ? { "train.weight_format": "e4m3" } : {};
    const r = recipe({ "train.optimizer": name, ...weights });
    const model = buildModel(r);
    assert.ok(buildOptimizer(r, model) instanceof kind, name);
    model.dispose();
  }
});

Deno.test("train.optimizer: ECO and its baselines need a weight format; ECO needs lr > 0; f32 formats refused", () => {
  assert.throws(() => recipe({ "train.optimizer": "eco-adam" }), /eco-adam needs train.weight_format/);
  assert.throws(
    () => recipe({ "train.optimizer": "eco-adam", "train.weight_format": "e4m3", "train.lr": "0" }),
    /train.lr must be > 0 with eco-adam/,
  );
  assert.throws(() => recipe({ "train.weight_format": "e4m3" }), /apply to eco\/master\/naive optimizers only/);
  assert.throws(() => recipe({ "train.weight_format": "e9m9" }), /override train.weight_format: format 'e9m9'/);
  const r = recipe({ "train.optimizer": "eco-adam", "train.weight_format": "e8m23" });
  const model = buildModel(r);
  assert.throws(() => buildOptimizer(r, model), /EcoAdam/);
  model.dispose();
});
