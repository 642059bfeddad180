/**
 * Element formats used on their own (no scale): `e4m3`, `e5m2`, `e2m3`,
 * `e3m2`, `e2m1` and any `eXmY[fn|none]`. `quantDequant` rounds every value to
 * the format; `quantize` stores one code per value. Option `axis` is
 * checked for range and otherwise ignored (there are no blocks).
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { PHILOX_WGSL, rangeKernel, type WordKernel } from "@lowp/kernels";
import {
  codeFormatAt,
  CODES_WGSL,
  codeWords,
  decodeBits,
  ELEMENT_WGSL,
  encodeBits,
  parseFloatFormat,
  quantizeBits,
  quantParams,
  quantParamsAt,
  quantWords,
} from "./element.ts";
import { hostElement } from "./host_quant.ts";
import { ELEMENT_KERNEL, randomWord } from "./kernels.ts";
import { checkAxisOption, roundingParams } from "./scaling.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

/** Quantize and encode: params [quant (4 words), code (5 words), mode, seed, stream, offset lo, offset hi]. */
const ENCODE_KERNEL: WordKernel = rangeKernel({
  name: "encode_element",
  inputs: 1,
  outputs: 1,
  range: (start, end, [x], [out], p) => {
    const q = quantParamsAt(p, 0), f = codeFormatAt(p, 4), mode = p[9];
    for (let i = start; i < end; i++) {
      const rand = mode === 2 ? randomWord(p[10], p[11], p[12], p[13], i) : 0;
      out[i] = encodeBits(quantizeBits(x[i], q, mode, rand), f);
    }
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + PHILOX_WGSL,
  wgsl: `  var rand = 0u;
  if (Q(9u) == 2u) { rand = philox_word(Q(10u), Q(11u), Q(12u), Q(13u), i); }
  let v = quantize_bits(in0[i], fmt_at(0u), Q(9u), rand);
  out0[i] = encode_bits(v, Q(4u), Q(5u), bitcast<i32>(Q(6u)), bitcast<i32>(Q(7u)));`,
});

/** Decode: params [code (5 words)]. */
const DECODE_KERNEL: WordKernel = rangeKernel({
  name: "decode_element",
  inputs: 1,
  outputs: 1,
  range: (start, end, [c], [out], p) => {
    const f = codeFormatAt(p, 0);
    for (let i = start; i < end; i++) out[i] = decodeBits(c[i], f);
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL,
  wgsl: `  out0[i] = decode_bits(in0[i], Q(0u), Q(1u), bitcast<i32>(Q(2u)), bitcast<i32>(Q(3u)), Q(4u));`,
});

function requireF32(name: string, x: Tensor): void {
  if (x.dtype !== "f32") throw new Error(`${name}: ${x.describe()} must be f32`);
}

/** A {@link Quantizer} for a plain element format. */
export function floatQuantizer(name: string): Quantizer | null {
  const f = parseFloatFormat(name);
  if (!f) return null;
  const noGranularity = (x: Tensor, opts: QuantizeOptions) => {
    checkAxisOption(name, x.shape, opts.axis);
    if (opts.granularity) {
      throw new Error(
        `${name}: a plain element format takes no granularity (it has no scale); use an int or block format`,
      );
    }
  };
  const run = (kernel: WordKernel, x: Tensor, dtype: "f32" | "u32", params: number[]) => {
    const out = emptyTensor(x.backend, x.shape, dtype);
    if (x.size > 0) x.backend.runWords(kernel, [x.storage], [out.storage], x.size, params);
    return out;
  };
  return {
    name,
    elementBits: f.bits,
    blockSize: null,
    quantDequant(x, opts = {}) {
      requireF32(name, x);
      noGranularity(x, opts);
      const q = quantParams(f, opts.saturate ?? true), params = [...quantWords(q), ...roundingParams(opts)];
      return hostElement(x, q, opts) ?? run(ELEMENT_KERNEL, x, "f32", params);
    },
    quantize(x, opts = {}): Quantized {
      requireF32(name, x);
      noGranularity(x, opts);
      const params = [...quantWords(quantParams(f, opts.saturate ?? true)), ...codeWords(f), ...roundingParams(opts)];
      const codes = run(ENCODE_KERNEL, x, "u32", params);
      return { format: name, shape: x.shape, parts: [{ name: "codes", codes, bits: f.bits, format: name }], meta: {} };
    },
    dequantize(q) {
      const codes = q.parts[0].codes;
      const out = run(DECODE_KERNEL, codes, "f32", codeWords(f));
      return out;
    },
  };
}
