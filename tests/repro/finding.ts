/**
 * What a finding of the reproducibility suite is: arms (recipe overrides on a
 * shared base recipe), claims written as code over the arms' results, and the
 * paper it comes from. Each claim records the outcome we expect at our
 * scale: `holds`, or `not reproduced` with the numbers and reasons; the suite
 * fails when an outcome differs from its record, in either direction.
 *
 * @module
 */

/** The suite's modes: `quick` (CI: short runs, one seed) and `full` (longer runs, three seeds). */
export type Mode = "quick" | "full";

/** A claim's outcome on a run. */
export type Outcome = "holds" | "not reproduced";

/** One arm: a name and the recipe keys it sets (as `--set key=value` would). */
export interface Arm {
  /** Short name, unique within the finding (a folder name). */
  readonly name: string;
  /** Recipe overrides, e.g. `{ precision: "quartet" }`. */
  readonly set: Readonly<Record<string, string>>;
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
 * The gap `a − b` in final val loss, paired by seed (the same seed gives both arms the same init and data
 * order, so the seed's own luck cancels): mean, smallest and largest over the seeds both arms ran.
 */
export function gap(results: ReadonlyMap<string, ArmResult>, a: string, b: string): {
  mean: number;
  min: number;
  max: number;
} {
  const ra = results.get(a), rb = results.get(b);
  if (!ra || !rb) throw new Error(`no results for arm '${!ra ? a : b}'`);
  const n = Math.min(ra.valLoss.length, rb.valLoss.length);
  const d = Array.from({ length: n }, (_, i) => ra.valLoss[i] - rb.valLoss[i]);
  return { mean: mean(d), min: Math.min(...d), max: Math.max(...d) };
}

const signed = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(4)}`;

/** "a 2.4310 vs b 2.3880: gap +0.0430 (seeds +0.0400 to +0.0460)" for claim details. */
export function versus(results: ReadonlyMap<string, ArmResult>, a: string, b: string): string {
  const g = gap(results, a, b);
  const range = g.min === g.max ? "" : ` (per seed ${signed(g.min)} to ${signed(g.max)})`;
  return `${a} ${lossOf(results, a).toFixed(4)} vs ${b} ${lossOf(results, b).toFixed(4)}: gap ${
    signed(g.mean)
  }${range}`;
}
