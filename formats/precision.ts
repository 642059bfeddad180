/**
 * A training precision as data: for each of the three GEMMs of a linear layer
 * (forward `y = x·W`, input gradient `dx = dy·Wᵀ`, weight gradient
 * `dW = xᵀ·dy`), how each operand is quantized along that GEMM's reduction
 * axis, plus the straight-through estimator of the forward operands. A role
 * left out stays f32, untouched. Keys are snake_case, as recipes write them.
 *
 * The named {@link PRECISION_PRESETS} follow the recipes users know (torchao
 * QAT, Transformer Engine FP8/MXFP8/NVFP4, Quartet); each says its source.
 *
 * @module
 */
import type { MxScaleRounding } from "./mx.ts";
import { parseFormat } from "./registry.ts";
import { parseGranularity } from "./spec.ts";
import { parseFloatFormat } from "./element.ts";
import { HADAMARD_MAX_BLOCK } from "./hadamard.ts";
import { type AutoflexOptions, autoflexParams } from "./autoflex.ts";

/** How one operand of one GEMM is quantized (along the GEMM's reduction axis). */
export interface OperandPrecision {
  /** Format name as `parseFormat` takes it (`e4m3`, `mxfp4`, `int4`, `nvfp4`, ...). */
  readonly format: string;
  /**
   * Scaled formats (INT-k): `tensor`, `channel` (one scale per row: per output channel of a weight, per token of
   * an activation) or `group:G` (G consecutive values along the reduction axis). Block formats fix their own.
   */
  readonly granularity?: string;
  /** `nearest` (ties to even, default) or `stochastic`. */
  readonly rounding?: "nearest" | "stochastic";
  /** Blockwise Walsh–Hadamard transform of this block size along the reduction axis, before quantizing. */
  readonly hadamard?: number;
  /** Fresh random ±1 signs in the Hadamard transform at every step (Quartet's backward). */
  readonly random_signs?: boolean;
  /**
   * Plain element formats: a per-tensor scale from this step's amax (`current`) or a history (`delayed`).
   * `flex16+5`: `autoflex`, the shared exponent predicted from a history of max-abs values (formats/autoflex.ts);
   * without it each tensor takes its own exponent.
   */
  readonly scaling?: "current" | "delayed" | "autoflex";
  /** Delayed scaling: steps of amax history (TE's `amax_history_len`, default 1024). */
  readonly amax_history_len?: number;
  /** Delayed scaling: `max` over the history (default) or `most_recent` (TE's `amax_compute_algo`). */
  readonly amax_compute_algo?: "max" | "most_recent";
  /** Autoflex: max-abs values kept (default 16, the original simulator's). */
  readonly autoflex_history?: number;
  /** Autoflex: standard deviations of the history added to its max (default 3). */
  readonly autoflex_sigmas?: number;
  /** Autoflex: margin added to the prediction, in mantissa units of the exponent in use (default 100). */
  readonly autoflex_margin?: number;
  /** Per-tensor scaling: the scale is divided by 2^margin (TE's `margin`, default 0). */
  readonly margin?: number;
  /** MX formats: the shared-exponent rule (`floor`, the spec's, default); `quest`: QuEST's σ-based scale (mxfp4). */
  readonly scale_rule?: MxScaleRounding | "quest";
  /**
   * NVFP4: one scale per 16 × 16 tile instead of per 1 × 16 block (TE's `NVFP4BlockScaling` weights), so a
   * weight quantizes to the same values along either axis; both of its dims must be multiples of 16.
   */
  readonly block2d?: boolean;
  /**
   * LSQ (Esser et al. 2020): learn the steps of a forward signed INT-k operand (one per scale of `granularity`;
   * `forward.input` per tensor only), with the paper's clipped STE and step gradient instead of the `ste`
   * (formats/lsq.ts). Each step is `u·θ`: u the paper's initial `2·mean(|v|)/sqrt(Qp)` (weights: when the precision
   * is applied; inputs: from the first training batch), buffer `<layer>.lsq.forward.<operand>.unit`; θ the trained
   * parameter `<layer>.lsq.forward.<operand>` (formats/quantized_linear.ts says why).
   */
  readonly lsq?: boolean;
}

/** The operands of each GEMM and the forward STE; anything left out is f32. */
export interface LinearPrecision {
  /** y = x·W: the input x along its features, the weight W along its input axis. */
  readonly forward?: { readonly input?: OperandPrecision; readonly weight?: OperandPrecision };
  /** dx = dy·Wᵀ: the output gradient along its features, W along its output axis. */
  readonly grad_input?: { readonly grad_output?: OperandPrecision; readonly weight?: OperandPrecision };
  /** dW = xᵀ·dy: x and dy along the token axis. */
  readonly grad_weight?: { readonly input?: OperandPrecision; readonly grad_output?: OperandPrecision };
  /**
   * Backward of the forward quantizers: `plain` (default: the gradient passes), `clipped` (zero where |x| exceeds
   * a plain element format's max), `trust` (zero where QuEST clipped: needs `scale_rule: quest`).
   */
  readonly ste?: "plain" | "clipped" | "trust";
}

/** The six operand roles, as `gemm.operand` paths. */
export const OPERAND_ROLES = [
  ["forward", "input"],
  ["forward", "weight"],
  ["grad_input", "grad_output"],
  ["grad_input", "weight"],
  ["grad_weight", "input"],
  ["grad_weight", "grad_output"],
] as const;

const e4m3 = (extra: Partial<OperandPrecision> = {}): OperandPrecision => ({ format: "e4m3", ...extra });
const e5m2 = (extra: Partial<OperandPrecision> = {}): OperandPrecision => ({ format: "e5m2", ...extra });

/** The same operand precision for all six roles, with `grad` for the two gradient operands. */
function everywhere(operand: OperandPrecision, grad: OperandPrecision = operand): LinearPrecision {
  return {
    forward: { input: operand, weight: operand },
    grad_input: { grad_output: grad, weight: operand },
    grad_weight: { input: operand, grad_output: grad },
  };
}

/** TE's HYBRID format: E4M3 forward operands (and W, x in the backward), E5M2 gradients. */
function hybridFp8(scaling: Partial<OperandPrecision>): LinearPrecision {
  return everywhere(e4m3(scaling), e5m2(scaling));
}

const DELAYED: Partial<OperandPrecision> = {
  scaling: "delayed",
  amax_history_len: 1024,
  amax_compute_algo: "max",
  margin: 0,
};

const QUARTET_BACKWARD: OperandPrecision = {
  format: "mxfp4",
  hadamard: 32,
  random_signs: true,
  rounding: "stochastic",
  scale_rule: "rceil",
};

/**
 * Named precisions. Sources: torchao QAT (`Int8DynActInt4WeightQATQuantizer`-style fake quant: weights per channel
 * or per group of 128, activations per tensor, STE); Transformer Engine recipes `Float8CurrentScaling`,
 * `DelayedScaling(fp8_format=HYBRID, amax_history_len=1024, amax_compute_algo="max", margin=0)`,
 * `MXFP8BlockScaling`, `NVFP4BlockScaling`; Quartet (arXiv 2505.14669) for `quartet` and its naive baseline.
 */
export const PRECISION_PRESETS: Readonly<
  Record<string, { readonly doc: string; readonly precision: LinearPrecision }>
> = {
  f32: { doc: "no quantization", precision: {} },
  "qat-int8": {
    doc: "QAT (torchao): int8 weights per output channel, int8 activations per tensor, plain STE",
    precision: {
      forward: {
        input: { format: "int8", granularity: "tensor" },
        weight: { format: "int8", granularity: "channel" },
      },
    },
  },
  "qat-int4": {
    doc: "QAT (torchao): int4 weights in groups of 128, int8 activations per tensor, plain STE",
    precision: {
      forward: {
        input: { format: "int8", granularity: "tensor" },
        weight: { format: "int4", granularity: "group:128" },
      },
    },
  },
  "fp8-current": {
    doc: "TE Float8CurrentScaling, HYBRID: E4M3 forward operands, E5M2 gradients, per-tensor scales from this step",
    precision: hybridFp8({ scaling: "current" }),
  },
  "fp8-delayed": {
    doc: "TE DelayedScaling, HYBRID, amax_history_len 1024, amax_compute_algo max, margin 0",
    precision: hybridFp8(DELAYED),
  },
  mxfp8: {
    doc: "TE MXFP8BlockScaling: all six operands MXFP8 (E4M3, E5M2 for gradients), blocks of 32, E8M0 scales",
    precision: everywhere({ format: "mxfp8_e4m3" }, { format: "mxfp8_e5m2" }),
  },
  quartet: {
    doc: "Quartet: MXFP4 everywhere; forward Hadamard-32 + QuEST scale + trust mask; backward random-sign " +
      "Hadamard-32 + stochastic rounding (E8M0 rceil scales: nothing clips)",
    precision: {
      forward: {
        input: { format: "mxfp4", hadamard: 32, scale_rule: "quest" },
        weight: { format: "mxfp4", hadamard: 32, scale_rule: "quest" },
      },
      grad_input: { grad_output: QUARTET_BACKWARD, weight: QUARTET_BACKWARD },
      grad_weight: { input: QUARTET_BACKWARD, grad_output: QUARTET_BACKWARD },
      ste: "trust",
    },
  },
  "fp4-rtn": {
    doc: "the naive FP4 baseline: MXFP4 on all six operands, round to nearest, no Hadamard",
    precision: everywhere({ format: "mxfp4" }),
  },
  nvfp4: {
    doc: "TE NVFP4BlockScaling: NVFP4 (E2M1, E4M3 scale per 16, f32 tensor scale) on all operands, 16x16 " +
      "blocks for weights, random Hadamard-16 on the weight-gradient GEMM's inputs, stochastic rounding on gradients",
    precision: {
      forward: { input: { format: "nvfp4" }, weight: { format: "nvfp4", block2d: true } },
      grad_input: {
        grad_output: { format: "nvfp4", rounding: "stochastic" },
        weight: { format: "nvfp4", block2d: true },
      },
      grad_weight: {
        input: { format: "nvfp4", hadamard: 16, random_signs: true },
        grad_output: { format: "nvfp4", hadamard: 16, random_signs: true, rounding: "stochastic" },
      },
    },
  },
  "flex16+5": {
    doc: "Flexpoint (arXiv 1711.02213) flex16+5 on all six operands: 16-bit mantissas sharing one exponent per " +
      "tensor, predicted by Autoflex from the last 16 max-abs values (max + 3σ + 100·2^e; on overflow the exponent " +
      "grows by one), with the original simulator's constants; state kept as layer buffers",
    precision: everywhere({ format: "flex16+5", scaling: "autoflex" }),
  },
};

/** Names of {@link PRECISION_PRESETS}. */
export const PRECISION_NAMES: readonly string[] = Object.keys(PRECISION_PRESETS);

/** A preset by name, or the record itself; throws one error listing the presets for an unknown name. */
export function resolvePrecision(spec: string | LinearPrecision): LinearPrecision {
  if (typeof spec !== "string") return spec;
  const preset = PRECISION_PRESETS[spec];
  if (!preset) throw new Error(`unknown precision '${spec}': expected one of ${PRECISION_NAMES.join(", ")}`);
  return preset.precision;
}

/** Whether a precision quantizes anything. */
export function isQuantized(p: LinearPrecision): boolean {
  return OPERAND_ROLES.some(([gemm, role]) => operandOf(p, gemm, role) !== undefined);
}

/** The operand precision at `gemm.role`, if any. */
export function operandOf(p: LinearPrecision, gemm: string, role: string): OperandPrecision | undefined {
  return (p as Record<string, Record<string, OperandPrecision> | undefined>)[gemm]?.[role];
}

/**
 * Checks an operand against the reduction length `k` it will be quantized
 * along (null: not known yet) and, when given, the role it has (`forward.input`,
 * ...); returns the problems (empty when fine).
 */
export function operandProblems(op: OperandPrecision, k: number | null, role?: string): string[] {
  const problems: string[] = [];
  const say = (what: string) => problems.push(what);
  if (op.lsq) {
    const lsq = lsqProblem(op, role);
    if (lsq) say(lsq);
  }
  let q;
  try {
    q = parseFormat(op.format);
  } catch (e) {
    say((e as Error).message);
    return problems;
  }
  if (op.scaling === "autoflex") {
    if (op.format !== "flex16+5") say(`scaling 'autoflex' is defined for flex16+5 only, not '${op.format}'`);
    for (const problem of autoflexProblems(op)) say(problem);
  } else if (op.scaling !== undefined) {
    if (!parseFloatFormat(op.format)) say(`scaling '${op.scaling}' needs a plain element format, not '${op.format}'`);
    if (op.scaling !== "current" && op.scaling !== "delayed") say(`scaling must be current, delayed or autoflex`);
  }
  const autoflexKeys = [op.autoflex_history, op.autoflex_sigmas, op.autoflex_margin].some((v) => v !== undefined);
  if (autoflexKeys && op.scaling !== "autoflex") say("autoflex_history / _sigmas / _margin need scaling: autoflex");
  const delayedKeys = [op.amax_history_len, op.amax_compute_algo].some((v) => v !== undefined);
  if (delayedKeys && op.scaling !== "delayed") say("amax_history_len / amax_compute_algo need scaling: delayed");
  if (op.amax_history_len !== undefined && !(Number.isInteger(op.amax_history_len) && op.amax_history_len >= 1)) {
    say(`amax_history_len must be an integer >= 1, got ${op.amax_history_len}`);
  }
  if (op.granularity !== undefined) {
    try {
      const g = parseGranularity(op.granularity === "channel" ? "channel:0" : op.granularity);
      if (q.blockSize !== null) say(`${op.format} fixes its own blocks; remove granularity`);
      if (g.kind === "group" && k !== null && k % g.size !== 0) {
        say(`group size ${g.size} does not divide the reduction length ${k}`);
      }
    } catch (e) {
      say((e as Error).message);
    }
  }
  if (q.blockSize !== null && k !== null && k % q.blockSize !== 0) {
    say(`${op.format} blocks of ${q.blockSize} do not divide the reduction length ${k}`);
  }
  if (op.hadamard !== undefined) {
    const b = op.hadamard;
    if (!(Number.isInteger(b) && b >= 2 && b <= HADAMARD_MAX_BLOCK && (b & (b - 1)) === 0)) {
      say(`hadamard block ${b} must be a power of two from 2 to ${HADAMARD_MAX_BLOCK}`);
    } else if (k !== null && b > k) say(`hadamard block ${b} is larger than the reduction length ${k}`);
    else if (k !== null && k % b !== 0) say(`hadamard block ${b} does not divide the reduction length ${k}`);
  } else if (op.random_signs) say("random_signs needs a hadamard block");
  if (op.block2d && op.format !== "nvfp4") say(`block2d is defined for nvfp4 only, not '${op.format}'`);
  if (op.block2d && op.hadamard !== undefined) say("block2d tiles the stored weight: it takes no hadamard");
  if (op.scale_rule === "quest" && op.format !== "mxfp4") say("scale_rule quest is defined for mxfp4 only");
  else if (op.scale_rule !== undefined && op.scale_rule !== "quest" && !op.format.startsWith("mx")) {
    say(`scale_rule ${op.scale_rule} applies to MX formats only`);
  }
  if (op.rounding !== undefined && op.rounding !== "nearest" && op.rounding !== "stochastic") {
    say(`rounding must be nearest or stochastic, got '${op.rounding}'`);
  }
  return problems;
}

/** The Autoflex settings of an operand (its `autoflex_*` keys; defaults left to Autoflex). */
export function autoflexOptionsOf(op: OperandPrecision): AutoflexOptions {
  return { history: op.autoflex_history, sigmas: op.autoflex_sigmas, marginUnits: op.autoflex_margin };
}

/** Problems of an operand's `autoflex_*` knobs (empty when fine). */
function autoflexProblems(op: OperandPrecision): string[] {
  try {
    autoflexParams(autoflexOptionsOf(op));
    return [];
  } catch (e) {
    return [(e as Error).message];
  }
}

/** Whether LSQ can learn the steps of `format`: signed INT-k, int2 … int8. */
export function isLsqFormat(format: string): boolean {
  return /^int[2-8]$/.test(format);
}

/** `p` with `lsq: true` on each forward operand in a format LSQ takes (a recipe's `precision.lsq`). */
export function withLearnedSteps(p: LinearPrecision): LinearPrecision {
  const forward: { input?: OperandPrecision; weight?: OperandPrecision } = { ...p.forward };
  for (const operand of ["input", "weight"] as const) {
    const op = forward[operand];
    if (op && isLsqFormat(op.format)) forward[operand] = { ...op, lsq: true };
  }
  return { ...p, forward };
}

/** What keeps `lsq` from applying to `op` at `role` (the first thing found), or null. */
function lsqProblem(op: OperandPrecision, role: string | undefined): string | null {
  const only = "lsq learns the step of forward signed int operands only (int2 … int8, nearest rounding, no " +
    "hadamard or per-tensor scaling)";
  if (role !== undefined && !role.startsWith("forward.")) return `${only}, not of ${role}`;
  if (!isLsqFormat(op.format)) return `${only}, not of format '${op.format}'`;
  if (op.rounding === "stochastic") return `${only}, not with stochastic rounding`;
  if (op.hadamard !== undefined || op.scaling !== undefined) return `${only}, not with hadamard or scaling`;
  const g = op.granularity ?? "tensor";
  if (role === "forward.input" && g !== "tensor") {
    return `lsq on forward.input learns one step shared by every token: granularity tensor, not '${g}'`;
  }
  return null;
}
