/**
 * The shape every number format presents to the rest of the project: a
 * {@link Quantizer} that fake-quantizes (quantize → dequantize) an f32 tensor,
 * and quantizes it to integer codes plus scales for storage. Formats are
 * found by name with `parseFormat` (formats/registry.ts).
 *
 * Every quantizer runs on the input tensor's backend through word kernels
 * (integer operations on f32 bits), so CPU and WebGPU give identical bits.
 *
 * @module
 */
import type { Tensor } from "@lowp/core";
import type { Rounding } from "./element.ts";

/**
 * Which values share a scale. Block formats fix their own block and accept only their default.
 * - `tensor`: one scale for the whole tensor;
 * - `channel`: one scale per index of `axis` (negative counts from the end), shared by every value with
 *   that index, i.e. reduced over all the other axes (`channel:1` of a `W[in, out]` weight: one scale per
 *   output column); {@link QuantizeOptions.axis} does not apply;
 * - `group`: groups of `size` values along {@link QuantizeOptions.axis} (default the last axis).
 */
export type Granularity =
  | { readonly kind: "tensor" }
  | { readonly kind: "channel"; readonly axis: number }
  | { readonly kind: "group"; readonly size: number };

/** Parses `tensor`, `channel:AXIS` or `group:G` (as the CLI and YAML write it). */
export function parseGranularity(text: string): Granularity {
  if (text === "tensor") return { kind: "tensor" };
  const m = /^(channel|group):(-?\d+)$/.exec(text);
  if (!m) throw new Error(`granularity '${text}': expected tensor, channel:AXIS or group:G`);
  const n = Number(m[2]);
  if (m[1] === "channel") return { kind: "channel", axis: n };
  if (n < 1) throw new Error(`granularity '${text}': group size must be at least 1`);
  return { kind: "group", size: n };
}

/** Options of a quantization call. */
export interface QuantizeOptions {
  /** Rounding of elements (default `nearest`, ties to even). */
  readonly rounding?: Rounding;
  /** Clamp overflow to ±max (default true). */
  readonly saturate?: boolean;
  /** Scale sharing for scaled formats (INT-k, plain element formats with a scale); block formats fix theirs. */
  readonly granularity?: Granularity;
  /**
   * The axis blocks and groups run along (default -1, the last; negative counts from the end): block
   * formats (MX, NVFP4, NF4) and `group:G` granularity. Along axis a, a block holds values `stride` apart
   * (the product of the dimensions after a), the scales have the shape of the tensor with `shape[a]`
   * divided by the block size (row-major; NF4 stores them flat in that order), and `meta.axis` of the
   * {@link Quantized} record keeps a. The bits equal those of moving a last, quantizing along the last axis
   * and moving it back, stochastic rounding included: its draws follow that order (`drawIndex` in
   * scaling.ts), which along the last axis is the flat index. Formats without blocks (per-tensor,
   * per-channel, plain element and scale formats, Flexpoint) check it is in range and otherwise ignore it.
   * An axis out of range throws naming the format, the shape and the axis.
   */
  readonly axis?: number;
  /** Philox key for stochastic rounding: seed (default 0). */
  readonly seed?: number;
  /** Philox stream (default 0). */
  readonly stream?: number;
  /** Philox word offset (default 0): advance it between steps so draws differ. */
  readonly offset?: number;
}

/** One stored component of a quantized tensor (element codes or a level of scales). */
export interface QuantizedPart {
  /** Role, e.g. `codes`, `scales`, `tensor_scale`, `zero_points`. */
  readonly name: string;
  /** One u32 per value holding its `bits`-wide code (or raw f32 bits when bits = 32). */
  readonly codes: Tensor;
  /** Bits per code. */
  readonly bits: number;
  /** How to read a code: a format name (`e4m3`, `e8m0`, `int4`, `f32`, ...). */
  readonly format: string;
}

/** A tensor in a storage format: its parts plus what is needed to restore it. */
export interface Quantized {
  /** Canonical format name. */
  readonly format: string;
  /** Shape of the original tensor. */
  readonly shape: readonly number[];
  /** Element codes first, then scales (and any further levels). */
  readonly parts: readonly QuantizedPart[];
  /** Scalars needed to restore the values (e.g. granularity, double-quantization offsets). */
  readonly meta: Readonly<Record<string, number | string>>;
}

/** A number format. */
export interface Quantizer {
  /** Canonical name, e.g. `mxfp4`. */
  readonly name: string;
  /** Bits of one element code. */
  readonly elementBits: number;
  /** Block size fixed by the format (MX 32, NVFP4 16, NF4 64), or null for scaled/unscaled element formats. */
  readonly blockSize: number | null;
  /** quantize → dequantize in one go (no autograd; see `fakeQuant` for the STE op). */
  quantDequant(x: Tensor, opts?: QuantizeOptions): Tensor;
  /** Codes and scales for storage. */
  quantize(x: Tensor, opts?: QuantizeOptions): Quantized;
  /**
   * The f32 values of stored codes: `dequantize(quantize(x))` equals `quantDequant(x)` bit for bit, except
   * NaN in a format with no NaN code (see `encodeBits`).
   */
  dequantize(q: Quantized): Tensor;
}
