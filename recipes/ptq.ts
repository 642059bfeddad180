/**
 * Post-training quantization of a trained model's linear layers (the library
 * behind `deno task ptq`): RTN, GPTQ (Frantar et al. 2022) and AWQ (Lin et
 * al. 2023). Layers are quantized in forward order, each from the inputs the
 * already quantized model gives it (the reference tools' sequential mode),
 * and each reports its layer-wise error `‖XW − XŴ‖² / ‖XW‖²` on those inputs
 * next to RTN's on the same inputs. Each layer's weight also comes out in the
 * format's storage layout (`PtqOptions.onRecord`, what `--pack` stores): RTN's
 * is the format's `quantize` of the original weight, GPTQ's its own codes and
 * group parameters (`GptqResult.quantized`), AWQ's the format's `quantize` of
 * the clamped, scaled weight it rounded; re-quantizing the values would fit
 * new group parameters and move some of them.
 *
 * @module
 */
import {
  type GPT,
  Linear,
  matchesName,
  matmul,
  type Module,
  type NamePattern,
  noGrad,
  reshape,
  slice,
  square,
  sub,
  sum,
  type Tensor,
  tidy,
} from "@lowp/core";
import {
  awqModel,
  type GptqOptions,
  gptqQuantize,
  HessianAccumulator,
  type OperandPrecision,
  pack,
  packedBytes,
  parseFormat,
  type Quantized,
  rtnWeight,
  scalarGrid,
  sharingText,
  weightQuantOptions,
  type WeightQuantSpec,
} from "@lowp/formats";

/** The PTQ methods. */
export const PTQ_METHODS = ["rtn", "gptq", "awq"] as const;
/** A PTQ method. */
export type PtqMethod = typeof PTQ_METHODS[number];

/** Options of {@link quantizeModel}. */
export interface PtqOptions {
  /** `rtn`, `gptq` or `awq`. */
  readonly method: PtqMethod;
  /** The weight format and its scale sharing. */
  readonly spec: WeightQuantSpec;
  /** Calibration tokens, i32 [samples, context] (`calibrationTokens`). */
  readonly calibration: Tensor;
  /** Linear layers left in f32 (a name pattern; default none). */
  readonly skip?: NamePattern;
  /** GPTQ's settings (block size, dampening, act-order). */
  readonly gptq?: Omit<GptqOptions, "name" | "onMessage">;
  /** Calibration sequences per forward pass (default 32). */
  readonly batchSize?: number;
  /** Called after each layer. */
  readonly onLayer?: (report: PtqLayerReport) => void;
  /** Messages worth a line (dampening retries). */
  readonly onMessage?: (text: string) => void;
  /**
   * Receives each quantized layer's weight in the format's storage layout (`layer` is the layer's name), whose
   * `dequantize` is the layer's new weight bit for bit (except NaN in a format with no NaN code, as the
   * format's own `quantize`). Its tensors are disposed once the returned promise settles: pack them within.
   * Not available for AWQ yet (an error says so).
   */
  readonly onRecord?: (layer: string, record: Quantized) => void | Promise<void>;
}

/** What one layer's quantization gave. */
export interface PtqLayerReport {
  /** Dotted layer name. */
  readonly name: string;
  /** Weight shape [in, out]. */
  readonly shape: readonly number[];
  /** `‖XW − XŴ‖² / ‖XW‖²` on the layer's calibration inputs (for AWQ, Ŵ includes the scales). */
  readonly relError: number;
  /** The same for plain RTN of the layer's weight on the same inputs. */
  readonly rtnRelError: number;
  /** Seconds spent on the layer. */
  readonly seconds: number;
  /** GPTQ: the dampening λ used (after any retries). */
  readonly damp?: number;
  /** AWQ: the chosen α of the layer's scales (null: no α gave a finite error, so no scaling). */
  readonly alpha?: number | null;
}

/** The linear layers PTQ quantizes, in forward order, with `skip` left out. */
export function ptqLayers(model: Module, skip?: NamePattern): [string, Linear][] {
  return model.namedModules().filter(([name, m]) =>
    m instanceof Linear && !(skip !== undefined && matchesName(skip, name))
  ) as [string, Linear][];
}

/**
 * Checks every layer against the spec before anything changes: one error
 * naming each layer whose input width the groups or blocks do not divide,
 * or, for GPTQ, the format when it has no scalar grid per group.
 */
export function checkPtqLayers(layers: readonly [string, Linear][], spec: WeightQuantSpec, method: PtqMethod): void {
  if (!layers.length) throw new Error("ptq: no linear layer to quantize (the skip pattern matches them all)");
  const { quantizer } = weightQuantOptions(spec);
  const block = typeof spec.sharing === "object" ? spec.sharing.group : quantizer.blockSize ?? 1;
  const bad = layers.filter(([, l]) => l.inFeatures % block !== 0);
  if (bad.length) {
    const names = bad.map(([n, l]) => `${n} [${l.inFeatures}, ${l.outFeatures}]`).join(", ");
    throw new Error(
      `ptq: ${spec.format} ${sharingText(spec)} needs input widths that are multiples of ${block}: ${names}`,
    );
  }
  // GPTQ rounds one row at a time on the format's grid: a format without one fails here, not after calibration.
  if (method === "gptq") {
    scalarGrid(spec, new Float32Array(block), block, 1, `ptq: --method gptq --format ${spec.format}`);
  }
}

/**
 * The inputs `layer` receives when `model` runs on the calibration tokens, in
 * batches of `batchSize` sequences, as [tokens, in] tensors (the caller
 * disposes them).
 */
export function layerInputs(model: GPT, layer: Linear, calibration: Tensor, batchSize = 32): Tensor[] {
  const [samples] = calibration.shape;
  const captured: Tensor[] = [];
  const remove = layer.onForward((_name, input) => {
    captured.push(input.keep());
  });
  try {
    for (let start = 0; start < samples; start += batchSize) {
      const rows = Math.min(batchSize, samples - start);
      noGrad(() => tidy(() => model.forward(sliceRows(calibration, start, rows), { training: false })));
    }
  } finally {
    remove();
  }
  return captured.map((x) => {
    const flat = noGrad(() => reshape(x, [x.size / layer.inFeatures, layer.inFeatures])).keep();
    if (flat !== x) x.dispose();
    return flat;
  });
}

function sliceRows(t: Tensor, start: number, rows: number): Tensor {
  if (start === 0 && rows === t.shape[0]) return t;
  return slice(t, [start, 0], [rows, t.shape[1]]);
}

/** `Σ‖X(W − Ŵ)‖²` and `Σ‖XW‖²` over the batches, for each Ŵ. */
async function outputErrors(inputs: readonly Tensor[], weight: Tensor, candidates: readonly Tensor[]) {
  const parts = noGrad(() =>
    tidy(() => {
      const signal: Tensor[] = [], noise: Tensor[][] = candidates.map(() => []);
      for (const x of inputs) {
        const y = matmul(x, weight);
        signal.push(sum(square(y)));
        candidates.forEach((w, i) => {
          noise[i].push(sum(square(sub(y, matmul(x, w)))));
        });
      }
      return [...signal, ...noise.flat()].map((t) => t.keep());
    })
  );
  const values: number[] = [];
  for (const t of parts) {
    values.push(await t.item());
    t.dispose();
  }
  const signal = values.slice(0, inputs.length).reduce((a, b) => a + b, 0);
  return candidates.map((_, i) => {
    const noise = values.slice(inputs.length * (i + 1), inputs.length * (i + 2)).reduce((a, b) => a + b, 0);
    return signal > 0 ? noise / signal : noise === 0 ? 0 : Infinity;
  });
}

/**
 * Quantizes the linear layers of `model` in place (their weights replaced by
 * the quantized values, still f32) by `opts.method`, layer by layer in
 * forward order, and returns one report per layer. Throws before changing
 * anything when a layer's width does not fit the format.
 */
export async function quantizeModel(model: GPT, opts: PtqOptions): Promise<PtqLayerReport[]> {
  const layers = ptqLayers(model, opts.skip);
  checkPtqLayers(layers, opts.spec, opts.method);
  const reports: PtqLayerReport[] = [];
  if (opts.method === "awq") {
    let started = performance.now();
    await awqModel(model, opts.calibration, opts.spec, {
      skip: opts.skip,
      batchSize: opts.batchSize,
      onRecord: opts.onRecord,
      onLayer: (r) => {
        const report: PtqLayerReport = {
          name: r.name,
          shape: [...r.shape],
          relError: r.relError,
          rtnRelError: r.rtnRelError,
          seconds: (performance.now() - started) / 1000, // since the last report: a block's search counts once
          alpha: r.alpha,
        };
        started = performance.now();
        reports.push(report);
        opts.onLayer?.(report);
      },
    });
    return reports;
  }
  for (const [name, layer] of layers) {
    const started = performance.now();
    const inputs = layerInputs(model, layer, opts.calibration, opts.batchSize);
    const made: Tensor[] = [...inputs];
    try {
      const rtn = noGrad(() => rtnWeight(layer.weight, opts.spec, name)).keep();
      made.push(rtn);
      let quantized = rtn, damp: number | undefined, record: Quantized | null = null;
      if (opts.method === "gptq") {
        const hessian = new HessianAccumulator(layer.inFeatures);
        for (const x of inputs) await hessian.add(x);
        const result = await gptqQuantize(layer.weight, hessian.hessian(), opts.spec, {
          ...opts.gptq,
          name,
          onMessage: opts.onMessage,
        });
        quantized = result.weight.keep();
        made.push(quantized, ...result.quantized.parts.map((p) => p.codes));
        damp = result.damp;
        record = result.quantized;
      } else if (opts.onRecord) {
        // RTN's storage: the format's quantize of the original weight, whose dequantization is `rtn`.
        const { quantizer, options } = weightQuantOptions(opts.spec);
        record = quantizer.quantize(layer.weight, options);
        made.push(...record.parts.map((p) => p.codes));
      }
      if (record) await opts.onRecord?.(name, record);
      const [relError, rtnRelError] = await outputErrors(inputs, layer.weight, [quantized, rtn]);
      noGrad(() => layer.weight.assign(quantized));
      const report: PtqLayerReport = {
        name,
        shape: [...layer.weight.shape],
        relError,
        rtnRelError,
        seconds: (performance.now() - started) / 1000,
        ...(damp === undefined ? {} : { damp }),
      };
      reports.push(report);
      opts.onLayer?.(report);
    } finally {
      for (const t of made) if (t !== layer.weight) t.dispose();
    }
  }
  return reports;
}

/**
 * The forward-input operand that quantizes activations to `format` per
 * tensor at run time (W8A8 and the like): INT-k with one scale per tensor,
 * plain element formats (FP8, ...) with a per-tensor scale from the current
 * amax, block formats (MX, NVFP4) with their own blocks.
 */
export function activationOperand(format: string): OperandPrecision {
  const q = parseFormat(format);
  if (q.blockSize !== null) return { format: q.name };
  if (/^u?int\d$/.test(q.name)) return { format: q.name, granularity: "tensor" };
  return { format: q.name, scaling: "current" };
}

/** Bytes of a layer's weight stored packed in `spec` (codes and every level of scales). */
export async function packedWeightBytes(weight: Tensor, spec: WeightQuantSpec): Promise<number> {
  const { quantizer, options } = weightQuantOptions(spec);
  const q = quantizer.quantize(weight, options);
  try {
    return packedBytes(await pack(q));
  } finally {
    for (const p of q.parts) p.codes.dispose();
  }
}
