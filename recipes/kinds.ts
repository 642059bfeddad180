/**
 * Recipe kinds: the top-level `kind:` key (default `lm`) selects the schema a
 * recipe is checked against and the trainer that runs it. Only `lm` exists
 * (its `finetune:` section starts a run from another); `sft` and `grpo` are
 * planned.
 *
 * @module
 */
import { ConfigError, parseRecipe, recipeKind, type Schema } from "./config.ts";
import { checkLMRecipe, LM_SCHEMA, type LMRecipe } from "./schema.ts";

/** What a kind contributes to recipe loading: its schema and its cross-key rules. */
export interface RecipeKind<S extends Schema, R> {
  /** Every key a recipe of this kind may set. */
  readonly schema: S;
  /** Fills derived defaults and checks rules that span keys (throws a ConfigError naming `file`). */
  readonly check: (recipe: R, file: string) => void;
}

/** The known kinds by name. */
export const RECIPE_KINDS = {
  lm: { schema: LM_SCHEMA, check: checkLMRecipe } satisfies RecipeKind<typeof LM_SCHEMA, LMRecipe>,
} as const;

/** The name of a known kind. */
export type RecipeKindName = keyof typeof RECIPE_KINDS;

/** A resolved recipe of any known kind; switch on `kind`. */
export type AnyRecipe = LMRecipe;

/**
 * Parses recipe `text` as the kind its `kind:` key (or a `kind` override) names, against that kind's schema,
 * and applies the kind's checks; `file` names the source in errors.
 * @throws {ConfigError} for an unknown kind (`file:line: kind: unknown kind 'x'; known kinds: lm`) and
 * every recipe problem.
 */
export function parseAnyRecipe(text: string, file: string, overrides: Record<string, string> = {}): AnyRecipe {
  const kind = recipeKind(text, file, Object.keys(RECIPE_KINDS), overrides) as RecipeKindName;
  const { schema, check } = RECIPE_KINDS[kind];
  const recipe = parseRecipe(text, schema, file, overrides) as unknown as AnyRecipe;
  check(recipe, file);
  return recipe;
}

/** Reads a recipe file and parses it with {@link parseAnyRecipe}. */
export async function loadAnyRecipe(path: string, overrides: Record<string, string> = {}): Promise<AnyRecipe> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(`${path}: cannot read recipe: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  return parseAnyRecipe(text, path, overrides);
}
