/**
 * LoRA (Hu et al. 2021, arXiv 2106.09685) on the {@link Linear} layers of a
 * model, as Hugging Face PEFT does it: each target layer keeps its own
 * computation (its `op`: plain f32, a QAT precision, or a frozen quantized
 * base) and adds a low-rank update,
 *
 *     y = base(x) + (α/r) · dropout(x) · A · B,
 *
 * A [in, r] drawn Kaiming-uniform with a = √5 (PEFT's
 * `nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5))`: U(−1/√in, 1/√in)),
 * B [r, out] zero, so the model computes the same function before the first
 * step. Only A and B train; {@link applyLora} freezes everything else.
 *
 * Names: the adapters are parameters of the layer they adapt,
 * `<layer>.lora_A.weight` and `<layer>.lora_B.weight`: PEFT's names with its
 * adapter name (`default`) left out, as PEFT's saved adapter files have them.
 * They are stored in this package's [in, out] layout (GPT-2's Conv1D), so
 * each is the transpose of PEFT's `nn.Linear` weight of that name.
 *
 * The adapter wraps the layer's op through the `Linear.op` seam (see
 * {@link setBaseOp}): it works with `generate` and the KV cache unchanged,
 * and a precision applied before or after it stays underneath it.
 *
 * @module
 */
import { philoxWords, wordToUniform } from "@lowp/kernels";
import { rand, tensor, zeros } from "../creation.ts";
import { noGrad, tidy } from "../runtime.ts";
import { add, less, mul, where } from "../ops/elementwise.ts";
import { matmul } from "../ops/matmul.ts";
import type { Tensor } from "../tensor.ts";
import { Linear, type LinearOp } from "./layers.ts";
import { matchesName, type Module, type NamePattern, randomKey, streamOf } from "./module.ts";

/** What {@link applyLora} adds (PEFT's `LoraConfig` names in camelCase). */
export interface LoraConfig {
  /** Rank r of the update (PEFT's `r`; an integer ≥ 1). */
  readonly r: number;
  /** α: the update is scaled by α/r (PEFT's `lora_alpha`). */
  readonly alpha: number;
  /** Dropout probability on the adapter's input in training (PEFT's `lora_dropout`, default 0). */
  readonly dropout?: number;
  /**
   * Layers to adapt: a name pattern or a list of them (dotted globs or RegExps, as `Module.freeze` takes), or
   * `all-linear` (PEFT's name; the default): every {@link Linear}. The embedding and a tied head are no Linear.
   */
  readonly targetModules?: NamePattern | readonly NamePattern[];
  /** Seed of A's draws (default: the model's init seed); each layer's stream hashes its parameter name. */
  readonly seed?: number;
}

/** PEFT's keyword for every linear layer. */
export const ALL_LINEAR = "all-linear";

/** The adapter of one layer: its parameters, its scaling and the op it adds to. */
export class LoraAdapter {
  /** [in, r] down-projection, Kaiming-uniform at init (`<layer>.lora_A.weight`). */
  readonly A: Tensor;
  /** [r, out] up-projection, zero at init (`<layer>.lora_B.weight`). */
  readonly B: Tensor;
  /** α/r. */
  readonly scaling: number;
  /** The computation underneath the adapter (the layer's op before {@link applyLora}). */
  baseOp: LinearOp;

  /**
   * Creates the adapter of `layer` with its parameters on the layer's backend (not yet registered).
   * @param layer the adapted layer
   * @param config rank, α, dropout
   * @param seed seed of A's draws
   * @param baseOp what the adapter adds to
   */
  constructor(readonly layer: Linear, readonly config: LoraConfig, seed: number, baseOp: LinearOp) {
    const { r, alpha } = config;
    const backend = layer.bias?.backend ?? layer.parameter("weight")?.backend;
    const n = layer.inFeatures * r, bound = 1 / Math.sqrt(layer.inFeatures);
    const words = philoxWords(new Uint32Array(n), seed, streamOf(`${layer.name}.lora_A.weight`), 0);
    const host = Float32Array.from(words, (w) => (2 * wordToUniform(w) - 1) * bound);
    this.A = tensor(host, { shape: [layer.inFeatures, r], backend });
    this.B = zeros([r, layer.outFeatures], { backend });
    this.scaling = alpha / r;
    this.baseOp = baseOp;
  }
}

const adapters = new WeakMap<Linear, LoraAdapter>();

/** The LoRA adapter of `layer`, or undefined. */
export function loraAdapterOf(layer: Linear): LoraAdapter | undefined {
  return adapters.get(layer);
}

/**
 * Sets the computation of `layer`: underneath its LoRA adapter when it has one, else `layer.op`. What a
 * package that switches layers (a training precision, a quantized base) calls, so an adapter stays on top.
 */
export function setBaseOp(layer: Linear, op: LinearOp): void {
  const adapter = adapters.get(layer);
  if (adapter) adapter.baseOp = op;
  else layer.op = op;
}

/** Inverted dropout: keeps each value with probability 1 − p and scales it by 1/(1 − p). */
function dropout(x: Tensor, p: number, layer: Linear, ctx: Parameters<LinearOp>[2]): Tensor {
  const u = rand(x.shape, randomKey(ctx, layer.name, "lora_dropout"), { backend: x.backend });
  return mul(x, where(less(u, 1 - p), 1 / (1 - p), 0));
}

/** The op of an adapted layer: the base op plus (α/r)·dropout(x)·A·B (the scaling applied on the r-wide product). */
function loraOp(adapter: LoraAdapter): LinearOp {
  return (x, layer, ctx) => {
    const y = adapter.baseOp(x, layer, ctx);
    const p = adapter.config.dropout ?? 0;
    const h = p > 0 && ctx?.training ? dropout(x, p, layer, ctx) : x;
    return add(y, matmul(mul(matmul(h, adapter.A), adapter.scaling), adapter.B));
  };
}

/** Throws one error naming every bad field of a {@link LoraConfig}. */
export function checkLoraConfig(config: LoraConfig): void {
  const problems: string[] = [];
  if (!(Number.isInteger(config.r) && config.r >= 1)) problems.push(`r must be an integer >= 1, got ${config.r}`);
  if (!(Number.isFinite(config.alpha) && config.alpha > 0)) problems.push(`alpha must be > 0, got ${config.alpha}`);
  const p = config.dropout ?? 0;
  if (!(p >= 0 && p < 1)) problems.push(`dropout must be in [0, 1), got ${p}`);
  if (problems.length) throw new Error(`LoRA: ${problems.join("; ")}`);
}

/** "all-linear", a pattern or a list of them, as text for messages. */
function describeTargets(targets: LoraConfig["targetModules"]): string {
  const list = Array.isArray(targets) ? targets : [targets ?? ALL_LINEAR];
  return list.map(String).join(", ");
}

/**
 * The {@link Linear} layers `targets` selects (see {@link LoraConfig.targetModules}), with their names; throws
 * when it selects none (a pattern that matches nothing is a mistake), naming the pattern and the linear layers.
 */
export function loraTargets(model: Module, targets: LoraConfig["targetModules"] = ALL_LINEAR): [string, Linear][] {
  const list = (Array.isArray(targets) ? targets : [targets]) as NamePattern[];
  const all = list.some((t) => t === ALL_LINEAR);
  const linear = model.namedModules().filter(([, m]) => m instanceof Linear) as [string, Linear][];
  const hits = linear.filter(([name]) => all || list.some((t) => matchesName(t, name)));
  if (!hits.length) {
    const names = linear.map(([n]) => n);
    throw new Error(
      `LoRA: target_modules '${describeTargets(targets)}' matches no linear layer; the linear layers are ` +
        `${names.slice(0, 6).join(", ")}${names.length > 6 ? `, and ${names.length - 6} more` : ""}`,
    );
  }
  return hits;
}

/**
 * Adds a LoRA adapter to every target layer (PEFT's `get_peft_model`): registers `lora_A.weight` and
 * `lora_B.weight` on it, wraps its op, and freezes every other parameter of `model`. Returns the adapted
 * layers' names. Throws before changing anything on a bad config, a target pattern that matches nothing,
 * or a layer that already has an adapter. Build optimizers afterwards, from
 * `model.namedParameters({ trainable: true })`.
 *
 * @example
 * ```ts
 * import { applyLora, GPT } from "@lowp/core";
 * const model = new GPT({ vocabSize: 16, contextLength: 8, dModel: 16, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * applyLora(model, { r: 4, alpha: 8 });
 * console.assert(model.namedParameters({ trainable: true })[0][0] === "transformer.h.0.attn.c_attn.lora_A.weight");
 * ```
 */
export function applyLora(model: Module, config: LoraConfig): string[] {
  checkLoraConfig(config);
  const targets = loraTargets(model, config.targetModules);
  const taken = targets.filter(([, layer]) => adapters.has(layer)).map(([n]) => n);
  if (taken.length) throw new Error(`LoRA: layers with an adapter already (merge it first): ${taken.join(", ")}`);
  model.freeze();
  for (const [, layer] of targets) {
    const adapter = new LoraAdapter(layer, config, config.seed ?? layer.init.seed, layer.op);
    layer.registerParameter("lora_A.weight", adapter.A);
    layer.registerParameter("lora_B.weight", adapter.B);
    adapters.set(layer, adapter);
    layer.op = loraOp(adapter);
  }
  return targets.map(([n]) => n);
}

/** The update the adapter adds to the weight: (α/r)·A·B, [in, out] (the adapter's own parameters are not moved). */
export function loraDelta(adapter: LoraAdapter): Tensor {
  return noGrad(() => tidy(() => mul(matmul(adapter.A, adapter.B), adapter.scaling)));
}

/**
 * Removes the adapter of `layer` (its parameters are unregistered and disposed) and puts its base op back;
 * returns the adapter's update (α/r)·A·B, [in, out], for the caller to fold into the base weight (the caller
 * disposes it). Throws when the layer has none.
 */
export function removeLora(layer: Linear): Tensor {
  const adapter = adapters.get(layer);
  if (!adapter) throw new Error(`LoRA: ${layer.name} has no adapter`);
  const delta = loraDelta(adapter).keep();
  adapters.delete(layer);
  layer.op = adapter.baseOp;
  layer.removeParameter("lora_A.weight")?.dispose();
  layer.removeParameter("lora_B.weight")?.dispose();
  return delta;
}

/**
 * Folds every adapter of `model` whose layer has an f32 weight into that weight, `W ← W + (α/r)·A·B`
 * (PEFT's `merge_and_unload`), and removes the adapters: the model then has its plain parameter names and
 * computes the same function within the matmul tolerance. Layers whose base has no f32 weight (a QLoRA base)
 * are an error here; `mergeQLora` (formats) handles them. Returns the merged layers' names. Frozen flags are
 * left as they are.
 */
export function mergeLora(model: Module): string[] {
  const layers = model.namedModules().filter(([, m]) => m instanceof Linear && adapters.has(m)) as [
    string,
    Linear,
  ][];
  const noWeight = layers.filter(([, layer]) => layer.parameter("weight") === undefined).map(([n]) => n);
  if (noWeight.length) {
    throw new Error(`mergeLora: ${noWeight.join(", ")} has no f32 weight (a quantized base): use mergeQLora`);
  }
  for (const [, layer] of layers) {
    const delta = removeLora(layer);
    noGrad(() => tidy(() => void layer.weight.assign(add(layer.weight, delta))));
    delta.dispose();
  }
  return layers.map(([n]) => n);
}
