/**
 * Per format family: which parts a packed tensor must hold (to validate a
 * loaded file before any kernel reads it) and how to dequantize them with
 * the kernels of `_packed_kernels.ts`, straight from the packed words.
 *
 * Blocks and groups run along `meta.axis` (`quantize` records it for MX,
 * NVFP4, NF4 and INT groups); a tensor without it was blocked along its last
 * axis, as every one was before the option existed.
 *
 * @module
 */
import type { Backend, Storage, WordKernel } from "@lowp/kernels";
import { codeWords, parseFloatFormat } from "./element.ts";
import { parseIntFormat } from "./int.ts";
import { MX_BLOCK, MX_FORMATS, mxElementWords } from "./mx.ts";
import { NF4_BLOCK, NF4_SCALE_BLOCK } from "./nf4.ts";
import { NVFP4_BLOCK } from "./nvfp4.ts";
import {
  FLOAT_PACKED_DEQUANT,
  INT_PACKED_DEQUANT,
  MX_PACKED_DEQUANT,
  NF4_PACKED_DEQUANT,
  NVFP4_PACKED_DEQUANT,
  SCALE_PACKED_DEQUANT,
} from "./_packed_kernels.ts";
import { parseScaleFormat } from "./scales.ts";
import { blockLayout, layoutOf, resolveAxis, strideOf } from "./scaling.ts";
import { parseGranularity } from "./spec.ts";

/** One part on the backend: its packed words and its code width. */
export interface PackedStorage {
  /** ⌈count·bits/32⌉ words in the layout of pack.ts. */
  readonly storage: Storage;
  /** Bits per code. */
  readonly bits: number;
}

/** What a format family needs to validate and dequantize a packed tensor. */
export interface PackedFamily {
  /**
   * The `meta` keys the dequantize understands, with the value each must have where it is fixed (block
   * sizes) or null: a tensor whose meta has other keys or values is refused, not misread.
   */
  readonly meta: Readonly<Record<string, number | null>>;
  /** The part names and code counts a tensor of `shape` with `meta` stores, codes first. */
  parts(shape: readonly number[], meta: Readonly<Record<string, number | string>>): [string, number][];
  /** Writes the f32 bits of the values into `out` (at least one); the parts were checked against {@link parts}. */
  dequantize(
    backend: Backend,
    parts: ReadonlyMap<string, PackedStorage>,
    shape: readonly number[],
    meta: Readonly<Record<string, number | string>>,
    out: Storage,
  ): void;
}

const sizeOf = (shape: readonly number[]) => shape.reduce((a, d) => a * d, 1);
const part = (parts: ReadonlyMap<string, PackedStorage>, name: string) => parts.get(name)!;
const granularityOf = (meta: Readonly<Record<string, number | string>>) =>
  parseGranularity(String(meta.granularity ?? "tensor"));

/** `meta.axis` as a number (undefined when absent: the last axis); throws naming `format` when it is not one. */
function metaAxis(format: string, meta: Readonly<Record<string, number | string>>): number | undefined {
  const axis = meta.axis;
  if (axis !== undefined && typeof axis !== "number") {
    throw new Error(`${format}: meta 'axis' is '${axis}', not a number`);
  }
  return axis;
}

/**
 * The stride of blocks of `block` values along `meta.axis` of `shape` (see the module doc); throws naming
 * `format` when the axis is out of range or its size is not a multiple of `block`.
 */
function blockStride(
  format: string,
  shape: readonly number[],
  meta: Readonly<Record<string, number | string>>,
  block: number,
): number {
  const axis = resolveAxis(format, shape, metaAxis(format, meta));
  if (shape[axis] % block !== 0) {
    throw new Error(
      `${format}: blocks of ${block} run along axis ${axis} of shape [${
        shape.join(",")
      }], whose size is not a multiple of ${block}`,
    );
  }
  return strideOf(shape, axis);
}

/** A one-word zero storage for an input a kernel call does not read (bindings need a buffer). */
function withDummy(backend: Backend, run: (dummy: Storage) => void): void {
  const dummy = backend.upload(new Uint32Array(1));
  try {
    run(dummy);
  } finally {
    backend.free(dummy);
  }
}

/** INT-k (`int2`…`int8`, `uint2`…`uint8`) and Flexpoint (16-bit mantissas, one `scale`). */
function intFamily(format: string, signed: boolean, scaleName: string, fixedLayout: boolean): PackedFamily {
  const layout = (shape: readonly number[], meta: Readonly<Record<string, number | string>>) =>
    fixedLayout
      ? layoutOf(shape, { kind: "tensor" }, format)
      : layoutOf(shape, granularityOf(meta), format, metaAxis(format, meta));
  return {
    meta: fixedLayout ? { exponentMin: null, exponentMax: null } : { granularity: null, axis: null },
    parts(shape, meta) {
      const channels = layout(shape, meta).channels;
      const list: [string, number][] = [["codes", sizeOf(shape)], [scaleName, channels]];
      if (!signed) list.push(["zero_points", channels]);
      return list;
    },
    dequantize(backend, parts, shape, meta, out) {
      const l = layout(shape, meta), n = l.n;
      const codes = part(parts, "codes"), scales = part(parts, scaleName);
      withDummy(backend, (dummy) => {
        const zp = signed ? null : part(parts, "zero_points");
        const params = [codes.bits, signed ? 1 : 0, l.channels, l.inner, scales.bits, zp ? zp.bits : 0, l.stride];
        backend.runWords(INT_PACKED_DEQUANT, [codes.storage, scales.storage, zp?.storage ?? dummy], [out], n, params);
      });
    },
  };
}

/** A family with one `codes` part that `kernel` decodes value by value (params: [bits, ...params]). */
function elementwiseFamily(kernel: WordKernel, params: readonly number[]): PackedFamily {
  return {
    meta: {},
    parts: (shape) => [["codes", sizeOf(shape)]],
    dequantize(backend, parts, shape, _meta, out) {
      const codes = part(parts, "codes");
      backend.runWords(kernel, [codes.storage], [out], sizeOf(shape), [codes.bits, ...params]);
    },
  };
}

/** The packed-tensor family of a format name (as `parseFormat` names it), or null when there is none. */
export function packedFamily(format: string): PackedFamily | null {
  const scale = parseScaleFormat(format);
  if (scale) return elementwiseFamily(SCALE_PACKED_DEQUANT, [scale.kind]);
  const float = parseFloatFormat(format);
  if (float) {
    return elementwiseFamily(FLOAT_PACKED_DEQUANT, codeWords(float));
  }
  if (Object.hasOwn(MX_FORMATS, format)) {
    const words = mxElementWords(MX_FORMATS[format]);
    return {
      meta: { blockSize: MX_BLOCK, scaleRounding: null, axis: null },
      parts(shape, meta) {
        blockStride(format, shape, meta, MX_BLOCK);
        return [["codes", sizeOf(shape)], ["scales", sizeOf(shape) / MX_BLOCK]];
      },
      dequantize(backend, parts, shape, meta, out) {
        const n = sizeOf(shape), stride = blockStride(format, shape, meta, MX_BLOCK);
        const codes = part(parts, "codes"), scales = part(parts, "scales");
        backend.runWords(MX_PACKED_DEQUANT, [codes.storage, scales.storage], [out], n, [
          codes.bits,
          scales.bits,
          ...words,
          stride,
        ]);
      },
    };
  }
  if (format === "nvfp4") {
    return {
      // block2d changes how the scales are chosen, not how they are stored (one per 1 × 16 block).
      meta: { blockSize: NVFP4_BLOCK, axis: null, block2d: 1 },
      parts(shape, meta) {
        blockStride(format, shape, meta, NVFP4_BLOCK);
        return [["codes", sizeOf(shape)], ["scales", sizeOf(shape) / NVFP4_BLOCK], ["tensor_scale", 1]];
      },
      dequantize(backend, parts, shape, meta, out) {
        const n = sizeOf(shape), stride = blockStride(format, shape, meta, NVFP4_BLOCK);
        const [codes, scales, st] = ["codes", "scales", "tensor_scale"].map((name) => part(parts, name));
        backend.runWords(NVFP4_PACKED_DEQUANT, [codes.storage, scales.storage, st.storage], [out], n, [
          codes.bits,
          scales.bits,
          stride,
        ]);
      },
    };
  }
  const int = parseIntFormat(format);
  if (int) return intFamily(format, int.signed, "scales", false);
  if (format === "nf4" || format === "nf4-dq") return nf4Family(format);
  if (format === "flex16+5") return intFamily(format, true, "scale", true);
  return null;
}

/**
 * NF4 with an f32 absmax per block of 64, or its double-quantized absmax (int8 in blocks of 256 of the stored
 * absmax order, plus a mean).
 */
const nf4Family = (format: string): PackedFamily => ({
  meta: { blockSize: NF4_BLOCK, doubleQuant: null, scaleBlockSize: NF4_SCALE_BLOCK, axis: null },
  parts(shape, meta) {
    blockStride(format, shape, meta, NF4_BLOCK);
    const blocks = Math.ceil(sizeOf(shape) / NF4_BLOCK);
    if (!meta.doubleQuant) return [["codes", sizeOf(shape)], ["absmax", blocks]];
    const scaleBlocks = Math.ceil(blocks / NF4_SCALE_BLOCK);
    return [["codes", sizeOf(shape)], ["absmax_codes", blocks], ["absmax_scales", scaleBlocks], ["absmax_mean", 1]];
  },
  dequantize(backend, parts, shape, meta, out) {
    const codes = part(parts, "codes"), n = sizeOf(shape), stride = blockStride(format, shape, meta, NF4_BLOCK);
    if (!meta.doubleQuant) {
      const absmax = part(parts, "absmax");
      withDummy(backend, (dummy) => {
        backend.runWords(NF4_PACKED_DEQUANT, [codes.storage, absmax.storage, dummy], [out], n, [
          codes.bits,
          absmax.bits,
          0,
          stride,
        ]);
      });
      return;
    }
    // The centred absmax values (int8 codes times their block's scale), then absmax = centred + mean per block.
    const blocks = Math.ceil(n / NF4_BLOCK), layout = blockLayout(blocks, NF4_SCALE_BLOCK);
    const aCodes = part(parts, "absmax_codes"), aScales = part(parts, "absmax_scales");
    const centred = backend.alloc(blocks);
    try {
      withDummy(backend, (dummy) => {
        const params = [aCodes.bits, 1, layout.channels, layout.inner, aScales.bits, 0, layout.stride];
        backend.runWords(INT_PACKED_DEQUANT, [aCodes.storage, aScales.storage, dummy], [centred], blocks, params);
      });
      const mean = part(parts, "absmax_mean").storage;
      backend.runWords(NF4_PACKED_DEQUANT, [codes.storage, centred, mean], [out], n, [codes.bits, 32, 1, stride]);
    } finally {
      backend.free(centred);
    }
  },
});

/** Throws naming `where` when `meta` has a key `family` does not understand, or a fixed key with another value. */
export function checkMeta(family: PackedFamily, meta: Readonly<Record<string, number | string>>, where: string): void {
  for (const [key, value] of Object.entries(meta)) {
    if (!Object.hasOwn(family.meta, key)) {
      throw new Error(
        `${where}: meta '${key}' is not understood by the packed dequantize (known: ${
          Object.keys(family.meta).join(", ") || "none"
        })`,
      );
    }
    const fixed = family.meta[key];
    if (fixed !== null && value !== fixed) throw new Error(`${where}: meta '${key}' is ${value}, expected ${fixed}`);
  }
}
