/**
 * The `precision:` section of a recipe: a preset name (`precision: quartet`,
 * `--set precision=quartet`), optionally with roles of the record replaced
 * (`precision.forward.weight.format: int4`) and layers left in f32
 * (`precision.skip`). {@link precisionOf} turns it into the
 * `LinearPrecision` record the quantized linear op runs.
 *
 * @module
 */
import { type LinearPrecision, type OperandPrecision, PRECISION_NAMES, PRECISION_PRESETS } from "@lowp/formats";
import { parseFormat } from "@lowp/formats";

const checkFormat = (value: string) => {
  if (value === "") return null;
  try {
    parseFormat(value);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
};

const checkPreset = (value: string) =>
  PRECISION_PRESETS[value] ? null : `unknown precision '${value}': expected one of ${PRECISION_NAMES.join(", ")}`;

/** Keys of one operand; an empty `format` leaves the preset's operand in place. */
const OPERAND = {
  type: "section",
  doc: "one operand of the GEMM (an empty format keeps the preset's)",
  fields: {
    format: { type: "string", default: "", check: checkFormat, doc: "number format (e4m3, mxfp4, int4, ...)" },
    granularity: { type: "string", default: "", doc: "INT-k scales: tensor, channel or group:G" },
    rounding: { type: "string", default: "nearest", choices: ["nearest", "stochastic"], doc: "rounding" },
    hadamard: { type: "int", default: 0, min: 0, doc: "Hadamard block along the reduction axis (0: none)" },
    random_signs: { type: "bool", default: false, doc: "fresh random Hadamard signs every step" },
    scaling: {
      type: "string",
      default: "",
      choices: ["", "current", "delayed"],
      doc: "per-tensor scale of plain element formats",
    },
    amax_history_len: { type: "int", default: 1024, min: 1, doc: "delayed scaling: amax history steps" },
    amax_compute_algo: {
      type: "string",
      default: "max",
      choices: ["max", "most_recent"],
      doc: "delayed scaling: which amax sets the scale",
    },
    margin: { type: "int", default: 0, min: 0, max: 126, doc: "per-tensor scale divided by 2^margin" },
    scale_rule: {
      type: "string",
      default: "",
      choices: ["", "floor", "ceil", "even", "rceil", "quest"],
      doc: "MX shared-exponent rule, or quest (mxfp4)",
    },
  },
} as const;

/** The `precision:` section of an LM recipe. */
export const PRECISION_FIELD = {
  type: "section",
  shorthand: "preset",
  doc: "low-precision training of the linear layers (a preset name, or a preset with roles replaced)",
  fields: {
    preset: { type: "string", default: "f32", check: checkPreset, doc: `${PRECISION_NAMES.join(" | ")}` },
    skip: { type: "string", default: "", doc: "linear layers left in f32 (a name pattern, e.g. **.c_proj)" },
    ste: {
      type: "string",
      default: "",
      choices: ["", "plain", "clipped", "trust"],
      doc: "forward STE (empty: the preset's)",
    },
    forward: { type: "section", doc: "y = x·W", fields: { input: OPERAND, weight: OPERAND } },
    grad_input: { type: "section", doc: "dx = dy·Wᵀ", fields: { grad_output: OPERAND, weight: OPERAND } },
    grad_weight: { type: "section", doc: "dW = xᵀ·dy", fields: { input: OPERAND, grad_output: OPERAND } },
  },
} as const;

type OperandKeys = { [K in keyof typeof OPERAND.fields]: string | number | boolean };
type RolesOf<G> = { [R in keyof G]: OperandKeys };

/** A resolved `precision:` section (the recipe's value). */
export interface PrecisionSection {
  /** Preset name. */
  preset: string;
  /** Name pattern of the linear layers left in f32 ("" for none). */
  skip: string;
  /** STE override ("" keeps the preset's). */
  ste: string;
  /** Forward operands. */
  forward: RolesOf<typeof PRECISION_FIELD.fields.forward.fields>;
  /** Input-gradient operands. */
  grad_input: RolesOf<typeof PRECISION_FIELD.fields.grad_input.fields>;
  /** Weight-gradient operands. */
  grad_weight: RolesOf<typeof PRECISION_FIELD.fields.grad_weight.fields>;
}

/** One operand record from its recipe keys: only what differs from the defaults is written. */
function operandFrom(o: OperandKeys): OperandPrecision {
  const d = OPERAND.fields;
  const out: Record<string, unknown> = { format: o.format };
  for (const key of Object.keys(d) as (keyof typeof d)[]) {
    if (key !== "format" && o[key] !== d[key].default && o[key] !== "") out[key] = o[key];
  }
  if (o.scaling !== "delayed") {
    delete out.amax_history_len;
    delete out.amax_compute_algo;
  } else {
    out.amax_history_len = o.amax_history_len;
    out.amax_compute_algo = o.amax_compute_algo;
  }
  return out as unknown as OperandPrecision;
}

/** The record a `precision:` section asks for: the preset's, with every role that names a format replaced. */
export function precisionOf(section: PrecisionSection): LinearPrecision {
  const base = PRECISION_PRESETS[section.preset].precision as Record<string, unknown>;
  const out: Record<string, unknown> = { ...base };
  for (const gemm of ["forward", "grad_input", "grad_weight"] as const) {
    const roles = section[gemm] as Record<string, OperandKeys>;
    for (const [role, keys] of Object.entries(roles)) {
      if (keys.format === "") continue;
      out[gemm] = { ...(out[gemm] as object ?? {}), [role]: operandFrom(keys) };
    }
  }
  if (section.ste) out.ste = section.ste;
  return out as LinearPrecision;
}

/** Whether the section changes the preset (then reports call it `custom`). */
export function precisionName(section: PrecisionSection): string {
  const custom = section.ste !== "" ||
    (["forward", "grad_input", "grad_weight"] as const).some((g) =>
      Object.values(section[g] as Record<string, OperandKeys>).some((o) => o.format !== "")
    );
  return custom ? `${section.preset}+custom` : section.preset;
}
