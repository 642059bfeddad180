/**
 * The suite's report, built only from run folders (so `--merge` of shards
 * gives the same report as one unsharded run): per finding a table (arm, final
 * val loss with its spread over seeds, tokens/s, bytes per parameter), its
 * claims with the outcome and the recorded expectation, a finding's own
 * appendix (tables, fitted models, charts), and one SVG per finding with the
 * trained arms' validation-loss curves overlaid (derived arms have none).
 *
 * @module
 */
import { join } from "node:path";
import { lineChart, type MetricsRecord, type Series } from "@lowp/recipes";
import { type Appendix, type ArmResult, type Finding, isDerived, mean, type Outcome } from "./finding.ts";
import type { RunSummary } from "./runner.ts";

/** One claim's outcome. */
export interface ClaimOutcome {
  /** The finding. */
  readonly finding: string;
  /** The claim's id. */
  readonly id: string;
  /** The claim in words. */
  readonly text: string;
  /** `holds`, `not reproduced`, or `missing arms` when its arms did not all run. */
  readonly outcome: "holds" | "not reproduced" | "missing arms";
  /** What the claim's record expects in this mode. */
  readonly expected: Outcome;
  /** The numbers it was decided on. */
  readonly detail: string;
  /** Where its thresholds come from. */
  readonly basis: string;
  /** The record's note (why not reproduced). */
  readonly note?: string;
}

/** Reads every run folder under `dirs` into per-arm results (seeds in order). */
export async function readResults(dirs: readonly string[]): Promise<Map<string, ArmResult>> {
  const runs = new Map<string, { summary: RunSummary; curve: [number, number][] }[]>();
  for (const dir of dirs) {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isDirectory) continue;
      const summaryPath = join(dir, entry.name, "summary.json");
      let summary: RunSummary;
      try {
        summary = JSON.parse(await Deno.readTextFile(summaryPath));
      } catch {
        continue; // an arm that did not finish has no summary
      }
      // A derived arm has no training curve.
      const lines = summary.from ? "" : await Deno.readTextFile(join(dir, entry.name, "metrics.jsonl"));
      const metrics = lines.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as MetricsRecord);
      const curve = metrics.flatMap((m) => m.val_loss === undefined ? [] : [[m.step, m.val_loss] as [number, number]]);
      runs.set(summary.arm, [...(runs.get(summary.arm) ?? []), { summary, curve }]);
    }
  }
  const results = new Map<string, ArmResult>();
  for (const [arm, list] of runs) {
    list.sort((a, b) => a.summary.seed - b.summary.seed);
    const first = list[0].summary;
    const keys = [...new Set(list.flatMap((r) => Object.keys(r.summary.metrics ?? {})))].sort();
    results.set(arm, {
      arm,
      valLoss: list.map((r) => r.summary.final_val_loss),
      tokensPerS: list.map((r) => r.summary.tokens_per_s),
      bytesPerParameter: first.bytes_per_parameter,
      curve: list[0].curve,
      mode: first.mode === "full" ? "full" : "quick",
      ...(first.from === undefined ? {} : {
        from: first.from,
        metrics: Object.fromEntries(keys.map((k) => [k, list.map((r) => r.summary.metrics?.[k] ?? NaN)])),
      }),
    });
  }
  return results;
}

/** Decides every claim of `findings` on `results`. */
export function outcomes(findings: readonly Finding[], results: ReadonlyMap<string, ArmResult>): ClaimOutcome[] {
  return findings.flatMap((f) =>
    f.claims.map((c): ClaimOutcome => {
      const missing = f.arms.filter((a) => !results.has(a.name)).map((a) => a.name);
      const mode = results.get(f.arms[0].name)?.mode ?? "quick";
      const expected = c.expected[mode];
      const base = { finding: f.id, id: c.id, text: c.text, expected, basis: c.basis, note: c.note };
      if (missing.length) return { ...base, outcome: "missing arms", detail: `not run: ${missing.join(", ")}` };
      const { held, detail } = c.check(results);
      return { ...base, outcome: held ? "holds" : "not reproduced", detail };
    })
  );
}

const fmt = (v: number, digits = 4) => Number.isFinite(v) ? v.toFixed(digits) : String(v);

/** "2.4310 ± 0.0120 (3 seeds)": mean and half the min–max range. */
export function spreadText(values: readonly number[]): string {
  if (values.length === 1) return `${fmt(values[0])} (1 seed)`;
  const half = (Math.max(...values) - Math.min(...values)) / 2;
  return `${fmt(mean(values))} ± ${fmt(half)} (${values.length} seeds)`;
}

/** The Markdown report. */
export function reportMarkdown(
  findings: readonly Finding[],
  results: ReadonlyMap<string, ArmResult>,
  claims: readonly ClaimOutcome[],
  header: string,
): string {
  const lines = ["# Reproducibility report", "", header, ""];
  for (const f of findings) {
    lines.push(`## ${f.id}: ${f.title}`, "", `Source: ${f.source}`, "", `![${f.id} curves](${f.id}.svg)`, "");
    lines.push("| arm | final val loss | tokens/s | bytes/param |", "| --- | --- | --- | --- |");
    for (const a of f.arms) {
      const r = results.get(a.name);
      const name = isDerived(a) ? `${a.name} (from ${a.from})` : a.name;
      lines.push(
        !r
          ? `| ${name} | not run | | |`
          : r.from !== undefined
          ? `| ${name} | ${spreadText(r.valLoss)} | — | — |`
          : `| ${name} | ${spreadText(r.valLoss)} | ${Math.round(mean(r.tokensPerS))} | ${
            fmt(r.bytesPerParameter, 2)
          } |`,
      );
    }
    for (const c of claims.filter((c) => c.finding === f.id)) {
      const agrees = c.outcome === c.expected ? "as recorded" : `**differs from the record (${c.expected})**`;
      lines.push("", `- **${c.id}**: ${c.text}. Outcome: **${c.outcome}**, ${agrees}. ${c.detail}.`);
      lines.push(`  Thresholds: ${c.basis}.${c.note ? ` Note: ${c.note}` : ""}`);
    }
    const appendix = appendixOf(f, results);
    if (appendix) lines.push("", appendix.markdown);
    lines.push("");
  }
  return lines.join("\n");
}

/**
 * A finding's appendix on these results, or null when it has none or when an arm it reads did not run (a shard's
 * partial results).
 */
export function appendixOf(f: Finding, results: ReadonlyMap<string, ArmResult>): Appendix | null {
  if (!f.appendix || f.arms.some((a) => !results.has(a.name))) return null;
  return f.appendix(results);
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"];

/** One SVG per finding: the first seed's validation-loss curve of every arm. */
export function findingCharts(
  findings: readonly Finding[],
  results: ReadonlyMap<string, ArmResult>,
): Map<string, string> {
  const charts = new Map<string, string>();
  for (const f of findings) {
    const series: Series[] = f.arms.flatMap((a, i) => {
      const r = results.get(a.name);
      return r?.curve.length ? [{ label: a.name, color: COLORS[i % COLORS.length], points: r.curve }] : [];
    });
    if (series.length) {
      charts.set(f.id, lineChart(series, { title: `${f.id}: validation loss`, xLabel: "step", yLabel: "nats/byte" }));
    }
  }
  return charts;
}

/** The `--json` lines: one per arm, one per claim. */
export function jsonLines(
  findings: readonly Finding[],
  results: ReadonlyMap<string, ArmResult>,
  claims: readonly ClaimOutcome[],
): string[] {
  const arms = [...new Set(findings.flatMap((f) => f.arms.map((a) => a.name)))].flatMap((name) => {
    const r = results.get(name);
    return r
      ? [JSON.stringify({
        type: "arm",
        arm: name,
        val_loss: r.valLoss,
        val_loss_mean: mean(r.valLoss),
        ...(r.from === undefined
          ? { tokens_per_s: mean(r.tokensPerS), bytes_per_parameter: r.bytesPerParameter }
          : { from: r.from, metrics: r.metrics }),
      })]
      : [];
  });
  return [...arms, ...claims.map((c) => JSON.stringify({ type: "claim", ...c }))];
}
