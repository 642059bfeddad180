/**
 * How post-training quantization reads "format F, granularity G" for a linear
 * layer's weight. Weights are stored [in, out] (GPT-2's Conv1D layout), so
 * the reduction (input) axis is axis 0: groups and blocks run along it, one
 * scale per output column and group of `in` rows, as GPTQ and AWQ group the
 * input channels of each output row of PyTorch's [out, in] weight.
 *
 * - INT-k (`int2`…`int8`, `uint2`…`uint8`): `channel` is one scale per output
 *   column (`channel:1`); `group:N` is N input rows per scale (along axis 0).
 * - Block formats (MX, NVFP4, NF4): the block is the format's own (32, 16,
 *   64), along axis 0; `--granularity` may be omitted or must name that size.
 * - Plain element formats (`e4m3`, `e2m1`, …): no scale; no granularity.
 *
 * The RTN reference of every PTQ method is `rtnWeight`: the format's own
 * quantizer (`parseFormat`), so RTN here is bit for bit what `deno task
 * quantize` and the QAT presets do.
 *
 * @module
 */
import type { Tensor } from "@lowp/core";
import { parseFormat } from "../registry.ts";
import type { Granularity, QuantizeOptions, Quantizer } from "../spec.ts";

/** A weight format for PTQ: the format, and its scale sharing along the input axis. */
export interface WeightQuantSpec {
  /** Format name (`parseFormat`). */
  readonly format: string;
  /** `channel`, `{ group: N }`, the format's own `block` (MX, NVFP4, NF4) or `none` (plain element formats). */
  readonly sharing: "channel" | "block" | "none" | { readonly group: number };
}

/** The quantizer and the options that quantize a [in, out] weight by `spec` (axis 0 = input). */
export function weightQuantOptions(spec: WeightQuantSpec): { quantizer: Quantizer; options: QuantizeOptions } {
  const quantizer = parseFormat(spec.format);
  const s = spec.sharing;
  const granularity: Granularity | undefined = s === "channel"
    ? { kind: "channel", axis: 1 }
    : typeof s === "object"
    ? { kind: "group", size: s.group }
    : undefined;
  return { quantizer, options: granularity ? { granularity, axis: 0 } : { axis: 0 } };
}

/**
 * Parses `--format F [--granularity channel|group:N]` into a spec, with one
 * error naming what does not fit: a block format with another group size, a
 * plain element format with a granularity, an INT format without one
 * (default `channel`).
 */
export function parseWeightSpec(format: string, granularity?: string): WeightQuantSpec {
  const q = parseFormat(format);
  const where = `--format ${format}${granularity ? ` --granularity ${granularity}` : ""}`;
  const group = granularity === undefined ? undefined : /^group:(\d+)$/.exec(granularity);
  if (granularity !== undefined && granularity !== "channel" && !group) {
    throw new Error(`${where}: granularity must be channel or group:N`);
  }
  if (group && Number(group[1]) < 1) throw new Error(`${where}: group size must be at least 1`);
  if (q.blockSize !== null) {
    if (granularity === "channel" || (group && Number(group[1]) !== q.blockSize)) {
      throw new Error(`${where}: ${q.name} has fixed blocks of ${q.blockSize} (omit --granularity)`);
    }
    return { format: q.name, sharing: "block" };
  }
  if (/^u?int\d$/.test(q.name)) {
    return { format: q.name, sharing: group ? { group: Number(group[1]) } : "channel" };
  }
  if (granularity !== undefined) throw new Error(`${where}: ${q.name} has no scale, so it takes no granularity`);
  return { format: q.name, sharing: "none" };
}

/** The text of a spec's sharing, as the CLI writes it (`channel`, `group:128`, `block:32`, `none`). */
export function sharingText(spec: WeightQuantSpec): string {
  const s = spec.sharing;
  if (typeof s === "object") return `group:${s.group}`;
  return s === "block" ? `block:${parseFormat(spec.format).blockSize}` : s;
}

/**
 * Round-to-nearest of a [in, out] weight by `spec`: the baseline of every PTQ
 * method. Throws naming `name` and the shape when the groups or blocks do not
 * divide the input width.
 */
export function rtnWeight(weight: Tensor, spec: WeightQuantSpec, name = "weight"): Tensor {
  const [rows] = weight.shape;
  const block = typeof spec.sharing === "object"
    ? spec.sharing.group
    : spec.sharing === "block"
    ? parseFormat(spec.format).blockSize!
    : 1;
  if (weight.shape.length !== 2 || rows % block !== 0) {
    throw new Error(
      `${name}: shape [${weight.shape.join(", ")}] — ${spec.format} ${sharingText(spec)} needs a 2-D [in, out] ` +
        `weight whose input width is a multiple of ${block}`,
    );
  }
  const { quantizer, options } = weightQuantOptions(spec);
  return quantizer.quantDequant(weight, options);
}
