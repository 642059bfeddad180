/**
 * The findings the suite checks, with their arms and claims. A claim that two
 * arms differ (or agree) is decided against the noise bar: two standard errors
 * of the seed-paired gap, from the seed spread measured in each mode
 * ({@linkcode PAIRED_GAP_SD}). `--quick` (CI) runs the same claims on a
 * shorter run with one seed; each claim records its outcome per mode, and the
 * full mode's three seeds give the verdict.
 *
 * @module
 */
import {
  type Arm,
  type Claim,
  type Finding,
  gap,
  HOLDS,
  noiseBar,
  NOT_REPRODUCED,
  PAIRED_GAP_SD,
  versus,
} from "./finding.ts";
import { F1, F2, F6 } from "./findings_ptq.ts";

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

/** "Differs" means by more than the noise bar: two standard errors of the mean paired gap ({@linkcode noiseBar}). */
const BAR_BASIS = `bar = 2 × paired-gap SD / √seeds, SD pooled over ten alike pairs: full ${PAIRED_GAP_SD.full}, ` +
  `quick ${PAIRED_GAP_SD.quick} (bar ${noiseBar("full", 3).toFixed(4)} for full's 3 seeds, ` +
  `${noiseBar("quick", 1).toFixed(4)} for quick's 1)`;

/** "Stalls": about five full-mode paired-gap SDs (5.4 × 0.0371), far outside seed noise in either mode. */
const STALL = 0.2;

/** F4's claims for one weight format, with the outcome recorded per mode and why. */
function ecoClaims(
  tag: string,
  expected: Record<"near" | "worse" | "stalls", Claim["expected"]>,
  notes: Partial<Record<"near" | "worse" | "stalls", string>>,
): Claim[] {
  return [
    {
      id: `F4.eco-near-master-${tag}`,
      text: `ECO-Adam's final val loss is within the noise bar of master weights' (${tag} weights)`,
      expected: expected.near,
      basis: BAR_BASIS,
      note: notes.near,
      check: (r) => {
        const g = gap(r, `eco-${tag}`, `master-${tag}`);
        return { held: Math.abs(g.mean) <= g.bar, detail: versus(r, `eco-${tag}`, `master-${tag}`) };
      },
    },
    {
      id: `F4.naive-sr-worse-${tag}`,
      text: `naive + stochastic rounding ends above ECO by more than the noise bar (${tag} weights)`,
      expected: expected.worse,
      basis: BAR_BASIS,
      note: notes.worse,
      check: (r) => {
        const g = gap(r, `naive-sr-${tag}`, `eco-${tag}`);
        return { held: g.mean > g.bar, detail: versus(r, `naive-sr-${tag}`, `eco-${tag}`) };
      },
    },
    {
      id: `F4.naive-rtn-stalls-${tag}`,
      text: `naive + round-to-nearest stalls: at least ${STALL} nats above ECO (${tag} weights)`,
      expected: expected.stalls,
      basis: `${STALL} nats ≈ 5.4 × the full-mode paired-gap SD ${PAIRED_GAP_SD.full}`,
      note: notes.stalls,
      check: (r) => ({
        held: gap(r, `naive-rtn-${tag}`, `eco-${tag}`).mean >= STALL,
        detail: versus(r, `naive-rtn-${tag}`, `eco-${tag}`),
      }),
    },
  ];
}

/** Why naive SR does not end worse than ECO here (measured 2026-12-01). */
const NAIVE_SR_NOTE = "naive SR ends *below* ECO at our scale. Full, paired per seed (naive-sr − eco): " +
  "fp8 −0.0037, −0.0344, −0.0130; int4 −0.0899, −0.0323, −0.0422 (every seed the same sign). The paper's " +
  "argument is that naive SR's error grows like 1/η as the learning rate decays; our runs are 450 steps with a " +
  "10× decay, far from that regime, and at this size SR's noise costs nothing measurable";

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
    ...ecoClaims("fp8", { near: HOLDS, worse: NOT_REPRODUCED, stalls: NOT_REPRODUCED }, {
      near: "holds on Brown only: on Tiny Shakespeare (full) ECO ends +0.0825 above master (per seed −0.0169 to " +
        "+0.1783), so at our scale this is not a finding (docs/findings/shakespeare)",
      worse: NAIVE_SR_NOTE,
      stalls: "MXFP8 weights keep 3 mantissa bits relative to each 32-block's scale, so an Adam step of " +
        "lr 0.003 on weights of size ~0.02 is mostly not below half an ulp: naive RTN trains, only a little worse " +
        "(full, per seed +0.0233, +0.0225, +0.0663; quick seed 0 +0.0248). It stalls at int4",
    }),
    ...ecoClaims(
      "int4",
      { near: HOLDS, worse: NOT_REPRODUCED, stalls: HOLDS },
      {
        near: "quick holds on its one seed only narrowly (+0.1097 under the 1-seed bar 0.1166) and not over three " +
          "quick seeds (+0.1097, +0.0538, +0.0435: mean +0.0690 above the 3-seed bar 0.0673): at 150 steps ECO " +
          "int4 still lags master. After 450 steps it has caught up (full: −0.0254, −0.0862, +0.0011)",
        worse: NAIVE_SR_NOTE,
      },
    ),
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
      text: "quartet's final val loss is no more than the noise bar above f32's",
      expected: HOLDS,
      basis: BAR_BASIS,
      check: (r) => {
        const g = gap(r, "quartet", "f32");
        return { held: g.mean <= g.bar, detail: versus(r, "quartet", "f32") };
      },
    },
    {
      id: "F5.quartet-beats-rtn",
      text: "fp4-rtn ends above quartet by more than the noise bar",
      expected: { quick: "holds", full: "not reproduced" },
      basis: BAR_BASIS,
      note: "at 450 steps the two are within seed noise (full, per seed fp4-rtn − quartet: +0.0436, −0.0531, " +
        "+0.0859; fp4-rtn − f32 is +0.0059 on average), so the gap FP4 RTN leaves appears only at longer runs or " +
        "larger models than ours. Quick holds on its one seed (+0.1487) but not across seeds (quick seeds 1, 2: " +
        "−0.0890, +0.0710): read the full verdict. On Tiny Shakespeare (full) it holds, +0.0556: one corpus only",
      check: (r) => {
        const g = gap(r, "fp4-rtn", "quartet");
        return { held: g.mean > g.bar, detail: versus(r, "fp4-rtn", "quartet") };
      },
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
      text: "flex16+5's final val loss is within the noise bar of f32's",
      expected: HOLDS,
      basis: BAR_BASIS,
      check: (r) => {
        const g = gap(r, "flex16+5", "f32");
        return { held: Math.abs(g.mean) <= g.bar, detail: versus(r, "flex16+5", "f32") };
      },
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
export const FINDINGS: readonly Finding[] = [F1, F2, F4, F5, F6, F7, PRESETS];
