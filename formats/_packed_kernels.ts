/**
 * Word kernels over bit-packed codes (the layout of `pack.ts`: value `i` of a
 * `bits`-wide part sits at bits `[i·bits, (i+1)·bits)` of one little-endian
 * stream of u32 words). {@link PACK_KERNEL} packs u32 codes on the device;
 * the dequantize kernels read the packed words directly, one fetch per code,
 * and hand each code to the format's own decode functions (the TypeScript and
 * WGSL twins in element.ts, scales.ts, int.ts, mx.ts, nvfp4.ts, nf4.ts), so
 * the values equal the format's `dequantize` bit for bit.
 *
 * Word and bit positions avoid 32-bit overflow: 32 codes of `bits` bits fill
 * exactly `bits` words, so code `i` starts in word `⌊i/32⌋·bits + ⌊(i mod 32)·bits/32⌋`.
 *
 * Blocks and groups may run along any axis: a kernel's `stride` parameter is
 * the distance between the members of a block (1 for the last axis), and
 * value `i` reads the scale of block `blockOf(i, size, stride)` (scaling.ts,
 * `block_of` in its WGSL), as the formats' own dequantize kernels do.
 *
 * @module
 */
import { rangeKernel, type WordKernel } from "@lowp/kernels";
import { codeFormatAt, CODES_WGSL, decodeBits, ELEMENT_WGSL } from "./element.ts";
import { f32MulBits } from "./exact.ts";
import { INT_WGSL, intValueBits } from "./int.ts";
import { MX_BLOCK, MX_WGSL, mxDecodeElement } from "./mx.ts";
import { NF4_BLOCK, NF4_WGSL, nf4ValueBits } from "./nf4.ts";
import { NVFP4_BLOCK, NVFP4_WGSL, nvfp4ElementValue } from "./nvfp4.ts";
import { decodeScaleBits, SCALE_FORMATS, SCALES_WGSL } from "./scales.ts";
import { blockOf, f32AddBits } from "./scaling.ts";

/** Code `i` of a stream of `bits`-wide codes (1 to 32) packed in `words`. */
export function packedCode(words: Uint32Array, i: number, bits: number): number {
  if (bits === 32) return words[i];
  const pos = (i & 31) * bits, s = pos & 31;
  const w = (i >>> 5) * bits + (pos >>> 5);
  let v = words[w] >>> s;
  if (s + bits > 32) v |= words[w + 1] << (32 - s);
  return (v & (2 ** bits - 1)) >>> 0;
}

/** How the CPU loop of a dequantize kernel finds the values of run r (see {@link dequantRuns}). */
export interface RunValues {
  /** Values sharing their scales: `run` values `stride` apart (value i is in run `blockOf(i, run, stride)`). */
  readonly run: number;
  /** Distance between the values of a run (default 1: consecutive values). */
  readonly stride?: number;
  /** What run r's values depend on (a scale code, a channel, absmax bits): runs with equal keys share a table. */
  readonly keyOf: (r: number) => number;
  /** The code → f32 bits function of the runs with `key`. */
  readonly valueOf: (key: number) => (code: number) => number;
  /** Keys are below 256 (8-bit scale codes): their tables are kept for the whole call. */
  readonly smallKeys?: boolean;
}

/**
 * The CPU loop of a dequantize kernel over values [start, end). Where it pays (codes of at most 12 bits, and
 * a run at least as long as the table, or 8-bit keys whose tables are kept), each key's code → value
 * function is tabulated once and every value is a table lookup: the format's own functions, called less often.
 * Runs along another axis (stride > 1) are walked one run at a time, so each run's table is made once.
 */
export function dequantRuns(
  codes: Uint32Array,
  bits: number,
  start: number,
  end: number,
  out: Uint32Array,
  { run, stride = 1, keyOf, valueOf, smallKeys = false }: RunValues,
): void {
  const size = 2 ** bits;
  const tabulate = bits <= 12 && (size <= run || (smallKeys && end - start >= 4 * size));
  const kept: Uint32Array[] = [], scratch = new Uint32Array(tabulate ? size : 0);
  let table: Uint32Array = scratch, tableKey = -1;
  /** The code → value table of `key` (null when not tabulating: then `valueOf` is called per value). */
  const tableOf = (key: number): Uint32Array | null => {
    if (!tabulate) return null;
    if (key !== tableKey) {
      tableKey = key;
      const known = smallKeys ? kept[key] : undefined;
      if (known) table = known;
      else {
        table = smallKeys ? (kept[key] = new Uint32Array(size)) : scratch;
        const value = valueOf(key);
        for (let c = 0; c < size; c++) table[c] = value(c);
      }
    }
    return table;
  };
  if (stride === 1) {
    for (let r = Math.floor(start / run); r * run < end; r++) {
      const lo = Math.max(start, r * run), hi = Math.min(end, (r + 1) * run), key = keyOf(r), t = tableOf(key);
      if (t) lookUp(codes, bits, lo, hi, t, out);
      else {
        const value = valueOf(key);
        for (let i = lo; i < hi; i++) out[i] = value(packedCode(codes, i, bits));
      }
    }
    return;
  }
  // Value i = (o·run + k)·stride + j is member k of run o·stride + j (blockOf in scaling.ts).
  const span = run * stride;
  for (let o = Math.floor(start / span); o * span < end; o++) {
    for (let j = 0; j < stride; j++) {
      const first = o * span + j;
      const k0 = Math.max(0, Math.ceil((start - first) / stride)),
        k1 = Math.min(run, Math.ceil((end - first) / stride));
      if (k0 >= k1) continue;
      const key = keyOf(blockOf(first, run, stride)), t = tableOf(key), value = t ? null : valueOf(key);
      for (let k = k0, i = first + k0 * stride; k < k1; k++, i += stride) {
        const c = packedCode(codes, i, bits);
        out[i] = t ? t[c] : value!(c);
      }
    }
  }
}

/** out[i] = table[code i] for i in [lo, hi); whole words at a time when codes do not straddle words. */
function lookUp(codes: Uint32Array, bits: number, lo: number, hi: number, table: Uint32Array, out: Uint32Array): void {
  const perWord = 32 / bits;
  if (!Number.isInteger(perWord)) {
    for (let i = lo; i < hi; i++) out[i] = table[packedCode(codes, i, bits)];
    return;
  }
  const mask = table.length - 1;
  let i = lo;
  for (; i < hi && i % perWord !== 0; i++) out[i] = table[packedCode(codes, i, bits)];
  for (; i + perWord <= hi; i += perWord) {
    let word = codes[i / perWord];
    for (let j = 0; j < perWord; j++, word >>>= bits) out[i + j] = table[word & mask];
  }
  for (; i < hi; i++) out[i] = table[packedCode(codes, i, bits)];
}

/** WGSL `packed_inK(i, bits)`: the twin of {@link packedCode} over input `inK`. */
function fetchWgsl(input: number): string {
  return /* wgsl */ `
fn packed_in${input}(i: u32, bits: u32) -> u32 {
  if (bits == 32u) { return in${input}[i]; }
  let pos = (i & 31u) * bits; let s = pos & 31u;
  let w = (i >> 5u) * bits + (pos >> 5u);
  var v = in${input}[w] >> s;
  if (s + bits > 32u) { v = v | (in${input}[w + 1u] << (32u - s)); }
  return v & ((1u << bits) - 1u);
}
`;
}

/**
 * Packs u32 codes (each masked to `bits` bits) into the stream layout; item = output word. Params [bits,
 * count]; items = ⌈count·bits/32⌉. Every word is written whole (the padding above the last code is zero).
 */
export const PACK_KERNEL: WordKernel = rangeKernel({
  name: "lowp_pack_codes",
  inputs: 1,
  outputs: 1,
  range: (start, end, [codes], [words], p) => {
    const bits = p[0], count = p[1];
    if (bits === 32) {
      for (let w = start; w < end; w++) words[w] = codes[w];
      return;
    }
    const mask = 2 ** bits - 1;
    for (let w = start; w < end; w++) {
      const g = Math.floor(w / bits), lo = (w - g * bits) * 32, base = g * 32;
      const last = Math.min(31, Math.floor((lo + 31) / bits), count - 1 - base);
      let word = 0;
      for (let j = Math.floor(lo / bits); j <= last; j++) {
        const c = codes[base + j] & mask, off = j * bits - lo;
        word |= off >= 0 ? c << off : c >>> -off; // a code begun in the word before contributes its top bits
      }
      words[w] = word >>> 0;
    }
  },
  wgsl: `  let bits = Q(0u);
  if (bits == 32u) { out0[i] = in0[i]; return; }
  let mask = (1u << bits) - 1u;
  let g = i / bits; let lo = (i - g * bits) * 32u; let base = g * 32u;
  let last = min(min(31u, (lo + 31u) / bits), Q(1u) - 1u - base);
  var word = 0u;
  for (var j = lo / bits; j <= last; j++) {
    let c = in0[base + j] & mask;
    if (j * bits >= lo) { word = word | (c << (j * bits - lo)); } else { word = word | (c >> (lo - j * bits)); }
  }
  out0[i] = word;`,
});

/** Plain element formats (`e4m3`, ...): inputs [codes]; params [bits, code format (5 words, `codeWords`)]. */
export const FLOAT_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_float",
  inputs: 1,
  outputs: 1,
  range: (start, end, [codes], [out], p) => {
    const f = codeFormatAt(p, 1);
    dequantRuns(codes, p[0], start, end, out, {
      run: end - start,
      keyOf: () => 0,
      valueOf: () => (c) => decodeBits(c, f),
    });
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + fetchWgsl(0),
  wgsl: `  out0[i] = decode_bits(packed_in0(i, Q(0u)), Q(1u), Q(2u), bitcast<i32>(Q(3u)), bitcast<i32>(Q(4u)), Q(5u));`,
});

const SCALE_KINDS = Object.values(SCALE_FORMATS).sort((a, b) => a.kind - b.kind);

/** Scale formats used on their own (`e8m0`, `ue4m3`, `ue5m3`): inputs [codes]; params [bits, kind]. */
export const SCALE_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_scale",
  inputs: 1,
  outputs: 1,
  range: (start, end, [codes], [out], p) => {
    const f = SCALE_KINDS[p[1]];
    const valueOf = () => (c: number) => decodeScaleBits(c, f);
    dequantRuns(codes, p[0], start, end, out, { run: end - start, keyOf: () => 0, valueOf });
  },
  wgslHelpers: ELEMENT_WGSL + CODES_WGSL + SCALES_WGSL + fetchWgsl(0),
  wgsl: `  out0[i] = scale_decode(packed_in0(i, Q(0u)), Q(1u));`,
});

/**
 * INT-k and Flexpoint mantissas: `(q - zp) · s` per scale channel `blockOf(i, inner, stride) mod channels`
 * (`⌊i/inner⌋ mod channels` with stride 1, as `Layout` in scaling.ts). Inputs [codes, scales (f32 bits, packed
 * at `scaleBits`), zero points (packed at `zpBits`; unread when 0)]; params [bits, signed, channels, inner,
 * scaleBits, zpBits, stride].
 */
export const INT_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_int",
  inputs: 3,
  outputs: 1,
  range: (start, end, [codes, scales, zps], [out], p) => {
    const [bits, signed, channels, inner, scaleBits, zpBits, stride] = p, shift = 32 - bits;
    dequantRuns(codes, bits, start, end, out, {
      run: inner,
      stride,
      keyOf: (r) => r % channels,
      valueOf: (c) => {
        const scale = packedCode(scales, c, scaleBits), zp = zpBits ? packedCode(zps, c, zpBits) : 0;
        return (raw) => intValueBits(signed ? (raw << shift) >> shift : raw, zp, scale);
      },
    });
  },
  wgslHelpers: INT_WGSL + fetchWgsl(0) + fetchWgsl(1) + fetchWgsl(2),
  wgsl: `  let bits = Q(0u);
  let c = scale_of(i, Q(2u), Q(3u), Q(6u));
  let raw = packed_in0(i, bits);
  var q = i32(raw);
  if (Q(1u) == 1u) { q = bitcast<i32>(raw << (32u - bits)) >> (32u - bits); }
  var zp = 0;
  if (Q(5u) != 0u) { zp = i32(packed_in2(c, Q(5u))); }
  out0[i] = int_value_bits(q, zp, packed_in1(c, Q(4u)));`,
});

/** MX formats: inputs [codes, E8M0 scales]; params [bits, scale bits, element words (6, `mxElementWords`), stride]. */
export const MX_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_mx",
  inputs: 2,
  outputs: 1,
  range: (start, end, [codes, scales], [out], p) => {
    const [bits, scaleBits] = p, e8m0 = SCALE_FORMATS.e8m0;
    dequantRuns(codes, bits, start, end, out, {
      run: MX_BLOCK,
      stride: p[8],
      keyOf: (b) => packedCode(scales, b, scaleBits),
      valueOf: (code) => {
        const scale = decodeScaleBits(code, e8m0);
        return (c) => f32MulBits(mxDecodeElement(c, p, 2), scale);
      },
      smallKeys: scaleBits <= 8,
    });
  },
  wgslHelpers: MX_WGSL + fetchWgsl(0) + fetchWgsl(1),
  wgsl: `  let scale = scale_decode(packed_in1(block_of(i, ${MX_BLOCK}u, Q(8u)), Q(1u)), ${SCALE_FORMATS.e8m0.kind}u);
  out0[i] = f32_mul_bits(mx_decode(packed_in0(i, Q(0u)), 2u), scale);`,
});

/** NVFP4: inputs [E2M1 codes, UE4M3 scales, s_t (f32 bits, packed at 32)]; params [bits, scale bits, stride]. */
export const NVFP4_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_nvfp4",
  inputs: 3,
  outputs: 1,
  range: (start, end, [codes, scales, tensorScale], [out], p) => {
    const [bits, scaleBits, stride] = p, ue4m3 = SCALE_FORMATS.ue4m3, st = tensorScale[0];
    dequantRuns(codes, bits, start, end, out, {
      run: NVFP4_BLOCK,
      stride,
      keyOf: (b) => packedCode(scales, b, scaleBits),
      valueOf: (code) => {
        const sb = decodeScaleBits(code, ue4m3);
        return (c) => nvfp4ElementValue(c, sb, st);
      },
      smallKeys: scaleBits <= 8,
    });
  },
  wgslHelpers: NVFP4_WGSL + fetchWgsl(0) + fetchWgsl(1),
  wgsl: `  let sb = scale_decode(packed_in1(block_of(i, ${NVFP4_BLOCK}u, Q(2u)), Q(1u)), ${SCALE_FORMATS.ue4m3.kind}u);
  out0[i] = e2m1_value(packed_in0(i, Q(0u)), sb, in2[0]);`,
});

/**
 * NF4: inputs [codes, absmax per block of 64 (f32 bits, packed at `absmaxBits`), mean (one word)]; params
 * [bits, absmaxBits, add mean, stride]. With "add mean" (double quantization) the absmax input holds the dequantized
 * centred values and the block's absmax is `centred + mean`, as nf4.ts restores it.
 */
export const NF4_PACKED_DEQUANT: WordKernel = rangeKernel({
  name: "lowp_packed_dequant_nf4",
  inputs: 3,
  outputs: 1,
  range: (start, end, [codes, absmax, mean], [out], p) => {
    const [bits, absmaxBits, addMean, stride] = p;
    dequantRuns(codes, bits, start, end, out, {
      run: NF4_BLOCK,
      stride,
      keyOf: (b) => packedCode(absmax, b, absmaxBits),
      valueOf: (a) => {
        const blockAbsmax = addMean ? f32AddBits(a, mean[0]) : a;
        return (c) => nf4ValueBits(c, blockAbsmax);
      },
    });
  },
  wgslHelpers: NF4_WGSL + fetchWgsl(0) + fetchWgsl(1),
  wgsl: `  var a = packed_in1(block_of(i, ${NF4_BLOCK}u, Q(3u)), Q(1u));
  if (Q(2u) != 0u) { a = f32_add_bits(a, in2[0]); }
  out0[i] = nf4_value_bits(packed_in0(i, Q(0u)), a);`,
});
