/**
 * AWQ of a whole {@link GPT}, block by block (AutoAWQ's `quantize` loop):
 * capture every linear's calibration input in the block, search the scales
 * of each scaling group, fold them into the previous operation, then run the
 * clip search and replace each linear's weight by its quantized values
 * (dequantized f32, in place). The scaling groups of a block (AutoAWQ's
 * `get_layers_for_scaling` for GPT-2-like models, plus MPT's fused-QKV
 * v → out_proj group):
 *
 * 1. `ln_1` → `attn.c_attn`: folded into the norm's weight (and bias);
 * 2. the V columns of `attn.c_attn` → `attn.c_proj`: folded into those
 *    columns of c_attn and its bias (attention is linear in V per channel);
 * 3. `ln_2` → `mlp.c_fc` (SwiGLU: `gate_proj` and `up_proj` together);
 * 4. GELU → `mlp.c_proj`: no linear op before it, so the layer divides its
 *    input by s (AutoAWQ's `ScaledActivation`), implemented as a wrapper of
 *    `Linear.op` reading the buffer `awq_input_scale` of the layer (saved with
 *    the model's buffers; {@link restoreAwqInputScales} re-attaches it after
 *    loading). SwiGLU: `up_proj` → `down_proj`, folded into up_proj's columns.
 *
 * Differences from the references, on purpose: by default the scale search
 * of every group measures the layers' own output error (from the Gram
 * matrix, cheap); the references measure the attention or MLP block's output
 * for groups 1 and 3 (`module2inspect`), which `objective: "block"` does at
 * the price of 20 block forwards per group (about 3× slower here, and no
 * better on the small trained GPTs measured); the clip search skips Q and
 * K and clips V's columns of the fused c_attn (the references skip q/k by
 * name, so a fused GPT-2 c_attn is either clipped whole or not at all); and
 * by default the calibration inputs of block i come from the already
 * quantized blocks before it (`sequential`), whereas llm-awq and AutoAWQ
 * feed every block the full-precision model's activations
 * (`sequential: false` does that).
 *
 * @module
 */
import {
  add,
  clone,
  div,
  type GPT,
  LayerNorm,
  Linear,
  type LinearOp,
  matchesName,
  matmul,
  type Module,
  mul,
  type NamePattern,
  noGrad,
  reshape,
  RMSNorm,
  slice,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
} from "@lowp/core";
import { AwqInputStats, type AwqOptions, awqSearchClip, awqSearchScales, relativeOutputError } from "./awq.ts";
import { rtnWeight, weightQuantOptions, type WeightQuantSpec } from "./weight_spec.ts";
import type { Quantized } from "../spec.ts";

/** Name of the buffer holding the per-channel input divisor of a linear layer with no foldable op before it. */
export const AWQ_INPUT_SCALE = "awq_input_scale";

/** One quantized layer's result. */
export interface AwqLayerReport {
  /** Full layer name (`transformer.h.0.attn.c_attn`). */
  readonly name: string;
  /** Weight shape [in, out]. */
  readonly shape: readonly [number, number];
  /** α of its scaling group (null: no α gave a finite error, s = 1). */
  readonly alpha: number | null;
  /** Where its scales were folded: a norm, `<linear>[from:to]` columns, or `<layer>.awq_input_scale`. */
  readonly foldedInto: string;
  /** ‖WX − ŴX‖² / ‖WX‖² on its calibration inputs, Ŵ including the scales (W: the folded f32 layer). */
  readonly relError: number;
  /** The same for plain RTN of the original weight. */
  readonly rtnRelError: number;
  /** Calibration tokens left out because a value was not finite. */
  readonly skippedTokens: number;
}

/** Options of {@link awqModel}. */
export interface AwqModelOptions extends Omit<AwqOptions, "name" | "clipColumns" | "outputError"> {
  /**
   * What the scale search of `ln_1 → c_attn` and `ln_2 → mlp` measures: `layer` (default) the layers' own
   * outputs; `block` the attention or MLP block's output, as the references' `module2inspect`.
   */
  readonly objective?: "block" | "layer";
  /** Layers to keep in f32 (they still take folded scales, exactly). Default: none. */
  readonly skip?: NamePattern;
  /** Called after each layer is quantized. */
  readonly onLayer?: (r: AwqLayerReport) => void;
  /** Calibration inputs of block i from the quantized blocks before it (default true); false: from the f32 model. */
  readonly sequential?: boolean;
  /** Calibration sequences per forward pass (default 32). */
  readonly batchSize?: number;
  /** Quantize the weights (default true); false: only search and fold the scales (the f32 model computes the same). */
  readonly quantize?: boolean;
  /**
   * Receives each quantized layer's weight in the format's storage layout (codes and scales of the clamped,
   * scaled weight AWQ rounded; its `dequantize` is the layer's new weight bit for bit), e.g. to pack it. Its
   * tensors are disposed once the returned promise settles.
   */
  readonly onRecord?: (layer: string, record: Quantized) => void | Promise<void>;
}

/** Where a scaling group's 1/s goes. */
type Prev =
  | { kind: "norm"; module: LayerNorm | RMSNorm }
  | { kind: "columns"; layer: Linear; from: number }
  | { kind: "input"; layer: Linear };

interface ScalingGroup {
  prev: Prev;
  layers: string[];
  /** The module whose output the scale search measures (the references' `module2inspect`), if not the layers. */
  inspect?: string;
}

function describePrev(p: Prev, width: number): string {
  if (p.kind === "norm") return p.module.name;
  if (p.kind === "columns") return `${p.layer.name}[${p.from}:${p.from + width}]`;
  return `${p.layer.name}.${AWQ_INPUT_SCALE}`;
}

function linearOf(model: GPT, name: string): Linear {
  const m = model.getModule(name);
  if (!(m instanceof Linear)) throw new Error(`awqModel: ${name} is a ${m.constructor.name}, not a Linear`);
  return m;
}

function normOf(model: GPT, name: string): LayerNorm | RMSNorm {
  const m = model.getModule(name);
  if (!(m instanceof LayerNorm || m instanceof RMSNorm)) {
    throw new Error(`awqModel: ${name} is a ${m.constructor.name}, not a LayerNorm or RMSNorm`);
  }
  return m;
}

/** The scaling groups of block `i`, in the order the block runs them. */
function scalingGroups(model: GPT, i: number): ScalingGroup[] {
  const p = `transformer.h.${i}`, d = model.cfg.dModel;
  const swiglu = model.cfg.mlp === "swiglu";
  return [
    { prev: { kind: "norm", module: normOf(model, `${p}.ln_1`) }, layers: [`${p}.attn.c_attn`], inspect: `${p}.attn` },
    {
      prev: { kind: "columns", layer: linearOf(model, `${p}.attn.c_attn`), from: 2 * d },
      layers: [`${p}.attn.c_proj`],
    },
    {
      prev: { kind: "norm", module: normOf(model, `${p}.ln_2`) },
      layers: swiglu ? [`${p}.mlp.gate_proj`, `${p}.mlp.up_proj`] : [`${p}.mlp.c_fc`],
      inspect: `${p}.mlp`,
    },
    swiglu
      ? {
        prev: { kind: "columns", layer: linearOf(model, `${p}.mlp.up_proj`), from: 0 },
        layers: [`${p}.mlp.down_proj`],
      }
      : { prev: { kind: "input", layer: linearOf(model, `${p}.mlp.c_proj`) }, layers: [`${p}.mlp.c_proj`] },
  ];
}

/** Replaces parameter `p` by `value` (same shape) in place; `value` is released. */
function replace(p: Tensor, value: Tensor): void {
  p.assign(value);
  value.dispose();
}

const SCALED = Symbol("awqInputScale");

/**
 * Makes `layer` divide its input by the channels of its buffer
 * `awq_input_scale` before its current op (idempotent).
 */
export function useAwqInputScale(layer: Linear): void {
  const inner = layer.op as LinearOp & { [SCALED]?: true };
  if (inner[SCALED]) return;
  const op: LinearOp & { [SCALED]?: true } = (x, l, ctx) => {
    const s = l.buffer(AWQ_INPUT_SCALE);
    return inner(s ? div(x, s) : x, l, ctx);
  };
  op[SCALED] = true;
  layer.op = op;
}

/** After loading a model with `awq_input_scale` buffers (e.g. a saved AWQ model), attaches them to their layers. */
export function restoreAwqInputScales(model: Module): string[] {
  const names: string[] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof Linear && m.buffer(AWQ_INPUT_SCALE)) {
      useAwqInputScale(m);
      names.push(name);
    }
  }
  return names;
}

/** Folds 1/s into `prev` and s into the rows of `layers`: the block computes the same function. */
function foldScales(prev: Prev, layers: Linear[], scales: Float32Array): void {
  const n = scales.length;
  noGrad(() => {
    const like = layers[0].weight;
    const row = tensor(scales, { shape: [n, 1], backend: like.backend }).keep();
    const flat = reshape(row, [n]).keep();
    try {
      if (prev.kind === "norm") {
        replace(prev.module.weight, div(prev.module.weight, flat));
        if (prev.module instanceof LayerNorm) replace(prev.module.bias, div(prev.module.bias, flat));
      } else if (prev.kind === "columns") {
        const cols = prev.layer.outFeatures, div1 = new Float32Array(cols).fill(1);
        for (let c = 0; c < n; c++) div1[prev.from + c] = scales[c];
        const d = tensor(div1, { shape: [cols], backend: like.backend });
        replace(prev.layer.weight, div(prev.layer.weight, d));
        if (prev.layer.bias) replace(prev.layer.bias, div(prev.layer.bias, d));
        d.dispose();
      } else {
        const old = prev.layer.buffer(AWQ_INPUT_SCALE);
        prev.layer.registerBuffer(AWQ_INPUT_SCALE, old ? mul(old, flat) : clone(flat));
        useAwqInputScale(prev.layer);
      }
      for (const l of layers) replace(l.weight, mul(l.weight, row));
    } finally {
      row.dispose();
      flat.dispose();
    }
  });
}

/**
 * The summed squared error of `module`'s outputs on the captured `pairs`
 * ([input, f32 output]) when `layers` compute with the candidate weights.
 */
async function moduleError(
  module: Module,
  layers: Linear[],
  pairs: [Tensor, Tensor][],
  approx: readonly Tensor[],
): Promise<number> {
  const saved = layers.map((l) => l.op);
  layers.forEach((l, k) => {
    l.op = (x, layer) => {
      const y = matmul(x, approx[k]);
      return layer.bias ? add(y, layer.bias) : y;
    };
  });
  try {
    let error = 0;
    for (const [x, y] of pairs) {
      const e = noGrad(() =>
        tidy(() => {
          const d = sub(module.call(x), y);
          return sum(mul(d, d));
        })
      );
      error += await e.item();
      e.dispose();
    }
    return error;
  } finally {
    layers.forEach((l, k) => (l.op = saved[k]));
  }
}

/** Inputs of block 0 for each batch of calibration sequences (kept; the caller disposes them). */
function firstBlockInputs(model: GPT, calibration: Tensor, batch: number): Tensor[] {
  // ln_1's input is the block's input, and its hook fires before attention runs.
  const first = model.getModule("transformer.h.0.ln_1");
  const stop = new Error("awq: block 0 input captured");
  const out: Tensor[] = [];
  const [n, t] = calibration.shape;
  for (let b = 0; b < n; b += batch) {
    let captured: Tensor | null = null;
    const remove = first.onForward((_name, x) => {
      captured = x.keep();
      throw stop; // as the references' Catcher: nothing after block 0's first norm runs
    });
    try {
      noGrad(() => tidy(() => model.forward(slice(calibration, [b, 0], [Math.min(batch, n - b), t]))));
    } catch (e) {
      if (e !== stop) throw e;
    } finally {
      remove();
    }
    out.push(captured!);
  }
  return out;
}

/** Runs `block` on each batch; returns the outputs (kept). */
function runBlock(block: Module, inputs: Tensor[]): Tensor[] {
  return inputs.map((x) => noGrad(() => tidy(() => block.call(x))).keep());
}

/**
 * AWQ of every linear layer of `model`'s blocks, in place, with calibration
 * tokens `calibration` (i32 [n, T]) and weight format `spec`. The folded
 * model (norm weights, c_attn's V columns, `awq_input_scale` buffers) with
 * the quantized weights is what to save. Returns one report per quantized
 * layer, in order.
 */
export async function awqModel(
  model: GPT,
  calibration: Tensor,
  spec: WeightQuantSpec,
  opts: AwqModelOptions = {},
): Promise<AwqLayerReport[]> {
  if (calibration.rank !== 2 || calibration.dtype !== "i32" || calibration.shape[0] < 1) {
    throw new Error(`awqModel: calibration ${calibration.describe()} must be i32 [samples >= 1, T] tokens`);
  }
  const batch = opts.batchSize ?? 32, sequential = opts.sequential ?? true, quantize = opts.quantize ?? true;
  const skipped = (name: string) => opts.skip !== undefined && matchesName(opts.skip, name);
  const reports: AwqLayerReport[] = [];
  if (model.cfg.nLayers === 0) return reports;
  let inputs = firstBlockInputs(model, calibration, batch);
  try {
    for (let i = 0; i < model.cfg.nLayers; i++) {
      const block = model.getModule(`transformer.h.${i}`);
      const groups = scalingGroups(model, i);
      const names = [...new Set(groups.flatMap((g) => g.layers))];
      const linears = new Map(names.map((n) => [n, linearOf(model, n)]));
      const stats = new Map(names.map((n) => [n, new AwqInputStats(linears.get(n)!.inFeatures, n)]));
      const inspected = opts.objective === "block" ? groups.flatMap((g) => (g.inspect ? [g.inspect] : [])) : [];
      const pairs = new Map<string, [Tensor, Tensor][]>(inspected.map((n) => [n, []]));
      // Originals for the RTN reference, before any folding.
      const originals = new Map(names.map((n) => [n, noGrad(() => clone(linears.get(n)!.weight)).keep()]));
      let next: Tensor[] = [];
      try {
        // 1. calibration inputs of every linear (and the f32 block's outputs when not sequential)
        for (const x of inputs) {
          const seen: [string, Tensor][] = [];
          const removers = names.map((n) =>
            linears.get(n)!.onForward((name, input) => seen.push([name, input.keep()]))
          );
          for (const n of inspected) {
            removers.push(
              model.getModule(n).onForward((_, input, output) => {
                // Aliases: the block's input is also its first linear's input, which is disposed after its statistics.
                pairs.get(n)!.push([input.alias().keep(), output.alias().keep()]);
              }),
            );
          }
          try {
            const y = noGrad(() => tidy(() => block.call(x))).keep();
            if (sequential) y.dispose();
            else next.push(y);
          } finally {
            removers.forEach((r) => r());
          }
          for (const [name, input] of seen) await stats.get(name)!.add(input);
          seen.forEach(([, t]) => t.dispose());
        }
        // 2. scales of every group, on the block as captured; then fold them all
        const found: { group: ScalingGroup; scales: Float32Array; alpha: number | null }[] = [];
        for (const group of groups) {
          const active = group.layers.filter((n) => !skipped(n));
          if (!active.length) continue;
          const captured = group.inspect && inspected.length ? pairs.get(group.inspect) : undefined;
          if (captured && !captured.length) throw new Error(`awqModel: no output of ${group.inspect} was captured`);
          const outputError = captured
            ? (approx: readonly Tensor[]) =>
              moduleError(model.getModule(group.inspect!), active.map((n) => linears.get(n)!), captured, approx)
            : undefined;
          const { scales, alpha } = await awqSearchScales(
            active.map((n) => linears.get(n)!.weight),
            stats.get(group.layers[0])!,
            spec,
            { ...opts, name: group.layers.join("+"), outputError },
          );
          found.push({ group, scales, alpha });
        }
        for (const f of found) foldScales(f.group.prev, f.group.layers.map((n) => linears.get(n)!), f.scales);
        // 3. clip search and quantization of each layer, in the folded model
        const d = model.cfg.dModel;
        for (const f of quantize ? found : []) {
          for (const name of f.group.layers) {
            if (skipped(name)) continue;
            const layer = linears.get(name)!, st = stats.get(name)!;
            const clipColumns: [number, number] = name.endsWith(".attn.c_attn")
              ? [2 * d, 3 * d]
              : [0, layer.outFeatures];
            const { weight, clamped } = await awqSearchClip(layer.weight, st, f.scales, spec, {
              ...opts,
              name,
              clipColumns,
            });
            if (opts.onRecord) {
              const { quantizer, options } = weightQuantOptions(spec);
              const record = quantizer.quantize(clamped, options);
              try {
                await opts.onRecord(name, record);
              } finally {
                for (const part of record.parts) part.codes.dispose();
              }
            }
            clamped.dispose();
            const [hs, rtn] = noGrad(() => {
              const col = tensor(f.scales, { shape: [f.scales.length, 1], backend: weight.backend });
              const h = div(div(st.gram, col), reshape(col, [1, f.scales.length]));
              col.dispose();
              return [h, rtnWeight(originals.get(name)!, spec, name)];
            });
            const relError = await relativeOutputError(hs, layer.weight, weight);
            const rtnRelError = await relativeOutputError(st.gram, originals.get(name)!, rtn);
            hs.dispose();
            rtn.dispose();
            replace(layer.weight, weight);
            const report: AwqLayerReport = {
              name,
              shape: [layer.inFeatures, layer.outFeatures],
              alpha: f.alpha,
              foldedInto: describePrev(f.group.prev, f.scales.length),
              relError,
              rtnRelError,
              skippedTokens: st.skippedTokens,
            };
            reports.push(report);
            opts.onLayer?.(report);
          }
        }
        if (sequential) next = runBlock(block, inputs);
      } catch (e) {
        next.forEach((t) => t.dispose());
        throw e;
      } finally {
        stats.forEach((s) => s.dispose());
        originals.forEach((t) => t.dispose());
        pairs.forEach((list) => list.forEach(([x, y]) => [x, y].forEach((t) => t.dispose())));
      }
      inputs.forEach((t) => t.dispose());
      inputs = next;
    }
  } finally {
    inputs.forEach((t) => t.dispose());
  }
  return reports;
}
