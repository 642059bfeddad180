/**
 * Features of a trained model's loss landscape around its weights, over the
 * weights of its linear layers (what PTQ perturbs): the Hessian's trace by
 * Hutchinson's estimator with seeded Rademacher probes, its top eigenvalue by
 * power iteration, and the weights' kurtosis. Hessian-vector products are
 * central finite differences of gradients, `Hv ≈ (g(w + εv) − g(w − εv)) / 2ε`,
 * on one fixed batch of calibration sequences.
 *
 * @module
 */
import { backward, type GPT, noGrad, type Tensor, tensor, tidy } from "@lowp/core";
import type { Corpus, LMRecipe } from "@lowp/recipes";
import { calibrationBatch, linearLayers } from "./ptq_tools.ts";

/** How the features are estimated. */
export interface LandscapeOptions {
  /** Calibration sequences in the batch the loss is taken on. */
  readonly samples: number;
  /** Rademacher probes of Hutchinson's estimator. */
  readonly probes: number;
  /** Power-iteration steps. */
  readonly iterations: number;
  /**
   * Finite-difference step per element of a ±1 probe; a unit-norm vector is scaled to the same norm, so every
   * product perturbs the weights alike (√n·step in norm).
   */
  readonly step: number;
}

/** The features of one model. */
export interface LandscapeFeatures {
  /** Hutchinson estimate of tr(H) over the linear layers' weights. */
  readonly trace: number;
  /** Largest eigenvalue of H by power iteration (its Rayleigh quotient at the last iterate). */
  readonly topEigenvalue: number;
  /** Mean over the linear layers of each weight's kurtosis E[(w−μ)⁴]/σ⁴. */
  readonly weightKurtosis: number;
  /** Weights the features cover. */
  readonly parameters: number;
}

/** A host vector over several tensors, flattened in order. */
type Flat = Float64Array;

/** Seeded Rademacher (±1) entries: xorshift32 bits, enough for probes. */
export function rademacher(n: number, seed: number, probe: number): Flat {
  let s = (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(probe + 1, 0x85ebca6b) ^ 0x68657373) >>> 0 || 1;
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    v[i] = s & 1 ? 1 : -1;
  }
  return v;
}

const dot = (a: Flat, b: Flat) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** Kurtosis E[(x−μ)⁴]/σ⁴ of the values. */
export function kurtosis(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m += x[i];
  m /= x.length;
  let m2 = 0, m4 = 0;
  for (let i = 0; i < x.length; i++) {
    const d2 = (x[i] - m) ** 2;
    m2 += d2;
    m4 += d2 * d2;
  }
  return (m4 / x.length) / (m2 / x.length) ** 2;
}

/**
 * The landscape features of `model` (left as it was: the weights are restored bit for bit after every
 * perturbation). Deterministic for a given model, recipe seed and options.
 */
export async function landscapeFeatures(
  model: GPT,
  recipe: LMRecipe,
  corpus: Corpus,
  o: LandscapeOptions,
): Promise<LandscapeFeatures> {
  const weights = linearLayers(model).map(([, l]) => l.weight);
  const original = await Promise.all(weights.map(async (w) => Float32Array.from(await w.data())));
  const sizes = weights.map((w) => w.size), n = sizes.reduce((a, b) => a + b, 0);
  const context = recipe.model.context, shape = [o.samples, context];
  const { inputs, targets } = calibrationBatch(corpus.train, o.samples, context, recipe.seed);

  const setWeights = (offset: Flat | null, eps: number) => {
    let at = 0;
    weights.forEach((w, k) => {
      const v = Float32Array.from(original[k]);
      if (offset) { for (let i = 0; i < v.length; i++) v[i] += eps * offset[at + i]; }
      at += sizes[k];
      const t = noGrad(() => tensor(v, { shape: [...w.shape] })).keep();
      w.assign(t);
      t.dispose();
    });
  };
  const gradient = async (): Promise<Flat> => {
    model.zeroGrad();
    const loss: Tensor = tidy(() => {
      const l = model.loss(tensor(inputs, { shape }), tensor(targets, { shape }), { training: false });
      backward(l);
      return l;
    });
    loss.dispose();
    const g = new Float64Array(n);
    let at = 0;
    for (const w of weights) {
      if (!w.grad) throw new Error("landscapeFeatures: a linear weight received no gradient");
      g.set(await w.grad.data(), at);
      at += w.size;
    }
    model.zeroGrad();
    return g;
  };
  /** H·v by central differences with the perturbation eps·v. */
  const hvp = async (v: Flat, eps: number): Promise<Flat> => {
    setWeights(v, eps);
    const plus = await gradient();
    setWeights(v, -eps);
    const minus = await gradient();
    const h = new Float64Array(n);
    for (let i = 0; i < n; i++) h[i] = (plus[i] - minus[i]) / (2 * eps);
    return h;
  };
  try {
    let trace = 0;
    for (let p = 0; p < o.probes; p++) {
      const v = rademacher(n, recipe.seed, p);
      trace += dot(v, await hvp(v, o.step));
    }
    trace /= o.probes;
    const unitEps = o.step * Math.sqrt(n);
    let v = rademacher(n, recipe.seed, o.probes);
    let norm = Math.sqrt(dot(v, v));
    v = v.map((x) => x / norm);
    let eigen = 0;
    for (let it = 0; it < o.iterations; it++) {
      const h = await hvp(v, unitEps);
      eigen = dot(v, h);
      norm = Math.sqrt(dot(h, h));
      if (!(norm > 0)) break;
      v = h.map((x) => x / norm);
    }
    const weightKurtosis = original.map(kurtosis).reduce((a, b) => a + b, 0) / original.length;
    return { trace, topEigenvalue: eigen, weightKurtosis, parameters: n };
  } finally {
    setWeights(null, 0);
    model.zeroGrad();
  }
}
