/**
 * NF4 (QLoRA: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
 * LLMs", arXiv 2305.14314; code values and tie rule from bitsandbytes
 * `csrc/kernels.cu`, `dQuantizeNF4` / `dDequantizeNF4`): 16 code values in
 * [-1, 1], blocks of 64 values along one axis (option `axis`, default -1,
 * the last), each with an f32 absmax scale. Along axis a a block holds values
 * `stride` apart (`scaling.ts`) and the absmax values are stored flat in the
 * row-major order of the shape with `shape[a]` divided by 64; the codes and
 * (without double quantization) the values equal those of moving a last,
 * quantizing and moving it back.
 *
 * Quantize: `code = nearest(V_i · (1/absmax))` with 1/absmax correctly rounded
 * (bitsandbytes multiplies by `1.0f/absmax` the same way); a value exactly on
 * the f32 midpoint of two codes goes to the LOWER one (bitsandbytes:
 * `x > midpoint` picks the upper). Dequantize: `code_value · absmax`. All on
 * f32 bits (`f32MulBits`, `f32RecipBits`, integer compares), so CPU and
 * WebGPU agree bit for bit.
 *
 * Specials: a NaN or ±Inf in a block makes its absmax NaN, so the whole block
 * comes back NaN (code 7, the 0.0 code). A block of zeros has absmax 0 and
 * comes back +0 (code 7). Only `nearest` rounding and the fixed blocks of 64
 * are offered.
 *
 * Double quantization (`doubleQuant: true`, or the name `nf4-dq`; QLoRA §3):
 * the absmax values a_b (one per block) are quantized again. QLoRA (and
 * FORMATS.md) say "8-bit floats", which is bitsandbytes' "dynamic 8-bit"
 * map; implemented instead: the LINEAR int8 variant of torchao's NF4Tensor
 * (the two are not bit-compatible), as a composition with this package's INT-k:
 *
 * 1. mean m = fround(S · fround(1/B)) where S is the f32 sum of the B absmax
 *    values in index order (every addition correctly rounded on f32 bits by
 *    `f32AddBits`, one item on either backend: deterministic);
 * 2. centred c_b = fround(a_b - m);
 * 3. c_b quantized by `int8` (symmetric, scale amax/127, ties to even) in
 *    blocks of 256 consecutive absmax values (the last block may be shorter);
 * 4. restored absmax a'_b = fround(fround(q_b · s_k) + m), s_k the scale of b's block of 256.
 *
 * Differences from torchao: its int8 scale is amax/128 with codes clamped to
 * 127, and it divides rather than multiplies by a reciprocal. As in QLoRA,
 * the 4-bit codes come from the exact absmax and dequantization uses a'_b.
 * With double quantization one NaN or Inf anywhere makes the mean, and so
 * the whole tensor, NaN; a restored absmax can come out ≤ 0 for a block whose
 * absmax is far below the others' (not clamped, as in torchao). The blocks of
 * 256 absmax values follow the stored (flat) order, so along a non-last axis
 * they group other blocks than after a transpose: the 4-bit codes are the
 * same, the restored absmax (and so the values) may differ.
 *
 * @module
 */
import type { Backend, Storage, WordKernel } from "@lowp/kernels";
import { Tensor } from "@lowp/core";
import { f32MulBits, f32RecipBits } from "./exact.ts";
import { applyIntScales, dequantIntCodes, intScales, type IntSpec, partOf, requireF32 } from "./int.ts";
import {
  blockLayout,
  blockOf,
  f32AddBits,
  freeAll,
  INF_BITS,
  intToBits,
  type Layout,
  layoutOf,
  NAN_BITS,
  orderKey,
  reduceRanges,
  resolveAxis,
  SCALED_WGSL,
  SIGN_BIT,
  strideOf,
} from "./scaling.ts";
import { hostNf4 } from "./host_quant.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

/** NF4 block size (QLoRA). */
export const NF4_BLOCK: number = 64;
/** Absmax values per block of the double quantization (QLoRA). */
export const NF4_SCALE_BLOCK: number = 256;

/**
 * f32 bits of the 16 NF4 code values, in code order: -1.0, -0.6961928009986877, …,
 * 0.7229568362236023, 1.0 (FORMATS.md; bitsandbytes `dDequantizeNF4`).
 */
export const NF4_CODE_BITS: readonly number[] = [
  0xbf800000,
  0xbf3239b1,
  0xbf066b30,
  0xbeca32a0,
  0xbe91a24d,
  0xbe3d353f,
  0xbdba7871,
  0x00000000,
  0x3da2faff,
  0x3e24cae3,
  0x3e7c04dd,
  0x3ead033a,
  0x3ee1a4b8,
  0x3f1007ab,
  0x3f3913b3,
  0x3f800000,
];

/**
 * f32 bits of the 15 midpoints fround((c_k + c_{k+1})/2), k = 0 … 14: equal
 * to the f32 literals of bitsandbytes' `dQuantizeNF4` decision tree.
 */
export const NF4_MIDPOINT_BITS: readonly number[] = [
  0xbf591cd8,
  0xbf1c5270,
  0xbeeb8480,
  0xbeadea76,
  0xbe703cec,
  0xbe0d38bc,
  0xbd3a7871,
  0x3d22faff,
  0x3df64862,
  0x3e5067e0,
  0x3e9582d4,
  0x3ec753f9,
  0x3f006d04,
  0x3f248daf,
  0x3f5c89da,
];

const MIDPOINT_KEYS = NF4_MIDPOINT_BITS.map(orderKey);
/** Code values then midpoints, as the fused host kernel reads them (`host_quant.ts`). */
const HOST_TABLE = [...NF4_CODE_BITS, ...NF4_MIDPOINT_BITS];
const ZERO_CODE = 7;

/** The NF4 code of the f32 `x` in a block with 1/absmax = `inv` (0 when absmax is 0, NaN when it is NaN). */
export function nf4CodeOf(x: number, inv: number): number {
  const scaled = f32MulBits(x, inv);
  if ((inv & 0x7fffffff) === 0 || (scaled & 0x7fffffff) > INF_BITS) return ZERO_CODE;
  const key = orderKey(scaled);
  let code = 0;
  for (const m of MIDPOINT_KEYS) if (key > m) code++; // strictly above a midpoint: ties stay on the lower code
  return code;
}

/** f32 bits of code `code` in a block of absmax `absmax`. */
export function nf4ValueBits(code: number, absmax: number): number {
  return f32MulBits(NF4_CODE_BITS[code & 15], absmax);
}

const hex = (b: number) => `0x${b.toString(16)}u`;
/** WGSL twins of {@link nf4CodeOf} and {@link nf4ValueBits} (`nf4_code_of`, `nf4_value_bits`), with `SCALED_WGSL`. */
const NF4_WGSL: string = SCALED_WGSL + /* wgsl */ `
var<private> NF4_CODES: array<u32, 16> = array<u32, 16>(${NF4_CODE_BITS.map(hex).join(", ")});
var<private> NF4_MID_KEYS: array<u32, 15> = array<u32, 15>(${MIDPOINT_KEYS.map(hex).join(", ")});
fn nf4_code_of(x: u32, inv: u32) -> u32 {
  let scaled = f32_mul_bits(x, inv);
  if ((inv & 0x7fffffffu) == 0u || (scaled & 0x7fffffffu) > INF) { return ${ZERO_CODE}u; }
  let key = order_key(scaled);
  var code = 0u;
  for (var k = 0u; k < 15u; k++) { if (key > NF4_MID_KEYS[k]) { code = code + 1u; } }
  return code;
}
fn nf4_value_bits(code: u32, absmax: u32) -> u32 { return f32_mul_bits(NF4_CODES[code & 15u], absmax); }
`;

/** Absmax per block and its reciprocal: NaN for a block with NaN/Inf, reciprocal 0 for a zero block. */
const NF4_SCALE_KERNEL: WordKernel = {
  name: "lowp_nf4_scale",
  inputs: 1,
  outputs: 2,
  cpu: (b, [amax], [absmax, inv]) => {
    const a = amax[b] >= INF_BITS ? NAN_BITS : amax[b];
    [absmax[b], inv[b]] = [a, a === 0 ? 0 : f32RecipBits(a)];
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  var a = in0[i];
  if (a >= INF) { a = QNAN; }
  out0[i] = a;
  out1[i] = select(f32_recip_bits(a), 0u, a == 0u);`,
};

/** Codes (param 0 = 0) or values (1) of x: inputs x, 1/absmax, the absmax used to dequantize; param 1: stride. */
const NF4_ELEMENT_KERNEL: WordKernel = {
  name: "lowp_nf4_element",
  inputs: 3,
  outputs: 1,
  cpu: (i, [x, inv, absmax], [out], p) => {
    const b = blockOf(i, NF4_BLOCK, p[1]), code = nf4CodeOf(x[i], inv[b]);
    out[i] = p[0] === 1 ? nf4ValueBits(code, absmax[b]) : code;
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  let b = block_of(i, ${NF4_BLOCK}u, Q(1u));
  let code = nf4_code_of(in0[i], in1[b]);
  if (Q(0u) == 1u) { out0[i] = nf4_value_bits(code, in2[b]); } else { out0[i] = code; }`,
};

/** Values of stored codes: inputs codes, absmax; param 0: stride. */
const NF4_DEQUANT_KERNEL: WordKernel = {
  name: "lowp_nf4_dequant",
  inputs: 2,
  outputs: 1,
  cpu: (i, [codes, absmax], [out], p) => {
    out[i] = nf4ValueBits(codes[i], absmax[blockOf(i, NF4_BLOCK, p[0])]);
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  out0[i] = nf4_value_bits(in0[i], in1[block_of(i, ${NF4_BLOCK}u, Q(0u))]);`,
};

/** Mean of the absmax values (one item; params [count]): fixed-order exact f32 sum times fround(1/count). */
const NF4_MEAN_KERNEL: WordKernel = {
  name: "lowp_nf4_mean",
  inputs: 1,
  outputs: 1,
  cpu: (_, [a], [mean], p) => {
    let sum = 0;
    for (let k = 0; k < p[0]; k++) sum = f32AddBits(sum, a[k]);
    mean[0] = f32MulBits(sum, f32RecipBits(intToBits(p[0])));
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  var sum = 0u;
  for (var k = 0u; k < Q(0u); k++) { sum = f32_add_bits(sum, in0[k]); }
  out0[0] = f32_mul_bits(sum, f32_recip_bits(int_to_bits(i32(Q(0u)))));`,
};

/** a_b - m for every absmax: inputs absmax, mean. */
const NF4_CENTER_KERNEL: WordKernel = {
  name: "lowp_nf4_center",
  inputs: 2,
  outputs: 1,
  cpu: (b, [a, mean], [out]) => {
    out[b] = f32AddBits(a[b], (mean[0] ^ SIGN_BIT) >>> 0);
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  out0[i] = f32_add_bits(in0[i], in1[0] ^ SIGN);`,
};

/** a'_b = centred value + m: inputs the dequantized centred values, mean. */
const NF4_UNCENTER_KERNEL: WordKernel = {
  name: "lowp_nf4_uncenter",
  inputs: 2,
  outputs: 1,
  cpu: (b, [c, mean], [out]) => {
    out[b] = f32AddBits(c[b], mean[0]);
  },
  wgslHelpers: NF4_WGSL,
  wgsl: `  out0[i] = f32_add_bits(in0[i], in1[0]);`,
};

const INT8: IntSpec = { name: "int8", bits: 8, signed: true };

/** The double-quantized absmax: int8 codes, their scales, the mean, and the restored absmax. */
interface DoubleQuant {
  readonly codes: Storage;
  readonly scales: Storage;
  readonly mean: Storage;
  readonly restored: Storage;
}

/** Restores a'_b from int8 codes, their scales and the mean. */
function restoreAbsmax(backend: Backend, codes: Storage, scales: Storage, mean: Storage, blocks: number): Storage {
  const layout = blockLayout(blocks, NF4_SCALE_BLOCK);
  const zeros = backend.upload(new Uint32Array(layout.channels));
  const centred = dequantIntCodes(backend, codes, layout, scales, zeros, INT8);
  const out = backend.alloc(blocks);
  backend.runWords(NF4_UNCENTER_KERNEL, [centred, mean], [out], blocks, []);
  freeAll(backend, zeros, centred);
  return out;
}

/** Double quantization of the absmax values (see the module doc). */
function doubleQuantize(backend: Backend, absmax: Storage, blocks: number): DoubleQuant {
  if (blocks >= 2 ** 24) throw new Error(`nf4: ${blocks} blocks are too many for an exact mean (at most 2^24)`);
  const mean = backend.alloc(1), centred = backend.alloc(blocks);
  backend.runWords(NF4_MEAN_KERNEL, [absmax], [mean], 1, [blocks]);
  backend.runWords(NF4_CENTER_KERNEL, [absmax, mean], [centred], blocks, []);
  const layout = blockLayout(blocks, NF4_SCALE_BLOCK);
  const s = intScales(backend, centred, layout, INT8);
  const codes = applyIntScales(backend, centred, layout, s, INT8, {}, "codes");
  freeAll(backend, centred, s.inv, s.zp);
  return { codes, scales: s.scale, mean, restored: restoreAbsmax(backend, codes, s.scale, mean, blocks) };
}

/** Options of NF4: those of every format plus double quantization. */
export interface Nf4Options extends QuantizeOptions {
  /** Quantize the absmax values to int8 in blocks of 256 after subtracting their mean (default: false, true for `nf4-dq`). */
  readonly doubleQuant?: boolean;
}

/** The NF4 quantizer, whose calls also take {@link Nf4Options}. */
export interface Nf4Quantizer extends Quantizer {
  /** quantize → dequantize. */
  quantDequant(x: Tensor, opts?: Nf4Options): Tensor;
  /** Codes and scales. */
  quantize(x: Tensor, opts?: Nf4Options): Quantized;
}

/**
 * Throws on options NF4 does not offer (rounding other than nearest, a
 * granularity other than blocks of 64) and on an axis out of range or not
 * divisible by 64; returns the blocks' layout.
 */
function checkOptions(name: string, x: Tensor, opts: Nf4Options): Layout {
  requireF32(x, name);
  if ((opts.rounding ?? "nearest") !== "nearest") {
    throw new Error(`${name}: only 'nearest' rounding (got '${opts.rounding}')`);
  }
  const g = opts.granularity;
  if (g && !(g.kind === "group" && g.size === NF4_BLOCK)) {
    throw new Error(
      `${name}: blocks of ${NF4_BLOCK} along option axis are fixed (got granularity ${JSON.stringify(g)})`,
    );
  }
  if (x.shape.length === 0) throw new Error(`${name}: shape [] has no axis whose size is a multiple of ${NF4_BLOCK}`);
  const axis = resolveAxis(name, x.shape, opts.axis);
  if (x.shape[axis] % NF4_BLOCK !== 0) {
    throw new Error(`${name}: dimension ${axis} of shape [${x.shape.join(",")}] must be a multiple of ${NF4_BLOCK}`);
  }
  return layoutOf(x.shape, { kind: "group", size: NF4_BLOCK }, name, axis);
}

/**
 * The NF4 quantizer `nf4` (double quantization off unless asked for) or
 * `nf4-dq` (on unless `doubleQuant: false`), or null. Parts: `codes` (4 bits,
 * `nf4`), then either `absmax` (f32 bits, one per block) or, with double
 * quantization, `absmax_codes` (int8), `absmax_scales` (f32 bits, one per 256
 * blocks) and `absmax_mean` (f32 bits, one value).
 */
export function nf4Quantizer(name: string): Nf4Quantizer | null {
  if (name !== "nf4" && name !== "nf4-dq") return null;
  const wantDq = (opts: Nf4Options) => opts.doubleQuant ?? name === "nf4-dq";
  /** Runs the scale kernels; `dq` holds the double quantization when asked for. */
  const scalesOf = (x: Tensor, opts: Nf4Options) => {
    const layout = checkOptions(name, x, opts), b = x.backend;
    const r = reduceRanges(b, x.storage, layout);
    const absmax = b.alloc(layout.channels), inv = b.alloc(layout.channels);
    b.runWords(NF4_SCALE_KERNEL, [r.amax], [absmax, inv], layout.channels, []);
    freeAll(b, r.hi, r.lo, r.amax);
    const dq = wantDq(opts) ? doubleQuantize(b, absmax, layout.channels) : null;
    return { layout, absmax, inv, dq };
  };
  const encode = (x: Tensor, layout: Layout, inv: Storage, absmax: Storage, emit: number) => {
    const out = x.backend.alloc(x.size);
    x.backend.runWords(NF4_ELEMENT_KERNEL, [x.storage, inv, absmax], [out], x.size, [emit, layout.stride]);
    return out;
  };
  return {
    name,
    elementBits: 4,
    blockSize: NF4_BLOCK,
    quantDequant(x, opts = {}) {
      const blocks = checkOptions(name, x, opts);
      const fused = wantDq(opts) ? null : hostNf4(x, blocks, HOST_TABLE, opts);
      if (fused) return fused;
      const { layout, absmax, inv, dq } = scalesOf(x, opts);
      const out = encode(x, layout, inv, dq ? dq.restored : absmax, 1);
      freeAll(x.backend, absmax, inv, dq?.codes, dq?.scales, dq?.mean, dq?.restored);
      return new Tensor(x.backend, out, x.shape, "f32");
    },
    quantize(x, opts = {}) {
      const { layout, absmax, inv, dq } = scalesOf(x, opts), b = x.backend;
      const codes = encode(x, layout, inv, absmax, 0);
      const part = (name: string, s: Storage, shape: number[], bits: number, format: string) => ({
        name,
        codes: new Tensor(b, s, shape, "u32"),
        bits,
        format,
      });
      const parts = [part("codes", codes, [...x.shape], 4, "nf4")];
      if (dq) {
        const scaleBlocks = blockLayout(layout.channels, NF4_SCALE_BLOCK).channels;
        parts.push(
          part("absmax_codes", dq.codes, [layout.channels], 8, "int8"),
          part("absmax_scales", dq.scales, [scaleBlocks], 32, "f32"),
          part("absmax_mean", dq.mean, [1], 32, "f32"),
        );
        freeAll(b, absmax, dq.restored);
      } else parts.push(part("absmax", absmax, [layout.channels], 32, "f32"));
      b.free(inv);
      const axis = resolveAxis(name, x.shape, opts.axis);
      const meta = { blockSize: NF4_BLOCK, doubleQuant: dq ? 1 : 0, scaleBlockSize: NF4_SCALE_BLOCK, axis };
      return { format: name, shape: x.shape, parts, meta };
    },
    dequantize(q) {
      const codes = partOf(q, "codes"), b = codes.backend, blocks = codes.size / NF4_BLOCK;
      const absmax = q.meta.doubleQuant
        ? restoreAbsmax(
          b,
          partOf(q, "absmax_codes").storage,
          partOf(q, "absmax_scales").storage,
          partOf(q, "absmax_mean").storage,
          blocks,
        )
        : partOf(q, "absmax").storage;
      const out = b.alloc(codes.size);
      const axis = q.meta.axis === undefined ? q.shape.length - 1 : Number(q.meta.axis);
      b.runWords(NF4_DEQUANT_KERNEL, [codes.storage, absmax], [out], codes.size, [strideOf(q.shape, axis)]);
      if (q.meta.doubleQuant) b.free(absmax);
      return new Tensor(b, out, q.shape, "f32");
    },
  };
}

// For kernels that fetch the codes their own way (formats/quant_tensor.ts reads them bit-packed).
export { NF4_WGSL };
