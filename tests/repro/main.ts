/**
 * `deno task repro`: re-checks the published findings on our own runs.
 *
 * ```
 * deno task repro [--quick] [--only ID] [--seeds N] [--backend B] [--json] [--corpus FILE] [--shard i/n] [--out DIR]
 * deno task repro --merge DIR [DIR ...] [--only ID] [--json]
 * ```
 *
 * Writes `<out>/REPORT.md` and one SVG per finding (default out:
 * `runs/repro-<timestamp>`), with the run folders of every arm and seed.
 * Exits 1 when any claim's outcome differs from its record (or an arm did not
 * run), so CI catches a regression either way.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { useBackend } from "@lowp/core";
import type { Finding } from "./finding.ts";
import { FINDINGS } from "./findings.ts";
import { appendixOf, findingCharts, jsonLines, outcomes, readResults, reportMarkdown } from "./report.ts";
import { jobsOf, runJob, shardOf, type SuiteOptions } from "./runner.ts";

const USAGE = `usage: deno task repro [--quick] [--only ID] [--seeds N] [--backend cpu|webgpu|auto] [--json]
                       [--corpus FILE] [--shard i/n] [--out DIR]
       deno task repro --merge DIR [DIR ...] [--only ID] [--json]`;

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
}

function selected(only: string | undefined): readonly Finding[] {
  if (!only) return FINDINGS;
  const ids = only.split(",");
  const unknown = ids.filter((id) => !FINDINGS.some((f) => f.id === id));
  if (unknown.length) {
    throw new Error(`--only ${unknown.join(",")}: unknown finding; known: ${FINDINGS.map((f) => f.id).join(", ")}`);
  }
  return FINDINGS.filter((f) => ids.includes(f.id));
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      seeds: { type: "string" },
      backend: { type: "string" },
      json: { type: "boolean", default: false },
      corpus: { type: "string" },
      shard: { type: "string" },
      out: { type: "string" },
      merge: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const findings = selected(values.only);
  const mode = values.quick ? "quick" : "full";
  let dirs: string[];
  let out: string;
  let header: string;
  if (values.merge) {
    if (!positionals.length) throw new Error("--merge needs the shards' output folders");
    dirs = positionals;
    out = values.out ?? dirs[0];
    header = `Merged from ${dirs.join(", ")}`;
  } else {
    if (positionals.length) throw new Error(`unexpected argument '${positionals[0]}'\n${USAGE}`);
    const seeds = values.seeds === undefined ? (values.quick ? 1 : 3) : Number(values.seeds);
    if (!(Number.isInteger(seeds) && seeds >= 1)) throw new Error(`--seeds ${values.seeds}: expected an integer >= 1`);
    const opts: SuiteOptions = { mode, seeds, corpus: values.corpus, backend: values.backend };
    let jobs = jobsOf(findings, seeds);
    if (values.shard) {
      const m = /^(\d+)\/(\d+)$/.exec(values.shard);
      if (!m) throw new Error(`--shard ${values.shard}: expected i/n, e.g. 0/4`);
      jobs = shardOf(jobs, Number(m[1]), Number(m[2]));
    }
    out = values.out ?? join("runs", `repro-${timestamp()}`);
    dirs = [out];
    await useBackend((values.backend ?? Deno.env.get("BACKEND") ?? "cpu") as "cpu" | "webgpu" | "auto");
    const started = performance.now();
    for (const [i, job] of jobs.entries()) {
      await runJob(job, opts, out, (s) => {
        const elapsed = ((performance.now() - started) / 1000).toFixed(0);
        console.error(
          `[repro ${i + 1}/${jobs.length}] ${s.arm}${s.from ? ` (from ${s.from})` : ""} seed ${job.seed}: val loss ` +
            `${s.final_val_loss.toFixed(4)} (${s.seconds.toFixed(1)} s; ${elapsed} s so far)`,
        );
      });
    }
    header = `Mode ${mode}, ${seeds} seed(s)${values.corpus ? `, corpus ${values.corpus}` : ", Brown corpus"}` +
      `${values.shard ? `, shard ${values.shard}` : ""}; base recipes in tests/repro/findings.ts.`;
  }
  const results = await readResults(dirs);
  if (values.merge) {
    const arms = [...results.values()];
    const seeds = Math.max(0, ...arms.map((r) => r.valLoss.length));
    header += `: mode ${
      arms[0]?.mode ?? "?"
    }, up to ${seeds} seed(s) per arm; base recipes in tests/repro/findings.ts.`;
  }
  const claims = outcomes(findings, results);
  await Deno.mkdir(out, { recursive: true });
  await Deno.writeTextFile(join(out, "REPORT.md"), reportMarkdown(findings, results, claims, header));
  for (const [id, svg] of findingCharts(findings, results)) await Deno.writeTextFile(join(out, `${id}.svg`), svg);
  for (const f of findings) {
    for (const [stem, svg] of appendixOf(f, results)?.charts ?? []) {
      await Deno.writeTextFile(join(out, `${stem}.svg`), svg);
    }
  }
  if (values.json) { for (const line of jsonLines(findings, results, claims)) console.log(line); }
  const sharded = values.shard !== undefined;
  const wrong = claims.filter((c) => !(sharded && c.outcome === "missing arms") && c.outcome !== c.expected);
  for (const c of claims) {
    const mark = c.outcome === c.expected ? "ok  " : sharded && c.outcome === "missing arms" ? "skip" : "FAIL";
    console.error(`${mark} ${c.id}: ${c.outcome} (recorded: ${c.expected}) ${c.detail}`);
  }
  console.error(`report: ${join(out, "REPORT.md")}`);
  if (wrong.length && values.corpus) {
    console.error("(the records and the noise bar are those of the default corpus, Brown, in this mode)");
  }
  return wrong.length ? 1 : 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
