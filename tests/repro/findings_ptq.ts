/**
 * The post-training findings: F1 (PTQ against QAT fine-tuning at low
 * precision), F2 (PTQ degradation predicted from loss-landscape features) and
 * F6 (FP against INT formats for activations and weights). Their arms are
 * derived from trained checkpoints (`DerivedArm`), so each checkpoint trains
 * once per seed. PTQ of a checkpoint is deterministic: the spread of a gap
 * between two PTQ arms comes only from the seed of the base training, and
 * their noise bar is measured across those seeds ({@linkcode PTQ_GAP_SD}).
 *
 * @module
 */
import { type GPT, type Tensor } from "@lowp/core";
import {
  applyPrecision,
  type LinearPrecision,
  parseFormat,
  parseWeightSpec,
  type WeightQuantSpec,
} from "@lowp/formats";
import { calibrationTokens, evaluate, quantizeModel } from "@lowp/recipes";
import {
  type ArmResult,
  type BaseRun,
  type Claim,
  type DerivedArm,
  type Finding,
  gap,
  HOLDS,
  mean,
  metricOf,
  type Mode,
  noiseBar,
  NOT_REPRODUCED,
  QUICK_ONLY,
  type TrainedArm,
  versus,
} from "./finding.ts";
import {
  copyModel,
  fineTune,
  type FineTuneOptions,
  linearInputStats,
  plantOutliers,
  precisionLoss,
  rtnLinears,
  rtnLoss,
} from "./ptq_tools.ts";
import { landscapeFeatures, type LandscapeOptions } from "./landscape.ts";
import { leaveOneGroupOut, type Observation } from "./fit.ts";
import { lineChart } from "@lowp/recipes";

/**
 * Seed noise of a gap between two PTQ arms of the same checkpoint (F6): PTQ is deterministic, so the gap's
 * spread comes only from the seed of the base training. The standard deviation across base seeds of `a − b`,
 * pooled over F6's four pairs (fp8 − int8 activations on the trained and on the planted model, nvfp4 − int4 g16,
 * mxfp4 − int4 g32), 3 seeds each (8 degrees of freedom). Measured 2026-12-01 on the base recipes of
 * `findings.ts`: full 0.0014 (per pair 0.0004, 0.0019, 0.0001, 0.0020), quick 0.0014 (0.0002, 0.0006, 0.0004,
 * 0.0028).
 */
export const PTQ_GAP_SD: Readonly<Record<Mode, number>> = { quick: 0.0014, full: 0.0014 };

/**
 * Seed noise of F1's RTN − QAT gaps: as {@linkcode PTQ_GAP_SD}, pooled over the four bit widths' pairs (8 degrees
 * of freedom); larger, since the QAT fine-tune adds its own spread. Measured 2026-12-01: full 0.0076 (per pair
 * 0.0143, 0.0018, 0.0033, 0.0032), quick 0.0087 (0.0097, 0.0072, 0.0094, 0.0084).
 */
export const QAT_GAP_SD: Readonly<Record<Mode, number>> = { quick: 0.0087, full: 0.0076 };

/** Where a bar from `sd` comes from, for the claims' `basis`. */
function barBasis(what: string, sd: Readonly<Record<Mode, number>>): string {
  return `bar = 2 × SD / √seeds, SD of ${what} across base-training seeds, pooled: full ${sd.full}, quick ` +
    `${sd.quick} (bar ${noiseBar("full", 3, sd).toFixed(4)} for full's 3 seeds, ${
      noiseBar("quick", 1, sd).toFixed(4)
    } for quick's 1)`;
}

/** The basis of F6's PTQ-vs-PTQ claims. */
export const PTQ_BASIS = barBasis("F6's PTQ − PTQ gaps", PTQ_GAP_SD);

/** The basis of F1's RTN-vs-QAT claims. */
export const QAT_BASIS = barBasis("F1's RTN − QAT gaps", QAT_GAP_SD);

/**
 * Seed noise of F1's RTN − GPTQ gaps (two PTQ methods on the same checkpoint), pooled over the four bit widths'
 * pairs as {@linkcode PTQ_GAP_SD}. Measured 2026-12-01: full 0.0087 (per pair 0.0173, 0.0017, 0.0003, 0.0000),
 * quick 0.0057 (0.0112, 0.0023, 0.0006, 0.0001): the 2-bit pair dominates.
 */
export const GPTQ_GAP_SD: Readonly<Record<Mode, number>> = { quick: 0.0057, full: 0.0087 };

/** The basis of F1's RTN-vs-GPTQ claims. */
export const GPTQ_BASIS = barBasis("F1's RTN − GPTQ gaps", GPTQ_GAP_SD);

/**
 * Seed noise of F1's GPTQ − QAT gaps, pooled over the four bit widths' pairs. Measured 2026-12-01: full 0.0032 (per
 * pair 0.0033, 0.0031, 0.0031, 0.0032), quick 0.0093 (0.0105, 0.0092, 0.0089, 0.0085).
 */
export const QAT_GPTQ_GAP_SD: Readonly<Record<Mode, number>> = { quick: 0.0093, full: 0.0032 };

/** The basis of F1's GPTQ-vs-QAT claims. */
export const QAT_GPTQ_BASIS = barBasis("F1's GPTQ − QAT gaps", QAT_GPTQ_GAP_SD);

const F32: TrainedArm = { name: "f32", set: {} };

/** Calibration sequences every post-training method of F1 sees (GPTQ's customary 128). */
export const CALIBRATION_SAMPLES = 128;

/** Group size of F1's INT-k weights (see F1's source line for why). */
export const F1_GROUP = 32;

/** Bit widths of F1. */
export const F1_BITS = [2, 3, 4, 8] as const;

/**
 * F1's QAT fine-tune: the calibration sequences (the same 128 the PTQ methods see) for 4 passes in batches of
 * the training's 8 (64 steps), AdamW at a constant rate equal to the one training ended at (`min_lr`, 3e-4).
 * A first full run at 1e-3 (a third of the peak) made the f32 fine-tune itself 0.047 worse than the checkpoint
 * (seed 0: 2.4552 vs 2.4083): it knocked the converged model out of its minimum, so every QAT arm measured that
 * damage rather than quantization. The rate was changed on that control's evidence (the first run's numbers are
 * in F1's notes).
 */
export const F1_FINE_TUNE: FineTuneOptions = { samples: CALIBRATION_SAMPLES, epochs: 4 };

/**
 * A post-training quantization method as F1 runs it: quantizes the linear weights of `model` (a copy of the
 * trained model) to `spec` in place, given `calibration` ([samples, context] token ids from the training split,
 * `calibrationTokens`).
 */
export type PtqMethod = (model: GPT, spec: WeightQuantSpec, calibration: Tensor, base: BaseRun) => Promise<void>;

/**
 * The PTQ methods F1 compares, by name: each gives the arms `<method>-int2` … `<method>-int8`. GPTQ runs as
 * `deno task ptq --method gptq` does (recipes/ptq.ts: sequential, block size 128, 1% dampening, no act-order).
 */
export const PTQ_METHODS: Readonly<Record<string, PtqMethod>> = {
  rtn: (model, spec) => Promise.resolve(rtnLinears(model, spec)),
  gptq: async (model, spec, calibration) => {
    await quantizeModel(model, { method: "gptq", spec, calibration });
  },
};

const intSpec = (bits: number) => parseWeightSpec(`int${bits}`, `group:${F1_GROUP}`);

/** F1's arm for PTQ `method` at `bits`. */
function ptqArm(method: string, bits: number): DerivedArm {
  return {
    name: `${method}-int${bits}`,
    from: "f32",
    derive: async (base) => {
      const copy = copyModel(base.model, base.recipe);
      const calibration = calibrationTokens(
        base.corpus.train,
        CALIBRATION_SAMPLES,
        base.recipe.model.context,
        base.seed,
      );
      try {
        await PTQ_METHODS[method](copy, intSpec(bits), calibration, base);
        return { valLoss: await evaluate(copy, base.recipe, base.corpus.val) };
      } finally {
        calibration.dispose();
        copy.dispose();
      }
    },
  };
}

/** Weight-only fake quant of every linear layer (no activation quantization: the PTQ arms quantize weights only). */
function weightOnly(format: string, granularity?: string): LinearPrecision {
  return { forward: { weight: { format, ...(granularity ? { granularity } : {}) } } };
}

/**
 * F1's QAT arm at `bits`: a copy of the checkpoint fine-tuned with weight-only INT-k fake quant (plain STE),
 * evaluated under the same fake quant, which is RTN of the fine-tuned weights: the model that would be deployed.
 * With `bits` null, the control: the same fine-tune in f32 (what the extra steps alone give).
 */
function qatArm(bits: number | null): DerivedArm {
  return {
    name: bits === null ? "ft-f32" : `qat-ft-int${bits}`,
    from: "f32",
    derive: async (base) => {
      const copy = copyModel(base.model, base.recipe);
      try {
        if (bits !== null) applyPrecision(copy, weightOnly(`int${bits}`, `group:${F1_GROUP}`));
        await fineTune(copy, base.recipe, base.corpus, F1_FINE_TUNE);
        return { valLoss: await evaluate(copy, base.recipe, base.corpus.val) };
      } finally {
        copy.dispose();
      }
    },
  };
}

/** The RTN − QAT gap at `bits`, paired by seed. */
const rtnMinusQat = (r: ReadonlyMap<string, ArmResult>, bits: number) =>
  gap(r, `rtn-int${bits}`, `qat-ft-int${bits}`, QAT_GAP_SD);

/** Short names of F1's arms at `bits`, for its claims. */
const F1_ARM = {
  rtn: (bits: number) => `rtn-int${bits}`,
  gptq: (bits: number) => `gptq-int${bits}`,
  qat: (bits: number) => `qat-ft-int${bits}`,
} as const;

/** Words for F1's arms in a claim's text. */
const F1_WORDS: Readonly<Record<keyof typeof F1_ARM, string>> = {
  rtn: "RTN",
  gptq: "GPTQ",
  qat: "QAT fine-tuning on the calibration tokens",
};

/**
 * F1's claim that `winner` ends below `loser` by more than the bar of their gap at `bits` (`sd`: the measured
 * seed noise of `loser − winner`, `basis` its words).
 */
function beats(
  winner: keyof typeof F1_ARM,
  loser: keyof typeof F1_ARM,
  bits: number,
  sd: Readonly<Record<Mode, number>>,
  basis: string,
  expected: Claim["expected"],
  note?: string,
): Claim {
  const [w, l] = [F1_ARM[winner](bits), F1_ARM[loser](bits)];
  return {
    note,
    id: `F1.${winner}-beats-${loser}-${bits}bit`,
    text: `at ${bits} bits (int${bits}, groups of ${F1_GROUP}), ${F1_WORDS[winner]} ends below ${F1_WORDS[loser]} ` +
      `by more than the ${F1_WORDS[loser].split(" ")[0]} − ${F1_WORDS[winner].split(" ")[0]} noise bar`,
    expected,
    basis,
    check: (r) => {
      const g = gap(r, l, w, sd);
      return { held: g.mean > g.bar, detail: versus(r, l, w, sd) };
    },
  };
}

/** Why GPTQ does not beat RTN at 3 bits (measured 2026-12-01). */
const F1_GPTQ_THREE_BIT_NOTE = "RTN at int3 in groups of 32 is already within seed noise of f32 here (full " +
  "rtn-int3 − f32 +0.0020, +0.0023, −0.0007 per seed), so GPTQ has nothing to win: full RTN − GPTQ +0.0023, " +
  "+0.0023, −0.0007 (gptq-int3 − f32 −0.0003, −0.0000, −0.0000); quick +0.0003 (seed 0). At 2 bits GPTQ wins " +
  "clearly (full +0.0355, +0.0480, +0.0138)";

/** Why QAT does not beat GPTQ in full mode (measured 2026-12-01). */
const F1_QAT_GPTQ_NOTE = "reversed in full: GPTQ ends BELOW QAT at every width (GPTQ − QAT: 2 bits −0.0050, −0.0093, " +
  "−0.0028; 3 bits −0.0049, −0.0081, −0.0020 per seed; bar 0.0037), as GPTQ on 128 sequences is within +0.0016 " +
  "(2 bits) and −0.0001 (3 bits) of f32 while the fine-tune itself costs ft-f32 − f32 +0.0032, +0.0077, +0.0015. " +
  "Quick holds (seed 0: +0.0238 at 2 bits, +0.0199 at 3 bits against a bar of 0.0186) only because the 150-step " +
  "checkpoint is undertrained and any fine-tune lowers its loss (ft-f32 − f32 −0.0212): the paper's local-vs-global " +
  "misalignment does not show at this scale";

/** Why F1's 3-bit claim is recorded as not reproduced in full (measured 2026-12-01). */
const F1_THREE_BIT_NOTE = "RTN at int3 in groups of 32 costs almost nothing at our scale (full rtn-int3 − f32 " +
  "+0.0020, +0.0023, −0.0007 per seed), so there is nothing for QAT to win back, and the fine-tune on 128 " +
  "sequences costs a little itself (ft-f32 − f32 +0.0032, +0.0077, +0.0015): full RTN − QAT −0.0026, −0.0058, " +
  "−0.0026. Quick holds (+0.0202) only because the 150-step checkpoint is undertrained and any fine-tune lowers " +
  "its loss (ft-f32 − f32 −0.0212, seed 0): read the full verdict. At 2 bits RTN costs +0.034 on average (full) and QAT " +
  "recovers most of it (qat-ft-int2 − ft-f32 +0.0031). A first full run with the fine-tune at lr 1e-3 gave " +
  "ft-f32 − f32 +0.047 and QAT worse than RTN at every width (2 bits −0.0129, 3 bits −0.0483), which is why the " +
  "fine-tune now runs at the rate training ended at (F1_FINE_TUNE)";

/** F1: low-precision PTQ is hard (arXiv 2410.14570): QAT on the same calibration data beats it at 2–3 bits. */
export const F1: Finding = {
  id: "F1",
  title: "PTQ is hard at low precision: QAT fine-tuning on the same calibration tokens beats GPTQ, and GPTQ beats " +
    "RTN, at 2–3 bits",
  source: "Xu et al., arXiv 2410.14570. One f32 checkpoint per seed; every arm sees the same " +
    `${CALIBRATION_SAMPLES} calibration sequences (calibrationTokens). INT-k weights in groups of ${F1_GROUP} ` +
    "along the input axis (the customary 128 is one scale per column at our width of 128). QAT arms train " +
    "weight-only fake quant (the qat-* presets also quantize activations to int8, which the PTQ arms do not, " +
    `so they would not compare like with like): ${F1_FINE_TUNE.epochs} passes over the calibration sequences, ` +
    "AdamW at the constant rate training ended at (min_lr); ft-f32 is the same fine-tune without quantization. " +
    "PTQ methods: " +
    `${Object.keys(PTQ_METHODS).join(", ")} (PTQ_METHODS in tests/repro/findings_ptq.ts)`,
  arms: [
    F32,
    ...Object.keys(PTQ_METHODS).flatMap((m) => F1_BITS.map((b) => ptqArm(m, b))),
    ...F1_BITS.map((b) => qatArm(b)),
    qatArm(null),
  ],
  claims: [
    beats("qat", "rtn", 2, QAT_GAP_SD, QAT_BASIS, HOLDS),
    beats("qat", "rtn", 3, QAT_GAP_SD, QAT_BASIS, { quick: "holds", full: "not reproduced" }, F1_THREE_BIT_NOTE),
    beats("gptq", "rtn", 2, GPTQ_GAP_SD, GPTQ_BASIS, HOLDS),
    beats("gptq", "rtn", 3, GPTQ_GAP_SD, GPTQ_BASIS, NOT_REPRODUCED, F1_GPTQ_THREE_BIT_NOTE),
    beats("qat", "gptq", 2, QAT_GPTQ_GAP_SD, QAT_GPTQ_BASIS, QUICK_ONLY, F1_QAT_GPTQ_NOTE),
    beats("qat", "gptq", 3, QAT_GPTQ_GAP_SD, QAT_GPTQ_BASIS, QUICK_ONLY, F1_QAT_GPTQ_NOTE),
    {
      id: "F1.gap-shrinks",
      text:
        "the RTN − QAT gap at 8 bits is below the gaps at 2 and at 3 bits by more than the RTN − QAT noise bar each",
      expected: NOT_REPRODUCED,
      basis: QAT_BASIS,
      note: "it shrinks from 2 to 3 bits and is flat from 3 to 8: full RTN − QAT 2 bits +0.0268, 3 bits −0.0037, " +
        "4 bits −0.0040, 8 bits −0.0041; quick seed 0 +0.0436, +0.0202, +0.0217, +0.0211. At 8 bits the gap is the " +
        "fine-tune's own effect (full ft-f32 − f32 +0.0032, +0.0077, +0.0015 per seed, equal to RTN − QAT at 8 bits; " +
        "quick −0.0212), so 3 bits is already at that floor here",
      check: (r) => {
        const [g2, g3, g4, g8] = F1_BITS.map((b) => rtnMinusQat(r, b));
        const held = g2.mean - g8.mean > g8.bar && g3.mean - g8.mean > g8.bar;
        const each = F1_BITS.map((b, i) => `${b} bits ${[g2, g3, g4, g8][i].mean.toFixed(4)}`).join(", ");
        const seeds = `${g8.seeds} seed${g8.seeds === 1 ? "" : "s"}`;
        return { held, detail: `RTN − QAT: ${each} (bar ${g8.bar.toFixed(4)} over ${seeds})` };
      },
    },
  ],
};

/** F6's planted outliers: channels per LayerNorm and their factor, fixed before any run. */
export const F6_OUTLIERS = { channels: 4, factor: 20 } as const;

/** Calibration sequences the activation statistics are taken on. */
const STATS_SAMPLES = 16;

/** W8A8 records: int8 weights per output channel; activations per tensor in int8 or FP8 E4M3 (current scaling). */
const W8A8: Readonly<Record<"int8" | "fp8", LinearPrecision>> = {
  int8: {
    forward: {
      input: { format: "int8", granularity: "tensor" },
      weight: { format: "int8", granularity: "channel" },
    },
  },
  fp8: {
    forward: {
      input: { format: "e4m3", scaling: "current" },
      weight: { format: "int8", granularity: "channel" },
    },
  },
};

/** Plants F6's outliers into a model copy. */
const plant = (copy: GPT, base: BaseRun) => plantOutliers(copy, { ...F6_OUTLIERS, seed: base.seed }).then(() => {});

/** F6's W8A8 arm: `acts` activations, on the trained model or with planted outliers. */
function w8a8Arm(acts: "int8" | "fp8", outliers: boolean): DerivedArm {
  return {
    name: `w8a8-${acts}${outliers ? "-outliers" : ""}`,
    from: "f32",
    derive: async (base) => ({
      valLoss: await precisionLoss(
        base.model,
        base.recipe,
        base.corpus,
        W8A8[acts],
        outliers ? (copy) => plant(copy, base) : undefined,
      ),
    }),
  };
}

/** Largest statistic over the linear layers fed by a LayerNorm (attention's QKV, the MLP's first projection). */
function worstNormFed(stats: Map<string, { kurtosis: number; maxToMedian: number }>) {
  const fed = [...stats].filter(([name]) => /(attn\.c_attn|mlp\.c_fc)$/.test(name)).map(([, s]) => s);
  return {
    kurtosis: Math.max(...fed.map((s) => s.kurtosis)),
    maxToMedian: Math.max(...fed.map((s) => s.maxToMedian)),
  };
}

/** F6's control: the planted model in f32 (the same function), with the activation statistics before and after. */
const OUTLIERS_F32: DerivedArm = {
  name: "outliers-f32",
  from: "f32",
  derive: async (base) => {
    const copy = copyModel(base.model, base.recipe);
    try {
      const before = worstNormFed(await linearInputStats(copy, base.recipe, base.corpus, STATS_SAMPLES));
      await plant(copy, base);
      const after = worstNormFed(await linearInputStats(copy, base.recipe, base.corpus, STATS_SAMPLES));
      return {
        valLoss: await evaluate(copy, base.recipe, base.corpus.val),
        metrics: {
          kurtosis_trained: before.kurtosis,
          max_to_median_trained: before.maxToMedian,
          kurtosis_planted: after.kurtosis,
          max_to_median_planted: after.maxToMedian,
        },
      };
    } finally {
      copy.dispose();
    }
  },
};

/** F6's weight-only W4 arm in `format` (with `granularity` for INT). */
function w4Arm(name: string, format: string, granularity?: string): DerivedArm {
  return {
    name,
    from: "f32",
    derive: async (base) => ({
      valLoss: await rtnLoss(base.model, base.recipe, base.corpus, parseWeightSpec(format, granularity)),
    }),
  };
}

/** F6's claim that `fp` is no worse than `int` beyond the PTQ noise bar. */
function noWorse(id: string, text: string, fp: string, int: string, note?: string): Claim {
  return {
    id,
    note,
    text,
    expected: HOLDS,
    basis: PTQ_BASIS,
    check: (r) => {
      const g = gap(r, fp, int, PTQ_GAP_SD);
      return { held: g.mean <= g.bar, detail: versus(r, fp, int, PTQ_GAP_SD) };
    },
  };
}

/** Largest |planted f32 − trained f32| val loss the planting may cost: f32 rounding of the rescaled weights. */
const PLANTING_TOLERANCE = 1e-3;

/** F6: ZeroQuant-FP (arXiv 2307.09782): FP8 activations beat INT8 with outliers; FP4 weights match INT4. */
export const F6: Finding = {
  id: "F6",
  title: "ZeroQuant-FP: FP8 activations are no worse than INT8 on a model with outliers; FP4 weights no worse " +
    "than INT4",
  source: "ZeroQuant-FP, Wu et al., arXiv 2307.09782. PTQ (round to nearest, no training) of the f32 checkpoint. " +
    "W8A8: int8 weights per output channel in both arms; activations per tensor, int8 or FP8 E4M3 with a scale " +
    "from the tensor's amax. Our trained models have no activation outliers to speak of (outliers-f32's " +
    "max-to-median and kurtosis metrics), so the W8A8 claim runs on the same checkpoint with planted outlier " +
    `channels: ${F6_OUTLIERS.channels} channels of each block's ln_1 and ln_2 scaled by ${F6_OUTLIERS.factor} and ` +
    "the matching input rows of attn.c_attn and mlp.c_fc divided by it (the function is unchanged: " +
    "outliers-f32); the trained model's pair (w8a8-int8, w8a8-fp8) is shown for reference. W4, weight only, " +
    "two fair pairs with the same group size along the input axis: NVFP4 (E2M1, blocks of 16, E4M3 scales and " +
    "a per-tensor f32 scale) vs INT4 in groups of 16, and MXFP4 (E2M1, blocks of 32, power-of-two E8M0 scales) " +
    "vs INT4 in groups of 32; the INT4 arms keep f32 scales, an advantage in their favour",
  arms: [
    F32,
    OUTLIERS_F32,
    w8a8Arm("int8", false),
    w8a8Arm("fp8", false),
    w8a8Arm("int8", true),
    w8a8Arm("fp8", true),
    w4Arm("w4-nvfp4", "nvfp4"),
    w4Arm("w4-int4-g16", "int4", "group:16"),
    w4Arm("w4-mxfp4", "mxfp4"),
    w4Arm("w4-int4-g32", "int4", "group:32"),
  ],
  claims: [
    {
      id: "F6.planting-keeps-function",
      text: `planting the outlier channels changes the f32 val loss by at most ${PLANTING_TOLERANCE} on every seed`,
      expected: HOLDS,
      basis: "f32 rounding of weights scaled by 1/20 and LayerNorm parameters scaled by 20 (exact in exact " +
        "arithmetic); the bound is far below any seed effect",
      check: (r) => {
        const d = r.get("outliers-f32")!.valLoss.map((v, i) => v - r.get("f32")!.valLoss[i]);
        const k = metricOf(r, "outliers-f32", "max_to_median_trained"),
          p = metricOf(r, "outliers-f32", "max_to_median_planted");
        return {
          held: d.every((x) => Math.abs(x) <= PLANTING_TOLERANCE),
          detail: `planted − trained f32 per seed: ${d.map((x) => x.toExponential(2)).join(", ")}; channel ` +
            `max-to-median of the LayerNorm-fed inputs: trained ${mean(k).toFixed(1)}, planted ${mean(p).toFixed(1)}`,
        };
      },
    },
    noWorse(
      "F6.fp8-acts-no-worse-than-int8",
      "with planted outliers, W8A8 with FP8 activations ends no more than the PTQ noise bar above INT8 activations",
      "w8a8-fp8-outliers",
      "w8a8-int8-outliers",
      "holds, and FP8 is below INT8 on every seed (full −0.0042, −0.0045, −0.0011), but the effect is small at our " +
        "scale: the planted outliers cost INT8 activations only +0.004 over f32 (full mean), because a per-tensor " +
        "int8 step of max/127 still leaves the other channels about 5 steps of range. On the trained model, " +
        "without outliers, the two are equal (w8a8-fp8 − w8a8-int8: −0.0001, +0.0006, −0.0000)",
    ),
    noWorse(
      "F6.nvfp4-no-worse-than-int4-g16",
      "NVFP4 weights end no more than the PTQ noise bar above INT4 weights in groups of 16",
      "w4-nvfp4",
      "w4-int4-g16",
      "holds as a tie: every W4 arm is within 0.003 of f32 at our scale (full nvfp4 − int4 g16 +0.0001, −0.0000, " +
        "+0.0002), so 'no worse' is all these runs can say, not 'better'",
    ),
    noWorse(
      "F6.mxfp4-no-worse-than-int4-g32",
      "MXFP4 weights end no more than the PTQ noise bar above INT4 weights in groups of 32",
      "w4-mxfp4",
      "w4-int4-g32",
      "holds as a tie (full −0.0025, +0.0015, −0.0000; quick seeds 0–2 −0.0002, +0.0045, −0.0004: one quick seed " +
        "is above the 1-seed bar 0.0028, so quick is decided by seed 0 only)",
    ),
  ],
};

/** F2's checkpoint grid: model widths × run lengths (`short` is a third of the mode's base steps). */
export const F2_WIDTHS = [64, 128, 256] as const;

/** The run lengths per mode: short and long (the base recipe's steps). */
const F2_STEPS: Readonly<Record<"short" | "long", Readonly<Record<Mode, string>>>> = {
  short: { quick: "50", full: "150" },
  long: { quick: "150", full: "450" },
};

/** F2's formats: INT-k per output channel, MXFP4 and NVFP4 (their own blocks). */
export const F2_FORMATS: readonly { readonly format: string; readonly granularity?: string }[] = [
  { format: "int2", granularity: "channel" },
  { format: "int3", granularity: "channel" },
  { format: "int4", granularity: "channel" },
  { format: "int8", granularity: "channel" },
  { format: "mxfp4" },
  { format: "nvfp4" },
];

/** Bits per weight of a format: the element's, plus its block scale's share (8-bit scales; a column's f32 scale ≈ 0). */
export function bitsPerWeight(format: string): number {
  const q = parseFormat(format);
  return q.elementBits + (q.blockSize ? 8 / q.blockSize : 0);
}

/** How F2's landscape features are estimated (fixed before any run). */
export const F2_LANDSCAPE: LandscapeOptions = { samples: 16, probes: 8, iterations: 10, step: 1e-3 };

/** Ridge penalty of F2's fit (on standardized features; light, against the features' collinearity). */
export const F2_RIDGE = 1;

/** Loss increases below this floor (nats) are taken as the floor before the log. */
export const F2_FLOOR = 1e-4;

/** The held-out R² F2's claim asks for. */
export const F2_R2 = 0.7;

/** The checkpoint arm of width `d` and run length `length` (d 128 long is the shared f32 arm). */
function checkpointArm(d: number, length: "short" | "long"): TrainedArm {
  if (d === 128 && length === "long") return F32;
  return {
    name: `f2-d${d}-${length}`,
    set: { "model.d_model": String(d) },
    modes: { quick: { "train.steps": F2_STEPS[length].quick }, full: { "train.steps": F2_STEPS[length].full } },
  };
}

const CHECKPOINTS = F2_WIDTHS.flatMap((d) => (["short", "long"] as const).map((l) => checkpointArm(d, l)));

const formatKey = (f: { format: string; granularity?: string }) =>
  `dloss:${f.format}${f.granularity && f.granularity !== "channel" ? `-${f.granularity}` : ""}`;

/** F2's derived arm of a checkpoint: its landscape features and the loss increase of RTN in every format. */
function landscapeArm(checkpoint: TrainedArm): DerivedArm {
  return {
    name: `f2-ptq-${checkpoint.name.replace(/^f2-/, "")}`,
    from: checkpoint.name,
    derive: async (base) => {
      const copy = copyModel(base.model, base.recipe);
      let features;
      try {
        features = await landscapeFeatures(copy, base.recipe, base.corpus, F2_LANDSCAPE);
      } finally {
        copy.dispose();
      }
      const metrics: Record<string, number> = {
        d_model: base.recipe.model.d_model,
        steps: base.recipe.train.steps,
        parameters: features.parameters,
        trace: features.trace,
        top_eigenvalue: features.topEigenvalue,
        weight_kurtosis: features.weightKurtosis,
      };
      for (const f of F2_FORMATS) {
        const spec = parseWeightSpec(f.format, f.granularity);
        metrics[formatKey(f)] = await rtnLoss(base.model, base.recipe, base.corpus, spec) - base.valLoss;
      }
      return { valLoss: base.valLoss, metrics };
    },
  };
}

const LANDSCAPE_ARMS = CHECKPOINTS.map(landscapeArm);

/** F2's observations: one per checkpoint, seed and format. `bitsOnly` keeps the format's bits alone. */
export function f2Observations(r: ReadonlyMap<string, ArmResult>, bitsOnly = false): Observation[] {
  return LANDSCAPE_ARMS.flatMap((arm) => {
    const seeds = r.get(arm.name)?.valLoss.length ?? 0;
    return Array.from({ length: seeds }, (_, s) =>
      F2_FORMATS.map((f): Observation => {
        const at = (key: string) => metricOf(r, arm.name, key)[s];
        const landscape = [at("trace"), Math.abs(at("top_eigenvalue")), at("weight_kurtosis")]
          .map((v) => Math.log10(Math.max(v, 1e-12)));
        return {
          group: `${arm.from}-s${s}`,
          x: bitsOnly ? [bitsPerWeight(f.format)] : [bitsPerWeight(f.format), ...landscape],
          y: Math.log10(Math.max(at(formatKey(f)), F2_FLOOR)),
        };
      })).flat();
  });
}

/** F2's appendix: the feature table, the fit's held-out R² with and without the landscape, and the scatter plot. */
function f2Appendix(r: ReadonlyMap<string, ArmResult>) {
  const rows = f2Observations(r), full = leaveOneGroupOut(rows, F2_RIDGE);
  const bits = leaveOneGroupOut(f2Observations(r, true), F2_RIDGE);
  const m = (arm: string, key: string) => mean(metricOf(r, arm, key));
  const lines = [
    "Features per checkpoint (mean over seeds) and the loss increase after RTN of every linear weight:",
    "",
    `| checkpoint | d_model | steps | f32 val loss | tr(H) | λ_max | weight kurtosis | ${
      F2_FORMATS.map((f) => `Δ ${formatKey(f).slice(6)}`).join(" | ")
    } |`,
    `| --- | --- | --- | --- | --- | --- | --- | ${F2_FORMATS.map(() => "---").join(" | ")} |`,
    ...LANDSCAPE_ARMS.map((a) =>
      `| ${a.from} | ${m(a.name, "d_model")} | ${m(a.name, "steps")} | ${mean(r.get(a.name)!.valLoss).toFixed(4)} | ${
        m(a.name, "trace").toFixed(1)
      } | ${m(a.name, "top_eigenvalue").toFixed(2)} | ${m(a.name, "weight_kurtosis").toFixed(2)} | ${
        F2_FORMATS.map((f) => m(a.name, formatKey(f)).toFixed(4)).join(" | ")
      } |`
    ),
    "",
    `Fit: ridge (λ ${F2_RIDGE}, standardized features) of log10 Δloss (floored at ${F2_FLOOR}) on the format's ` +
    "bits per weight and log10 of tr(H), |λ_max| and the weight kurtosis; Hessian over the linear weights on " +
    `${F2_LANDSCAPE.samples} calibration sequences (${F2_LANDSCAPE.probes} Rademacher probes, ` +
    `${F2_LANDSCAPE.iterations} power iterations, finite-difference step ${F2_LANDSCAPE.step}). Held-out R² ` +
    `leaving one checkpoint (all its formats) out at a time, ${new Set(rows.map((o) => o.group)).size} ` +
    `checkpoints × ${F2_FORMATS.length} formats: **${full.r2.toFixed(3)}**; the format's bits alone: ` +
    `${bits.r2.toFixed(3)}.`,
    "",
    "![F2 predicted vs actual](F2-fit.svg)",
  ];
  const points = rows.map((o, i) => [o.y, full.predicted[i]] as [number, number]);
  const lo = Math.min(...points.flat()), hi = Math.max(...points.flat());
  const chart = lineChart([
    { label: "y = x", color: "#999", points: [[lo, lo], [hi, hi]] },
    { label: "held-out prediction", color: "#1f77b4", points, style: "points" },
  ], { title: "F2: log10 Δloss after RTN, predicted vs actual", xLabel: "actual", yLabel: "predicted" });
  return { markdown: lines.join("\n"), charts: new Map([["F2-fit", chart]]) };
}

/** F2: PTQ scaling laws (arXiv 2410.12119): the loss increase after PTQ is predictable from landscape features. */
export const F2: Finding = {
  id: "F2",
  title: "PTQ degradation is predictable from loss-landscape features (held-out R²)",
  source: "Xu et al., arXiv 2410.12119. A grid of f32 checkpoints (d_model " +
    `${F2_WIDTHS.join(", ")} × ${F2_STEPS.short.full} and ${F2_STEPS.long.full} steps; quick: ` +
    `${F2_STEPS.short.quick} and ${F2_STEPS.long.quick}), each quantized by RTN to ` +
    `${F2_FORMATS.map((f) => formatKey(f).slice(6)).join(", ")}; the f2-ptq-* arms' val loss is the f32 checkpoint's`,
  arms: [...CHECKPOINTS, ...LANDSCAPE_ARMS],
  claims: [
    {
      id: "F2.r2",
      text: `the fitted model's held-out (leave-one-checkpoint-out) R² on log Δloss is at least ${F2_R2}`,
      expected: { quick: "not reproduced", full: "not reproduced" },
      note: "held-out R² 0.488 in full (18 checkpoints: 6 × 3 seeds), 0.336 in quick (6), and the format's bits " +
        "alone do as well (0.464, 0.346): the landscape features add nothing measurable. At our scale only int2 " +
        "degrades the loss clearly (full +0.02 to +0.20); int3 to int8, MXFP4 and NVFP4 move it by at most " +
        "0.007, mostly inside ±0.002, where the sign is luck of the rounding, so most targets sit near the " +
        "floor and what is left to predict is which checkpoint int2 hurts most. The features do vary (tr(H) 5.7 " +
        "to 307, λ_max 0.31 to 74) but not in step with that. A first grid without int2 gave R² −0.05 (quick): " +
        "nothing to predict at all. What the table does show: at every width the longer run loses 2 to 5 times more " +
        "to int2 (full +0.032 → +0.149 at d64, +0.032 → +0.092 at d128, +0.031 → +0.063 at d256)",
      basis: `${F2_R2}, issue #11's bar, fixed before any run; the bits-only R² beside it says how much the ` +
        "landscape features add",
      check: (r) => {
        const full = leaveOneGroupOut(f2Observations(r), F2_RIDGE);
        const bits = leaveOneGroupOut(f2Observations(r, true), F2_RIDGE);
        return {
          held: full.r2 >= F2_R2,
          detail: `held-out R² ${full.r2.toFixed(3)} (format bits alone ${bits.r2.toFixed(3)})`,
        };
      },
    },
  ],
  appendix: f2Appendix,
};
