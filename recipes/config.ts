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
import { isAlias, isMap, isScalar, LineCounter, parseDocument } from "yaml";
import type { Document, YAMLMap } from "yaml";

/** A recipe problem; the message starts with `file:line:` (or `file: override key:` for command-line overrides). */
export class ConfigError extends Error {
  /** Always "ConfigError". */
  override name = "ConfigError";
}

/** A field spec: type plus default plus constraints. A field without `default` is required. */
export type FieldSpec =
  | { type: "int"; default?: number; min?: number; max?: number; doc: string }
  | { type: "number"; default?: number; min?: number; max?: number; doc: string }
  | {
    type: "string";
    default?: string;
    choices?: readonly string[];
    /** Extra validation (e.g. a number-format name): returns why the value is wrong, or null. */
    check?: (value: string) => string | null;
    doc: string;
  }
  | { type: "bool"; default?: boolean; doc: string }
  | { type: "section"; fields: Record<string, FieldSpec>; doc: string };

/** The top-level fields of a recipe. */
export type Schema = Record<string, FieldSpec>;

type Leaf = Exclude<FieldSpec, { type: "section" }>;

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

/**
 * Parses and validates recipe `text` against `schema`; `file` is used in error messages.
 * `overrides` maps dotted keys to command-line strings (e.g. `{"train.steps": "50"}`) that replace file values.
 * Returns a plain nested object following the schema, with every default filled in.
 * @throws {ConfigError} on YAML errors, unknown keys, wrong types, constraint violations and missing required keys.
 */
export function parseRecipe(
  text: string,
  schema: Schema,
  file: string,
  overrides: Record<string, string> = {},
): Record<string, unknown> {
  const lc = new LineCounter();
  let doc: Document.Parsed;
  try {
    doc = parseDocument(text, { lineCounter: lc });
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new Error(`${file}: the yaml parser needs --allow-env=LOG_TOKENS,LOG_STREAM`, { cause: e });
    }
    throw e;
  }
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

  // Resolve and type overrides up front, so that unknown override keys fail even when the file omits the section.
  const given = new Map<string, unknown>();
  for (const [key, text] of Object.entries(overrides)) {
    const where = `${file}: override ${key}`;
    let fields: Record<string, FieldSpec> = schema;
    let spec: FieldSpec | undefined;
    for (const part of key.split(".")) {
      if (spec?.type === "section") fields = spec.fields;
      else if (spec) throw new ConfigError(`${where}: '${part}' is not inside a section`);
      spec = Object.hasOwn(fields, part) ? fields[part] : undefined;
      if (!spec) throw new ConfigError(`${where}: ${unknownKey(part, fields)}`);
    }
    if (spec!.type === "section") throw new ConfigError(`${where}: is a section, not a value`);
    const value = parseOverride(spec as Leaf, text);
    const why = invalid(spec as Leaf, value);
    if (why) throw new ConfigError(`${where}: ${why}`);
    given.set(key, value);
  }

  const walk = (fields: Record<string, FieldSpec>, map: YAMLMap | null, prefix: string, line: number) => {
    const out: Record<string, unknown> = {};
    const nodes = new Map<string, { key: unknown; value: unknown }>();
    for (const pair of map?.items ?? []) {
      const keyLine = lineOf(pair.key, line);
      if (!isScalar(pair.key)) {
        throw new ConfigError(`${file}:${keyLine}: ${prefix || "top level"}: keys must be plain`);
      }
      const name = String(pair.key.value);
      const path = prefix + name;
      if (!Object.hasOwn(fields, name)) {
        throw new ConfigError(`${file}:${keyLine}: ${path}: ${unknownKey(name, fields)}`);
      }
      const first = nodes.get(name);
      if (first) {
        throw new ConfigError(`${file}:${keyLine}: ${path}: duplicate key (first set on line ${lineOf(first.key)})`);
      }
      nodes.set(name, pair);
    }
    for (const [name, spec] of Object.entries(fields)) {
      const path = prefix + name;
      const pair = nodes.get(name);
      const keyLine = lineOf(pair?.key, line);
      let node = pair?.value ?? null;
      if (isAlias(node)) node = node.resolve(doc) ?? null;
      if (spec.type === "section") {
        const empty = node === null || (isScalar(node) && node.value === null);
        if (!empty && !isMap(node)) throw new ConfigError(`${file}:${keyLine}: ${path}: expected a section (mapping)`);
        out[name] = walk(spec.fields, empty ? null : node as YAMLMap, path + ".", keyLine);
        continue;
      }
      if (pair) {
        if (!isScalar(node)) {
          throw new ConfigError(
            `${file}:${keyLine}: ${path}: expected a single value, got a ${isMap(node) ? "mapping" : "list"}`,
          );
        }
        const why = invalid(spec, node.value);
        if (why) throw new ConfigError(`${file}:${keyLine}: ${path}: ${why}`);
        out[name] = node.value;
      }
      if (given.has(path)) out[name] = given.get(path);
      else if (!pair && spec.default !== undefined) out[name] = spec.default;
      else if (!pair) throw new ConfigError(`${file}:${line}: missing required key '${path}'`);
    }
    return out;
  };

  const root = doc.contents;
  const empty = root === null || (isScalar(root) && root.value === null);
  if (!empty && !isMap(root)) throw new ConfigError(`${file}:${lineOf(root)}: top level: expected a mapping of keys`);
  const result = walk(schema, empty ? null : root as YAMLMap, "", lineOf(root));
  if (doc.errors.length) throw yamlError(doc.errors[0]);
  return result;
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
