/**
 * A weight format as a scalar grid per group, for methods that quantize a
 * [in, out] weight one input row at a time (GPTQ): `fit` computes the scale
 * parameters of one group of rows (one set per output column) from the
 * values it is given, and `quantizeRow` rounds a row with them. Fitting
 * every group on the original weight and rounding every row gives
 * `rtnWeight` bit for bit (grid_test.ts checks it for every format below):
 * the same exact helpers on f32 bits as the formats' kernels.
 *
 * - INT-k / UINT-k (`channel`: one group of all rows; `group:N`): range of
 *   the group → `intScaleBits`, codes `intCodeOf`, values `intValueBits`.
 * - MX (`mxfp8_*`, `mxfp6_*`, `mxfp4`, `mxint8`; blocks of 32 rows): the
 *   E8M0 shared exponent of the block's amax (`floor`, the spec's rule).
 * - NVFP4 (blocks of 16 rows): the per-tensor scale s_t from the amax of the
 *   whole weight given to {@link scalarGrid} (fixed for all groups), the
 *   UE4M3 block scale from the group.
 * - NF4 (blocks of 64 rows): absmax per block. `nf4-dq` is not offered: its
 *   double quantization needs the absmax of every block at once (their mean
 *   and int8 scales over 256 blocks), so no group has parameters of its own.
 * - Plain element formats (`e4m3`, `e2m1`, …): no scale, one group per row.
 *
 * Every grid also writes the format's storage codes of each row it rounds,
 * and {@link ScalarGrid.record} turns the parameters of every group and those
 * codes into the {@link Quantized} record `quantizer.quantize` would give for
 * the same parameters (the parts, shapes, bits and `meta` of
 * `weightQuantOptions(spec)`: codes [in, out], scales [in/G, out] or [out]),
 * so the format's own `dequantize` gives the rounded rows bit for bit
 * (grid_test.ts checks both).
 *
 * Formats without a scalar grid per group (the scale formats `e8m0`,
 * `ue4m3`, `ue5m3`; `flex16+5`, whose shared exponent follows a history)
 * throw one error naming the format and why.
 *
 * @module
 */
import { type Backend, type Tensor, tensor } from "@lowp/core";
import { parseFloatFormat, quantizeBits, type QuantParams, quantParams } from "../element.ts";
import { f32MulBits, f32RecipBits } from "../exact.ts";
import { intCodeOf, intRange, intScaleBits, intValueBits, parseIntFormat } from "../int.ts";
import {
  MX_FORMATS,
  mxDecodeElement,
  mxElementWords,
  mxEncodeElement,
  MXINT8_NEG_MAX_BITS,
  MXINT8_QUANT,
  mxSharedExponent,
} from "../mx.ts";
import { NF4_BLOCK, NF4_SCALE_BLOCK, nf4CodeOf, nf4ValueBits } from "../nf4.ts";
import { NVFP4_BLOCK, nvfp4BlockScaleBits, nvfp4TensorScaleBits } from "../nvfp4.ts";
import { decodeBits, ELEMENT_FORMATS, encodeBits } from "../element.ts";
import { intToBits, nearestEven, orderKey, SIGN_BIT } from "../scaling.ts";
import { encodeScaleBits, pow2Bits, SCALE_FORMATS } from "../scales.ts";
import { parseFormat } from "../registry.ts";
import type { Quantized, QuantizedPart } from "../spec.ts";
import { sharingText, type WeightQuantSpec } from "./weight_spec.ts";

/**
 * A format's per-group scalar grid on a [in, out] weight. `P` is the
 * parameters of one group (opaque to callers).
 */
export interface ScalarGrid<P = unknown> {
  /** Format name. */
  readonly format: string;
  /** Rows (input channels) per group: the whole input for `channel`, the block or group size, 1 for no scale. */
  readonly groupRows: number;
  /** Output columns (values per row). */
  readonly columns: number;
  /**
   * The parameters of one group from its rows: `rows` rows of `columns`
   * values starting at row `row` of `values` (row-major [*, columns], f32).
   */
  fit(values: Float32Array, row: number, rows: number): P;
  /**
   * Quantize-dequantize row `row` of `src` ([*, columns], f32) with `params` into row `outRow` of `out`, and,
   * when `codes` is given, the format's storage codes of that row into row `outRow` of `codes` (the values
   * are exactly their dequantization).
   */
  quantizeRow(params: P, src: Float32Array, row: number, out: Float32Array, outRow: number, codes?: Uint32Array): void;
  /**
   * The weight in the format's storage layout, on `backend`: `groups[k]` the parameters of rows
   * [k·groupRows, (k+1)·groupRows), `codes` [groups·groupRows, columns] as {@link quantizeRow} wrote them.
   */
  record(groups: readonly P[], codes: Uint32Array, backend: Backend): Quantized;
}

/** A u32 tensor of `data` shaped `shape` on `backend`. */
function u32Tensor(data: Uint32Array, shape: number[], backend: Backend): Tensor {
  return tensor(data, { backend, shape, dtype: "u32" });
}

/** The per-column words `pick(p)` of every group, group after group ([groups, columns] row-major). */
function stacked<P>(groups: readonly P[], columns: number, pick: (p: P) => ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(groups.length * columns);
  groups.forEach((p, k) => out.set(pick(p), k * columns));
  return out;
}

/** The codes part [rows, columns] of a record. */
function codesPart(codes: Uint32Array, columns: number, bits: number, format: string, backend: Backend): QuantizedPart {
  return { name: "codes", codes: u32Tensor(codes, [codes.length / columns, columns], backend), bits, format };
}

/** The max of |bits| over a group's values of each column (NaN bits sort above Inf, as the kernels' amax). */
function columnAmax(bits: Uint32Array, row: number, rows: number, columns: number): Uint32Array {
  const amax = new Uint32Array(columns);
  for (let r = row; r < row + rows; r++) {
    const o = r * columns;
    for (let c = 0; c < columns; c++) {
      const m = bits[o + c] & 0x7fffffff;
      if (m > amax[c]) amax[c] = m;
    }
  }
  return amax;
}

const max = (a: number, b: number) => a > b ? a : b;
const u32 = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** Parameters of an INT-k group: scale, 1/scale (f32 bits) and zero point per column. */
interface IntParams {
  readonly scale: Uint32Array;
  readonly inv: Uint32Array;
  readonly zp: Int32Array;
  /** The same scales and reciprocals as f32 values. */
  readonly scaleF: Float32Array;
  readonly invF: Float32Array;
  /** 1 where the scale is finite and not 0 and its reciprocal finite: the plain arithmetic path applies. */
  readonly ordinary: Uint8Array;
}

/** Whether a scale and its reciprocal (f32 bits) are finite and the scale is not 0 (int.ts's `ordinaryScale`). */
function ordinaryScale(scale: number, inv: number): boolean {
  return (scale & 0x7fffffff) !== 0 && (scale & 0x7fffffff) < 0x7f800000 && (inv & 0x7fffffff) < 0x7f800000;
}

const f32 = (bits: Uint32Array) => new Float32Array(bits.slice().buffer);

function intGrid(name: string, groupRows: number, columns: number, channel: boolean): ScalarGrid<IntParams> | null {
  const spec = parseIntFormat(name);
  if (!spec) return null;
  const [qmin, qmax] = intRange(spec);
  const mask = 2 ** spec.bits - 1;
  const levelsRecip = f32RecipBits(intToBits(spec.signed ? qmax : qmax - qmin)); // as int.ts: fround(1/L)
  return {
    format: name,
    groupRows,
    columns,
    fit(values, row, rows) {
      const bits = u32(values);
      const hi = new Uint32Array(columns).fill(SIGN_BIT), lo = new Uint32Array(columns).fill(SIGN_BIT); // keys of +0
      const amax = new Uint32Array(columns);
      for (let r = row; r < row + rows; r++) {
        const o = r * columns;
        for (let c = 0; c < columns; c++) {
          const w = bits[o + c], key = orderKey(w), m = w & 0x7fffffff;
          if (key > hi[c]) hi[c] = key;
          if (key < lo[c]) lo[c] = key;
          if (m > amax[c]) amax[c] = m;
        }
      }
      const scale = new Uint32Array(columns), inv = new Uint32Array(columns), zp = new Int32Array(columns);
      const ordinary = new Uint8Array(columns);
      for (let c = 0; c < columns; c++) {
        const s = intScaleBits(hi[c], lo[c], amax[c], spec.signed, qmax, levelsRecip);
        scale[c] = s.scale, inv[c] = s.inv, zp[c] = s.zp;
        ordinary[c] = ordinaryScale(s.scale, s.inv) ? 1 : 0;
      }
      return { scale, inv, zp, scaleF: f32(scale), invF: f32(inv), ordinary };
    },
    quantizeRow(p, src, row, out, outRow, codes) {
      const sb = u32(src), ob = u32(out), so = row * columns, oo = outRow * columns;
      const { scaleF, invF, zp, ordinary } = p;
      for (let c = 0; c < columns; c++) {
        let q: number;
        if (ordinary[c]) {
          // As int.ts's kernel: a finite scale keeps every product finite, and fround of an f32 product is the
          // correctly rounded product (f32MulBits' bits).
          q = Math.min(qmax, Math.max(qmin, nearestEven(Math.fround(src[so + c] * invF[c])) + zp[c]));
          out[oo + c] = Math.fround((q - zp[c]) * scaleF[c]);
        } else {
          q = intCodeOf(sb[so + c], p.scale[c], p.inv[c], zp[c], qmin, qmax, 0, 0);
          ob[oo + c] = intValueBits(q, zp[c], p.scale[c]);
        }
        if (codes) codes[oo + c] = (q & mask) >>> 0;
      }
    },
    record(groups, codes, backend) {
      // As intQuantizer's quantize with channel:1 (scales [out]) or group:G along axis 0 (scales [in/G, out]).
      const shape = channel ? [columns] : [groups.length, columns];
      const parts = [
        codesPart(codes, columns, spec.bits, name, backend),
        {
          name: "scales",
          codes: u32Tensor(stacked(groups, columns, (p) => p.scale), shape, backend),
          bits: 32,
          format: "f32",
        },
      ];
      if (!spec.signed) {
        const zp = u32Tensor(stacked(groups, columns, (p) => p.zp), shape, backend);
        parts.push({ name: "zero_points", codes: zp, bits: spec.bits, format: `uint${spec.bits}` });
      }
      const meta: Record<string, string | number> = channel
        ? { granularity: "channel:1" }
        : { granularity: `group:${groupRows}`, axis: 0 };
      return { format: name, shape: [codes.length / columns, columns], parts, meta };
    },
  };
}

/** Parameters of an MX block: 2^-e and 2^e (f32 bits) and the E8M0 code per column, or NaN blocks (`nan` = 1). */
interface Pow2Params {
  readonly inv: Uint32Array;
  readonly scale: Uint32Array;
  readonly nan: Uint8Array;
  readonly code: Uint32Array;
}

const NAN_EXP = 128, QNAN = 0x7fc00000;

function mxGrid(name: string, columns: number): ScalarGrid<Pow2Params> | null {
  if (!Object.hasOwn(MX_FORMATS, name)) return null;
  const el = MX_FORMATS[name];
  const q: QuantParams = el.float ? quantParams(el.float, true) : MXINT8_QUANT;
  const negQ: QuantParams = el.float ? q : { ...q, maxBits: MXINT8_NEG_MAX_BITS };
  const elementWords = Uint32Array.from(mxElementWords(el));
  return {
    format: name,
    groupRows: 32,
    columns,
    fit(values, row, rows) {
      const amax = columnAmax(u32(values), row, rows, columns);
      const inv = new Uint32Array(columns), scale = new Uint32Array(columns), nan = new Uint8Array(columns);
      const code = new Uint32Array(columns);
      for (let c = 0; c < columns; c++) {
        const e = mxSharedExponent(amax[c], 0, el.emax, q);
        if (e === NAN_EXP) nan[c] = 1, code[c] = 0xff;
        else inv[c] = pow2Bits(-e), scale[c] = pow2Bits(e), code[c] = e + 127;
      }
      return { inv, scale, nan, code };
    },
    quantizeRow(p, src, row, out, outRow, codes) {
      const sb = u32(src), ob = u32(out), so = row * columns, oo = outRow * columns;
      for (let c = 0; c < columns; c++) {
        if (p.nan[c]) {
          ob[oo + c] = QNAN;
          if (codes) codes[oo + c] = 0; // as mx.ts: a NaN block stores codes 0 under the NaN scale
          continue;
        }
        const v = f32MulBits(sb[so + c], p.inv[c]);
        const code = mxEncodeElement(quantizeBits(v, v >>> 31 ? negQ : q, 0, 0), elementWords, 0);
        ob[oo + c] = f32MulBits(mxDecodeElement(code, elementWords, 0), p.scale[c]);
        if (codes) codes[oo + c] = code;
      }
    },
    record(groups, codes, backend) {
      const scales = u32Tensor(stacked(groups, columns, (p) => p.code), [groups.length, columns], backend);
      return {
        format: name,
        shape: [codes.length / columns, columns],
        parts: [
          codesPart(codes, columns, el.bits, el.name, backend),
          { name: "scales", codes: scales, bits: 8, format: "e8m0" },
        ],
        meta: { blockSize: 32, scaleRounding: "floor", axis: 0 },
      };
    },
  };
}

/** Parameters of an NVFP4 block: the UE4M3 block scale s_b and RN(1/RN(s_b·s_t)) per column (f32 bits). */
interface Nvfp4Params {
  readonly sb: Uint32Array;
  readonly prod: Uint32Array;
  readonly recip: Uint32Array;
}

const E2M1 = ELEMENT_FORMATS.e2m1;
const E2M1_Q = quantParams(E2M1, true);
const UE4M3 = SCALE_FORMATS.ue4m3;

function nvfp4Grid(columns: number, tensorAmax: number): ScalarGrid<Nvfp4Params> {
  const st = nvfp4TensorScaleBits(tensorAmax);
  return {
    format: "nvfp4",
    groupRows: NVFP4_BLOCK,
    columns,
    fit(values, row, rows) {
      const amax = columnAmax(u32(values), row, rows, columns);
      const sb = new Uint32Array(columns), prod = new Uint32Array(columns), recip = new Uint32Array(columns);
      for (let c = 0; c < columns; c++) {
        sb[c] = nvfp4BlockScaleBits(amax[c], st);
        prod[c] = f32MulBits(sb[c], st);
        recip[c] = f32RecipBits(prod[c]);
      }
      return { sb, prod, recip };
    },
    quantizeRow(p, src, row, out, outRow, codes) {
      const sbits = u32(src), ob = u32(out), so = row * columns, oo = outRow * columns;
      for (let c = 0; c < columns; c++) {
        if ((p.sb[c] & 0x7fffffff) > 0x7f800000) {
          ob[oo + c] = QNAN;
          if (codes) codes[oo + c] = 0; // as nvfp4.ts: codes 0 under the NaN block scale
          continue;
        }
        const x = sbits[so + c];
        const value = p.prod[c] === 0 || (x & 0x7fffffff) === 0
          ? (x & 0x80000000) >>> 0
          : quantizeBits(f32MulBits(x, p.recip[c]), E2M1_Q, 0, 0);
        const code = encodeBits(value, E2M1);
        ob[oo + c] = f32MulBits(f32MulBits(decodeBits(code, E2M1), p.sb[c]), st);
        if (codes) codes[oo + c] = code;
      }
    },
    record(groups, codes, backend) {
      const scaleCodes = stacked(groups, columns, (p) => p.sb).map((b) => encodeScaleBits(b, UE4M3));
      return {
        format: "nvfp4",
        shape: [codes.length / columns, columns],
        parts: [
          codesPart(codes, columns, E2M1.bits, E2M1.name, backend),
          {
            name: "scales",
            codes: u32Tensor(scaleCodes, [groups.length, columns], backend),
            bits: 8,
            format: UE4M3.name,
          },
          { name: "tensor_scale", codes: u32Tensor(Uint32Array.of(st), [1], backend), bits: 32, format: "f32" },
        ],
        meta: { blockSize: NVFP4_BLOCK, axis: 0 },
      };
    },
  };
}

/** Parameters of an NF4 block: absmax and its reciprocal per column (f32 bits). */
interface Nf4Params {
  readonly absmax: Uint32Array;
  readonly inv: Uint32Array;
}

function nf4Grid(columns: number): ScalarGrid<Nf4Params> {
  return {
    format: "nf4",
    groupRows: NF4_BLOCK,
    columns,
    fit(values, row, rows) {
      const amax = columnAmax(u32(values), row, rows, columns);
      const absmax = new Uint32Array(columns), inv = new Uint32Array(columns);
      for (let c = 0; c < columns; c++) {
        const a = amax[c] >= 0x7f800000 ? QNAN : amax[c];
        absmax[c] = a;
        inv[c] = a === 0 ? 0 : f32RecipBits(a);
      }
      return { absmax, inv };
    },
    quantizeRow(p, src, row, out, outRow, codes) {
      const sb = u32(src), ob = u32(out), so = row * columns, oo = outRow * columns;
      for (let c = 0; c < columns; c++) {
        const code = nf4CodeOf(sb[so + c], p.inv[c]);
        ob[oo + c] = nf4ValueBits(code, p.absmax[c]);
        if (codes) codes[oo + c] = code;
      }
    },
    record(groups, codes, backend) {
      // As nf4.ts without double quantization: the absmax of the blocks flat, in the order of [in/64, out].
      const absmax = u32Tensor(stacked(groups, columns, (p) => p.absmax), [groups.length * columns], backend);
      return {
        format: "nf4",
        shape: [codes.length / columns, columns],
        parts: [codesPart(codes, columns, 4, "nf4", backend), {
          name: "absmax",
          codes: absmax,
          bits: 32,
          format: "f32",
        }],
        meta: { blockSize: NF4_BLOCK, doubleQuant: 0, scaleBlockSize: NF4_SCALE_BLOCK, axis: 0 },
      };
    },
  };
}

function elementGrid(name: string, columns: number): ScalarGrid<null> | null {
  const f = parseFloatFormat(name);
  if (!f) return null;
  const q = quantParams(f, true);
  return {
    format: name,
    groupRows: 1,
    columns,
    fit: () => null,
    quantizeRow(_, src, row, out, outRow, codes) {
      const sb = u32(src), ob = u32(out), so = row * columns, oo = outRow * columns;
      for (let c = 0; c < columns; c++) {
        const v = quantizeBits(sb[so + c], q, 0, 0);
        ob[oo + c] = v;
        if (codes) codes[oo + c] = encodeBits(v, f);
      }
    },
    record(_, codes, backend) {
      return {
        format: name,
        shape: [codes.length / columns, columns],
        parts: [codesPart(codes, columns, f.bits, name, backend)],
        meta: {},
      };
    },
  };
}

/** Why a format has no scalar grid per group, or null when it has one. */
function noGridReason(format: string): string | null {
  if (format === "e8m0" || format === "ue4m3" || format === "ue5m3") {
    return "it is a scale format (it rounds scales, not weights)";
  }
  if (format === "nf4-dq") {
    return "its double quantization needs every block's absmax at once (use nf4)";
  }
  if (format.startsWith("flex")) {
    return "its shared exponent follows a history of past tensors, not a group of values";
  }
  return null;
}

/**
 * The scalar grid of `spec` on a [in, out] weight whose values are `weight`
 * (f32, row-major; NVFP4 takes its per-tensor scale from their amax). Throws
 * one error naming the format (and `name`, the layer) when it has no scalar
 * grid per group, and when the groups do not divide the input width.
 */
export function scalarGrid(
  spec: WeightQuantSpec,
  weight: Float32Array,
  inFeatures: number,
  outFeatures: number,
  name = "weight",
): ScalarGrid {
  const format = parseFormat(spec.format).name;
  const why = noGridReason(format);
  if (why) throw new Error(`${name}: ${format} has no scalar grid per group for GPTQ: ${why}`);
  if (weight.length !== inFeatures * outFeatures) {
    throw new Error(`${name}: ${weight.length} values for a [${inFeatures}, ${outFeatures}] weight`);
  }
  const s = spec.sharing;
  const rows = s === "channel" ? inFeatures : typeof s === "object" ? s.group : 0;
  const grid: ScalarGrid | null = intGrid(format, rows, outFeatures, s === "channel") ?? mxGrid(format, outFeatures) ??
    (format === "nvfp4" ? nvfp4Grid(outFeatures, columnAmax(u32(weight), 0, 1, weight.length).reduce(max, 0)) : null) ??
    (format === "nf4" ? nf4Grid(outFeatures) : null) ?? elementGrid(format, outFeatures);
  if (!grid) throw new Error(`${name}: ${format} has no scalar grid per group for GPTQ`);
  const isInt = /^u?int\d$/.test(format);
  if (isInt !== (s === "channel" || typeof s === "object")) {
    throw new Error(
      `${name}: ${format} ${sharingText(spec)}: INT formats take channel or group:N, the others their own blocks`,
    );
  }
  if (grid.groupRows < 1 || inFeatures % grid.groupRows !== 0) {
    throw new Error(
      `${name}: ${format} ${sharingText(spec)} needs an input width that is a multiple of ${grid.groupRows}; ` +
        `the weight is [${inFeatures}, ${outFeatures}]`,
    );
  }
  return grid;
}

/** What {@link gridRtn} returns: the values, the storage codes and each group's parameters. */
export interface GridRtn {
  /** The quantized-dequantized weight (equals `rtnWeight`). */
  readonly values: Float32Array;
  /** The format's storage codes, [in, out]. */
  readonly codes: Uint32Array;
  /** The parameters of each group, in row order (for {@link ScalarGrid.record}). */
  readonly groups: unknown[];
}

/** Grid round-to-nearest: every group fitted on `weight` itself, every row rounded (equals `rtnWeight`). */
export function gridRtn(grid: ScalarGrid, weight: Float32Array, inFeatures: number): GridRtn {
  const values = new Float32Array(weight.length), codes = new Uint32Array(weight.length), groups: unknown[] = [];
  for (let g = 0; g < inFeatures; g += grid.groupRows) {
    const p = grid.fit(weight, g, grid.groupRows);
    groups.push(p);
    for (let r = g; r < g + grid.groupRows; r++) grid.quantizeRow(p, weight, r, values, r, codes);
  }
  return { values, codes, groups };
}
