import assert from "node:assert/strict";
import { join } from "node:path";
import { GPT, type Linear, noGrad, tensor, useBackend } from "@lowp/core";
import type { LMRecipe } from "@lowp/recipes";
import {
  type ArmResult,
  type BaseRun,
  type DerivedArm,
  type Finding,
  gap,
  isDerived,
  noiseBar,
  PAIRED_GAP_SD,
} from "./finding.ts";
import { FINDINGS } from "./findings.ts";
import { appendixOf, findingCharts, jsonLines, outcomes, readResults, reportMarkdown } from "./report.ts";
import { jobsOf, recipeOf, runDerived, type RunSummary, shardOf } from "./runner.ts";

Deno.test("repro jobs: an arm shared by findings runs once per seed; shards split the jobs exactly", () => {
  const jobs = jobsOf(FINDINGS, 3);
  const names = jobs.map((j) => `${j.arm.name}-s${j.seed}`);
  assert.equal(new Set(names).size, names.length, "no job twice");
  assert.equal(names.filter((n) => n.startsWith("f32-")).length, 3, "f32 is shared by F4, F5, F7 and the table");
  const shards = [0, 1, 2].map((i) => shardOf(jobs, i, 3));
  assert.deepEqual(shards.flat().map((j) => `${j.arm.name}-s${j.seed}`).sort(), [...names].sort());
  assert.throws(() => shardOf(jobs, 3, 3), /--shard 3\/3: expected i\/n with 0 <= i < n/);
  const clash: Finding = { ...FINDINGS[0], arms: [{ name: "f32", set: { precision: "quartet" } }] };
  assert.throws(() => jobsOf([FINDINGS[0], clash], 1), /arm 'f32' is defined twice with different settings/);
});

/** Writes a fake run folder as the runner does. */
async function fakeRun(dir: string, arm: string, seed: number, loss: number): Promise<void> {
  const run = join(dir, `${arm}-s${seed}`);
  await Deno.mkdir(run, { recursive: true });
  const summary: RunSummary = {
    arm,
    seed,
    mode: "quick",
    corpus: "test",
    final_val_loss: loss,
    tokens_per_s: 1000,
    bytes_per_parameter: 12,
    seconds: 1,
  };
  await Deno.writeTextFile(join(run, "summary.json"), JSON.stringify(summary));
  await Deno.writeTextFile(
    join(run, "metrics.jsonl"),
    `{"step":10,"val_loss":${loss + 0.5}}\n{"step":20,"val_loss":${loss}}\n`,
  );
}

const F5 = FINDINGS.filter((f) => f.id === "F5");

Deno.test("repro report: merged shards give the same report as one folder; claims decide on the means", async () => {
  const one = await Deno.makeTempDir(), a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  try {
    const runs: [string, number, number][] = [
      ["f32", 0, 2.40],
      ["f32", 1, 2.42],
      ["quartet", 0, 2.45],
      ["quartet", 1, 2.47],
      ["fp4-rtn", 0, 2.60],
      ["fp4-rtn", 1, 2.62],
    ];
    for (const [i, [arm, seed, loss]] of runs.entries()) {
      await fakeRun(one, arm, seed, loss);
      await fakeRun(i % 2 ? a : b, arm, seed, loss);
    }
    const whole = await readResults([one]), merged = await readResults([a, b]);
    assert.deepEqual(merged, whole);
    const claims = outcomes(F5, whole);
    assert.deepEqual(claims.map((c) => c.outcome), ["holds", "holds"]);
    assert.equal(
      reportMarkdown(F5, merged, outcomes(F5, merged), "h"),
      reportMarkdown(F5, whole, claims, "h"),
    );
    const report = reportMarkdown(F5, whole, claims, "h");
    assert.match(report, /\| quartet \| 2\.4600 ± 0\.0100 \(2 seeds\) \| 1000 \| 12\.00 \|/);
    assert.match(findingCharts(F5, whole).get("F5")!, /^<svg/);
    const lines = jsonLines(F5, whole, claims).map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.type), ["arm", "arm", "arm", "claim", "claim"]);
  } finally {
    for (const d of [one, a, b]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("repro claims: a failing threshold is 'not reproduced'; missing arms are reported as such", () => {
  const result = (arm: string, loss: number): [string, ArmResult] => [
    arm,
    { arm, valLoss: [loss], tokensPerS: [1], bytesPerParameter: 4, curve: [], mode: "quick" },
  ];
  const worse = new Map([result("f32", 2.4), result("quartet", 2.9), result("fp4-rtn", 3.0)]);
  const claims = outcomes(F5, worse);
  assert.equal(claims[0].outcome, "not reproduced");
  assert.match(claims[0].detail, /quartet 2\.9000 vs f32 2\.4000: gap \+0\.5000 \(bar 0\.1166 over 1 seed\)$/);
  assert.deepEqual(outcomes(F5, new Map([result("f32", 2.4)])).map((c) => c.outcome), ["missing arms", "missing arms"]);
});

Deno.test("repro noise bar: two standard errors of the paired gap, shrinking with the seeds; pairs by seed", () => {
  assert.equal(noiseBar("full", 3), 2 * PAIRED_GAP_SD.full / Math.sqrt(3));
  assert.ok(Math.abs(noiseBar("full", 3) - 0.0428) < 5e-5 && Math.abs(noiseBar("quick", 1) - 0.1166) < 5e-5);
  const arm = (name: string, valLoss: number[]): [string, ArmResult] => [
    name,
    { arm: name, valLoss, tokensPerS: [1], bytesPerParameter: 4, curve: [], mode: "full" },
  ];
  // Seed luck moves both arms alike: paired, b sits 0.01 above a on every seed although the seeds spread by 0.3.
  const r = new Map([arm("a", [2.1, 2.4, 2.2]), arm("b", [2.11, 2.41, 2.21, 2.5])]);
  const g = gap(r, "b", "a");
  assert.equal(g.seeds, 3);
  assert.ok(Math.abs(g.mean - 0.01) < 1e-12 && Math.abs(g.max - g.min) < 1e-12);
  assert.equal(g.bar, noiseBar("full", 3));
});

Deno.test("repro derived arms: run in their base's job (once per seed), survive sharding; a missing base is an error", () => {
  const jobs = jobsOf(FINDINGS, 2);
  const derived = FINDINGS.flatMap((f) => f.arms.filter(isDerived));
  for (const d of derived) {
    const carriers = jobs.filter((j) => j.derived.includes(d));
    assert.deepEqual(carriers.map((j) => [j.arm.name, j.seed]), [[d.from, 0], [d.from, 1]], d.name);
  }
  assert.ok(jobs.every((j) => !isDerived(j.arm)), "jobs train trained arms only");
  const shards = [0, 1, 2].map((i) => shardOf(jobs, i, 3));
  assert.equal(shards.flat().reduce((n, j) => n + j.derived.length, 0), 2 * new Set(derived).size);
  const f6 = FINDINGS.find((f) => f.id === "F6")!;
  const orphan: Finding = { ...f6, arms: f6.arms.filter((a) => a.name !== "f32") };
  assert.throws(
    () => jobsOf([orphan], 1),
    /derived arm 'outliers-f32' starts from 'f32', which no selected finding trains/,
  );
  const twin: DerivedArm = { name: "w4-nvfp4", from: "f32", derive: () => Promise.resolve({ valLoss: 0 }) };
  assert.throws(() => jobsOf([f6, { ...f6, id: "X", arms: [twin] }], 1), /arm 'w4-nvfp4' is defined twice/);
});

Deno.test("repro trained arms: per-mode settings (F2's run lengths follow the mode)", () => {
  const job = jobsOf(FINDINGS, 1).find((j) => j.arm.name === "f2-d64-short")!;
  const quick = recipeOf(job, { mode: "quick", seeds: 1 }), full = recipeOf(job, { mode: "full", seeds: 1 });
  assert.deepEqual([quick.train.steps, full.train.steps, quick.model.d_model], [50, 150, 64]);
  assert.equal(recipeOf(jobsOf(FINDINGS, 1)[0], { mode: "full", seeds: 1 }).train.steps, 450);
});

/** A BaseRun around a tiny untrained model (the derived-arm machinery does not care how it was trained). */
async function tinyBase(): Promise<BaseRun> {
  await useBackend("cpu");
  const model = new GPT({ vocabSize: 256, contextLength: 4, dModel: 8, nLayers: 1, nHeads: 2 }, { seed: 0 });
  const bytes = new Uint8Array(64).map((_, i) => i % 7);
  return {
    model,
    recipe: {} as LMRecipe,
    corpus: { source: "test", train: bytes, val: bytes },
    seed: 1,
    mode: "quick",
    valLoss: 5.5,
  };
}

Deno.test("repro derived arms: a derived arm that changes its base fails; results carry 'from' and metrics", async () => {
  const out = await Deno.makeTempDir();
  const base = await tinyBase();
  try {
    const weight = base.model.namedParameters().find(([n]) => n.endsWith("c_fc.weight"))![1];
    const vandal: DerivedArm = {
      name: "vandal",
      from: "f32",
      derive: () => {
        const zero = noGrad(() => tensor(new Float32Array(weight.size), { shape: [...weight.shape] })).keep();
        weight.assign(zero);
        zero.dispose();
        return Promise.resolve({ valLoss: 1 });
      },
    };
    await assert.rejects(
      runDerived(vandal, base, out, base.corpus),
      /derived arm 'vandal' changed its base model 'f32'/,
    );
    const relabel: DerivedArm = {
      name: "swap-op",
      from: "f32",
      derive: () => {
        const layer = base.model.namedModules().find(([n]) => n.endsWith("c_fc"))![1] as Linear;
        layer.op = () => {
          throw new Error("never run");
        };
        return Promise.resolve({ valLoss: 1 });
      },
    };
    await assert.rejects(runDerived(relabel, base, out, base.corpus), /changed its base model/);

    await fakeRun(out, "f32", 1, 2.5);
    const good: DerivedArm = {
      name: "probe",
      from: "f32",
      derive: () => Promise.resolve({ valLoss: 2.75, metrics: { trace: 12.5 } }),
    };
    const summary = await runDerived(good, await tinyBase(), out, base.corpus);
    assert.deepEqual([summary.arm, summary.from, summary.seed, summary.metrics], ["probe", "f32", 1, { trace: 12.5 }]);
    const results = await readResults([out]);
    assert.deepEqual(results.get("probe")!.metrics, { trace: [12.5] });
    assert.equal(results.get("probe")!.from, "f32");
    assert.deepEqual(results.get("probe")!.curve, []);
    const finding: Finding = {
      id: "T",
      title: "t",
      source: "s",
      arms: [{ name: "f32", set: {} }, good],
      claims: [],
      appendix: (r) => ({ markdown: `appendix trace ${r.get("probe")!.metrics!.trace[0]}` }),
    };
    const report = reportMarkdown([finding], results, [], "h");
    assert.match(report, /\| probe \(from f32\) \| 2\.7500 \(1 seed\) \| — \| — \|/);
    assert.match(report, /appendix trace 12\.5/);
    assert.equal(appendixOf(finding, new Map([["f32", results.get("f32")!]])), null, "no appendix on partial results");
    const chart = findingCharts([finding], results).get("T")!;
    assert.ok(!chart.includes(">probe<"), "a derived arm has no curve");
    const json = jsonLines([finding], results, []).map((l) => JSON.parse(l));
    assert.deepEqual(json[1], {
      type: "arm",
      arm: "probe",
      val_loss: [2.75],
      val_loss_mean: 2.75,
      from: "f32",
      metrics: { trace: [12.5] },
    });
  } finally {
    base.model.dispose();
    await Deno.remove(out, { recursive: true });
  }
});
