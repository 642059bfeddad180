/** ECO and its baselines against their formulas (f64 references written out here), on both backends. */
import assert from "node:assert/strict";
import { add, type Backend, clone, cpuBackend, mul, streamOf, type Tensor, tensor, tidy } from "@lowp/core";
import { parseFormat, type QuantizeOptions, type Quantizer } from "@lowp/formats";
import { gpuBackendOrSkip } from "../tests/helpers.ts";
import {
  AdamW,
  adamwUpdate,
  checkPeakLearningRate,
  ECO_MIN_LR,
  EcoAdam,
  ecoCorrection,
  type EcoOptions,
  EcoSGD,
  MasterWeights,
  NaiveQuantized,
  type Optimizer,
  optimizerMemory,
  type QuantizedWeightOptimizer,
  SGD,
  sgdEmaUpdate,
} from "./mod.ts";

/** A quantizer that rounds nothing: ECO with it must be the plain update. */
const IDENTITY: Quantizer = {
  name: "identity",
  elementBits: 32,
  blockSize: null,
  quantDequant: (x) => x,
  quantize: (x) => ({
    format: "identity",
    shape: x.shape,
    parts: [{ name: "codes", codes: x, bits: 32, format: "f32" }],
    meta: {},
  }),
  dequantize: (q) => q.parts[0].codes,
};

const bitsOf = async (t: Tensor) => Array.from(new Uint32Array((await t.data()).slice().buffer));
const valuesOf = async (t: Tensor) => Array.from(await t.data());

/** E4M3 round to nearest in f64 (normal and subnormal range, no saturation needed here); refuses ties. */
function e4m3(x: number): number {
  if (x === 0) return 0;
  const ulp = e4m3Ulp(x), r = Math.abs(x) / ulp;
  if (Math.abs(r - Math.floor(r) - 0.5) < 1e-9) throw new Error(`test value ${x} is a rounding tie`);
  return Math.sign(x) * Math.round(r) * ulp;
}
function e4m3Ulp(x: number): number {
  return 2 ** (Math.max(Math.floor(Math.log2(Math.abs(x))), -6) - 3);
}

type Rule = "eco" | "exact" | "naive" | "master";
interface RefOptions {
  rule: Rule;
  update: "adamw" | "sgd";
  beta: number;
  beta2: number;
  eps: number;
  wd: number;
}

/** The rules of ALGORITHMS.md "ECO" (and the paper's Algorithms 2 and 3) in f64, one vector parameter. */
function reference(o: RefOptions, w0: number[], grads: number[][], lrs: number[], q: (x: number) => number) {
  const n = w0.length, w = w0.map(q), master = [...w0], m = w0.map(() => 0), v = m.slice(), err = m.slice();
  grads.forEach((g, s) => {
    const t = s + 1, lr = lrs[s];
    for (let i = 0; i < n; i++) {
      const base = o.rule === "master" ? master[i] : w[i];
      const mt = o.beta * m[i] + (1 - o.beta) * g[i];
      let wt: number, d = 1;
      if (o.update === "adamw") {
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
        d = Math.sqrt(v[i] / (1 - o.beta2 ** t)) + o.eps;
        wt = base * (1 - lr * o.wd) - lr * (mt / (1 - o.beta ** t)) / d;
      } else {
        wt = base * (1 - lr * o.wd) - lr * mt;
      }
      const wq = q(wt), e = wt - wq;
      const k = (1 - lr * o.wd) * (o.update === "adamw" ? 1 - o.beta ** t : 1) / lr;
      if (o.rule === "master") master[i] = wt;
      if (o.rule === "eco") m[i] = mt + k * (1 - 1 / o.beta) * d * e;
      else if (o.rule === "exact") m[i] = mt + k * d * (err[i] - e / o.beta);
      else m[i] = mt;
      err[i] = e;
      w[i] = wq;
    }
  });
  return { w, m, v, master, err };
}

const W0 = [0.37, -1.3, 0.052, 2.7, -0.61, 0.9];
const GRADS = [[0.3, -0.2, 0.05, 0.8, -0.4, 0.1], [0.25, 0.1, -0.02, 0.6, -0.5, 0.3], [-0.1, 0.3, 0.04, 0.7, 0.2, 0.2]];
const LRS = [0.05, 0.03, 0.02];

function make(
  kind: Rule,
  update: "adamw" | "sgd",
  params: [string, Tensor][],
  opts: EcoOptions,
): QuantizedWeightOptimizer {
  if (kind === "eco" || kind === "exact") {
    const o = { ...opts, exact: kind === "exact" };
    return update === "adamw" ? new EcoAdam(params, o) : new EcoSGD(params, o);
  }
  return kind === "master"
    ? new MasterWeights(params, { ...opts, update })
    : new NaiveQuantized(params, { ...opts, update });
}

/** Runs `opt` over the gradients (one per step) on a [1, n] parameter. */
function runSteps(backend: Backend, kind: Rule, update: "adamw" | "sgd", opts: EcoOptions, lrs = LRS) {
  const p = tensor([W0], { backend, requiresGrad: true });
  const opt = make(kind, update, [["w", p]], opts);
  for (const [s, g] of GRADS.entries()) {
    p.grad?.dispose();
    p.grad = tensor([g], { backend }).keep();
    opt.step(lrs[s]);
  }
  return { p, opt };
}

async function backends(): Promise<Backend[]> {
  const gpu = await gpuBackendOrSkip();
  return gpu ? [cpuBackend(), gpu] : [cpuBackend()];
}

Deno.test("identity quantizer: ECO-Adam (and exact, master, naive) equal AdamW bit for bit over several steps", async () => {
  for (const b of await backends()) {
    const run = async (make: (p: [string, Tensor][]) => Optimizer) => {
      const p = tensor([W0, W0.map((x) => -x / 3)], { backend: b, requiresGrad: true });
      const opt = make([["w", p]]);
      for (const [s, g] of GRADS.entries()) {
        p.grad?.dispose();
        p.grad = tensor([g, g.map((x) => x * 2)], { backend: b }).keep();
        const scale = tensor([0.75], { backend: b });
        opt.step(LRS[s], s === 1 ? { gradScale: scale } : {});
        scale.dispose();
      }
      return [await bitsOf(p), ...await Promise.all(opt.state().slice(0, 2).map(([, t]) => bitsOf(t)))];
    };
    const opts = { betas: [0.9, 0.99] as const, weightDecay: 0.1 };
    const want = await run((p) => new AdamW(p, opts));
    for (const kind of ["eco", "exact", "naive"] as const) {
      assert.deepEqual(
        await run((p) => make(kind, "adamw", p, { ...opts, format: IDENTITY })),
        want,
        `${b.name} ${kind}`,
      );
    }
    const master = await run((p) => new MasterWeights(p, { ...opts, format: IDENTITY }));
    assert.deepEqual(master[0], want[0], `${b.name} master`);
  }
});

Deno.test("one hand-computed step: ECO-SGD, its exact variant, naive and master weights, e4m3 round to nearest", async () => {
  // Ŵ = 1, G = 1, β = 0.5, η = 0.1: M̃ = 0.5, W̃ = 0.95, q(W̃) = 0.9375 (e4m3 step 1/16 below 1), E = 0.0125.
  const step = async (kind: Rule) => {
    const p = tensor([[1]], { requiresGrad: true });
    const opt = make(kind, "sgd", [["w", p]], { format: "e4m3", rounding: "nearest", momentum: 0.5 });
    p.grad = tensor([[1]]).keep();
    opt.step(0.1);
    return {
      p: (await valuesOf(p))[0],
      state: Object.fromEntries(await Promise.all(opt.state().map(async ([n, t]) => [n, (await valuesOf(t))[0]]))),
    };
  };
  // ECO: M = M̃ + (1/η)(1 - 1/β)·E = 0.5 + 10·(-1)·0.0125 = 0.375.
  const eco = await step("eco");
  assert.equal(eco.p, 0.9375);
  assert.ok(Math.abs(eco.state["w/momentum"] - 0.375) < 1e-6, `eco ${eco.state["w/momentum"]}`);
  // Exact: M = M̃ + (1/η)(E_prev - E/β) = 0.5 + 10·(0 - 0.025) = 0.25; E is kept.
  const exact = await step("exact");
  assert.ok(Math.abs(exact.state["w/momentum"] - 0.25) < 1e-6, `exact ${exact.state["w/momentum"]}`);
  assert.ok(Math.abs(exact.state["w/error"] - 0.0125) < 1e-7);
  // Naive: no feedback. Master: the f32 copy keeps 0.95, the parameter shows 0.9375.
  const naive = await step("naive");
  assert.deepEqual([naive.p, naive.state["w/momentum"]], [0.9375, 0.5]);
  const master = await step("master");
  assert.equal(master.p, 0.9375);
  assert.ok(Math.abs(master.state["w/master"] - 0.95) < 1e-7);
});

Deno.test("one hand-computed step: ECO-Adam, e4m3 round to nearest", async () => {
  // Ŵ = 1, G = 1, β = (0.5, 0.5), ε = 0, η = 0.1: M̃ = Ṽ = 0.5, m̂ = v̂ = 1, W̃ = 0.9, q = 0.875, E = 0.025;
  // M = M̃ + ((1-β1)/η)(1 - 1/β1)·(sqrt(v̂) + ε)·E = 0.5 + 5·(-1)·1·0.025 = 0.375.
  const p = tensor([[1]], { requiresGrad: true });
  const opt = new EcoAdam([["w", p]], {
    format: "e4m3",
    rounding: "nearest",
    betas: [0.5, 0.5],
    eps: 0,
    weightDecay: 0,
  });
  p.grad = tensor([[1]]).keep();
  opt.step(0.1);
  assert.equal((await valuesOf(p))[0], 0.875);
  const m = (await valuesOf(opt.state()[0][1]))[0];
  assert.ok(Math.abs(m - 0.375) < 1e-6, `${m}`);
});

Deno.test("every rule follows its f64 formula over three steps (e4m3, round to nearest, decay, varying lr)", async () => {
  for (const b of await backends()) {
    for (const update of ["adamw", "sgd"] as const) {
      for (const rule of ["eco", "exact", "naive", "master"] as const) {
        const o = { rule, update, beta: update === "adamw" ? 0.9 : 0.8, beta2: 0.99, eps: 1e-8, wd: 0.1 };
        const want = reference(o, W0, GRADS, LRS, e4m3);
        const opts = {
          format: "e4m3",
          rounding: "nearest" as const,
          betas: [0.9, 0.99] as const,
          momentum: 0.8,
          weightDecay: 0.1,
        };
        const { p, opt } = runSteps(b, rule, update, opts);
        const where = `${b.name} ${rule}-${update}`;
        // The weights are grid values: the same rounding decisions give the same numbers exactly.
        assert.deepEqual(await valuesOf(p), want.w, where);
        const state = new Map(opt.state());
        const m = await valuesOf(state.get(update === "adamw" ? "w/exp_avg" : "w/momentum")!);
        // f32 vs f64: the correction divides W̃'s rounding (~1e-7·|W|) by η ≥ 0.02, so ~1e-5 at worst.
        m.forEach((x, i) =>
          assert.ok(Math.abs(x - want.m[i]) < 2e-5 * (1 + Math.abs(want.m[i])), `${where} m[${i}] ${x} vs ${want.m[i]}`)
        );
        if (rule === "master") {
          const master = await valuesOf(state.get("w/master")!);
          master.forEach((x, i) => assert.ok(Math.abs(x - want.master[i]) < 1e-6, `${where} master[${i}]`));
        }
        if (rule === "exact") {
          const err = await valuesOf(state.get("w/error")!);
          err.forEach((x, i) => assert.ok(Math.abs(x - want.err[i]) < 1e-6, `${where} error[${i}]`));
        }
      }
    }
  }
});

Deno.test("exact variant, constant lr: ECO-SGD's Ŵ + E follows master-weight SGD, and both show the same weights", async () => {
  const opts = { format: "e4m3", rounding: "nearest" as const, momentum: 0.8, weightDecay: 0.1 };
  // Start on the grid: the master keeps an off-grid start that ECO rounds away at construction.
  const start = W0.map(e4m3), p = tensor([start], { requiresGrad: true }), q = tensor([start], { requiresGrad: true });
  const exact = new EcoSGD([["w", p]], { ...opts, exact: true });
  const master = new MasterWeights([["w", q]], { ...opts, update: "sgd" });
  for (let s = 0; s < 9; s++) {
    for (const t of [p, q]) {
      t.grad?.dispose();
      t.grad = tensor([GRADS[s % 3]]).keep();
    }
    exact.step(0.05);
    master.step(0.05);
    assert.deepEqual(await valuesOf(p), await valuesOf(q), `step ${s}: the same rounded weights`);
    const w = await valuesOf(p), e = await valuesOf(new Map(exact.state()).get("w/error")!);
    const m = await valuesOf(new Map(master.state()).get("w/master")!);
    // Master trajectory W* = Ŵ + E up to f32 rounding of values O(1).
    m.forEach((x, i) => assert.ok(Math.abs(w[i] + e[i] - x) < 1e-6, `step ${s} [${i}]: ${w[i] + e[i]} vs ${x}`));
  }
});

Deno.test("stochastic rounding: ECO picks a grid neighbour of W̃ and folds that choice's error into M; seeded", async () => {
  const big = Array.from({ length: 512 }, (_, i) => Math.sin(i) * 1.5);
  const grad = big.map((_, i) => Math.cos(3 * i) * 0.5);
  const step = async (seed: number) => {
    const p = tensor([big], { requiresGrad: true });
    const opt = new EcoSGD([["w", p]], { format: "e4m3", seed, momentum: 0.9 });
    p.grad = tensor([grad]).keep();
    opt.step(0.02);
    return { p: await valuesOf(p), m: await valuesOf(opt.state()[0][1]) };
  };
  const a = await step(7), again = await step(7), other = await step(8);
  assert.deepEqual(a, again, "same seed, same bits");
  assert.notDeepEqual(a.p, other.p, "another seed draws other roundings");
  let up = 0;
  big.forEach((w0, i) => {
    const w = e4m3(w0), mt = 0.1 * grad[i], wt = w - 0.02 * mt, ulp = e4m3Ulp(wt);
    const lo = Math.floor(wt / ulp) * ulp, hi = lo + ulp;
    assert.ok(a.p[i] === lo || a.p[i] === hi, `element ${i}: ${a.p[i]} is not a neighbour of ${wt}`);
    if (a.p[i] !== e4m3(wt)) up++;
    const want = mt + (1 / 0.02) * (1 - 1 / 0.9) * (wt - a.p[i]);
    assert.ok(Math.abs(a.m[i] - want) < 1e-4 * (1 + Math.abs(want)), `m[${i}] ${a.m[i]} vs ${want}`);
  });
  assert.ok(up > 0, "stochastic rounding sometimes goes to the farther neighbour");
});

Deno.test("stochastic rounding is keyed (seed, stream of the name, offset (t-1)·size): fresh words every step", () => {
  const e4m3q = parseFormat("e4m3"), calls: QuantizeOptions[] = [];
  const spy: Quantizer = { ...e4m3q, quantDequant: (x, o = {}) => (calls.push(o), e4m3q.quantDequant(x, o)) };
  const p = tensor([W0], { requiresGrad: true });
  const opt = new EcoAdam([["blocks.0.w", p]], { format: spy, seed: 11 });
  for (const g of GRADS) {
    p.grad?.dispose();
    p.grad = tensor([g]).keep();
    opt.step(0.01);
  }
  const stream = streamOf("blocks.0.w/weight_rounding");
  assert.deepEqual(calls.map((o) => [o.rounding, o.seed, o.stream, o.offset]), [
    ["nearest", 11, stream, 0], // construction: round the initial weights to nearest
    ...[0, 1, 2].map((s) => ["stochastic", 11, stream, s * W0.length]),
  ]);
});

Deno.test("the 1/η guard: at η = 0 weights stay, M is AdamW's M̃ bit for bit, nothing is NaN", async () => {
  const p = tensor([W0], { requiresGrad: true });
  const opt = new EcoAdam([["w", p]], { format: "e4m3", exact: true });
  const ref = tensor([W0], { requiresGrad: true });
  const adamw = new AdamW([["w", ref]]);
  ref.assign(tensor([await valuesOf(p)]));
  for (const [s, g] of GRADS.entries()) {
    const lr = s === 1 ? 0 : LRS[s]; // a step at η = 0 in the middle (a warm-up from 0 or a decay to 0)
    const before = await bitsOf(p);
    p.grad?.dispose();
    p.grad = tensor([g]).keep();
    ref.grad?.dispose();
    ref.grad = tensor([g]).keep();
    const m0 = opt.state().length ? await bitsOf(opt.state()[0][1]) : null;
    opt.step(lr);
    adamw.step(lr);
    if (lr === 0) {
      assert.deepEqual(await bitsOf(p), before, "η = 0 leaves the weights");
      // M̃ = β1·M + (1-β1)·G exactly as AdamW computes it from the same M.
      const mAdam = tidy(() => {
        const state = new Map(opt.state());
        const m = tensor(new Float32Array(new Uint32Array(m0!).buffer), { shape: [1, W0.length] });
        return adamwUpdate(p, p.grad!, m, state.get("w/exp_avg_sq")!, {
          betas: [0.9, 0.999],
          eps: 1e-8,
          step: 2,
          lr: 0,
          weightDecay: 0.01,
        })[1];
      });
      assert.deepEqual(await bitsOf(opt.state()[0][1]), await bitsOf(mAdam));
      assert.deepEqual(
        await valuesOf(new Map(opt.state()).get("w/error")!),
        W0.map(() => 0),
        "the exact variant's error resets",
      );
    }
  }
  for (const [, t] of opt.state()) assert.ok((await valuesOf(t)).every(Number.isFinite));
  // Below the threshold too: no overflow from 1/η.
  p.grad = tensor([GRADS[0]]).keep();
  opt.step(ECO_MIN_LR / 10);
  for (const [, t] of opt.state()) assert.ok((await valuesOf(t)).every(Number.isFinite));
});

/** Gradients that depend on the parameter (so a wrong resumed parameter shows): g = 0.5·p + c_s. */
function gradFor(p: Tensor, s: number): Tensor {
  return tidy(() =>
    add(mul(p, 0.5), tensor([W0.map((_, i) => Math.sin(i + s) * 0.3), W0.map((_, i) => Math.cos(i * s) * 0.2)]))
  ).keep();
}

/** Steps `from` … `to` − 1 of `opt` on `p` with the gradients of {@link gradFor} and a decaying learning rate. */
function trainSteps(p: Tensor, opt: Optimizer, from: number, to: number): void {
  for (let s = from; s < to; s++) {
    p.grad?.dispose();
    p.grad = gradFor(p, s);
    opt.step(0.02 * (1 - s / 8));
  }
}

Deno.test("checkpoint/resume: state() then load() into a fresh optimizer and parameter continues bit for bit", async () => {
  const cases: [string, (p: [string, Tensor][]) => QuantizedWeightOptimizer][] = [
    ["eco-adam", (p) => new EcoAdam(p, { format: "e4m3", seed: 3 })],
    ["eco-adam exact", (p) => new EcoAdam(p, { format: "e4m3", seed: 3, exact: true })],
    ["eco-sgd int4", (p) => new EcoSGD(p, { format: "int4", granularity: "group:3", seed: 3 })],
    ["master", (p) => new MasterWeights(p, { format: "e4m3", rounding: "stochastic" })],
    ["naive sr", (p) => new NaiveQuantized(p, { format: "e5m2", rounding: "stochastic", seed: 5 })],
  ];
  for (const [name, make] of cases) {
    const init = () => tensor([W0, W0.map((x) => x / 2)], { requiresGrad: true });
    const p = init(), opt = make([["w", p]]);
    trainSteps(p, opt, 0, 6);
    const want = [await bitsOf(p), ...await Promise.all(opt.state().map(([, t]) => bitsOf(t)))];

    const q = init(), first = make([["w", q]]);
    trainSteps(q, first, 0, 3);
    const saved = new Map<string, Float32Array>();
    for (const [n, t] of [["param", q] as const, ...first.state()]) {
      saved.set(n, (await t.data()).slice() as Float32Array);
    }
    const restore = (n: string) => tensor(saved.get(n)!, { shape: q.shape });

    const fresh = tensor([W0.map((x) => x + 0.1), W0], { requiresGrad: true }); // other values: the checkpoint must win
    const second = make([["w", fresh]]);
    fresh.assign(restore("param"));
    second.load(new Map(first.state().map(([n]) => [n, restore(n)])), first.steps);
    trainSteps(fresh, second, 3, 6);
    const got = [await bitsOf(fresh), ...await Promise.all(second.state().map(([, t]) => bitsOf(t)))];
    assert.deepEqual(got, want, name);
  }
});

Deno.test("rollback: load() of an earlier state() into the same optimizer replays bit for bit, from step 0 too", async () => {
  const cases: [string, (p: [string, Tensor][]) => Optimizer][] = [
    ["adamw", (p) => new AdamW(p)],
    ["sgd momentum", (p) => new SGD(p, { momentum: 0.9 })],
    ["eco-adam exact", (p) => new EcoAdam(p, { format: "e4m3", seed: 3, exact: true })],
    ["master", (p) => new MasterWeights(p, { format: "e4m3", rounding: "stochastic" })],
    ["naive sr", (p) => new NaiveQuantized(p, { format: "e5m2", rounding: "stochastic", seed: 5 })],
  ];
  for (const [name, make] of cases) {
    for (const at of [0, 3]) {
      const p = tensor([W0, W0.map((x) => x / 2)], { requiresGrad: true }), opt = make([["w", p]]);
      const train = (from: number, to: number) => trainSteps(p, opt, from, to);
      train(0, at);
      const param = clone(p).keep(), steps = opt.steps;
      const state = new Map(opt.state().map(([n, t]) => [n, clone(t).keep()]));
      train(at, 6);
      const want = await bitsOf(p);
      p.assign(clone(param)); // the state after step 6 (moments, errors) must not leak into the replay
      opt.load(state, steps);
      train(at, 6);
      assert.deepEqual(await bitsOf(p), want, `${name}, back to step ${at}`);
    }
  }
});

Deno.test("the parameter stays exactly representable after every step", async () => {
  const shape = [4, 64];
  const start = Array.from({ length: 256 }, (_, i) => Math.sin(i * 1.7) * 0.8);
  for (const format of ["e4m3", "mxfp4", "int4"]) {
    const granularity = format === "int4" ? "group:32" : undefined;
    const p = tensor(start, { shape, requiresGrad: true });
    const opt = new EcoAdam([["w", p]], { format, granularity, seed: 1 });
    for (let s = 0; s < 5; s++) {
      p.grad?.dispose();
      p.grad = tidy(() => mul(p, 0.3)).keep();
      opt.step(0.01);
      const values = await valuesOf(p);
      if (format === "int4") {
        // INT4-g32: each group is k·s with integer |k| ≤ 7 and s = amax/7. (Re-rounding an INT tensor is not
        // bit-identical: the scale recomputed from amax = 7·s comes back an f32 ulp off.)
        for (let g = 0; g < values.length; g += 32) {
          const group = values.slice(g, g + 32), s = Math.max(...group.map(Math.abs)) / 7;
          group.forEach((x) => assert.ok(Math.abs(x / s - Math.round(x / s)) < 1e-5, `${format} step ${s}: ${x}`));
        }
      } else {
        const again = parseFormat(format).quantDequant(p);
        assert.deepEqual(await bitsOf(again), await bitsOf(p), `${format} step ${s}`);
        again.dispose();
      }
    }
  }
});

Deno.test("bytes per parameter as if packed: format bits + scales + f32 state", () => {
  const w = () => tensor(new Float32Array(256), { shape: [2, 128], requiresGrad: true });
  assert.equal(new EcoAdam([w()], { format: "e4m3" }).bytesPerParameter(), 1 + 8);
  assert.equal(new EcoAdam([w()], { format: "e4m3", exact: true }).bytesPerParameter(), 1 + 8 + 4);
  assert.equal(new EcoSGD([w()], { format: "e4m3" }).bytesPerParameter(), 1 + 4);
  assert.equal(new EcoAdam([w()], { format: "int4", granularity: "group:128" }).bytesPerParameter(), 0.5 + 4 / 128 + 8);
  assert.equal(new EcoAdam([w()], { format: "mxfp4" }).bytesPerParameter(), 0.5 + 1 / 32 + 8);
  assert.equal(new MasterWeights([w()], { format: "e4m3" }).bytesPerParameter(), 1 + 4 + 8);
  assert.equal(new NaiveQuantized([w()], { format: "e4m3", update: "sgd" }).bytesPerParameter(), 1 + 4);
  // A bias (rank 1) stays f32 by default: 4 + 8 bytes for its 128 values.
  const report = new EcoAdam([w(), tensor(new Float32Array(128), { requiresGrad: true })], { format: "e4m3" }).memory();
  assert.deepEqual(report, {
    parameters: 384,
    weightBytes: 256 + 512,
    stateBytes: 384 * 8,
    bytesPerParameter: (768 + 3072) / 384,
  });
});

Deno.test("optimizerMemory: the packed report for ECO and its baselines, f32 weights + state for AdamW and SGD", () => {
  const w = tensor(new Float32Array(256), { shape: [2, 128], requiresGrad: true });
  const eco = new EcoAdam([w], { format: "e4m3" });
  assert.deepEqual(optimizerMemory(eco, [w]), eco.memory());
  for (const [opt, bytes] of [[new AdamW([w]), 12], [new SGD([w], { momentum: 0.9 }), 8], [new SGD([w]), 4]] as const) {
    w.grad = tensor(new Float32Array(256), { shape: [2, 128] }).keep();
    opt.step(1e-3);
    assert.equal(optimizerMemory(opt, [w]).bytesPerParameter, bytes);
  }
});

Deno.test("bad input: full-precision or unknown format, granularity that does not divide, lr < 0, peak lr ≤ 0", () => {
  const w = () => tensor(new Float32Array(12), { shape: [2, 6], requiresGrad: true });
  assert.throws(() => new EcoAdam([w()], { format: "f32" }), /EcoAdam: weight format 'f32' is full precision/);
  assert.throws(() => new EcoSGD([w()], { format: "e8m23" }), /EcoSGD: weight format 'e8m23' is full precision/);
  assert.throws(() => new MasterWeights([w()], { format: "e4m4x" }), /MasterWeights: unknown format 'e4m4x'/);
  assert.throws(
    () => new EcoAdam([["blocks.0.w", w()]], { format: "int4", granularity: "group:4" }),
    /parameter 'blocks.0.w': int4: group size 4 must divide/,
  );
  assert.throws(() => new EcoAdam([w()], { format: "int4", granularity: "rows" }), /granularity 'rows'/);
  assert.throws(() => new EcoSGD([w()], { format: "e4m3", momentum: 1 }), /momentum β must lie in \(0, 1\)/);
  const opt = new EcoAdam([w()], { format: "e4m3" });
  assert.throws(
    () => opt.load(new Map([["param0/exp_avg", tensor([1, 2])]]), 1),
    /EcoAdam.load: 'param0\/exp_avg' is tensor \[2\] f32, expected f32 \[2,6\]/,
  );
  assert.throws(() => new MasterWeights([w()], { format: "e4m3" }).load(new Map(), 3), /no 'param0\/master'/);
  assert.throws(() => opt.step(-1e-3), /EcoAdam.step: learning rate -0.001 must be a finite number ≥ 0/);
  assert.throws(() => opt.step(NaN), /learning rate NaN/);
  assert.throws(() => checkPeakLearningRate(0, "train.lr"), /train.lr: learning rate 0 must be positive/);
  checkPeakLearningRate(1e-3, "train.lr");
});

Deno.test("the SGD-EMA and correction kernels agree across backends within a few ulp", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const n = 300;
  const data = (k: number, scale: number) => Array.from({ length: n }, (_, i) => Math.sin(i * k + 1) * scale);
  const run = (b: Backend) => {
    const [p, g, m, v, e] = [
      data(1.1, 1),
      data(2.3, 0.5),
      data(0.7, 0.1),
      data(0.3, 0.01).map(Math.abs),
      data(1.9, 1e-3),
    ]
      .map((x) => tensor(x, { backend: b }));
    const wq = parseFormat("e4m3").quantDequant(p, { rounding: "stochastic", seed: 1, stream: 2, offset: 3 });
    const [p2, m2] = sgdEmaUpdate(p, g, m, { momentum: 0.9, lr: 0.01, weightDecay: 0.1 });
    const [m3] = ecoCorrection(p, wq, m, v, { factor: -12.5, adam: { beta2: 0.999, eps: 1e-8, step: 4 } });
    const [m4, e4] = ecoCorrection(p, wq, m, null, { factor: 50, exact: { beta: 0.9, previousError: e } });
    return Promise.all([wq, p2, m2, m3, m4, e4!].map(valuesOf));
  };
  const [cpu, web] = [await run(cpuBackend()), await run(gpu)];
  assert.deepEqual(web[0], cpu[0], "quantization: identical bits");
  for (let k = 1; k < cpu.length; k++) {
    cpu[k].forEach((x, i) =>
      assert.ok(Math.abs(web[k][i] - x) <= 1e-6 * (1 + Math.abs(x)), `output ${k}[${i}]: ${web[k][i]} vs ${x}`)
    );
  }
});

Deno.test("gradScale multiplies the gradient inside the SGD-EMA kernel: same bits as a pre-scaled gradient", async () => {
  const run = async (scaleInKernel: boolean) => {
    const p = tensor([W0], { requiresGrad: true });
    const opt = new EcoSGD([["w", p]], { format: "e4m3", seed: 2 });
    for (const g of GRADS) {
      p.grad?.dispose();
      p.grad = tensor([scaleInKernel ? g : g.map((x) => x * 0.5)]).keep();
      const scale = tensor([0.5]);
      opt.step(0.05, scaleInKernel ? { gradScale: scale } : {});
      scale.dispose();
    }
    return [await bitsOf(p), await bitsOf(opt.state()[0][1])];
  };
  assert.deepEqual(await run(true), await run(false));
});
