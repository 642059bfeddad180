/**
 * YAML recipe loading for `deno task train recipes/<name>.yaml`.
 *
 * A recipe is checked against a {@linkcode Schema}; every problem becomes a {@linkcode ConfigError} whose message
 * names the file, the line and the dotted key path, e.g.
 * `recipes/tiny.yaml:12: model.d_model: expected an integer >= 1, got -3`.
 *
 * Note: the `yaml` package reads the `LOG_TOKENS` and `LOG_STREAM` environment variables while parsing, so callers
 * need `--allow-env` (at least `--allow-env=LOG_TOKENS,LOG_STREAM`) besides `--allow-read`.
 *
 * @module
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Document, YAMLMap, YAMLSeq } from "yaml";

/** A recipe problem; the message starts with `file:line:` (or `file: override key:` for command-line overrides). */
export class ConfigError extends Error {
  /** Always "ConfigError". */
  override name = "ConfigError";
}

/**
 * Runs a command's `main`: an error ends it with `error: MESSAGE` on stderr and exit code 1, the message on one
 * line unless `multiline` (a {@link ConfigError} is the user's to fix; anything else, a bug, also prints its stack
 * with `LOWP_DEBUG=1`).
 */
export async function runCli(
  main: (args: string[]) => Promise<void>,
  opts: { args?: string[]; multiline?: boolean } = {},
): Promise<void> {
  try {
    await main(opts.args ?? Deno.args);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    console.error(`error: ${opts.multiline ? message : message.replace(/\s*\n\s*/g, " ")}`);
    if (!(e instanceof ConfigError) && Deno.env.get("LOWP_DEBUG")) console.error(e);
    Deno.exit(1);
  }
}

/** An integer key, optionally bounded. */
export type IntField = { type: "int"; default?: number; min?: number; max?: number; doc: string };
/** A number key, optionally bounded. */
export type NumberField = { type: "number"; default?: number; min?: number; max?: number; doc: string };
/** A string key, optionally one of `choices` or checked by `check`. */
export type StringField = {
  type: "string";
  default?: string;
  choices?: readonly string[];
  /** Extra validation (e.g. a number-format name): returns why the value is wrong, or null. */
  check?: (value: string) => string | null;
  doc: string;
};
/** A true/false key. */
export type BoolField = { type: "bool"; default?: boolean; doc: string };
/** A single value. */
export type LeafField = IntField | NumberField | StringField | BoolField;
/**
 * A nested mapping of named keys. With `shorthand`, the section may also be written as one value, which sets
 * that key (`precision: quartet` and `--set precision=quartet` mean `precision: {preset: quartet}`).
 */
export type SectionField = { type: "section"; fields: Record<string, FieldSpec>; shorthand?: string; doc: string };
/** A YAML list whose items are values of one leaf type (`[1, 2]` or one `- item` per line); default: required. */
export type ListField = { type: "list"; of: LeafField; default?: readonly (number | string | boolean)[]; doc: string };
/**
 * A mapping from free-form string keys (e.g. module-name patterns such as `transformer.h.*.mlp.*`) to a leaf
 * value or a section; default: empty. `checkKey` returns why a key is wrong, or null.
 */
export type MapField = {
  type: "map";
  of: LeafField | SectionField;
  checkKey?: (key: string) => string | null;
  doc: string;
};
/** A field spec: type plus default plus constraints. A leaf or list field without `default` is required. */
export type FieldSpec = LeafField | SectionField | ListField | MapField;

/** The top-level fields of a recipe. */
export type Schema = Record<string, FieldSpec>;

/** The TypeScript value of a field: numbers, string literal unions from `choices`, booleans, nested objects. */
export type ValueOf<F> = F extends { type: "int" | "number" } ? number
  : F extends { type: "bool" } ? boolean
  : F extends { type: "string"; choices: readonly (infer C extends string)[] } ? C
  : F extends { type: "string" } ? string
  : F extends { type: "section"; fields: infer S } ? RecipeOf<S>
  : F extends { type: "list"; of: infer I } ? ValueOf<I>[]
  : F extends { type: "map"; of: infer I } ? Record<string, ValueOf<I>>
  : never;

/**
 * The resolved recipe a schema describes (every default filled in), derived from the schema so each key is
 * declared once: declare the schema `as const satisfies Schema` to get literal unions from `choices`.
 * Go-to-definition on a key of the result leads to its spec and `doc`.
 */
export type RecipeOf<S> = { -readonly [K in keyof S]: ValueOf<S[K]> };

type Leaf = LeafField;

/** Levenshtein distance between two keys. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** "unknown key" text with a suggestion when a known key is within edit distance 2. */
function unknownKey(key: string, fields: Record<string, FieldSpec>): string {
  const allowed = Object.keys(fields);
  const best = allowed.map((k) => ({ k, d: editDistance(key, k) })).sort((x, y) => x.d - y.d)[0];
  const hint = best && best.d <= 2 ? ` (did you mean '${best.k}'?)` : "";
  return `unknown key${hint}; allowed keys: ${allowed.join(", ") || "(none)"}`;
}

/** ", or one value (its <shorthand>)" for sections that take the one-value form. */
function shorthandHint(spec: SectionField): string {
  return spec.shorthand ? ` or one value (its ${spec.shorthand})` : "";
}

function show(value: unknown): string {
  return typeof value === "string" ? `'${value}'` : String(value);
}

/** Returns why `value` does not satisfy `spec`, or null when it does. */
function invalid(spec: Leaf, value: unknown): string | null {
  const got = `got ${value === null ? "nothing" : show(value)}`;
  if (spec.type === "bool") return typeof value === "boolean" ? null : `expected true or false, ${got}`;
  if (spec.type === "string") {
    if (typeof value !== "string") return `expected a string, ${got}`;
    if (spec.choices && !spec.choices.includes(value)) {
      return `expected one of ${spec.choices.map(show).join(", ")}, ${got}`;
    }
    return spec.check?.(value) ?? null;
  }
  const what = spec.type === "int" ? "an integer" : "a number";
  const ok = typeof value === "number" && Number.isFinite(value) && (spec.type === "number" || Number.isInteger(value));
  const { min, max } = spec;
  const range = min !== undefined && max !== undefined
    ? ` in [${min}, ${max}]`
    : min !== undefined
    ? ` >= ${min}`
    : max !== undefined
    ? ` <= ${max}`
    : "";
  if (!ok || (min !== undefined && value < min) || (max !== undefined && value > max)) {
    return `expected ${what}${range}, ${got}`;
  }
  return null;
}

/** Parses a command-line override string according to the field type (unparseable text stays a string). */
function parseOverride(spec: Leaf, text: string): unknown {
  const t = text.trim();
  if (spec.type === "int") return /^[+-]?\d+$/.test(t) ? Number(t) : text;
  if (spec.type === "number") return t !== "" && Number.isFinite(Number(t)) ? Number(t) : text;
  if (spec.type === "bool") return t === "true" ? true : t === "false" ? false : text;
  return text;
}

const isLeaf = (spec: FieldSpec): spec is Leaf =>
  spec.type !== "section" && spec.type !== "list" && spec.type !== "map";

/** Dotted keys each parsed recipe object had set in its file or by an override (see {@link givenKeys}). */
const GIVEN = new WeakMap<object, ReadonlySet<string>>();

/**
 * The dotted keys (`train.warmup`, `data`, ...) that the file or an override set for a recipe returned by
 * {@link parseRecipe}, as opposed to defaults: lets a derived default (e.g. a warm-up scaled to a short run)
 * apply only where the user said nothing. Undefined for objects not made by `parseRecipe` (every key counts
 * as given).
 */
export function givenKeys(recipe: object): ReadonlySet<string> | undefined {
  return GIVEN.get(recipe);
}

function parseYaml(text: string, file: string): { doc: Document.Parsed; lc: LineCounter } {
  const lc = new LineCounter();
  try {
    return { doc: parseDocument(text, { lineCounter: lc }), lc };
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new Error(`${file}: the yaml parser needs --allow-env=LOG_TOKENS,LOG_STREAM`, { cause: e });
    }
    throw e;
  }
}

/** Reads YAML nodes against field specs; `at(node, line)` names where a node came from (`file:line` or an override). */
class Reader {
  constructor(
    readonly doc: Document.Parsed,
    readonly at: (node: unknown, fallbackLine: number) => string,
    readonly lineOf: (node: unknown, fallback?: number) => number,
    readonly given: Set<string>,
  ) {}

  fail(node: unknown, line: number, path: string, why: string): never {
    throw new ConfigError(`${this.at(node, line)}${path}: ${why}`);
  }

  resolve(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) ?? null : node;
  }

  /** The value of a non-leaf field from its node (`null`: absent or empty); leaves are read by the caller. */
  value(
    spec: SectionField | ListField | MapField,
    raw: unknown,
    path: string,
    line: number,
    loc: unknown = raw,
  ): unknown {
    const node = this.resolve(raw);
    const empty = node === null || (isScalar(node) && node.value === null);
    if (spec.type === "section") {
      if (!empty && !isMap(node)) this.fail(loc, line, path, "expected a section (mapping)");
      return this.fields(spec.fields, empty ? null : node as YAMLMap, path + ".", line);
    }
    if (spec.type === "list") {
      if (empty) return [];
      if (!isSeq(node)) this.fail(loc, line, path, `expected a list of ${spec.of.type} values`);
      return (node as YAMLSeq).items.map((raw, i) => this.leaf(spec.of, this.resolve(raw), `${path}[${i}]`, line));
    }
    if (!empty && !isMap(node)) this.fail(loc, line, path, "expected a mapping of names to settings");
    const out: Record<string, unknown> = {};
    const firstLine = new Map<string, number>();
    for (const pair of empty ? [] : (node as YAMLMap).items) {
      const keyLine = this.lineOf(pair.key, line);
      if (!isScalar(pair.key) || pair.key.value === null) this.fail(pair.key, keyLine, path, "keys must be plain");
      const key = String((pair.key as { value: unknown }).value);
      const entry = `${path}[${JSON.stringify(key)}]`;
      const first = firstLine.get(key);
      if (first !== undefined) this.fail(pair.key, keyLine, entry, `duplicate key (first set on line ${first})`);
      firstLine.set(key, keyLine);
      const why = spec.checkKey?.(key);
      if (why) this.fail(pair.key, keyLine, entry, why);
      const value = this.resolve(pair.value);
      out[key] = spec.of.type === "section"
        ? this.value(spec.of, value, entry, keyLine, pair.key)
        : this.leaf(spec.of, value, entry, keyLine, pair.key);
    }
    return out;
  }

  leaf(spec: Leaf, node: unknown, path: string, line: number, loc: unknown = node): unknown {
    if (!isScalar(node)) {
      const got = node === null ? "nothing" : `a ${isMap(node) ? "mapping" : "list"}`;
      this.fail(loc, line, path, `expected a single value, got ${got}`);
    }
    const why = invalid(spec, (node as { value: unknown }).value);
    if (why) this.fail(loc, line, path, why);
    return (node as { value: unknown }).value;
  }

  fields(
    fields: Record<string, FieldSpec>,
    map: YAMLMap | null,
    prefix: string,
    line: number,
    overrides = new Map<string, unknown>(),
  ): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const nodes = new Map<string, { key: unknown; value: unknown }>();
    for (const pair of map?.items ?? []) {
      const keyLine = this.lineOf(pair.key, line);
      if (!isScalar(pair.key)) this.fail(pair.key, keyLine, prefix.slice(0, -1) || "top level", "keys must be plain");
      const name = String(pair.key.value);
      const path = prefix + name;
      if (!Object.hasOwn(fields, name)) this.fail(pair.key, keyLine, path, unknownKey(name, fields));
      const first = nodes.get(name);
      if (first) this.fail(pair.key, keyLine, path, `duplicate key (first set on line ${this.lineOf(first.key)})`);
      nodes.set(name, pair);
      this.given.add(path);
    }
    for (const [name, spec] of Object.entries(fields)) {
      const path = prefix + name;
      const pair = nodes.get(name);
      const keyLine = this.lineOf(pair?.key, line);
      if (spec.type === "section") {
        const node = this.resolve(pair?.value ?? null);
        const empty = node === null || (isScalar(node) && node.value === null);
        if (!empty && !isMap(node) && !(spec.shorthand && isScalar(node))) {
          this.fail(pair?.key, keyLine, path, `expected a section (mapping)${shorthandHint(spec)}`);
        }
        if (!empty && !isMap(node)) {
          // The one-value form sets the shorthand key, as if written `{<shorthand>: value}`.
          const inner = spec.fields[spec.shorthand!] as Leaf;
          const value = this.leaf(inner, node, `${path}.${spec.shorthand}`, keyLine, pair?.key);
          this.given.add(`${path}.${spec.shorthand}`);
          const local = new Map(overrides);
          if (!local.has(`${path}.${spec.shorthand}`)) local.set(`${path}.${spec.shorthand}`, value);
          out[name] = this.fields(spec.fields, null, path + ".", keyLine, local);
          continue;
        }
        out[name] = this.fields(spec.fields, empty ? null : node as YAMLMap, path + ".", keyLine, overrides);
        continue;
      }
      if (pair) {
        out[name] = isLeaf(spec)
          ? this.leaf(spec, this.resolve(pair.value), path, keyLine, pair.key)
          : this.value(spec, pair.value, path, keyLine, pair.key);
      }
      if (overrides.has(path)) out[name] = overrides.get(path);
      else if (pair) continue;
      else if (spec.type === "map") out[name] = {};
      else if (spec.type === "list" && spec.default !== undefined) out[name] = [...spec.default];
      else if (spec.type !== "list" && spec.default !== undefined) out[name] = spec.default;
      else throw new ConfigError(`${this.at(null, line)}missing required key '${path}'`);
    }
    return out;
  }
}

/**
 * Parses and validates recipe `text` against `schema`; `file` is used in error messages.
 * `overrides` maps dotted keys to command-line strings (e.g. `{"train.steps": "50"}`) that replace file values;
 * a list or map key takes YAML flow text (`--set 'layers=[0, 2]'`, `--set 'precision={"h.*": {format: e4m3}}'`).
 * Returns a plain nested object following the schema, with every default filled in.
 * @throws {ConfigError} on YAML errors, unknown keys, wrong types, constraint violations and missing required keys.
 */
export function parseRecipe(
  text: string,
  schema: Schema,
  file: string,
  overrides: Record<string, string> = {},
): Record<string, unknown> {
  const { doc, lc } = parseYaml(text, file);
  const lineOf = (node: unknown, fallback = 1): number => {
    const range = (node as { range?: [number, number, number] | null } | null)?.range;
    return range ? lc.linePos(range[0]).line : fallback;
  };
  const yamlError = (e: (typeof doc.errors)[number]): ConfigError => {
    const line = e.linePos?.[0].line ?? lc.linePos(e.pos[0]).line;
    return new ConfigError(`${file}:${line}: ${e.message.replace(/ at line \d+, column \d+:[\s\S]*$/, "")}`);
  };
  // Duplicate keys are reported by the walk below, which knows their key path; other YAML errors come first.
  const syntax = doc.errors.find((e) => e.code !== "DUPLICATE_KEY");
  if (syntax) throw yamlError(syntax);
  const given = new Set<string>();

  // Resolve and type overrides up front, so that unknown override keys fail even when the file omits the section.
  const typed = new Map<string, unknown>();
  for (let [key, text] of Object.entries(overrides)) {
    const where = `${file}: override ${key}`;
    let fields: Record<string, FieldSpec> = schema;
    let spec: FieldSpec | undefined;
    for (const part of key.split(".")) {
      if (spec?.type === "section") fields = spec.fields;
      else if (spec) throw new ConfigError(`${where}: '${part}' is not inside a section`);
      spec = Object.hasOwn(fields, part) ? fields[part] : undefined;
      if (!spec) throw new ConfigError(`${where}: ${unknownKey(part, fields)}`);
    }
    if (spec!.type === "section" && spec!.shorthand) {
      // `--set precision=quartet` sets the section's shorthand key.
      key = `${key}.${spec!.shorthand}`;
      spec = spec!.fields[spec!.shorthand];
    }
    if (spec!.type === "section") throw new ConfigError(`${where}: is a section, not a value`);
    if (isLeaf(spec!)) {
      const value = parseOverride(spec, text);
      const why = invalid(spec, value);
      if (why) throw new ConfigError(`${where}: ${why}`);
      typed.set(key, value);
    } else {
      const parsed = parseYaml(text, where).doc;
      if (parsed.errors.length) throw new ConfigError(`${where}: not valid YAML: ${parsed.errors[0].message}`);
      const reader = new Reader(parsed, () => `${file}: override `, () => 1, new Set());
      typed.set(key, reader.value(spec as ListField | MapField, parsed.contents, key, 1));
    }
    given.add(key);
  }

  const reader = new Reader(doc, (node, line) => `${file}:${lineOf(node, line)}: `, lineOf, given);
  const root = doc.contents;
  const empty = root === null || (isScalar(root) && root.value === null);
  if (!empty && !isMap(root)) throw new ConfigError(`${file}:${lineOf(root)}: top level: expected a mapping of keys`);
  const result = reader.fields(schema, empty ? null : root as YAMLMap, "", lineOf(root), typed);
  if (doc.errors.length) throw yamlError(doc.errors[0]);
  GIVEN.set(result, given);
  return result;
}

/**
 * The recipe's `kind:` (the `kind` override, else the file's top-level `kind`, else `fallback`), checked
 * against `known` before the kind's schema is chosen: an unknown kind is reported as
 * `file:line: kind: unknown kind 'x'; known kinds: lm`.
 */
export function recipeKind(
  text: string,
  file: string,
  known: readonly string[],
  overrides: Record<string, string> = {},
  fallback = "lm",
): string {
  const { doc, lc } = parseYaml(text, file);
  let kind: unknown = fallback, where = `${file}:1: `;
  if (Object.hasOwn(overrides, "kind")) {
    kind = overrides.kind;
    where = `${file}: override `;
  } else if (isMap(doc.contents)) {
    const pair = (doc.contents as YAMLMap).items.find((p) => isScalar(p.key) && p.key.value === "kind");
    if (pair) {
      const range = (pair.key as { range?: [number, number, number] }).range;
      where = `${file}:${range ? lc.linePos(range[0]).line : 1}: `;
      kind = isScalar(pair.value) ? pair.value.value : pair.value;
    }
  }
  if (typeof kind !== "string" || !known.includes(kind)) {
    throw new ConfigError(`${where}kind: unknown kind ${show(kind)}; known kinds: ${known.join(", ")}`);
  }
  return kind;
}

/**
 * Reads the recipe at `path` and parses it with {@linkcode parseRecipe}; error messages name `path` as given.
 * @throws {ConfigError} when the file cannot be read or is not a valid recipe.
 */
export async function loadRecipe(
  path: string,
  schema: Schema,
  overrides?: Record<string, string>,
): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`${path}: cannot read recipe: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  return parseRecipe(text, schema, path, overrides);
}

/** Renders the schema for `--help`: one line per key with its type, default (or "required"), constraints and doc. */
export function describeSchema(schema: Schema): string {
  const lines: string[] = [];
  const visit = (fields: Record<string, FieldSpec>, indent: string) => {
    for (const [name, spec] of Object.entries(fields)) {
      if (spec.type === "section") {
        lines.push(`${indent}${name}:  ${spec.doc}`);
        visit(spec.fields, indent + "  ");
        continue;
      }
      if (spec.type === "map") {
        const of = spec.of.type === "section" ? "settings" : spec.of.type;
        lines.push(`${indent}${name}: map of name -> ${of} = {}  ${spec.doc}`);
        if (spec.of.type === "section") visit(spec.of.fields, indent + "  <name>.");
        continue;
      }
      if (spec.type === "list") {
        const dflt = spec.default === undefined ? " (required)" : ` = ${JSON.stringify(spec.default)}`;
        lines.push(`${indent}${name}: list of ${spec.of.type}${dflt}  ${spec.doc}`);
        continue;
      }
      let head = `${indent}${name}: ${spec.type}`;
      if (spec.type === "int" || spec.type === "number") {
        if (spec.min !== undefined) head += ` >= ${spec.min}`;
        if (spec.max !== undefined) head += ` <= ${spec.max}`;
      }
      if (spec.type === "string" && spec.choices) head += ` (${spec.choices.join(" | ")})`;
      head += spec.default === undefined ? " (required)" : ` = ${JSON.stringify(spec.default)}`;
      lines.push(`${head}  ${spec.doc}`);
    }
  };
  visit(schema, "");
  return lines.join("\n");
}
