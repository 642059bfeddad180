import assert from "node:assert/strict";
import { PRECISION_PRESETS } from "@lowp/formats";
import { checkLMRecipe, LM_SCHEMA, type LMRecipe, parseRecipe, precisionName, precisionOf } from "@lowp/recipes";

const parse = (text: string, overrides: Record<string, string> = {}) =>
  parseRecipe(`name: t\n${text}`, LM_SCHEMA, "r.yaml", overrides) as LMRecipe;

Deno.test("precision: a preset name, in YAML or with --set precision=NAME; f32 by default", () => {
  assert.equal(parse("").precision.preset, "f32");
  assert.deepEqual(precisionOf(parse("precision: quartet\n").precision), PRECISION_PRESETS.quartet.precision);
  assert.equal(parse("", { precision: "fp8-current" }).precision.preset, "fp8-current");
  assert.equal(parse("precision: quartet\n", { precision: "mxfp8" }).precision.preset, "mxfp8");
  assert.equal(precisionName(parse("precision: nvfp4\n").precision), "nvfp4");
});

Deno.test("precision: roles replace the preset's, only what differs from the defaults is recorded", () => {
  const r = parse(`precision:
  preset: qat-int8
  skip: "**.c_proj"
  roles:
    forward.weight: { format: int4, granularity: "group:32" }
    grad_weight.grad_output: { format: e5m2, scaling: delayed, amax_history_len: 16 }
`);
  const p = precisionOf(r.precision);
  assert.deepEqual(p.forward?.weight, { format: "int4", granularity: "group:32" });
  assert.deepEqual(p.forward?.input, PRECISION_PRESETS["qat-int8"].precision.forward?.input);
  assert.deepEqual(p.grad_weight?.grad_output, {
    format: "e5m2",
    scaling: "delayed",
    amax_history_len: 16,
    amax_compute_algo: "max",
  });
  assert.equal(r.precision.skip, "**.c_proj");
  assert.equal(precisionName(r.precision), "qat-int8+custom");
});

Deno.test("precision: an Autoflex role records its knobs; a bad knob names its key", () => {
  const r = parse(`precision:
  preset: flex16+5
  roles:
    forward.input: { format: flex16+5, scaling: autoflex, autoflex_history: 8 }
`);
  assert.deepEqual(precisionOf(r.precision).forward?.input, {
    format: "flex16+5",
    scaling: "autoflex",
    autoflex_history: 8,
    autoflex_sigmas: 3,
    autoflex_margin: 100,
  });
  assert.deepEqual(precisionOf(r.precision).forward?.weight, { format: "flex16+5", scaling: "autoflex" });
  assert.throws(
    () =>
      parse("precision:\n  roles:\n    forward.input: { format: flex16+5, scaling: autoflex, autoflex_history: 0 }\n"),
    /r.yaml:4: precision.roles\["forward.input"\].autoflex_history/,
  );
});

Deno.test("precision: bad input names the file, line and key", () => {
  assert.throws(
    () => parse("precision: fp9\n"),
    /r.yaml:2: precision.preset: unknown precision 'fp9': expected one of f32/,
  );
  assert.throws(
    () => parse("precision:\n  roles:\n    forward.weight: { format: e9m1 }\n"),
    /r.yaml:4: precision.roles\["forward.weight"\].format: format 'e9m1'/,
  );
  assert.throws(
    () => parse("precision:\n  roles:\n    forward.bias: { format: e4m3 }\n"),
    /r.yaml:4: precision.roles\["forward.bias"\]: unknown role; expected one of forward.input, forward.weight/,
  );
  assert.throws(() => parse("", { precision: "fp9" }), /r.yaml: override precision: unknown precision 'fp9'/);
  assert.throws(
    () => parse("precision: [1, 2]\n"),
    /precision: expected a section \(mapping\) or one value \(its preset\)/,
  );
});

Deno.test("precision.lsq: learns the steps of the preset's forward int operands; in YAML or with --set", () => {
  const want = (preset: string) => {
    const f = PRECISION_PRESETS[preset].precision.forward!;
    return { forward: { input: { ...f.input!, lsq: true }, weight: { ...f.weight!, lsq: true } } };
  };
  const recipe = parse("precision:\n  preset: qat-int4\n  lsq: true\n");
  checkLMRecipe(recipe, "r.yaml");
  const yaml = recipe.precision;
  assert.deepEqual(precisionOf(yaml), want("qat-int4"));
  assert.equal(precisionName(yaml), "qat-int4+lsq");
  const set = parse("", { precision: "qat-int8", "precision.lsq": "true" }).precision;
  assert.deepEqual(precisionOf(set), want("qat-int8"));
  assert.equal(precisionOf(parse("precision: qat-int8\n").precision).forward?.weight?.lsq, undefined, "off by default");
  const role = parse(`precision:
  preset: qat-int8
  roles:
    forward.weight: { format: int4, granularity: "group:32", lsq: true }
`).precision;
  assert.deepEqual(precisionOf(role).forward?.weight, { format: "int4", granularity: "group:32", lsq: true });
  assert.equal(precisionOf(role).forward?.input?.lsq, undefined);
  assert.equal(precisionName(role), "qat-int8+custom");
  assert.throws(
    () => checkLMRecipe(parse("precision:\n  preset: fp8-current\n  lsq: true\n"), "r.yaml"),
    /r.yaml: precision.lsq learns the steps of forward signed int operands, and precision 'fp8-current' has none/,
  );
  assert.throws(
    () => parse("precision:\n  preset: qat-int8\n  lsq: maybe\n"),
    /r.yaml:4: precision.lsq: expected true or false/,
  );
});
