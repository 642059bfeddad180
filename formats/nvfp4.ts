/**
 * NVFP4 (NVIDIA's FP4 training/inference format, as in TransformerEngine's
 * NVFP4 recipe): blocks of 16 FP4 E2M1 values along one axis (option
 * `axis`, default -1, the last), each with a UE4M3 block scale s_b, plus one
 * FP32 per-tensor scale s_t. Along axis a the block scales have the shape of
 * x with `shape[a]` divided by 16 (row-major), a block holds values `stride`
 * apart (`scaling.ts`), and the bits equal those of moving a last,
 * quantizing and moving it back, stochastic rounding included (draws keyed
 * by the blocked order, `drawIndex`).
 *
 * Arithmetic (every product and reciprocal correctly rounded on the integer
 * bits, `exact.ts`, so CPU and WebGPU agree bit for bit):
 * - `s_t = amax_tensor · RN(1/2688)` (2688 = 448 · 6);
 * - `s_b = E4M3_RNE_sat(amax_block · RN(1 / RN(6 · s_t)))`;
 * - elements `P_i = E2M1(V_i · RN(1 / RN(s_b · s_t)))`: multiplying by the
 *   correctly rounded reciprocal, as TransformerEngine's reference does
 *   (FORMATS.md leaves reciprocal vs division open; this is the choice);
 * - dequantize `RN(RN(P_i · s_b) · s_t)`: two multiplies in that order (the
 *   first is exact).
 *
 * 2-D blocks (option `block2d`, as TransformerEngine's NVFP4 recipe scales
 * weights): s_b comes from the amax of the 16 × 16 tile of the last two axes
 * holding the block, so every block of a tile shares one scale and the
 * result does not depend on which of the two axes the blocks run along (with
 * `nearest` rounding; stochastic draws follow each axis's blocked order). The
 * scales stay one per 1 × 16 block (a tile's 16 are equal), the layout a
 * GEMM reads. The fused CPU path does not take it (word kernels run).
 *
 * The tensor amax is reduced deterministically with integer compares on the
 * magnitude bits: one word kernel per block of 16 (its result also feeds the
 * block scales), then levels of 256 until one word is left; the last level
 * writes s_t.
 *
 * Edge cases (chosen here, FORMATS.md leaves them open):
 * - any NaN or ±Inf in the tensor makes s_t NaN and then every value NaN
 *   (block scale codes 0x7F = NaN, element codes 0): the amax reduction sees
 *   NaN/Inf above every finite magnitude, as an unguarded amax would;
 * - s_t = 0 (an all-zero tensor, or an amax below 2688·2^-150 whose s_t
 *   underflows): every block scale is 0 and every element a signed zero;
 * - a zero block, or a block whose s_b rounds to 0 (amax_block < 2^-10 ·
 *   6·s_t), or whose s_b·s_t underflows to 0: its elements are signed zeros;
 * - zeros stay signed zeros (never 0 · ∞); elements saturate at ±6 (E2M1 has
 *   no specials);
 * - f32's range is not widened: below amax_tensor = 2688·2^-126 (≈ 2^-114.6)
 *   s_t is subnormal and coarse, and once s_b·s_t < 2^-128 its reciprocal
 *   overflows to Inf and the block's non-zero elements saturate at ±6: such
 *   tensors lose accuracy (deterministically, on every backend).
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { bitsToF32, type CpuStorage, f32Bits, PHILOX_WGSL, usesHostKernels, type WordKernel } from "@lowp/kernels";
import {
  CODES_WGSL,
  codeWords,
  decodeBits,
  e2m1Nearest,
  ELEMENT_FORMATS,
  ELEMENT_WGSL,
  encodeBits,
  isSaturatingE2M1,
  quantizeBits,
  quantParams,
} from "./element.ts";
import { EXACT_WGSL, f32MulBits, f32RecipBits } from "./exact.ts";
import { HOST_QUANT_AVAILABLE, hostNvfp4, hostNvfp4Given, type HostNvfp4Params } from "./host_quant.ts";
import { AXIS_WGSL, blockBase, blockOf, blockScaleShape, drawIndex, roundingParams, strideOf } from "./scaling.ts";
import { randomWord } from "./kernels.ts";
import { type BlockAxis, checkBlockInput, storedAxis, storedPart } from "./mx.ts";
import { decodeScaleBits, encodeScaleBits, SCALE_FORMATS, scaleQuantParams, SCALES_WGSL } from "./scales.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

/** NVFP4 block size. */
export const NVFP4_BLOCK = 16;
/** Blocks of amaxes merged per item in the later levels of the tensor-amax reduction. */
const REDUCE_FAN_IN = 256;

const QNAN = 0x7fc00000;
const INF = 0x7f800000;
const E2M1 = ELEMENT_FORMATS.e2m1;
const UE4M3 = SCALE_FORMATS.ue4m3;
const E2M1_Q = quantParams(E2M1, true);
const UE4M3_Q = scaleQuantParams(UE4M3);

/** f32 bits of RN(1/2688) and of 6. */
const RECIP_2688 = f32RecipBits(f32Bits(448 * 6));
const SIX = f32Bits(6);
/** WGSL arguments `E, M, bias, emin` of E2M1 for `encode_bits`/`decode_bits`. */
const E2M1_CODE = `${E2M1.ebits}u, ${E2M1.mbits}u, ${E2M1.bias}, ${E2M1.emin}`;

/** s_t = RN(amax_tensor · RN(1/2688)) from the amax bits (f32 bits); NaN when the amax is NaN or Inf. */
export function nvfp4TensorScaleBits(amax: number): number {
  return amax >= INF ? QNAN : f32MulBits(amax, RECIP_2688);
}

/**
 * s_b = E4M3_RNE_sat(amax_block · RN(1/RN(6 · s_t))) as f32 bits of a UE4M3
 * value: 0 for a zero block or s_t = 0, NaN for a NaN s_t.
 */
export function nvfp4BlockScaleBits(amaxBlock: number, st: number): number {
  if (st > INF) return QNAN;
  if (st === 0 || amaxBlock === 0) return 0;
  return quantizeBits(f32MulBits(amaxBlock, f32RecipBits(f32MulBits(SIX, st))), UE4M3_Q, 0, 0);
}

/**
 * Max of the magnitude bits of the G values of group g (item = g): in0[g·G ..
 * min((g+1)·G, n)) when stride = 1, else the block of G values `stride` apart
 * that `blockBase` places. Params: [n, G, last, stride]; the last level writes
 * s_t instead of the amax.
 */
const AMAX_KERNEL: WordKernel = {
  name: "nvfp4_amax",
  inputs: 1,
  outputs: 1,
  cpu: (g, [x], [out], p) => {
    const s = p[3], base = blockBase(g, p[1], s);
    let m = 0;
    for (let j = base; j < Math.min(base + p[1] * s, p[0]); j += s) m = Math.max(m, (x[j] & 0x7fffffff) >>> 0);
    out[g] = p[2] ? nvfp4TensorScaleBits(m) : m;
  },
  wgslHelpers: EXACT_WGSL + AXIS_WGSL,
  wgsl: `  var m = 0u;
  let s = Q(3u); let base = block_base(i, Q(1u), s);
  for (var j = base; j < min(base + Q(1u) * s, Q(0u)); j += s) { m = max(m, in0[j] & 0x7fffffffu); }
  if (Q(2u) != 0u) {
    if (m >= ${INF}u) { m = ${QNAN}u; } else { m = f32_mul_bits(m, ${RECIP_2688}u); }
  }
  out0[i] = m;`,
};

/**
 * The amax of each block's 16 × 16 tile (item = block): the max of the 16 block amaxes `mates` apart in
 * the scale layout that hold the block's tile. Params: [mates].
 */
const TILE_AMAX_KERNEL: WordKernel = {
  name: "nvfp4_tile_amax",
  inputs: 1,
  outputs: 1,
  cpu: (b, [amax], [out], p) => {
    const base = blockBase(blockOf(b, NVFP4_BLOCK, p[0]), NVFP4_BLOCK, p[0]);
    let m = 0;
    for (let k = 0; k < NVFP4_BLOCK; k++) m = Math.max(m, amax[base + k * p[0]]);
    out[b] = m;
  },
  wgslHelpers: AXIS_WGSL,
  wgsl: `  let base = block_base(block_of(i, ${NVFP4_BLOCK}u, Q(0u)), ${NVFP4_BLOCK}u, Q(0u));
  var m = 0u;
  for (var k = 0u; k < ${NVFP4_BLOCK}u; k++) { m = max(m, in0[base + k * Q(0u)]); }
  out0[i] = m;`,
};

/** WGSL of the block scale, the element code and its value (twins of the TypeScript above and in the kernels). */
const WGSL_HELPERS: string = ELEMENT_WGSL + CODES_WGSL + EXACT_WGSL + SCALES_WGSL + AXIS_WGSL + /* wgsl */ `
fn nvfp4_block_scale(amax_block: u32, st: u32) -> u32 {
  if (st > ${INF}u) { return ${QNAN}u; }
  if (st == 0u || amax_block == 0u) { return 0u; }
  let f = Fmt(${UE4M3_Q.emin}, ${UE4M3_Q.mbits}, ${UE4M3_Q.maxBits}u, ${UE4M3_Q.overflow}u);
  return quantize_bits(f32_mul_bits(amax_block, f32_recip_bits(f32_mul_bits(${SIX}u, st))), f, 0u, 0u);
}
fn e2m1_quantize(x: u32, mode: u32, rand: u32) -> u32 {
  return quantize_bits(x, Fmt(${E2M1_Q.emin}, ${E2M1_Q.mbits}, ${E2M1_Q.maxBits}u, ${E2M1_Q.overflow}u), mode, rand);
}
fn e2m1_encode(q: u32) -> u32 { return encode_bits(q, ${E2M1_CODE}); }
fn e2m1_value(c: u32, sb: u32, st: u32) -> u32 {
  return f32_mul_bits(f32_mul_bits(decode_bits(c, ${E2M1_CODE}, ${codeWords(E2M1)[4]}u), sb), st);
}
`;

/** RN(RN(FP4 · s_b) · s_t). */
function elementValue(c: number, sb: number, st: number): number {
  return f32MulBits(f32MulBits(decodeBits(c, E2M1), sb), st);
}

const fr = Math.fround;
const E2M1_SATURATES = isSaturatingE2M1(E2M1_Q);
/** The value of each of the 16 E2M1 codes. */
const E2M1_VALUES = Float64Array.from({ length: 16 }, (_, c) => bitsToF32(decodeBits(c, E2M1)));

/**
 * Quantizes one block of 16 (item = block). Inputs: x, block amax bits, s_t
 * (one word). Params: [rounding (mode, seed, stream, offset lo, offset hi),
 * emit (0 = dequantized f32 bits, 1 = codes), stride, run (the blocked axis:
 * see `scaling.ts`)]. Outputs: out0 one word per element, out1 the UE4M3 code.
 */
const QUANT_KERNEL: WordKernel = {
  name: "nvfp4_quantize",
  inputs: 3,
  outputs: 2,
  cpu: (b, [x, amax, tensorScale], [out, scales], p) => {
    const st = tensorScale[0], sb = nvfp4BlockScaleBits(amax[b], st);
    scales[b] = encodeScaleBits(sb, UE4M3);
    const s = p[6], base = blockBase(b, NVFP4_BLOCK, s), drawn = drawIndex(base, s, p[7]);
    if (sb > INF) {
      for (let j = 0; j < NVFP4_BLOCK; j++) out[base + j * s] = p[5] ? 0 : QNAN;
      return;
    }
    const prod = f32MulBits(sb, st), r = f32RecipBits(prod);
    // sb is finite, so is every value of the block: fround of f32 products gives f32MulBits' bits, faster.
    const rf = bitsToF32(r), sbf = bitsToF32(sb), stf = bitsToF32(st);
    for (let j = 0; j < NVFP4_BLOCK; j++) {
      const xj = x[base + j * s];
      let value: number; // the E2M1 value, as bits
      if (prod === 0 || (xj & 0x7fffffff) === 0) value = (xj & 0x80000000) >>> 0;
      else if (p[0] === 0 && E2M1_SATURATES) value = f32Bits(e2m1Nearest(fr(bitsToF32(xj) * rf)));
      else {
        const rand = p[0] === 2 ? randomWord(p[1], p[2], p[3], p[4], drawn + j) : 0;
        value = quantizeBits(f32Bits(fr(bitsToF32(xj) * rf)), E2M1_Q, p[0], rand);
      }
      const c = encodeBits(value, E2M1);
      out[base + j * s] = p[5] ? c : f32Bits(fr(fr(E2M1_VALUES[c] * sbf) * stf));
    }
  },
  wgslHelpers: WGSL_HELPERS + PHILOX_WGSL,
  wgsl: `  let st = in2[0];
  let sb = nvfp4_block_scale(in1[i], st);
  out1[i] = scale_encode(sb, ${UE4M3.kind}u);
  let s = Q(6u);
  let base = block_base(i, ${NVFP4_BLOCK}u, s);
  let drawn = draw_index(base, s, Q(7u));
  if (sb > ${INF}u) {
    var fill = ${QNAN}u;
    if (Q(5u) != 0u) { fill = 0u; }
    for (var j = 0u; j < ${NVFP4_BLOCK}u; j++) { out0[base + j * s] = fill; }
    return;
  }
  let prod = f32_mul_bits(sb, st); let r = f32_recip_bits(prod);
  for (var j = 0u; j < ${NVFP4_BLOCK}u; j++) {
    let at = base + j * s;
    let x = in0[at];
    var rand = 0u;
    if (Q(0u) == 2u) { rand = philox_word(Q(1u), Q(2u), Q(3u), Q(4u), drawn + j); }
    var q = x & 0x80000000u;
    if (prod != 0u && (x & 0x7fffffffu) != 0u) { q = e2m1_quantize(f32_mul_bits(x, r), Q(0u), rand); }
    let c = e2m1_encode(q);
    if (Q(5u) != 0u) { out0[at] = c; } else { out0[at] = e2m1_value(c, sb, st); }
  }`,
};

/** Dequantizes E2M1 codes (item = element). Inputs: codes, UE4M3 scale codes, s_t (one word). Params: [stride]. */
const DEQUANT_KERNEL: WordKernel = {
  name: "nvfp4_dequantize",
  inputs: 3,
  outputs: 1,
  cpu: (i, [codes, scales, tensorScale], [out], p) => {
    out[i] = elementValue(codes[i], decodeScaleBits(scales[blockOf(i, NVFP4_BLOCK, p[0])], UE4M3), tensorScale[0]);
  },
  wgslHelpers: WGSL_HELPERS,
  wgsl: `  let sb = scale_decode(in1[block_of(i, ${NVFP4_BLOCK}u, Q(0u))], ${UE4M3.kind}u);
  out0[i] = e2m1_value(in0[i], sb, in2[0]);`,
};

/**
 * Block amaxes (one word per block; with `tileMates` > 0 the amax of each block's 16 × 16 tile, whose
 * blocks lie `tileMates` apart in the scale layout) and s_t (a one-word tensor) of `x`, by the
 * deterministic reduction described in the module doc.
 */
function amaxes(x: Tensor, { blocks, stride }: BlockAxis, tileMates: number): [Tensor, Tensor] {
  const backend = x.backend;
  const blockAmax = emptyTensor(backend, [blocks], "u32");
  if (blocks > 0) {
    backend.runWords(AMAX_KERNEL, [x.storage], [blockAmax.storage], blocks, [x.size, NVFP4_BLOCK, 0, stride]);
  }
  let level = blockAmax, count = blocks, last = false;
  while (!last) {
    const next = Math.max(1, Math.ceil(count / REDUCE_FAN_IN));
    last = next === 1;
    const out = emptyTensor(backend, [next], "u32");
    backend.runWords(AMAX_KERNEL, [level.storage], [out.storage], next, [count, REDUCE_FAN_IN, last ? 1 : 0, 1]);
    if (level !== blockAmax) level.dispose();
    level = out;
    count = next;
  }
  if (tileMates === 0 || blocks === 0) return [blockAmax, level];
  const tileAmax = emptyTensor(backend, [blocks], "u32");
  backend.runWords(TILE_AMAX_KERNEL, [blockAmax.storage], [tileAmax.storage], blocks, [tileMates]);
  blockAmax.dispose();
  return [tileAmax, level];
}

/** Options of NVFP4: the common ones plus 2-D blocks. */
export interface Nvfp4Options extends QuantizeOptions {
  /**
   * One scale per 16 × 16 tile of the last two axes (default false): both must be multiples of 16 and
   * `axis` one of them (see the module doc).
   */
  readonly block2d?: boolean;
}

/** The NVFP4 {@link Quantizer}: its calls also take {@link Nvfp4Options} (`block2d`). */
export interface Nvfp4Quantizer extends Quantizer {
  /** quantize → dequantize in one go. */
  quantDequant(x: Tensor, opts?: Nvfp4Options): Tensor;
  /** E2M1 codes, UE4M3 block scales and the f32 tensor scale. */
  quantize(x: Tensor, opts?: Nvfp4Options): Quantized;
}

/**
 * With `block2d`, the distance in the scale layout between the blocks of one 16 × 16 tile (after checking
 * the shape and axis); 0 without.
 */
function tileMates(x: Tensor, where: BlockAxis, opts: Nvfp4Options): number {
  if (!opts.block2d) return 0;
  const rank = x.shape.length, rows = x.shape[rank - 2], cols = x.shape[rank - 1];
  if (rank < 2 || where.axis < rank - 2 || rows % NVFP4_BLOCK !== 0 || cols % NVFP4_BLOCK !== 0) {
    throw new Error(
      `nvfp4: block2d tiles the last two axes by 16 × 16: both must be multiples of 16 and axis one of them; ` +
        `got shape [${x.shape.join(",")}] and axis ${opts.axis ?? -1}`,
    );
  }
  return where.axis === rank - 1 ? cols / NVFP4_BLOCK : 1;
}

/** What the fused host kernel needs (`host_quant.ts`). */
const HOST_PARAMS: HostNvfp4Params = {
  element: E2M1_Q,
  scale: UE4M3_Q,
  tensorScale: nvfp4TensorScaleBits,
  blockFactor: (st) => f32RecipBits(f32MulBits(SIX, st)),
};

/**
 * 16 × 16 tiles on the CPU's fused path, rounding to nearest: every block of a tile takes the tile's scale, so
 * the values are the same whichever axis the blocks run along, and the last axis (contiguous blocks) serves
 * all. Null where the fused path does not apply (stochastic draws depend on the axis: word kernels).
 */
function tiledOnHost(x: Tensor, opts: Nvfp4Options): Tensor | null {
  if ((opts.rounding ?? "nearest") !== "nearest" || !HOST_QUANT_AVAILABLE || !usesHostKernels(x.backend)) return null;
  const last = checkBlockInput("nvfp4", x, NVFP4_BLOCK, { ...opts, axis: -1 });
  const [tileAmax, tensorScale] = amaxes(x, last, tileMates(x, last, opts));
  const words = (t: Tensor) => (t.storage as CpuStorage).u32;
  const out = hostNvfp4Given(x, words(tileAmax).subarray(0, last.blocks), words(tensorScale)[0], HOST_PARAMS, opts);
  tileAmax.dispose();
  tensorScale.dispose();
  return out;
}

/** The NVFP4 {@link Quantizer} for the name `nvfp4`, else null. */
export function nvfp4Quantizer(name: string): Nvfp4Quantizer | null {
  if (name !== "nvfp4") return null;
  const run = (x: Tensor, opts: Nvfp4Options, codes: boolean): [Tensor, Tensor, Tensor] => {
    const where = checkBlockInput(name, x, NVFP4_BLOCK, opts);
    const params = [...roundingParams(opts), codes ? 1 : 0, where.stride, where.run];
    const [blockAmax, tensorScale] = amaxes(x, where, tileMates(x, where, opts));
    const out = emptyTensor(x.backend, x.shape, codes ? "u32" : "f32");
    const scales = emptyTensor(x.backend, blockScaleShape(x.shape, NVFP4_BLOCK, where.axis), "u32");
    if (where.blocks > 0) {
      const ins = [x.storage, blockAmax.storage, tensorScale.storage];
      x.backend.runWords(QUANT_KERNEL, ins, [out.storage, scales.storage], where.blocks, params);
    }
    blockAmax.dispose();
    return [out, scales, tensorScale];
  };
  return {
    name,
    elementBits: E2M1.bits,
    blockSize: NVFP4_BLOCK,
    quantDequant(x, opts = {}) {
      const where = checkBlockInput(name, x, NVFP4_BLOCK, opts);
      roundingParams(opts); // the same errors as the word kernels' path
      const fused = tileMates(x, where, opts) ? tiledOnHost(x, opts) : hostNvfp4(x, where, HOST_PARAMS, opts);
      if (fused) return fused;
      const [out, scales, tensorScale] = run(x, opts, false);
      scales.dispose();
      tensorScale.dispose();
      return out;
    },
    quantize(x, opts = {}): Quantized {
      const [codes, scales, tensorScale] = run(x, opts, true);
      return {
        format: name,
        shape: x.shape,
        parts: [
          { name: "codes", codes, bits: E2M1.bits, format: E2M1.name },
          { name: "scales", codes: scales, bits: 8, format: UE4M3.name },
          { name: "tensor_scale", codes: tensorScale, bits: 32, format: "f32" },
        ],
        meta: {
          blockSize: NVFP4_BLOCK,
          axis: checkBlockInput(name, x, NVFP4_BLOCK, opts).axis,
          ...(opts.block2d ? { block2d: 1 } : {}),
        },
      };
    },
    dequantize(q) {
      const codes = storedPart(q, name, "codes");
      const ins = [codes.storage, storedPart(q, name, "scales").storage, storedPart(q, name, "tensor_scale").storage];
      const out = emptyTensor(codes.backend, q.shape, "f32");
      const stride = strideOf(q.shape, storedAxis(q));
      if (codes.size > 0) codes.backend.runWords(DEQUANT_KERNEL, ins, [out.storage], codes.size, [stride]);
      return out;
    },
  };
}

// For kernels that fetch the codes their own way (formats/quant_tensor.ts reads them bit-packed).
export { elementValue as nvfp4ElementValue, WGSL_HELPERS as NVFP4_WGSL };
