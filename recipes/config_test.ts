import assert from "node:assert/strict";
import { ConfigError, describeSchema, loadRecipe, parseRecipe, type Schema } from "./config.ts";

const schema: Schema = {
  name: { type: "string", doc: "Run name." },
  seed: { type: "int", default: 0, doc: "Random seed." },
  model: {
    type: "section",
    doc: "Model shape.",
    fields: {
      d_model: { type: "int", default: 256, min: 1, doc: "Hidden size." },
      n_layers: { type: "int", default: 4, min: 1, max: 96, doc: "Number of blocks." },
      dtype: { type: "string", default: "fp8", choices: ["fp8", "bf16", "fp32"], doc: "Matmul precision." },
    },
  },
  train: {
    type: "section",
    doc: "Optimisation.",
    fields: {
      steps: { type: "int", doc: "Number of steps." },
      lr: { type: "number", default: 3e-4, min: 0, doc: "Learning rate." },
      compile: { type: "bool", default: true, doc: "Fuse kernels." },
    },
  },
};

const FILE = "recipes/tiny.yaml";

/** Asserts that parsing throws a ConfigError whose message contains every part. */
function fails(text: string, parts: string[], overrides?: Record<string, string>): string {
  let message = "";
  assert.throws(() => parseRecipe(text, schema, FILE, overrides), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.equal(e.name, "ConfigError");
    message = e.message;
    return true;
  });
  for (const part of parts) {
    assert.ok(message.includes(part), `${JSON.stringify(message)} lacks ${JSON.stringify(part)}`);
  }
  return message;
}

Deno.test("valid recipe with nested sections fills defaults", () => {
  const text = "name: tiny\n# comment\nmodel:\n  d_model: 128\ntrain:\n  steps: 200\n  lr: 0.001\n";
  assert.deepEqual(parseRecipe(text, schema, FILE), {
    name: "tiny",
    seed: 0,
    model: { d_model: 128, n_layers: 4, dtype: "fp8" },
    train: { steps: 200, lr: 0.001, compile: true },
  });
});

Deno.test("empty section value gets its defaults", () => {
  const cfg = parseRecipe("name: x\nmodel:\ntrain: {steps: 1}\n", schema, FILE);
  assert.deepEqual(cfg.model, { d_model: 256, n_layers: 4, dtype: "fp8" });
});

Deno.test("syntax error names file and line", () => {
  fails("name: tiny\ntrain:\n  steps: [1,\nmodel:\n  d_model: 3\n", [`${FILE}:4:`, "Flow sequence"]);
});

Deno.test("unknown key suggests the closest key", () => {
  const msg = fails("name: tiny\nmodel:\n  d_modle: 64\ntrain:\n  steps: 1\n", [
    `${FILE}:3: model.d_modle: unknown key`,
    "did you mean 'd_model'?",
    "allowed keys: d_model, n_layers, dtype",
  ]);
  assert.ok(!fails("name: t\nbanana: 1\n", [`${FILE}:2: banana: unknown key`]).includes("did you mean"), msg);
});

Deno.test("wrong type names key, line, expected and actual", () => {
  fails("name: tiny\ntrain:\n  steps: 1\n  compile: 'yes'\n", [
    `${FILE}:4: train.compile: expected true or false, got 'yes'`,
  ]);
  fails("name: tiny\ntrain:\n  steps: '10'\n", [`${FILE}:3: train.steps: expected an integer, got '10'`]);
  fails("name: 5\ntrain:\n  steps: 1\n", [`${FILE}:1: name: expected a string, got 5`]);
  fails("name: x\ntrain:\n  steps:\n    - 1\n", [`${FILE}:3: train.steps: expected a single value, got a list`]);
  fails("name: x\nmodel: 3\n", [`${FILE}:2: model: expected a section`]);
});

Deno.test("int given 3.5 is an error", () => {
  fails("name: tiny\n\ntrain:\n  steps: 3.5\n", [`${FILE}:4: train.steps: expected an integer, got 3.5`]);
});

Deno.test("out of range", () => {
  fails("name: tiny\nmodel:\n  d_model: -3\ntrain: {steps: 1}\n", [
    `${FILE}:3: model.d_model: expected an integer >= 1, got -3`,
  ]);
  fails("name: tiny\nmodel:\n  n_layers: 97\ntrain: {steps: 1}\n", [
    `${FILE}:3: model.n_layers:`,
    "in [1, 96], got 97",
  ]);
});

Deno.test("choice not allowed", () => {
  fails("name: tiny\ntrain: {steps: 1}\nmodel:\n  dtype: fp4\n", [
    `${FILE}:4: model.dtype: expected one of 'fp8', 'bf16', 'fp32', got 'fp4'`,
  ]);
});

Deno.test("missing required key reports the parent mapping's line", () => {
  fails("name: tiny\nmodel:\n  d_model: 8\ntrain:\n  lr: 0.1\n", [`${FILE}:4: missing required key 'train.steps'`]);
  fails("\n\nmodel:\n  d_model: 8\ntrain: {steps: 1}\n", [`${FILE}:3: missing required key 'name'`]);
  fails("name: tiny\n", [`${FILE}:1: missing required key 'train.steps'`]);
});

Deno.test("duplicate key names path and line", () => {
  fails("name: tiny\ntrain:\n  steps: 1\n  lr: 0.1\n  steps: 2\n", [`${FILE}:5: train.steps: duplicate key`, "line 3"]);
});

Deno.test("overrides are typed, validated and can supply required keys", () => {
  const cfg = parseRecipe("name: tiny\ntrain:\n  steps: 200\n", schema, FILE, {
    "train.steps": "50",
    "train.lr": "1e-3",
    "train.compile": "false",
    "model.dtype": "bf16",
    "name": "big",
  });
  assert.deepEqual(cfg.train, { steps: 50, lr: 0.001, compile: false });
  assert.deepEqual(cfg.model, { d_model: 256, n_layers: 4, dtype: "bf16" });
  assert.equal(cfg.name, "big");
  assert.deepEqual(parseRecipe("name: x\n", schema, FILE, { "train.steps": "7" }).train, {
    steps: 7,
    lr: 3e-4,
    compile: true,
  });
});

Deno.test("bad overrides say 'override <key>'", () => {
  const ok = "name: tiny\ntrain:\n  steps: 200\n";
  fails(ok, [`${FILE}: override train.steps: expected an integer, got 'abc'`], { "train.steps": "abc" });
  fails(ok, [`${FILE}: override train.steps: expected an integer, got '3.5'`], { "train.steps": "3.5" });
  fails(ok, [`${FILE}: override train.stpes: unknown key (did you mean 'steps'?)`], { "train.stpes": "5" });
  fails(ok, [`${FILE}: override model.d_model: expected an integer >= 1, got 0`], { "model.d_model": "0" });
  fails(ok, [`${FILE}: override train.compile: expected true or false, got 'maybe'`], { "train.compile": "maybe" });
  fails(ok, [`${FILE}: override model: is a section`], { "model": "x" });
});

Deno.test("loadRecipe reads the file and names it in errors", async () => {
  const path = new URL("./config_test.ts", import.meta.url).pathname;
  await assert.rejects(
    loadRecipe(path, schema),
    (e: unknown) => e instanceof ConfigError && e.message.startsWith(path),
  );
  await assert.rejects(loadRecipe("recipes/does-not-exist.yaml", schema), /recipes\/does-not-exist.yaml: cannot read/);
});

Deno.test("describeSchema lists types, defaults and docs", () => {
  const text = describeSchema(schema);
  assert.ok(text.includes("name: string (required)  Run name."));
  assert.ok(text.includes("  d_model: int >= 1 = 256  Hidden size."));
  assert.ok(text.includes('  dtype: string (fp8 | bf16 | fp32) = "fp8"  Matmul precision.'));
  assert.ok(text.includes("train:  Optimisation."));
});

Deno.test("a string field's check reports its reason with the key and line", () => {
  const checked: Schema = {
    quant: {
      type: "string",
      default: "e4m3",
      check: (v) => (v.startsWith("e") ? null : `unknown format '${v}'`),
      doc: "A number format.",
    },
  };
  assert.throws(
    () => parseRecipe("\nquant: int9\n", checked, FILE),
    (e: unknown) => e instanceof ConfigError && e.message === `${FILE}:2: quant: unknown format 'int9'`,
  );
  assert.equal(parseRecipe("quant: e5m2\n", checked, FILE).quant, "e5m2");
});
