import assert from "node:assert/strict";
import { type GPT, useBackend } from "@lowp/core";
import { type Corpus, evaluate, LM_SCHEMA, type LMRecipe, parseRecipe, trainLM } from "@lowp/recipes";
import { fitRidge, leaveOneGroupOut, type Observation, rSquared } from "./fit.ts";
import { kurtosis, landscapeFeatures, rademacher } from "./landscape.ts";
import {
  calibrationBatch,
  copyModel,
  fineTune,
  inputStats,
  linearInputStats,
  linearLayers,
  plantOutliers,
  rtnLinears,
} from "./ptq_tools.ts";
import { calibrationTokens } from "@lowp/recipes";
import { bitsPerWeight, F2_FORMATS } from "./findings_ptq.ts";
import { FINDINGS } from "./findings.ts";
import { type ArmResult, isDerived } from "./finding.ts";
import { parseWeightSpec } from "@lowp/formats";

/** A tiny trained model on a synthetic corpus (a few steps, so its weights are not at init). */
async function tinyRun(): Promise<{ model: GPT; recipe: LMRecipe; corpus: Corpus }> {
  await useBackend("cpu");
  const recipe = parseRecipe(
    `name: tiny
model: { d_model: 32, n_layers: 1, n_heads: 2, context: 16 }
train: { steps: 20, batch_size: 4, lr: 0.01, warmup: 2, log_every: 10, eval_every: 100, eval_batches: 2 }`,
    LM_SCHEMA,
    "tiny",
    { seed: "3" },
  ) as LMRecipe;
  const text = new TextEncoder().encode("the quick brown fox jumps over the lazy dog. ".repeat(200));
  const corpus: Corpus = { source: "test", train: text.slice(0, 8000), val: text.slice(8000) };
  const { model } = await trainLM(recipe, corpus);
  return { model, recipe, corpus };
}

async function weightsOf(model: GPT): Promise<Float32Array[]> {
  return await Promise.all(model.namedParameters().map(async ([, p]) => Float32Array.from(await p.data())));
}

Deno.test("repro ptq tools: copies are independent; planted outliers keep the function and raise max-to-median", async () => {
  const { model, recipe, corpus } = await tinyRun();
  try {
    const before = await weightsOf(model), loss = await evaluate(model, recipe, corpus.val);
    const copy = copyModel(model, recipe);
    rtnLinears(copy, parseWeightSpec("int2", "channel"));
    assert.deepEqual(await weightsOf(model), before, "RTN of the copy leaves the original alone");
    assert.notEqual(await evaluate(copy, recipe, corpus.val), loss, "int2 RTN changes the copy's loss");
    copy.dispose();

    const planted = copyModel(model, recipe);
    const stats0 = await linearInputStats(planted, recipe, corpus, 4);
    const channels = await plantOutliers(planted, { channels: 2, factor: 20, seed: 1 });
    assert.deepEqual([...channels.keys()], ["transformer.h.0.ln_1", "transformer.h.0.ln_2"]);
    for (const c of channels.values()) assert.equal(new Set(c).size, 2);
    assert.ok(Math.abs((await evaluate(planted, recipe, corpus.val)) - loss) < 1e-4, "same function");
    const stats1 = await linearInputStats(planted, recipe, corpus, 4);
    const name = "transformer.h.0.attn.c_attn";
    assert.ok(stats1.get(name)!.maxToMedian > 5 * stats0.get(name)!.maxToMedian, "outlier channels appear");
    const proj = (s: typeof stats0) => s.get("transformer.h.0.attn.c_proj")!.kurtosis;
    assert.ok(Math.abs(proj(stats1) / proj(stats0) - 1) < 1e-5, "inputs after the projection are unchanged");
    assert.deepEqual(await weightsOf(model), before);
    assert.equal(linearLayers(planted).length, 4);
    planted.dispose();
  } finally {
    model.dispose();
  }
});

Deno.test("repro fine-tune: deterministic, trains the copy only, on the sequences PTQ calibrates on", async () => {
  const { model, recipe, corpus } = await tinyRun();
  try {
    const before = await weightsOf(model);
    const tuned = await Promise.all([0, 1].map(async () => {
      const copy = copyModel(model, recipe);
      await fineTune(copy, recipe, corpus, { samples: 8, epochs: 3, lr: 0.01 });
      const w = await weightsOf(copy);
      copy.dispose();
      return w;
    }));
    assert.deepEqual(tuned[0], tuned[1], "same seed, same fine-tune");
    assert.notDeepEqual(tuned[0], before);
    assert.deepEqual(await weightsOf(model), before);
    // QAT trains on exactly the sequences PTQ calibrates on.
    const tokens = calibrationTokens(corpus.train, 8, 16, recipe.seed);
    assert.deepEqual(await tokens.data(), calibrationBatch(corpus.train, 8, 16, recipe.seed).inputs);
    tokens.dispose();
  } finally {
    model.dispose();
  }
});

Deno.test("repro landscape: deterministic, restores the weights bit for bit, λ_max bounds the mean curvature", async () => {
  const { model, recipe, corpus } = await tinyRun();
  try {
    const before = await weightsOf(model);
    const o = { samples: 4, probes: 4, iterations: 8, step: 1e-3 };
    const a = await landscapeFeatures(model, recipe, corpus, o);
    assert.deepEqual(await weightsOf(model), before);
    const b = await landscapeFeatures(model, recipe, corpus, o);
    assert.deepEqual(a, b);
    assert.equal(a.parameters, 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32);
    assert.ok(Number.isFinite(a.trace) && a.trace > 0, `trace ${a.trace}`);
    // The trace is the sum of the eigenvalues, so the largest is at least their mean.
    assert.ok(a.topEigenvalue >= a.trace / a.parameters, `λ_max ${a.topEigenvalue} vs mean ${a.trace / a.parameters}`);
    assert.ok(a.weightKurtosis > 1 && a.weightKurtosis < 10);
  } finally {
    model.dispose();
  }
});

Deno.test("repro landscape helpers: Rademacher probes are ±1, seeded and balanced; kurtosis of known data", () => {
  const v = rademacher(10000, 1, 0);
  assert.ok(v.every((x) => x === 1 || x === -1));
  assert.deepEqual(rademacher(100, 1, 0), rademacher(100, 1, 0));
  assert.notDeepEqual(rademacher(100, 1, 0), rademacher(100, 1, 1));
  assert.ok(Math.abs(v.reduce((a, b) => a + b, 0)) < 300);
  assert.equal(kurtosis([1, -1, 1, -1]), 1); // a two-point distribution has the least kurtosis
  const s = inputStats(Float32Array.from([1, 2, -1, 2, 1, -40, -1, 2]), 2);
  assert.equal(s.maxToMedian, 40 / ((40 + 1) / 2)); // channel maxima 1 and 40
});

Deno.test("repro fit: ridge recovers a linear law; leave-one-group-out R² is 1 on it and low on noise", () => {
  const rows: Observation[] = [];
  for (let g = 0; g < 5; g++) {
    for (let b = 2; b <= 8; b += 2) rows.push({ group: `c${g}`, x: [b, g * 0.3, 1], y: 2 - 0.5 * b + 1.5 * g * 0.3 });
  }
  const model = fitRidge(rows, 1e-9);
  assert.ok(Math.abs(model.predict([5, 0.6, 1]) - (2 - 2.5 + 0.9)) < 1e-6);
  const held = leaveOneGroupOut(rows, 1e-9);
  assert.ok(held.r2 > 1 - 1e-9, `R² ${held.r2}`);
  // Targets unrelated to the features: held-out predictions do no better than the mean.
  const noise = rows.map((r, i) => ({ ...r, y: Math.sin(i * 12.9898) * 43758.5453 % 1 }));
  assert.ok(leaveOneGroupOut(noise, 1).r2 < 0.3);
  assert.equal(rSquared([1, 2, 3], [2, 2, 2]), 0);
  assert.throws(() => leaveOneGroupOut(rows.filter((r) => r.group === "c0"), 1), /at least 2 groups, got 1/);
});

Deno.test("repro F2 bits: element bits plus the block scale's share", () => {
  assert.equal(bitsPerWeight("int3"), 3);
  assert.equal(bitsPerWeight("mxfp4"), 4.25);
  assert.equal(bitsPerWeight("nvfp4"), 4.5);
});

Deno.test("repro F2: the claim fits a law the features carry (R² ≈ 1) and rejects one they do not; the chart", () => {
  const f2 = FINDINGS.find((f) => f.id === "F2")!;
  const derived = f2.arms.filter(isDerived);
  /** Fake results: Δloss = 10^(−bits/2 + law(trace)), traces differing by checkpoint and seed. */
  const results = (law: (logTrace: number, k: number) => number) => {
    const r = new Map<string, ArmResult>();
    for (const a of f2.arms) {
      const base = { arm: a.name, valLoss: [2.5, 2.6, 2.7], tokensPerS: [1, 1, 1], bytesPerParameter: 12, curve: [] };
      if (!isDerived(a)) {
        r.set(a.name, { ...base, mode: "full" });
        continue;
      }
      const k = derived.indexOf(a);
      const traces = [0, 1, 2].map((s) => 10 ** (1 + 0.3 * k + 0.1 * s));
      const metrics: Record<string, number[]> = {
        trace: traces,
        top_eigenvalue: traces.map((t) => t / 10 + (k % 2)),
        weight_kurtosis: [3 + k * 0.01, 3.2, 3.1],
        d_model: [64, 64, 64],
        steps: [50, 50, 50],
      };
      for (const f of F2_FORMATS) {
        const key = `dloss:${f.format}`;
        metrics[key] = traces.map((t, s) => 10 ** (-bitsPerWeight(f.format) / 2 + law(Math.log10(t), k * 3 + s)));
      }
      r.set(a.name, { ...base, mode: "full", from: a.from, metrics });
    }
    return r;
  };
  const claim = f2.claims[0];
  const lawful = results((lt) => 0.8 * lt);
  const check = claim.check(lawful);
  assert.ok(check.held, check.detail);
  assert.match(check.detail, /held-out R² (0\.9\d\d|1\.000) /);
  // The same targets shuffled across checkpoints: the bits still explain part, the landscape nothing.
  const scrambled = claim.check(results((_, i) => ((i * 7919) % 13) / 4));
  assert.ok(!scrambled.held, scrambled.detail);
  const appendix = f2.appendix!(lawful);
  assert.match(appendix.markdown, /\| f2-d64-short \| 64 \| 50 \| 2\.6000 \|/);
  const svg = appendix.charts!.get("F2-fit")!;
  assert.equal(svg.match(/<circle/g)?.length, derived.length * 3 * F2_FORMATS.length, "one dot per observation");
  assert.equal(svg.match(/<polyline/g)?.length, 1, "the y = x line");
});
