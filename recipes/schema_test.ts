import assert from "node:assert/strict";
import { ConfigError, parseRecipe } from "./config.ts";
import { parseAnyRecipe, RECIPE_KINDS } from "./kinds.ts";
import { DEFAULT_WARMUP, formatField, LM_SCHEMA, type LMRecipe } from "./schema.ts";

Deno.test("format names in a recipe: known names pass, unknown ones name the line and the known names", () => {
  const schema = { weights: formatField("weight format", "e4m3") };
  assert.equal(parseRecipe("weights: mxfp4\n", schema, "r.yaml").weights, "mxfp4");
  assert.equal(parseRecipe("weights: e3m4\n", schema, "r.yaml").weights, "e3m4");
  assert.throws(
    () => parseRecipe("# quantization\nweights: int9\n", schema, "r.yaml"),
    (e: unknown) =>
      e instanceof ConfigError && /^r\.yaml:2: weights: unknown format 'int9': expected one of .*nvfp4/.test(e.message),
  );
});

Deno.test("a warm-up the recipe does not set is scaled to short runs; a set one that is too long says how to fix it", () => {
  const warmup = (text: string, overrides?: Record<string, string>) =>
    parseAnyRecipe(text, "r.yaml", overrides).train.warmup;
  assert.equal(warmup("name: x\ntrain:\n  steps: 5\n"), 0);
  assert.equal(warmup("name: x\ntrain:\n  steps: 100\n"), 10);
  assert.equal(warmup("name: x\ntrain:\n  steps: 1000\n"), DEFAULT_WARMUP);
  assert.equal(warmup("name: x\n", { "train.steps": "50" }), 5);
  assert.equal(warmup("name: x\ntrain:\n  steps: 5\n  warmup: 2\n"), 2, "a warm-up the user set is kept");
  assert.throws(
    () => parseAnyRecipe("name: x\ntrain:\n  warmup: 20\n", "r.yaml", { "train.steps": "5" }),
    (e: unknown) =>
      e instanceof ConfigError &&
      e.message ===
        "r.yaml: train.warmup (20) must be smaller than train.steps (5): lower it, e.g. --set train.warmup=0",
  );
});

Deno.test("recipe kinds: kind defaults to lm, an unknown kind names its line and the known kinds", () => {
  assert.equal(parseAnyRecipe("name: x\n", "r.yaml").kind, "lm");
  assert.equal(parseAnyRecipe("kind: lm\nname: x\n", "r.yaml").kind, "lm");
  assert.throws(
    () => parseAnyRecipe("name: x\nkind: sft\n", "r.yaml"),
    (e: unknown) => e instanceof ConfigError && e.message === "r.yaml:2: kind: unknown kind 'sft'; known kinds: lm",
  );
  assert.deepEqual(Object.keys(RECIPE_KINDS), ["lm"]);
  // The LM recipe type is derived from LM_SCHEMA: choices become literal unions (checked at compile time).
  const r: LMRecipe = parseAnyRecipe("name: x\n", "r.yaml");
  const optimizer: (typeof LM_SCHEMA.train.fields.optimizer.choices)[number] = r.train.optimizer;
  const norm: "layernorm" | "rmsnorm" = r.model.norm;
  const tied: boolean = r.model.tie_embeddings;
  assert.equal(optimizer, LM_SCHEMA.train.fields.optimizer.default);
  assert.equal(tied, true);
  assert.equal(norm, "layernorm");
});
