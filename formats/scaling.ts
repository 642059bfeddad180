/**
 * What the scaled integer formats (INT-k, NF4, Flexpoint) share: which values
 * share a scale ({@link Layout}), an exact per-scale range reduction
 * ({@link reduceRanges}: max, min and max-abs on integer keys, so any order
 * gives the same bits), and three exact helpers on f32 bits, each in
 * TypeScript and WGSL ({@link SCALED_WGSL}):
 *
 * - {@link f32AddBits}: IEEE round-to-nearest-even f32 addition, subnormals
 *   included (WGSL's `+` is correctly rounded but may flush subnormals);
 * - {@link roundToInt}: rounding to an integer in any {@link ROUNDING_CODE}
 *   mode, done by `quantizeBits` on a grid of spacing 1;
 * - {@link intToBits}: an integer as f32 bits.
 *
 * Blocks along any axis ({@link resolveAxis}, {@link blockBase},
 * {@link blockOf}, {@link drawIndex} and their WGSL twins in
 * {@link AXIS_WGSL}): a block of B values along axis `a` of a row-major
 * tensor holds values `stride` apart, stride = the product of the dimensions
 * after `a` (1 for the last axis). Blocks are numbered in the row-major order
 * of the scale shape (the shape with `shape[a]` divided by B), so block b
 * starts at `(b - b % stride)·B + b % stride`. Stochastic rounding draws the
 * Philox word of an element's index in the tensor with axis `a` moved last
 * (its "blocked order"), so quantizing along `a` gives the same bits as
 * moving `a` last, quantizing along the last axis and moving it back, in
 * every rounding mode; along the last axis that index is the flat index.
 *
 * @module
 */
import { type Backend, CpuStorage, PHILOX_WGSL, type Storage, usesHostKernels, type WordKernel } from "@lowp/kernels";
import { ELEMENT_WGSL, quantizeBits, type QuantParams, ROUNDING_CODE } from "./element.ts";
import { EXACT_WGSL } from "./exact.ts";
import type { Granularity, QuantizeOptions } from "./spec.ts";

const SIGN = 0x80000000;
const INF = 0x7f800000;
const QNAN = 0x7fc00000;

/**
 * Bits of the correctly rounded f32 sum a + b (IEEE 754 round to nearest
 * even; x + (-x) = +0; Inf + -Inf = NaN; NaN gives the canonical NaN). Works
 * on 27-bit significands (3 extra bits: guard, round, sticky), enough for one
 * correct rounding; a subnormal result is always exact.
 */
export function f32AddBits(a: number, b: number): number {
  let ma = (a & 0x7fffffff) >>> 0, mb = (b & 0x7fffffff) >>> 0;
  if (ma > INF || mb > INF) return QNAN;
  const sa = (a & SIGN) >>> 0, sb = (b & SIGN) >>> 0;
  if (ma === INF || mb === INF) return ma === INF && mb === INF && sa !== sb ? QNAN : ma === INF ? a >>> 0 : b >>> 0;
  if (ma === 0 && mb === 0) return (sa & sb) >>> 0;
  let sign = sa;
  if (mb > ma) [ma, mb, sign] = [mb, ma, sb]; // |a| >= |b| from here on
  if (mb === 0) return (sign | ma) >>> 0;
  const ea = Math.max(ma >>> 23, 1), eb = Math.max(mb >>> 23, 1); // subnormals share exponent field 1
  const fa = ((ma & 0x7fffff) | (ma >= 0x800000 ? 0x800000 : 0)) << 3;
  const fb0 = ((mb & 0x7fffff) | (mb >= 0x800000 ? 0x800000 : 0)) << 3;
  const d = ea - eb;
  const fb = d === 0 ? fb0 : d >= 27 ? 1 : (fb0 >>> d) | ((fb0 & ((1 << d) - 1)) !== 0 ? 1 : 0);
  let s = sa === sb ? fa + fb : fa - fb;
  if (s === 0) return 0;
  let e = ea;
  if (s >= 0x8000000) {
    s = (s >>> 1) | (s & 1); // carry: one right shift that keeps the sticky bit
    e++;
  } else {
    const sh = Math.min(Math.clz32(s) - 5, e - 1); // normalise to bit 26, but not below exponent field 1
    s <<= sh;
    e -= sh;
  }
  if (s < 0x4000000) return (sign | (s >>> 3)) >>> 0; // subnormal: exact (no bits were shifted out)
  let keep = s >>> 3;
  if ((s & 4) !== 0 && ((s & 3) !== 0 || (keep & 1) !== 0)) keep++;
  if (keep === 0x1000000) {
    keep = 0x800000;
    e++;
  }
  if (e >= 255) return (sign | INF) >>> 0;
  return (sign | (e << 23) | (keep & 0x7fffff)) >>> 0;
}

/** `quantizeBits` parameters of the integer grid: the quantum is 2^(max(log2|x|, 23) - 23) = 1 below 2^24. */
const INT_GRID: QuantParams = { emin: 23, mbits: 23, maxBits: 0x7f7fffff, overflow: 0 };

/**
 * The f32 with bits `x` rounded to an integer (mode: a {@link ROUNDING_CODE};
 * `rand` is the stochastic draw, as for `quantizeBits`), returned as a number
 * clamped to ±2^24. NaN gives 0 (callers decide what NaN means).
 */
export function roundToInt(x: number, mode: number, rand: number): number {
  const r = quantizeBits(x, INT_GRID, mode, rand);
  const mag = r & 0x7fffffff;
  if (mag > INF || mag < 0x3f800000) return 0;
  const v = mag >= 0x4b800000 ? 0x1000000 : ((mag & 0x7fffff) | 0x800000) >>> (150 - (mag >>> 23));
  return r & SIGN ? -v : v;
}

/**
 * `roundToInt(f32 bits of v, 0, 0)` without the bit work, for a finite f32 `v` with |v| ≤ 2^24: the nearest
 * integer, ties to even.
 */
export function nearestEven(v: number): number {
  const r = Math.round(v); // ties toward +Inf: a tie that went to an odd integer goes one down
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** f32 bits of the integer `n` (exact for |n| ≤ 2^24). */
export function intToBits(n: number): number {
  if (n === 0) return 0;
  const m = Math.abs(n), top = 31 - Math.clz32(m);
  const mant = top <= 23 ? (m << (23 - top)) & 0x7fffff : (m >>> (top - 23)) & 0x7fffff;
  return ((n < 0 ? SIGN : 0) | ((top + 127) << 23) | mant) >>> 0;
}

/** An unsigned key that orders non-NaN f32 bits like their values (-0 just below +0). */
export function orderKey(bits: number): number {
  return (bits & SIGN ? ~bits : bits | SIGN) >>> 0;
}

/** Inverse of {@link orderKey}. */
export function keyToBits(key: number): number {
  return (key & SIGN ? key ^ SIGN : ~key) >>> 0;
}

/**
 * The non-negative axis of `axis` (default -1, the last; negative counts from
 * the end) for a tensor of `shape`; throws naming `format`, the shape and the
 * axis when it is out of range or not an integer.
 */
export function resolveAxis(format: string, shape: readonly number[], axis = -1): number {
  const a = axis < 0 ? axis + shape.length : axis;
  if (!Number.isInteger(axis) || a < 0 || a >= shape.length) {
    throw new Error(
      `${format}: axis ${axis} is out of range for shape [${shape.join(",")}] (rank ${shape.length})`,
    );
  }
  return a;
}

/** Throws as {@link resolveAxis} when `axis` is given and out of range (formats without blocks ignore it otherwise). */
export function checkAxisOption(format: string, shape: readonly number[], axis: number | undefined): void {
  if (axis !== undefined) resolveAxis(format, shape, axis);
}

/** The product of the dimensions after `axis`: the distance between neighbours along it. */
export function strideOf(shape: readonly number[], axis: number): number {
  return shape.slice(axis + 1).reduce((a, b) => a * b, 1);
}

/** The scale shape of blocks of `block` along `axis`: `shape` with `shape[axis]` divided by `block`. */
export function blockScaleShape(shape: readonly number[], block: number, axis = shape.length - 1): number[] {
  return shape.map((d, k) => k === axis ? d / block : d);
}

/** Flat index of the first value of block `b` (blocks of `size` values `stride` apart, see the module doc). */
export function blockBase(b: number, size: number, stride: number): number {
  const j = b % stride;
  return (b - j) * size + j;
}

/** The block holding flat index `i` (inverse of {@link blockBase}). */
export function blockOf(i: number, size: number, stride: number): number {
  return Math.floor(Math.floor(i / stride) / size) * stride + (i % stride);
}

/**
 * The index of flat index `i` in the blocked order: its flat index once the
 * axis of length `run` whose neighbours are `stride` apart is moved last
 * (`i` itself when stride = 1). Stochastic rounding draws this word.
 */
export function drawIndex(i: number, stride: number, run: number): number {
  if (stride === 1) return i;
  const j = i % stride, q = (i - j) / stride, l = q % run;
  return ((q - l) / run * stride + j) * run + l;
}

/** WGSL twins of {@link blockBase}, {@link blockOf} and {@link drawIndex}: `block_base`, `block_of`, `draw_index`. */
export const AXIS_WGSL: string = /* wgsl */ `
fn block_base(b: u32, size: u32, stride: u32) -> u32 { let j = b % stride; return (b - j) * size + j; }
fn block_of(i: u32, size: u32, stride: u32) -> u32 { return ((i / stride) / size) * stride + i % stride; }
fn draw_index(i: u32, stride: u32, run: u32) -> u32 {
  if (stride == 1u) { return i; }
  let j = i % stride; let q = i / stride; let l = q % run;
  return ((q / run) * stride + j) * run + l;
}
`;

/** The sign bit of f32 bits (`bits ^ SIGN_BIT` negates). */
export const SIGN_BIT: number = SIGN;
/** The canonical NaN bits. */
export const NAN_BITS: number = QNAN;
/** Bits of +Inf: a magnitude `bits & 0x7fffffff` at or above it is not finite. */
export const INF_BITS: number = INF;

/** WGSL twins of the helpers above (`f32_add_bits`, `round_to_int`, `int_to_bits`, `order_key`, `key_bits`). */
const HELPERS_WGSL = /* wgsl */ `
const SIGN: u32 = 0x80000000u;
fn f32_add_bits(a: u32, b: u32) -> u32 {
  var ma = a & 0x7fffffffu; var mb = b & 0x7fffffffu;
  if (ma > INF || mb > INF) { return QNAN; }
  let sa = a & SIGN; let sb = b & SIGN;
  if (ma == INF || mb == INF) {
    if (ma == INF && mb == INF && sa != sb) { return QNAN; }
    if (ma == INF) { return a; }
    return b;
  }
  if (ma == 0u && mb == 0u) { return sa & sb; }
  var sign = sa;
  if (mb > ma) { let t = ma; ma = mb; mb = t; sign = sb; }
  if (mb == 0u) { return sign | ma; }
  let ea = max(ma >> 23u, 1u); let eb = max(mb >> 23u, 1u);
  let fa = ((ma & 0x7fffffu) | select(0u, 0x800000u, ma >= 0x800000u)) << 3u;
  let fb0 = ((mb & 0x7fffffu) | select(0u, 0x800000u, mb >= 0x800000u)) << 3u;
  let d = ea - eb;
  var fb = fb0;
  if (d >= 27u) { fb = 1u; } else if (d > 0u) { fb = (fb0 >> d) | select(0u, 1u, (fb0 & ((1u << d) - 1u)) != 0u); }
  var s = select(fa - fb, fa + fb, sa == sb);
  if (s == 0u) { return 0u; }
  var e = ea;
  if (s >= 0x8000000u) { s = (s >> 1u) | (s & 1u); e = e + 1u; } else {
    let sh = min(countLeadingZeros(s) - 5u, e - 1u);
    s = s << sh; e = e - sh;
  }
  if (s < 0x4000000u) { return sign | (s >> 3u); }
  var keep = s >> 3u;
  if ((s & 4u) != 0u && ((s & 3u) != 0u || (keep & 1u) != 0u)) { keep = keep + 1u; }
  if (keep == 0x1000000u) { keep = 0x800000u; e = e + 1u; }
  if (e >= 255u) { return sign | INF; }
  return sign | (e << 23u) | (keep & 0x7fffffu);
}
fn round_to_int(x: u32, mode: u32, rand: u32) -> i32 {
  let r = quantize_bits(x, Fmt(23, 23, 0x7f7fffffu, 0u), mode, rand);
  let mag = r & 0x7fffffffu;
  if (mag > INF || mag < 0x3f800000u) { return 0; }
  var v = 0x1000000u;
  if (mag < 0x4b800000u) { v = ((mag & 0x7fffffu) | 0x800000u) >> (150u - (mag >> 23u)); }
  if ((r & SIGN) != 0u) { return -i32(v); }
  return i32(v);
}
fn int_to_bits(n: i32) -> u32 {
  if (n == 0) { return 0u; }
  let m = u32(abs(n));
  let top = 31u - countLeadingZeros(m);
  var mant = 0u;
  if (top <= 23u) { mant = (m << (23u - top)) & 0x7fffffu; } else { mant = (m >> (top - 23u)) & 0x7fffffu; }
  return select(0u, SIGN, n < 0) | ((top + 127u) << 23u) | mant;
}
fn order_key(b: u32) -> u32 { if ((b & SIGN) != 0u) { return ~b; } return b | SIGN; }
fn key_bits(k: u32) -> u32 { if ((k & SIGN) != 0u) { return k ^ SIGN; } return ~k; }
`;

/**
 * Every WGSL helper a scaled-format kernel may call: `quantize_bits`
 * (element.ts), `f32_mul_bits` / `f32_recip_bits` (exact.ts), `philox_word`,
 * and the helpers of this module (including {@link AXIS_WGSL}).
 */
export const SCALED_WGSL: string = ELEMENT_WGSL + EXACT_WGSL + PHILOX_WGSL + HELPERS_WGSL + AXIS_WGSL;

/**
 * Which values share a scale. With `stride` = 1 (per tensor, per channel,
 * groups along the last axis): element `i` (row-major) uses scale
 * `floor(i / inner) % channels`, and the members of scale `c` are
 * `o·channels·inner + c·inner + j` for o < outer, j < inner, below `n` (so a
 * last, shorter block is allowed). Groups along another axis have `stride` >
 * 1 (outer = 1): group `c` holds the `inner` values
 * `blockBase(c, inner, stride) + k·stride`, k < inner (see the module doc).
 * Both cases: scale of `i` = `(floor(i / (inner·stride))·stride + i % stride) % channels`.
 */
export interface Layout {
  /** Number of values. */
  readonly n: number;
  /** Repeats of the scale pattern (the dimensions before a channel axis). */
  readonly outer: number;
  /** Number of scales. */
  readonly channels: number;
  /** Values sharing a scale (the dimensions after a channel axis, or the group size). */
  readonly inner: number;
  /** Distance between consecutive members of a group: the product of the dimensions after its axis (1: adjacent). */
  readonly stride: number;
  /** Length of the axis groups run along (orders the stochastic draws, see {@link drawIndex}); max(n, 1) when stride = 1. */
  readonly run: number;
  /** Shape of the scales tensor. */
  readonly scaleShape: readonly number[];
}

const fmtShape = (shape: readonly number[]) => `[${shape.join(",")}]`;

/**
 * The {@link Layout} of `granularity` on `shape`, with groups along `axis`
 * (default -1, the last; ignored by `tensor` and `channel:AXIS`, whose scales
 * do not run along an axis); throws naming `what`, the shape and the
 * granularity or axis when it does not fit.
 */
export function layoutOf(shape: readonly number[], granularity: Granularity, what: string, axis?: number): Layout {
  const n = shape.reduce((a, b) => a * b, 1);
  const run = Math.max(1, n);
  if (axis !== undefined && shape.length > 0) resolveAxis(what, shape, axis);
  if (granularity.kind === "tensor") return { n, outer: 1, channels: 1, inner: n, stride: 1, run, scaleShape: [1] };
  if (granularity.kind === "channel") {
    const axis = granularity.axis < 0 ? granularity.axis + shape.length : granularity.axis;
    if (!Number.isInteger(axis) || axis < 0 || axis >= shape.length) {
      throw new Error(`${what}: channel axis ${granularity.axis} is out of range for shape ${fmtShape(shape)}`);
    }
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    return { n, outer, channels: shape[axis], inner, stride: 1, run, scaleShape: [shape[axis]] };
  }
  const g = granularity.size;
  const a = shape.length === 0 ? -1 : resolveAxis(what, shape, axis);
  if (a < 0 || !Number.isInteger(g) || g < 1 || shape[a] % g !== 0) {
    throw new Error(
      `${what}: group size ${g} must divide dimension ${a} of shape ${fmtShape(shape)} (groups run along axis ${
        axis ?? -1
      })`,
    );
  }
  const stride = strideOf(shape, a);
  return {
    n,
    outer: 1,
    channels: n / g,
    inner: g,
    stride,
    run: stride === 1 ? run : shape[a],
    scaleShape: blockScaleShape(shape, g, a),
  };
}

/** Blocks of `size` consecutive values over `n` values, the last one possibly shorter. */
export function blockLayout(n: number, size: number): Layout {
  const channels = Math.ceil(n / size);
  return { n, outer: 1, channels, inner: size, stride: 1, run: Math.max(1, n), scaleShape: [channels] };
}

/** The text form of a granularity (as `parseGranularity` reads it). */
export function granularityText(g: Granularity): string {
  return g.kind === "tensor" ? "tensor" : g.kind === "channel" ? `channel:${g.axis}` : `group:${g.size}`;
}

/** Kernel parameters [mode, seed, stream, offset lo, offset hi] of the rounding options. */
export function roundingParams(opts: QuantizeOptions): number[] {
  const rounding = opts.rounding ?? "nearest";
  const mode = ROUNDING_CODE[rounding];
  if (mode === undefined) throw new Error(`rounding '${rounding}': expected nearest, nearest-away or stochastic`);
  const offset = opts.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`offset ${offset}: expected a non-negative integer`);
  return [mode, (opts.seed ?? 0) >>> 0, (opts.stream ?? 0) >>> 0, offset % 4294967296, Math.floor(offset / 4294967296)];
}

/** Per-scale ranges: keys of max(values, +0) and min(values, +0) (see {@link orderKey}), and the max of |bits|. */
export interface Ranges {
  /** Order key of the largest value, at least +0 (so the range includes zero). */
  readonly hi: Storage;
  /** Order key of the smallest value, at most +0. */
  readonly lo: Storage;
  /** Largest `bits & 0x7fffffff`: above 0x7f800000 when a NaN is present, equal to it for ±Inf. */
  readonly amax: Storage;
}

/** Values one item of the first reduction pass covers. */
const CHUNK = 256;

/** Range of one (scale, chunk) pair: params [n, channels, inner, members, chunk, chunks, stride]. */
const RANGE_PARTIAL: WordKernel = {
  name: "lowp_range_partial",
  inputs: 1,
  outputs: 3,
  cpu: (t, [x], [hi, lo, am], p) => {
    const n = p[0], channels = p[1], inner = p[2], members = p[3], chunk = p[4], chunks = p[5], stride = p[6];
    const c = Math.floor(t / chunks), k0 = (t % chunks) * chunk, k1 = Math.min(members, k0 + chunk);
    const first = blockBase(c, inner, stride), rowStep = channels * inner;
    let h = SIGN, l = SIGN, a = 0;
    // pos = floor(k / inner) · channels · inner + first + (k mod inner) · stride, stepped along k.
    let j = k0 % inner, row = ((k0 - j) / inner) * rowStep;
    for (let k = k0; k < k1; k++) {
      const pos = row + first + j * stride;
      if (pos >= n) break; // positions grow with k
      const w = x[pos], key = orderKey(w), mag = w & 0x7fffffff;
      if (key > h) h = key;
      if (key < l) l = key;
      if (mag > a) a = mag;
      if (++j === inner) j = 0, row += rowStep;
    }
    hi[t] = h, lo[t] = l, am[t] = a;
  },
  wgslHelpers: SCALED_WGSL,
  wgsl: `  let c = i / Q(5u); let k0 = (i % Q(5u)) * Q(4u); let k1 = min(Q(3u), k0 + Q(4u));
  let first = block_base(c, Q(2u), Q(6u));
  var h = SIGN; var l = SIGN; var a = 0u;
  for (var k = k0; k < k1; k++) {
    let pos = (k / Q(2u)) * Q(1u) * Q(2u) + first + (k % Q(2u)) * Q(6u);
    if (pos >= Q(0u)) { break; }
    let key = order_key(in0[pos]);
    h = max(h, key); l = min(l, key); a = max(a, in0[pos] & 0x7fffffffu);
  }
  out0[i] = h; out1[i] = l; out2[i] = a;`,
};

/** Combines the chunks of one scale: params [chunks]. */
const RANGE_COMBINE: WordKernel = {
  name: "lowp_range_combine",
  inputs: 3,
  outputs: 3,
  cpu: (c, [hi, lo, am], [h, l, a], p) => {
    let [x, y, z] = [hi[c * p[0]], lo[c * p[0]], am[c * p[0]]];
    for (let j = 1; j < p[0]; j++) {
      const k = c * p[0] + j;
      [x, y, z] = [Math.max(x, hi[k]), Math.min(y, lo[k]), Math.max(z, am[k])];
    }
    [h[c], l[c], a[c]] = [x, y, z];
  },
  wgsl: `  var x = in0[i * Q(0u)]; var y = in1[i * Q(0u)]; var z = in2[i * Q(0u)];
  for (var j = 1u; j < Q(0u); j++) {
    let k = i * Q(0u) + j;
    x = max(x, in0[k]); y = min(y, in1[k]); z = max(z, in2[k]);
  }
  out0[i] = x; out1[i] = y; out2[i] = z;`,
};

/**
 * The {@link Ranges} of every scale of `layout` over the f32 bits in `x`, in
 * two passes (chunks of 256 values, then per scale). Integer max/min are
 * exact, so the result does not depend on the order.
 */
export function reduceRanges(backend: Backend, x: Storage, layout: Layout): Ranges {
  const host = hostRanges(backend, x, layout);
  if (host) return host;
  const members = layout.outer * layout.inner;
  const chunks = Math.max(1, Math.ceil(members / CHUNK));
  const alloc = (k: number) => [backend.alloc(k), backend.alloc(k), backend.alloc(k)];
  const partial = alloc(layout.channels * chunks);
  const params = [layout.n, layout.channels, layout.inner, members, CHUNK, chunks, layout.stride];
  backend.runWords(RANGE_PARTIAL, [x], partial, layout.channels * chunks, params);
  if (chunks === 1) return { hi: partial[0], lo: partial[1], amax: partial[2] };
  const out = alloc(layout.channels);
  backend.runWords(RANGE_COMBINE, partial, out, layout.channels, [chunks]);
  partial.forEach((s) => backend.free(s));
  return { hi: out[0], lo: out[1], amax: out[2] };
}

/**
 * {@link reduceRanges} on a CPU backend that takes fused host kernels, for scales over runs of adjacent
 * values (`outer` 1, `stride` 1: per tensor, or groups along the last axis): one tight loop per scale over
 * the words instead of the word kernel's item loop, which works out each position. Max and min of integer
 * keys do not depend on the order, so the result is the word kernels'. Null for any other case.
 */
function hostRanges(backend: Backend, x: Storage, layout: Layout): Ranges | null {
  if (!usesHostKernels(backend) || !(x instanceof CpuStorage) || layout.outer !== 1 || layout.stride !== 1) return null;
  const { n, channels, inner } = layout;
  const hi = backend.alloc(channels), lo = backend.alloc(channels), amax = backend.alloc(channels);
  const words = x.u32, h = (hi as CpuStorage).u32, l = (lo as CpuStorage).u32, a = (amax as CpuStorage).u32;
  for (let c = 0; c < channels; c++) {
    let top = SIGN, bottom = SIGN, mag = 0;
    for (let i = c * inner, end = Math.min(n, i + inner); i < end; i++) {
      const w = words[i], key = orderKey(w), m = w & 0x7fffffff;
      if (key > top) top = key;
      if (key < bottom) bottom = key;
      if (m > mag) mag = m;
    }
    h[c] = top, l[c] = bottom, a[c] = mag;
  }
  return { hi, lo, amax };
}

/** Frees the given storages (skipping nulls). */
export function freeAll(backend: Backend, ...storages: (Storage | null | undefined)[]): void {
  for (const s of storages) if (s) backend.free(s);
}
