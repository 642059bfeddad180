import assert from "node:assert/strict";
import {
  ConfigError,
  describeSchema,
  givenKeys,
  loadRecipe,
  parseRecipe,
  recipeKind,
  type RecipeOf,
  type Schema,
} from "./config.ts";

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

/** A per-layer precision setting, as a test of map and list fields (not part of the LM schema). */
const PRECISION_SCHEMA = {
  name: { type: "string", default: "p", doc: "Run name." },
  layers: { type: "list", of: { type: "int", min: 0, doc: "A block index." }, default: [0], doc: "Blocks to train." },
  tags: { type: "list", of: { type: "string", choices: ["a", "b"], doc: "A tag." }, doc: "Required tags." },
  precision: {
    type: "map",
    doc: "Per-layer settings by module-name pattern.",
    checkKey: (k) => (/^[\w.*]+$/.test(k) ? null : `'${k}' is not a module-name pattern (letters, digits, _, ., *)`),
    of: {
      type: "section",
      doc: "Settings of the matching layers.",
      fields: {
        format: { type: "string", default: "bf16", choices: ["e4m3", "e5m2", "bf16"], doc: "Number format." },
        block: { type: "int", default: 32, min: 1, doc: "Block size." },
      },
    },
  },
  scales: { type: "map", of: { type: "number", min: 0, doc: "A factor." }, doc: "Factor per name." },
} as const satisfies Schema;

const PRECISION_YAML = `name: run
tags: [a, b]
precision:
  "transformer.h.*.mlp.*": {format: e4m3}
  transformer.h.0.attn.c_attn:
    format: e5m2
    block: 16
scales:
  wte: 0.5
`;

function failsWith(schema: Schema, text: string, want: string, overrides?: Record<string, string>): void {
  assert.throws(() => parseRecipe(text, schema, FILE, overrides), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.equal(e.message, want);
    return true;
  });
}

Deno.test("list and map fields: values, per-entry defaults, and a type derived from the schema", () => {
  const r = parseRecipe(PRECISION_YAML, PRECISION_SCHEMA, FILE) as RecipeOf<typeof PRECISION_SCHEMA>;
  assert.deepEqual(r.tags, ["a", "b"]);
  assert.deepEqual(r.layers, [0], "list default");
  assert.deepEqual(r.precision, {
    "transformer.h.*.mlp.*": { format: "e4m3", block: 32 },
    "transformer.h.0.attn.c_attn": { format: "e5m2", block: 16 },
  });
  assert.deepEqual(r.scales, { wte: 0.5 });
  assert.deepEqual(parseRecipe("tags:\n  - b\n", PRECISION_SCHEMA, FILE).precision, {}, "a map defaults to empty");
  // Compile-time checks of RecipeOf: literal unions from choices, arrays, records of sections.
  const format: "e4m3" | "e5m2" | "bf16" = r.precision["x"]?.format ?? "bf16";
  const layers: number[] = r.layers;
  const name: string = r.name;
  assert.ok(format && layers && name);
});

Deno.test("list and map fields: each bad entry names its own line and key", () => {
  const s = PRECISION_SCHEMA;
  failsWith(s, "tags: [a, c]\n", `${FILE}:1: tags[1]: expected one of 'a', 'b', got 'c'`);
  failsWith(s, "tags:\n  - a\n  - 7\n", `${FILE}:3: tags[1]: expected a string, got 7`);
  failsWith(s, "tags: [a]\nlayers: [1, -2]\n", `${FILE}:2: layers[1]: expected an integer >= 0, got -2`);
  failsWith(s, "tags: [a]\nlayers: 3\n", `${FILE}:2: layers: expected a list of int values`);
  failsWith(s, "tags: [a, [b]]\n", `${FILE}:1: tags[1]: expected a single value, got a list`);
  failsWith(s, "name: x\n", `${FILE}:1: missing required key 'tags'`);
  const entry = 'precision["transformer.h.0.attn.c_attn"]';
  failsWith(
    s,
    PRECISION_YAML.replace("block: 16", "block: 0"),
    `${FILE}:7: ${entry}.block: expected an integer >= 1, got 0`,
  );
  failsWith(
    s,
    PRECISION_YAML.replace("format: e5m2", "fromat: e5m2"),
    `${FILE}:6: ${entry}.fromat: unknown key (did you mean 'format'?); allowed keys: format, block`,
  );
  failsWith(
    s,
    PRECISION_YAML.replace("{format: e4m3}", "{format: e4m4}"),
    `${FILE}:4: precision["transformer.h.*.mlp.*"].format: expected one of 'e4m3', 'e5m2', 'bf16', got 'e4m4'`,
  );
  failsWith(
    s,
    PRECISION_YAML + "  wte: 2\n",
    `${FILE}:10: scales["wte"]: duplicate key (first set on line 9)`,
  );
  failsWith(
    s,
    PRECISION_YAML.replace("transformer.h.0.attn.c_attn:", "h 0:"),
    `${FILE}:5: precision["h 0"]: 'h 0' is not a module-name pattern (letters, digits, _, ., *)`,
  );
  failsWith(s, "tags: [a]\nprecision: [1]\n", `${FILE}:2: precision: expected a mapping of names to settings`);
  failsWith(s, "tags: [a]\nprecision:\n  x: 3\n", `${FILE}:3: precision["x"]: expected a section (mapping)`);
  failsWith(s, "tags: [a]\nscales:\n  wte: -1\n", `${FILE}:3: scales["wte"]: expected a number >= 0, got -1`);
});

Deno.test("list and map fields: --set takes YAML flow text and reports errors as overrides", () => {
  const r = parseRecipe(PRECISION_YAML, PRECISION_SCHEMA, FILE, {
    layers: "[2, 3]",
    precision: '{"transformer.h.*": {block: 8}}',
    "name": "q",
  });
  assert.deepEqual(r.layers, [2, 3]);
  assert.deepEqual(r.precision, { "transformer.h.*": { format: "bf16", block: 8 } }, "an override replaces the map");
  failsWith(PRECISION_SCHEMA, PRECISION_YAML, `${FILE}: override layers[0]: expected an integer >= 0, got -1`, {
    layers: "[-1]",
  });
  failsWith(
    PRECISION_SCHEMA,
    PRECISION_YAML,
    `${FILE}: override precision["h"].format: expected one of 'e4m3', 'e5m2', 'bf16', got 'x'`,
    { precision: "{h: {format: x}}" },
  );
});

Deno.test("givenKeys tells keys set by the file or an override from defaults", () => {
  const r = parseRecipe("name: tiny\ntrain:\n  steps: 5\n", schema, FILE, { "train.lr": "0.1" });
  const given = givenKeys(r)!;
  assert.ok(given.has("train.steps") && given.has("train.lr") && given.has("name") && given.has("train"));
  assert.ok(!given.has("train.compile") && !given.has("seed") && !given.has("model"));
  assert.equal(givenKeys({}), undefined, "not parsed: unknown");
});

Deno.test("recipeKind: the kind key, its override, the default, and an unknown kind with its line", () => {
  assert.equal(recipeKind("name: x\n", FILE, ["lm"]), "lm");
  assert.equal(recipeKind("name: x\nkind: sft\n", FILE, ["lm", "sft"]), "sft");
  assert.equal(recipeKind("kind: lm\n", FILE, ["lm", "sft"], { kind: "sft" }), "sft");
  assert.throws(
    () => recipeKind("name: x\n\nkind: grpo\n", FILE, ["lm"]),
    (e: unknown) => e instanceof ConfigError && e.message === `${FILE}:3: kind: unknown kind 'grpo'; known kinds: lm`,
  );
  assert.throws(
    () => recipeKind("name: x\n", FILE, ["lm"], { kind: "rl" }),
    (e: unknown) =>
      e instanceof ConfigError && e.message === `${FILE}: override kind: unknown kind 'rl'; known kinds: lm`,
  );
});

Deno.test("describeSchema shows list and map fields", () => {
  const text = describeSchema(PRECISION_SCHEMA);
  assert.ok(text.includes("layers: list of int = [0]  Blocks to train."), text);
  assert.ok(text.includes("precision: map of name -> settings = {}  Per-layer settings"), text);
  assert.ok(text.includes('  <name>.format: string (e4m3 | e5m2 | bf16) = "bf16"  Number format.'), text);
});
