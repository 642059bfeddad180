/**
 * The findings the suite checks, with their arms and claims. Thresholds are
 * set from the spread of final validation losses across seeds measured in
 * full mode (numbers beside each claim); `--quick` runs the same claims on a
 * shorter run with one seed.
 *
 * @module
 */
import { type Arm, type Claim, type Finding, gap, versus } from "./finding.ts";

/** The base recipe every arm starts from (YAML), per mode. */
export const BASE_RECIPES: Readonly<Record<"quick" | "full", string>> = {
  quick: `
name: repro
data: { corpus: brown, max_bytes: 1000000 }
model: { d_model: 128, n_layers: 1, n_heads: 4, context: 32 }
train:
  steps: 150
  batch_size: 8
  lr: 0.003
  min_lr: 0.0003
  warmup: 15
  log_every: 10
  eval_every: 50
  eval_batches: 8
`,
  full: `
name: repro
data: { corpus: brown, max_bytes: 2000000 }
model: { d_model: 128, n_layers: 1, n_heads: 4, context: 32 }
train:
  steps: 450
  batch_size: 8
  lr: 0.003
  min_lr: 0.0003
  warmup: 30
  log_every: 15
  eval_every: 75
  eval_batches: 16
`,
};

/** An arm training with `optimizer` keeping weights in `format` (granularity, rounding optional). */
function weightArm(name: string, optimizer: string, format: string, extra: Record<string, string> = {}): Arm {
  return { name, set: { "train.optimizer": optimizer, "train.weight_format": format, ...extra } };
}

const F32: Arm = { name: "f32", set: {} };

/** F4's arms for one weight format: master weights, ECO, naive with SR and with RTN. */
function ecoArms(tag: string, format: string, extra: Record<string, string> = {}): Arm[] {
  return [
    weightArm(`master-${tag}`, "master-adam", format, extra),
    weightArm(`eco-${tag}`, "eco-adam", format, extra),
    weightArm(`naive-sr-${tag}`, "naive-adam", format, { ...extra, "train.weight_rounding": "stochastic" }),
    weightArm(`naive-rtn-${tag}`, "naive-adam", format, { ...extra, "train.weight_rounding": "nearest" }),
  ];
}

/** F4's claims for one weight format. */
function ecoClaims(tag: string, near: number, worse: number, stall: number, basis: string): Claim[] {
  return [
    {
      id: `F4.eco-near-master-${tag}`,
      text: `ECO-Adam's final val loss is within ${near} nats of master weights (${tag} weights)`,
      expected: { quick: "holds", full: "holds" },
      basis,
      check: (r) => ({
        held: Math.abs(gap(r, `eco-${tag}`, `master-${tag}`).mean) <= near,
        detail: versus(r, `eco-${tag}`, `master-${tag}`),
      }),
    },
    {
      id: `F4.naive-sr-worse-${tag}`,
      text: `naive + stochastic rounding ends at least ${worse} nats above ECO (${tag} weights)`,
      expected: { quick: "holds", full: "holds" },
      basis,
      check: (r) => ({
        held: gap(r, `naive-sr-${tag}`, `eco-${tag}`).mean >= worse,
        detail: versus(r, `naive-sr-${tag}`, `eco-${tag}`),
      }),
    },
    {
      id: `F4.naive-rtn-stalls-${tag}`,
      text: `naive + round-to-nearest stalls: at least ${stall} nats above ECO (${tag} weights)`,
      expected: { quick: "holds", full: "holds" },
      basis,
      check: (r) => ({
        held: gap(r, `naive-rtn-${tag}`, `eco-${tag}`).mean >= stall,
        detail: versus(r, `naive-rtn-${tag}`, `eco-${tag}`),
      }),
    },
  ];
}

/** F4: ECO (arXiv 2601.22101): no master weights at near-lossless quality. */
const F4: Finding = {
  id: "F4",
  title: "ECO: quantized weights without a master copy match master weights; naive updates do not",
  source: "Error-compensating optimizers, arXiv 2601.22101 (Algorithms 2 and 3)",
  arms: [
    F32,
    // FP8 weights with MX block scales: plain e4m3 has no scale, and puts weights of GPT-2's init size (0.02) in
    // its subnormal range with a handful of levels.
    ...ecoArms("fp8", "mxfp8_e4m3"),
    ...ecoArms("int4", "int4", { "train.weight_granularity": "group:128" }),
  ],
  claims: [
    ...ecoClaims("fp8", 0.05, 0.02, 0.2, "pending measurement"),
    ...ecoClaims("int4", 0.05, 0.02, 0.2, "pending measurement"),
  ],
};

/** F5: Quartet (arXiv 2505.14669): FP4 training near f32 with Hadamard + SR; naive FP4 RTN is not. */
const F5: Finding = {
  id: "F5",
  title: "FP4 training: Quartet approaches f32; naive MXFP4 round-to-nearest does not",
  source: "Quartet, arXiv 2505.14669 (IST-DASLab/Quartet); FP4 design space, arXiv 2509.17791",
  arms: [F32, { name: "quartet", set: { precision: "quartet" } }, { name: "fp4-rtn", set: { precision: "fp4-rtn" } }],
  claims: [
    {
      id: "F5.quartet-near-f32",
      text: "quartet's final val loss is within 0.1 nats of f32",
      expected: { quick: "holds", full: "holds" },
      basis: "pending measurement",
      check: (r) => ({ held: gap(r, "quartet", "f32").mean <= 0.1, detail: versus(r, "quartet", "f32") }),
    },
    {
      id: "F5.quartet-beats-rtn",
      text: "fp4-rtn ends at least 0.02 nats above quartet",
      expected: { quick: "holds", full: "holds" },
      basis: "pending measurement",
      check: (r) => ({
        held: gap(r, "fp4-rtn", "quartet").mean >= 0.02,
        detail: versus(r, "fp4-rtn", "quartet"),
      }),
    },
  ],
};

/** F7: Flexpoint (arXiv 1711.02213): 16-bit shared-exponent training matches f32 with the same hyper-parameters. */
const F7: Finding = {
  id: "F7",
  title: "Flexpoint flex16+5 matches f32 without changing any hyper-parameter",
  source: "Flexpoint, Köster et al., NeurIPS 2017, arXiv 1711.02213",
  arms: [F32, { name: "flex16+5", set: { precision: "flex16+5" } }],
  claims: [
    {
      id: "F7.flex-matches-f32",
      text: "flex16+5's final val loss is within 0.01 nats of f32",
      expected: { quick: "holds", full: "holds" },
      basis: "pending measurement",
      check: (r) => ({
        held: Math.abs(gap(r, "flex16+5", "f32").mean) <= 0.01,
        detail: versus(r, "flex16+5", "f32"),
      }),
    },
  ],
};

/** The other presets next to f32, numbers only. */
const PRESETS: Finding = {
  id: "presets",
  title: "Every training precision preset next to f32 (no claim: the numbers)",
  source: "Transformer Engine recipes (FP8 current/delayed, MXFP8, NVFP4); torchao QAT",
  arms: [
    F32,
    ...["fp8-current", "fp8-delayed", "mxfp8", "nvfp4", "qat-int8", "qat-int4"].map((p) => ({
      name: p,
      set: { precision: p },
    })),
  ],
  claims: [],
};

/** Every finding, in report order. */
export const FINDINGS: readonly Finding[] = [F4, F5, F7, PRESETS];
