import assert from "node:assert/strict";
import { ConfigError, parseRecipe } from "./config.ts";
import { formatField } from "./schema.ts";

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
