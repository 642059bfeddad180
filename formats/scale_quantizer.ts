/**
 * The scale formats (`e8m0`, `ue4m3`, `ue5m3`) used as formats of their own,
 * so every format name resolves in the API, YAML and the CLI. Scales are
 * magnitudes: the sign of the input is ignored. `e8m0` keeps
 * 2^floor(log2 |x|) (the MX rule, clamped to [2^-127, 2^127]; there is no
 * rounding mode to choose); `ue4m3`/`ue5m3` round like the element formats
 * and saturate.
 *
 * @module
 */
import { emptyTensor, type Tensor } from "@lowp/core";
import { PHILOX_WGSL, type WordKernel } from "@lowp/kernels";
import { CODES_WGSL, ELEMENT_WGSL, quantizeBits, quantParamsAt, quantWords } from "./element.ts";
import { randomWord } from "./kernels.ts";
import {
  decodeScaleBits,
  encodeScaleBits,
  parseScaleFormat,
  SCALE_FORMATS,
  scaleQuantParams,
  SCALES_WGSL,
} from "./scales.ts";
import { checkAxisOption, roundingParams } from "./scaling.ts";
import type { Quantized, QuantizeOptions, Quantizer } from "./spec.ts";

const KINDS = [SCALE_FORMATS.e8m0, SCALE_FORMATS.ue4m3, SCALE_FORMATS.ue5m3];

/** Params: [quant (4 words, unused for e8m0), kind, decode (0: write codes, 1: write values), mode, seed, stream, lo, hi]. */
const SCALE_KERNEL: WordKernel = {
  name: "scale_format",
  inputs: 1,
  outputs: 1,
  cpu: (i, [x], [out], p) => {
    const f = KINDS[p[4]];
    let v = (x[i] & 0x7fffffff) >>> 0;
    if (f.float) {
      v = quantizeBits(v, quantParamsAt(p, 0), p[6], p[6] === 2 ? randomWord(p[7], p[8], p[9], p[10], i) : 0);
    }
    const code = encodeScaleBits(v, f);
    out[i] = p[5] ? decodeScaleBits(code, f) : code;
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + SCALES_WGSL + PHILOX_WGSL,
  wgsl: `  var v = in0[i] & 0x7fffffffu;
  if (Q(4u) != 0u) {
    var rand = 0u;
    if (Q(6u) == 2u) { rand = philox_word(Q(7u), Q(8u), Q(9u), Q(10u), i); }
    v = quantize_bits(v, fmt_at(0u), Q(6u), rand);
  }
  let code = scale_encode(v, Q(4u));
  if (Q(5u) != 0u) { out0[i] = scale_decode(code, Q(4u)); } else { out0[i] = code; }`,
};

/** Decode only: params [kind]. */
const SCALE_DECODE_KERNEL: WordKernel = {
  name: "scale_decode",
  inputs: 1,
  outputs: 1,
  cpu: (i, [c], [out], p) => {
    out[i] = decodeScaleBits(c[i], KINDS[p[0]]);
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + SCALES_WGSL,
  wgsl: "  out0[i] = scale_decode(in0[i], Q(0u));",
};

/** A {@link Quantizer} for a scale format, or null when `name` is not one. */
export function scaleQuantizer(name: string): Quantizer | null {
  const f = parseScaleFormat(name);
  if (!f) return null;
  const quant = f.float ? quantWords(scaleQuantParams(f)) : [0, 0, 0, 0];
  const run = (kernel: WordKernel, x: Tensor, dtype: "f32" | "u32", params: number[]) => {
    if (x.dtype !== (kernel === SCALE_DECODE_KERNEL ? "u32" : "f32")) {
      throw new Error(`${name}: ${x.describe()} has the wrong dtype`);
    }
    const out = emptyTensor(x.backend, x.shape, dtype);
    if (x.size > 0) x.backend.runWords(kernel, [x.storage], [out.storage], x.size, params);
    return out;
  };
  const check = (x: Tensor, opts: QuantizeOptions) => {
    checkAxisOption(name, x.shape, opts.axis);
    if (opts.granularity) throw new Error(`${name}: a scale format takes no granularity`);
    if (!f.float && (opts.rounding ?? "nearest") !== "nearest") {
      throw new Error(`${name}: E8M0 keeps floor(log2 |x|) (the MX rule); no rounding mode applies`);
    }
  };
  return {
    name,
    elementBits: f.bits,
    blockSize: null,
    quantDequant(x, opts = {}) {
      check(x, opts);
      return run(SCALE_KERNEL, x, "f32", [...quant, f.kind, 1, ...roundingParams(opts)]);
    },
    quantize(x, opts = {}): Quantized {
      check(x, opts);
      const codes = run(SCALE_KERNEL, x, "u32", [...quant, f.kind, 0, ...roundingParams(opts)]);
      return { format: name, shape: x.shape, parts: [{ name: "codes", codes, bits: f.bits, format: name }], meta: {} };
    },
    dequantize(q) {
      return run(SCALE_DECODE_KERNEL, q.parts[0].codes, "f32", [f.kind]);
    },
  };
}
