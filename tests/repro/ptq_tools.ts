/**
 * What the post-training arms do to a trained model: copy it (the base is
 * never changed), round every linear layer's weight to a format (RTN, the
 * format's own quantizer), switch its linear layers to a precision record,
 * fine-tune it on the calibration sequences, measure its linear layers'
 * inputs, and plant activation outlier channels without changing the
 * function it computes.
 *
 * @module
 */
import { clone, type GPT, LayerNorm, Linear, type LinearOp, noGrad, type Tensor, tensor, tidy } from "@lowp/core";
import { applyPrecision, type LinearPrecision, rtnWeight, type WeightQuantSpec } from "@lowp/formats";
import { AdamW, trainStep } from "@lowp/optim";
import { buildModel, CALIBRATION_STREAM, type Corpus, evaluate, type LMRecipe, sampleBatch } from "@lowp/recipes";

/** Replaces `p`'s values by `value`'s (computed without autograd) and frees `value`'s handle. */
function setValue(p: Tensor, value: () => Tensor): void {
  const v = noGrad(() => tidy(value)).keep();
  p.assign(v);
  v.dispose();
}

/** `recipe` with `precision:` reset to f32 (what post-training arms start from). */
export function f32Recipe(recipe: LMRecipe): LMRecipe {
  return { ...recipe, precision: { ...recipe.precision, preset: "f32", skip: "", lsq: false, ste: "", roles: {} } };
}

/** A fresh f32 model of `recipe` holding a copy of `model`'s parameters (so the copy can be changed freely). */
export function copyModel(model: GPT, recipe: LMRecipe): GPT {
  const copy = buildModel(f32Recipe(recipe));
  const source = new Map(model.namedParameters());
  for (const [name, p] of copy.namedParameters()) {
    const s = source.get(name);
    if (!s) throw new Error(`copyModel: the model has no parameter '${name}'`);
    setValue(p, () => clone(s));
  }
  return copy;
}

/** The model's linear layers with their names (the head is tied to the embedding, so not among them). */
export function linearLayers(model: GPT): [string, Linear][] {
  return model.namedModules().filter(([, m]) => m instanceof Linear) as [string, Linear][];
}

/** Rounds every linear layer's weight to `spec` in place (RTN by the format's own quantizer). */
export function rtnLinears(model: GPT, spec: WeightQuantSpec): void {
  for (const [name, layer] of linearLayers(model)) setValue(layer.weight, () => rtnWeight(layer.weight, spec, name));
}

/** Validation loss of a copy of `model` with every linear weight rounded to `spec`. */
export async function rtnLoss(model: GPT, recipe: LMRecipe, corpus: Corpus, spec: WeightQuantSpec): Promise<number> {
  const copy = copyModel(model, recipe);
  try {
    rtnLinears(copy, spec);
    return await evaluate(copy, recipe, corpus.val);
  } finally {
    copy.dispose();
  }
}

/** Validation loss of a copy of `model` whose linear layers run under `precision` (after `prepare`, if given). */
export async function precisionLoss(
  model: GPT,
  recipe: LMRecipe,
  corpus: Corpus,
  precision: LinearPrecision,
  prepare?: (copy: GPT) => Promise<void>,
): Promise<number> {
  const copy = copyModel(model, recipe);
  try {
    await prepare?.(copy);
    applyPrecision(copy, precision);
    return await evaluate(copy, recipe, corpus.val);
  } finally {
    copy.dispose();
  }
}

/** Calibration sequences and their next-byte targets: `calibrationTokens`' sequences (same seed, same draw). */
export function calibrationBatch(
  train: Uint8Array,
  samples: number,
  context: number,
  seed: number,
): { inputs: Int32Array; targets: Int32Array } {
  return sampleBatch(train, samples, context, seed, CALIBRATION_STREAM, 0);
}

/** How {@linkcode fineTune} runs. */
export interface FineTuneOptions {
  /** Calibration sequences (rows of `context`). */
  readonly samples: number;
  /** Passes over them. */
  readonly epochs: number;
  /** Constant AdamW learning rate (default: the recipe's `min_lr`, the rate its training ended at). */
  readonly lr?: number;
}

/**
 * Fine-tunes `model` in place on the calibration sequences (in their drawn order, `batch_size` at a time, for
 * `epochs` passes) with AdamW at a constant learning rate (the recipe's final one unless given) and the recipe's
 * betas, weight decay and clipping;
 * whatever precision its layers run under is what it trains with (fake quant with the STE).
 */
export async function fineTune(model: GPT, recipe: LMRecipe, corpus: Corpus, o: FineTuneOptions): Promise<void> {
  const t = recipe.train, context = recipe.model.context;
  const { inputs, targets } = calibrationBatch(corpus.train, o.samples, context, recipe.seed);
  const optimizer = new AdamW(model.namedParameters({ trainable: true }), {
    betas: [t.beta1, t.beta2],
    weightDecay: t.weight_decay,
  });
  const steps = Math.ceil(o.samples / t.batch_size);
  try {
    for (let e = 0; e < o.epochs; e++) {
      for (let s = 0; s < steps; s++) {
        const from = s * t.batch_size * context, to = Math.min(o.samples, (s + 1) * t.batch_size) * context;
        const rows = (to - from) / context;
        const loss = trainStep({
          model,
          optimizer,
          inputs: inputs.slice(from, to),
          targets: targets.slice(from, to),
          shape: [rows, context],
          lr: o.lr ?? t.min_lr,
          gradClip: t.grad_clip,
          ctx: { step: e * steps + s, seed: recipe.seed, training: true },
        });
        if (s === steps - 1) {
          const value = await loss.item();
          if (!Number.isFinite(value)) throw new Error(`fine-tune: the loss is not finite in epoch ${e + 1}`);
        }
        loss.dispose();
      }
    }
  } finally {
    for (const [, t] of optimizer.state()) t.dispose();
  }
}

/** Outlier statistics of one linear layer's input over a calibration batch. */
export interface InputStats {
  /** Kurtosis E[(x−μ)⁴]/σ⁴ of all entries (3 for a Gaussian). */
  readonly kurtosis: number;
  /** Largest per-channel max |x| over the median per-channel max |x|. */
  readonly maxToMedian: number;
}

/** Statistics of a [..., channels] activation read back to the host. */
export function inputStats(x: Float32Array, channels: number): InputStats {
  const n = x.length;
  let m = 0;
  for (const v of x) m += v;
  m /= n;
  let m2 = 0, m4 = 0;
  const maxAbs = new Float64Array(channels);
  for (let i = 0; i < n; i++) {
    const d = x[i] - m, d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
    const c = i % channels, a = Math.abs(x[i]);
    if (a > maxAbs[c]) maxAbs[c] = a;
  }
  m2 /= n;
  m4 /= n;
  const sorted = [...maxAbs].sort((a, b) => a - b);
  const median = channels % 2 ? sorted[(channels - 1) / 2] : (sorted[channels / 2 - 1] + sorted[channels / 2]) / 2;
  return { kurtosis: m4 / (m2 * m2), maxToMedian: sorted[channels - 1] / median };
}

/** Each linear layer's input statistics on `samples` calibration sequences (the model is left as it was). */
export async function linearInputStats(
  model: GPT,
  recipe: LMRecipe,
  corpus: Corpus,
  samples: number,
): Promise<Map<string, InputStats>> {
  const layers = linearLayers(model);
  const ops = new Map<Linear, LinearOp>(layers.map(([, l]) => [l, l.op]));
  const captured = new Map<string, Tensor>();
  const context = recipe.model.context;
  const { inputs, targets } = calibrationBatch(corpus.train, samples, context, recipe.seed);
  try {
    for (const [name, layer] of layers) {
      const op = ops.get(layer)!;
      layer.op = (x, l, ctx) => {
        captured.get(name)?.dispose();
        captured.set(name, clone(x).keep());
        return op(x, l, ctx);
      };
    }
    const shape = [samples, context];
    noGrad(() => tidy(() => model.loss(tensor(inputs, { shape }), tensor(targets, { shape }), { training: false })));
    const stats = new Map<string, InputStats>();
    for (const [name, layer] of layers) {
      stats.set(name, inputStats((await captured.get(name)!.data()) as Float32Array, layer.inFeatures));
    }
    return stats;
  } finally {
    for (const [layer, op] of ops) layer.op = op;
    for (const t of captured.values()) t.dispose();
  }
}

/** Outlier channels planted by {@linkcode plantOutliers}: per LayerNorm, the channels scaled. */
export type PlantedChannels = Map<string, number[]>;

/**
 * Plants activation outlier channels without changing the function the model computes: in every block, scales
 * `channels` channels (drawn by `seed`) of the LayerNorm in front of attention's QKV projection and of the MLP's
 * first projection (weight and bias) by `factor`, and divides the matching input rows of that projection's
 * [in, out] weight by `factor`. The projection's inputs then carry outliers; its outputs are the same up to f32
 * rounding. Returns the channels chosen.
 */
export async function plantOutliers(
  model: GPT,
  o: { channels: number; factor: number; seed: number },
): Promise<PlantedChannels> {
  const modules = new Map(model.namedModules());
  const pairs: [string, string][] = [];
  for (const [name, m] of modules) {
    const block = /^(transformer\.h\.\d+)\.(ln_1|ln_2)$/.exec(name);
    if (!block || !(m instanceof LayerNorm)) continue;
    pairs.push([name, `${block[1]}.${block[2] === "ln_1" ? "attn.c_attn" : "mlp.c_fc"}`]);
  }
  if (!pairs.length) throw new Error("plantOutliers: the model has no LayerNorm blocks (ln_1, ln_2)");
  const planted: PlantedChannels = new Map();
  let state = (o.seed * 0x9e3779b1 + 0x6f75746c) >>> 0; // "outl"
  const next = () => { // xorshift32: channel picks need no stronger generator
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  for (const [normName, linearName] of pairs) {
    const norm = modules.get(normName) as LayerNorm, linear = modules.get(linearName);
    if (!(linear instanceof Linear)) throw new Error(`plantOutliers: no linear layer ${linearName} after ${normName}`);
    const width = norm.weight.shape[0];
    const picked = new Set<number>();
    while (picked.size < Math.min(o.channels, width)) picked.add(Math.floor(next() * width));
    const chosen = [...picked].sort((a, b) => a - b);
    const gamma = Float32Array.from(await norm.weight.data()), beta = Float32Array.from(await norm.bias.data());
    const w = Float32Array.from(await linear.weight.data()), out = linear.outFeatures;
    for (const c of chosen) {
      gamma[c] *= o.factor;
      beta[c] *= o.factor;
      for (let j = 0; j < out; j++) w[c * out + j] /= o.factor;
    }
    setValue(norm.weight, () => tensor(gamma, { shape: [width] }));
    setValue(norm.bias, () => tensor(beta, { shape: [width] }));
    setValue(linear.weight, () => tensor(w, { shape: [width, out] }));
    planted.set(normName, chosen);
  }
  return planted;
}
