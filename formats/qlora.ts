/**
 * QLoRA (Dettmers et al. 2023, arXiv 2305.14314): LoRA adapters (core's
 * `applyLora`) on a base weight frozen in NF4 with double-quantized absmax
 * (`nf4-dq`: blocks of 64 along the input axis, as bitsandbytes blocks the
 * rows of an `nn.Linear` weight; absmax in int8 blocks of 256, formats/nf4.ts
 * says how it differs from bitsandbytes' dynamic 8-bit map). The base is a
 * {@link QuantTensor}: packed codes on the device (about 0.52 bytes per
 * value), dequantized by a kernel in each forward and again in the backward
 * for the input gradient, never stored in f32; the layer's f32 weight
 * parameter is removed and freed. Only the adapters train (in f32).
 *
 * {@link mergeAdapters} folds adapters into their base (PEFT's
 * `merge_and_unload`), optionally re-quantizing the merged weight. The known
 * QLoRA pitfall: the adapters were trained against the dequantized NF4 base,
 * so `dequant(Q) + (α/r)·A·B` is the weight they fit; re-quantizing that sum
 * moves every weight again (its own rounding error), and the merged model no
 * longer computes what the adapter model did.
 *
 * @module
 */
import {
  add,
  applyLora,
  checkLoraConfig,
  Linear,
  type LinearOp,
  loraAdapterOf,
  type LoraConfig,
  loraTargets,
  matmul,
  type Module,
  noGrad,
  plainLinear,
  record,
  removeLora,
  type Tensor,
  tidy,
} from "@lowp/core";
import { QuantTensor } from "./quant_tensor.ts";
import { parseFormat } from "./registry.ts";

/** The base format of QLoRA: NF4, blocks of 64, double-quantized absmax. */
export const QLORA_FORMAT = "nf4-dq";

const bases = new WeakMap<Linear, QuantTensor>();

/** The frozen packed base weight of a QLoRA layer, or undefined. */
export function quantizedBaseOf(layer: Linear): QuantTensor | undefined {
  return bases.get(layer);
}

/**
 * The op of a linear layer whose weight is the frozen packed `base` ([in, out]): `x·dequant(base) + b`, with
 * the input gradient `dy·dequant(base)ᵀ` dequantizing again (no f32 copy of the weight outlives a GEMM).
 */
export function quantizedBaseLinear(base: QuantTensor): LinearOp {
  return (x, layer) => {
    const product = (a: Tensor, transB: boolean) => {
      const w = base.dequantize();
      const out = matmul(a, w, { transB });
      w.dispose();
      return out;
    };
    const y = record(noGrad(() => product(x, false)), `quantizedBaseLinear(${layer.name})`, [x], (g) => [
      product(g, true),
    ]);
    return layer.bias ? add(y, layer.bias) : y;
  };
}

/**
 * QLoRA on `model`: every target layer's f32 weight is quantized to {@link QLORA_FORMAT} along its input axis,
 * held packed on the device (released with the model) and removed as a parameter; then core's `applyLora`
 * adds the adapters and freezes everything else. Returns the adapted layers' names. Throws before changing
 * anything when the config is bad, the pattern matches nothing, a target's input width is not a multiple of 64,
 * a target already has an adapter or a quantized base, or runs under a training precision (QLoRA's base is
 * NF4: apply no precision with it).
 *
 * @example
 * ```ts
 * import { GPT } from "@lowp/core";
 * import { applyQLora } from "@lowp/formats";
 * const model = new GPT({ vocabSize: 16, contextLength: 8, dModel: 64, nLayers: 1, nHeads: 2 }, { seed: 0 });
 * applyQLora(model, { r: 8, alpha: 16 });
 * console.assert(model.getModule("transformer.h.0.attn.c_attn").parameter("weight") === undefined); // freed
 * ```
 */
export function applyQLora(model: Module, config: LoraConfig): string[] {
  checkLoraConfig(config);
  const targets = loraTargets(model, config.targetModules);
  const problems: string[] = [];
  for (const [name, layer] of targets) {
    if (loraAdapterOf(layer) || bases.has(layer)) problems.push(`${name} already has an adapter or a quantized base`);
    else if (layer.op !== plainLinear) {
      problems.push(`${name} runs under a training precision (QLoRA's base is NF4: apply no precision with it)`);
    } else if (layer.inFeatures % 64 !== 0) {
      problems.push(`${name} has ${layer.inFeatures} inputs, not a multiple of the NF4 block of 64`);
    }
  }
  if (problems.length) throw new Error(`QLoRA: ${problems.join("; ")}`);
  const packed: QuantTensor[] = [];
  try {
    for (const [, layer] of targets) {
      packed.push(noGrad(() => tidy(() => QuantTensor.fromTensor(layer.weight, QLORA_FORMAT, { axis: 0 }).keep())));
    }
  } catch (e) {
    packed.forEach((q) => q.dispose());
    throw e;
  }
  targets.forEach(([, layer], k) => {
    bases.set(layer, packed[k]);
    layer.own(packed[k]);
    layer.removeParameter("weight")?.dispose();
    layer.op = quantizedBaseLinear(packed[k]);
  });
  return applyLora(model, config);
}

/** Options of {@link mergeAdapters}. */
export interface MergeOptions {
  /**
   * Re-quantize each merged weight with this format along its input axis (quantize → dequantize, f32 values
   * on the format's grid), e.g. `nf4-dq` to get a QLoRA base back; default: keep the f32 sum.
   */
  readonly requantize?: string;
}

/**
 * Folds every adapter of `model` into its base (PEFT's `merge_and_unload`): `W ← base + (α/r)·A·B`, where
 * the base is the f32 weight or the dequantized QLoRA base; with `requantize` the sum is then put on that
 * format's grid. A QLoRA layer becomes a plain {@link Linear} again (same name, frozen flags of its bias;
 * the weight frozen like the base was) and its packed base is freed. Afterwards the model has its plain
 * parameter names (a checkpoint of it loads into a model without adapters). Returns the merged layers' names.
 */
export function mergeAdapters(model: Module, opts: MergeOptions = {}): string[] {
  const quantizer = opts.requantize ? parseFormat(opts.requantize) : null;
  const layers = model.namedModules().filter(([, m]) => m instanceof Linear && loraAdapterOf(m)) as [
    string,
    Linear,
  ][];
  for (const [name, layer] of layers) {
    const base = bases.get(layer);
    const delta = removeLora(layer);
    noGrad(() =>
      tidy(() => {
        let w = add(base ? base.dequantize() : layer.weight, delta);
        if (quantizer) w = quantizer.quantDequant(w, { axis: 0 });
        if (!base) return void layer.weight.assign(w);
        const plain = new Linear(name, layer.init, layer.inFeatures, layer.outFeatures, { bias: layer.bias !== null });
        plain.weight.assign(w).requiresGrad = false;
        if (layer.bias) plain.bias!.assign(layer.bias).requiresGrad = layer.bias.requiresGrad;
        model.setModule(name, plain);
      })
    );
    delta.dispose();
    if (base) {
      bases.delete(layer);
      base.dispose();
      layer.bias?.dispose();
    }
  }
  return layers.map(([n]) => n);
}

/**
 * Bytes of the model's frozen state: 4 per frozen f32 parameter value plus each QLoRA base's packed size
 * (`QuantTensor.byteSize`: codes, double-quantized absmax, meta). Trainable parameters and their optimizer
 * state are the optimizer's to count (`optimizerMemory`).
 */
export function frozenStateBytes(model: Module): number {
  const frozen = model.namedParameters({ trainable: false }).reduce((n, [, p]) => n + 4 * p.size, 0);
  let packed = 0;
  for (const [, m] of model.namedModules()) {
    const base = m instanceof Linear ? bases.get(m) : undefined;
    if (base) packed += base.byteSize;
  }
  return frozen + packed;
}
