/**
 * What a finding of the reproducibility suite is: arms (recipe overrides on a
 * shared base recipe, or post-training arms derived from a trained arm's final
 * model), claims written as code over the arms' results, and the paper it
 * comes from. Each claim records the outcome we expect at our
 * scale: `holds`, or `not reproduced` with the numbers and reasons; the suite
 * fails when an outcome differs from its record, in either direction.
 *
 * @module
 */
import type { GPT } from "@lowp/core";
import type { Corpus, LMRecipe } from "@lowp/recipes";

/** The suite's modes: `quick` (CI: short runs, one seed) and `full` (longer runs, three seeds). */
export type Mode = "quick" | "full";

/** A claim's outcome on a run. */
export type Outcome = "holds" | "not reproduced";

/** Recorded outcomes: holds in both modes. */
export const HOLDS: Readonly<Record<Mode, Outcome>> = { quick: "holds", full: "holds" };
/** Recorded outcomes: not reproduced in either mode. */
export const NOT_REPRODUCED: Readonly<Record<Mode, Outcome>> = { quick: "not reproduced", full: "not reproduced" };
/** Recorded outcomes: holds only in the quick mode's short run. */
export const QUICK_ONLY: Readonly<Record<Mode, Outcome>> = { quick: "holds", full: "not reproduced" };

/** A trained arm: a name and the recipe keys it sets (as `--set key=value` would). */
export interface TrainedArm {
  /** Short name, unique within the finding (a folder name). */
  readonly name: string;
  /** Recipe overrides, e.g. `{ precision: "quartet" }`. */
  readonly set: Readonly<Record<string, string>>;
  /** More overrides in one mode only (e.g. a run length relative to the mode's base recipe). */
  readonly modes?: Readonly<Partial<Record<Mode, Readonly<Record<string, string>>>>>;
}

/** A trained arm's overrides in `mode`. */
export function settingsOf(arm: TrainedArm, mode: Mode): Record<string, string> {
  return { ...arm.set, ...arm.modes?.[mode] };
}

/** What a derived arm is given: the final model of its base arm at one seed, and where it came from. */
export interface BaseRun {
  /** The base arm's trained model. Read it, never change it: work on a copy (`copyModel` in ptq_tools.ts). */
  readonly model: GPT;
  /** The base arm's resolved recipe at this seed, with `precision:` reset to f32. */
  readonly recipe: LMRecipe;
  /** The corpus the base trained on (its training split gives calibration data, its validation split the loss). */
  readonly corpus: Corpus;
  /** The seed. */
  readonly seed: number;
  /** The suite's mode. */
  readonly mode: Mode;
  /** The base's final validation loss. */
  readonly valLoss: number;
}

/** What a derived arm gives: a validation loss and any other numbers its claims need. */
export interface DerivedResult {
  /** Validation loss of the derived model (the same batches as the base's). */
  readonly valLoss: number;
  /** Other numbers by name (a feature, an R² input, a layer-wise error, ...). */
  readonly metrics?: Readonly<Record<string, number>>;
}

/**
 * A post-training arm: derived from the final model of the trained arm `from`
 * at each seed (post-training quantization, a short fine-tune, measurements of
 * the loss landscape). It runs in the same job as its base, right after the
 * base trains, so the base is trained once per seed and never retrained.
 */
export interface DerivedArm {
  /** Short name, unique across the findings (a folder name). */
  readonly name: string;
  /** The trained arm whose final model it starts from. */
  readonly from: string;
  /** Computes the arm's result from the base run. Must leave `base.model` as it found it (checked). */
  derive(base: BaseRun): Promise<DerivedResult>;
}

/** One arm: trained from scratch by a recipe, or derived from a trained arm's model. */
export type Arm = TrainedArm | DerivedArm;

/** Whether the arm is derived from another arm's model. */
export function isDerived(arm: Arm): arm is DerivedArm {
  return "from" in arm;
}

/** What one arm gave, over its seeds. */
export interface ArmResult {
  /** The arm's name. */
  readonly arm: string;
  /** Final validation loss per seed, in seed order. */
  readonly valLoss: readonly number[];
  /** Training tokens per second per seed (mean over the run). */
  readonly tokensPerS: readonly number[];
  /** Bytes of weights + optimizer state per parameter, as if packed. */
  readonly bytesPerParameter: number;
  /** Validation-loss curve of the first seed: [step, loss]. */
  readonly curve: readonly (readonly [number, number])[];
  /** The mode the arm ran in. */
  readonly mode: Mode;
  /** A derived arm's base arm (absent for a trained arm). */
  readonly from?: string;
  /** Other numbers per seed, by name, in seed order (derived arms' {@linkcode DerivedResult.metrics}). */
  readonly metrics?: Readonly<Record<string, readonly number[]>>;
}

/** The outcome of a claim's check. */
export interface ClaimCheck {
  /** Whether the claim held on these results. */
  readonly held: boolean;
  /** The numbers it was decided on, for the report. */
  readonly detail: string;
}

/** A claim as code. */
export interface Claim {
  /** Short id, e.g. `F5.quartet-near-f32`. */
  readonly id: string;
  /** The claim in words, with its thresholds. */
  readonly text: string;
  /** Per mode: `holds`, or `not reproduced` at that scale (then `note` says why). */
  readonly expected: Readonly<Record<Mode, Outcome>>;
  /** Where the thresholds come from: the measured spread across seeds. */
  readonly basis: string;
  /** Why a claim is recorded as not reproduced, after an honest look. */
  readonly note?: string;
  /** Decides the claim from the arms' results (by arm name). */
  check(results: ReadonlyMap<string, ArmResult>): ClaimCheck;
}

/** A finding: its arms, claims and source. */
export interface Finding {
  /** `F4`, `F5`, ... */
  readonly id: string;
  /** One line. */
  readonly title: string;
  /** The paper (and code) it comes from. */
  readonly source: string;
  /** The arms. */
  readonly arms: readonly Arm[];
  /** The claims (none for a finding that only reports numbers). */
  readonly claims: readonly Claim[];
  /** More of the report built from the results: Markdown after the claims and SVGs by file stem. */
  appendix?(results: ReadonlyMap<string, ArmResult>): Appendix;
}

/** A finding's own part of the report (a feature table, a fitted model, a scatter plot). */
export interface Appendix {
  /** Markdown placed after the finding's claims. */
  readonly markdown: string;
  /** SVG documents by file stem (written as `<stem>.svg` next to the report). */
  readonly charts?: ReadonlyMap<string, string>;
}

/** A metric of an arm per seed; throws naming the arm and metric when missing. */
export function metricOf(results: ReadonlyMap<string, ArmResult>, arm: string, key: string): readonly number[] {
  const values = results.get(arm)?.metrics?.[key];
  if (!values) throw new Error(`no metric '${key}' for arm '${arm}'`);
  return values;
}

/** Mean of the values. */
export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** The mean final validation loss of an arm; throws naming the arm when it is missing. */
export function lossOf(results: ReadonlyMap<string, ArmResult>, arm: string): number {
  const r = results.get(arm);
  if (!r) throw new Error(`no results for arm '${arm}'`);
  return mean(r.valLoss);
}

/**
 * Seed noise of a paired gap: the standard deviation across seeds of `a − b` for two arms that should train
 * alike, pooled over ten such pairs (20 degrees of freedom; 3 seeds each): master-fp8, quartet, flex16+5, mxfp8,
 * nvfp4, qat-int8, qat-int4, fp8-current, fp8-delayed against f32, and eco-fp8 against master-fp8. Measured
 * 2026-12-01 on the base recipes of `findings.ts`: full 0.0371, quick 0.0583 (with the flex16+5 and nvfp4 arms of the current presets).
 */
export const PAIRED_GAP_SD: Readonly<Record<Mode, number>> = { quick: 0.0583, full: 0.0371 };

/** The suite's bar for "differs": two standard errors of a mean paired gap over `seeds` seeds. */
export function noiseBar(mode: Mode, seeds: number, sd: Readonly<Record<Mode, number>> = PAIRED_GAP_SD): number {
  return 2 * sd[mode] / Math.sqrt(seeds);
}

/** A paired gap over the seeds both arms ran, with the noise bar for that many seeds. */
export interface Gap {
  /** Mean of `a − b` over the seeds. */
  readonly mean: number;
  /** Smallest per-seed gap. */
  readonly min: number;
  /** Largest per-seed gap. */
  readonly max: number;
  /** Seeds both arms ran. */
  readonly seeds: number;
  /** {@linkcode noiseBar} for the arms' mode and `seeds`. */
  readonly bar: number;
}

/**
 * The gap `a − b` in final val loss, paired by seed (the same seed gives both arms the same init and data
 * order, so the seed's own luck cancels): mean, smallest and largest over the seeds both arms ran.
 */
export function gap(
  results: ReadonlyMap<string, ArmResult>,
  a: string,
  b: string,
  sd: Readonly<Record<Mode, number>> = PAIRED_GAP_SD,
): Gap {
  const ra = results.get(a), rb = results.get(b);
  if (!ra || !rb) throw new Error(`no results for arm '${!ra ? a : b}'`);
  const seeds = Math.min(ra.valLoss.length, rb.valLoss.length);
  const d = Array.from({ length: seeds }, (_, i) => ra.valLoss[i] - rb.valLoss[i]);
  return { mean: mean(d), min: Math.min(...d), max: Math.max(...d), seeds, bar: noiseBar(ra.mode, seeds, sd) };
}

const signed = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(4)}`;

/** "a 2.4310 vs b 2.3880: gap +0.0430 (per seed +0.0400 to +0.0460; bar 0.0428 over 3 seeds)" for claim details. */
export function versus(
  results: ReadonlyMap<string, ArmResult>,
  a: string,
  b: string,
  sd: Readonly<Record<Mode, number>> = PAIRED_GAP_SD,
): string {
  const g = gap(results, a, b, sd);
  const range = g.min === g.max ? "" : `per seed ${signed(g.min)} to ${signed(g.max)}; `;
  return `${a} ${lossOf(results, a).toFixed(4)} vs ${b} ${lossOf(results, b).toFixed(4)}: gap ${
    signed(g.mean)
  } (${range}bar ${g.bar.toFixed(4)} over ${g.seeds} seed${g.seeds === 1 ? "" : "s"})`;
}
