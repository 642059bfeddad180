/**
 * The `precision:` section of a recipe: a preset name (`precision: quartet`,
 * `--set precision=quartet`), optionally with operand roles replaced and
 * layers left in f32:
 *
 * ```yaml
 * precision:
 *   preset: qat-int8
 *   skip: "**.c_proj"
 *   roles:
 *     forward.weight: { format: int4, granularity: "group:32" }
 * ```
 *
 * `lsq: true` (`--set precision.lsq=true`) learns the step sizes of every
 * forward signed int operand of the resulting record (LSQ).
 *
 * {@link precisionOf} turns it into the `LinearPrecision` record the
 * quantized linear op runs.
 *
 * @module
 */
import { type LinearPrecision, type OperandPrecision, PRECISION_PRESETS, withLearnedSteps } from "@lowp/formats";
import { LM_SCHEMA, type LMRecipe } from "./schema.ts";

/** A resolved `precision:` section, as {@link LMRecipe} holds it. */
export type PrecisionSection = LMRecipe["precision"];
type Operand = PrecisionSection["roles"][string];
const DEFAULTS = LM_SCHEMA.precision.fields.roles.of.fields;

/** One operand record from its recipe keys: only what differs from the defaults is written. */
function operandFrom(o: Operand): OperandPrecision {
  const out: Record<string, unknown> = { format: o.format };
  for (const key of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
    const d = (DEFAULTS[key] as { default?: unknown }).default;
    if (key !== "format" && o[key] !== d && o[key] !== "") out[key] = o[key];
  }
  if (o.scaling === "delayed") {
    out.amax_history_len = o.amax_history_len;
    out.amax_compute_algo = o.amax_compute_algo;
  } else {
    delete out.amax_history_len;
    delete out.amax_compute_algo;
  }
  if (o.scaling === "autoflex") {
    out.autoflex_history = o.autoflex_history;
    out.autoflex_sigmas = o.autoflex_sigmas;
    out.autoflex_margin = o.autoflex_margin;
  } else {
    delete out.autoflex_history;
    delete out.autoflex_sigmas;
    delete out.autoflex_margin;
  }
  return out as unknown as OperandPrecision;
}

/** The record a `precision:` section asks for: the preset's, with the roles it names replaced. */
export function precisionOf(section: PrecisionSection): LinearPrecision {
  const out: Record<string, Record<string, unknown> | string> = { ...PRECISION_PRESETS[section.preset].precision };
  for (const [role, keys] of Object.entries(section.roles)) {
    const [gemm, operand] = role.split(".");
    out[gemm] = { ...(out[gemm] as Record<string, unknown> ?? {}), [operand]: operandFrom(keys) };
  }
  if (section.ste) out.ste = section.ste;
  return section.lsq ? withLearnedSteps(out as LinearPrecision) : out as LinearPrecision;
}

/** The preset's name, with `+lsq` when the section learns the steps and `+custom` when it changes roles or STE. */
export function precisionName(section: PrecisionSection): string {
  const custom = section.ste !== "" || Object.keys(section.roles).length > 0;
  return `${section.preset}${section.lsq ? "+lsq" : ""}${custom ? "+custom" : ""}`;
}
