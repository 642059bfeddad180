/**
 * Autoflex, the Flexpoint paper's exponent management (Köster et al. 2017,
 * arXiv 1711.02213; constants of the original simulator, ALGORITHMS.md
 * finding 7), as one exact step function run on the backend (no readback)
 * and, through its TypeScript twin, by the host class {@link Autoflex}.
 *
 * State of one tensor (a stream of tensors: one operand of one GEMM of one
 * layer), H + 2 f32 words ({@link autoflexInitialState}):
 * `[exponent, count, h_0 … h_{H−1}]`. `exponent` is the shared exponent for
 * the next tensor, an integer in [−31, 0] stored as an f32, or 1 before the
 * first tensor ({@link AUTOFLEX_NONE}); `count` (an f32 integer) is how many
 * max-abs values the history holds, oldest first in h_0 … h_{count−1}; the
 * other slots are 0.
 *
 * Exponent used for a tensor of max-abs `a` (f32 bits): NaN/Inf in the
 * tensor make its scale NaN (the whole tensor NaN, as for `flex16+5`);
 * otherwise the state's exponent, or before the first tensor the tensor's
 * own, `flexExponentOf(a)`.
 *
 * Step (training), with e the exponent used (0 for a first tensor with
 * NaN/Inf) and every operation an exactly rounded f32 operation on bits
 * (`f32AddBits`, `f32MulBits`, `f32RecipBits`: IEEE round to nearest even,
 * subnormals kept, the same bits in TypeScript and WGSL):
 *
 * 1. overflow: `fl(a·2^−e) ≥ 32767` (as bits; NaN and Inf count). Then the
 *    history is cleared (count 0) and the next exponent is min(e + 1, 0).
 * 2. otherwise `a` is appended (the oldest dropped when H are held), and with
 *    n = count, h the history oldest first, σ_k the `sigmas` knob (default 3)
 *    and μ_m the `marginUnits` knob (default 100), both as f32:
 *    - M = max h_i; S = ((h_0 + h_1) + h_2) + …; r = fl(1/n); μ = fl(S·r);
 *    - V = fl(fl(Σ_i fl(d_i·d_i))·r), d_i = fl(h_i − μ), summed in order;
 *    - B = fl(M + fl(μ_m·2^e)); K = fl(σ_k·σ_k); L = fl(K·V);
 *    - E = floor(log2 B) from B's bits, then while E < 14 and
 *      `L ≥ fl(D·D)` with D = fl(2^(E+1) − B): E = E + 1. This is
 *      floor(log2(B + σ_k·sqrt(V))), the paper's
 *      `floor(log2(max + 3σ + 100·2^e))`, decided on squares
 *      (σ_k·σ ≥ 2^(E+1) − B ⟺ σ_k²·V ≥ (2^(E+1) − B)²) so no square root is
 *      taken (WGSL's `sqrt` and `log2` are not correctly rounded);
 *    - next exponent = clamp(E − 14, −31, 0); B = 0 (an all-zero history
 *      without margin) gives −31.
 *
 * The simulator computes the same in f64 with a square root; the f32 steps
 * (each off by at most half an ulp, over at most H terms) can differ from it
 * only when the prediction lies within about 10⁻⁵ (relative) of a power of
 * two (formats/flex_test.ts compares them on random histories).
 *
 * @module
 */
import { emptyTensor, Tensor, tensor } from "@lowp/core";
import { asF32, type Backend, bitsToF32, f32Bits, rangeKernel, type WordKernel } from "@lowp/kernels";
import { f32MulBits, f32RecipBits } from "./exact.ts";
import { FLEX_EXP_MAX, FLEX_EXP_MIN, FLEX_MANTISSA_SPEC, flexExponentOf, maxAbs } from "./flex.ts";
import { applyIntScales, requireF32, type ScaleSet } from "./int.ts";
import { f32AddBits, freeAll, INF_BITS, intToBits, layoutOf, NAN_BITS, reduceRanges, SCALED_WGSL } from "./scaling.ts";
import type { QuantizeOptions } from "./spec.ts";

/** The exponent slot's value before the first tensor (outside [−31, 0]). */
export const AUTOFLEX_NONE: number = 1;
/** Longest history an Autoflex state may keep. */
export const AUTOFLEX_MAX_HISTORY: number = 1024;

const NONE_BITS = 0x3f800000; // f32 bits of AUTOFLEX_NONE
const SIGN = 0x80000000;
const OVERFLOW_BITS = 0x46fffe00; // f32 bits of 2^15 − 1
const STATE_HEAD = 2;

/** Autoflex settings (defaults: the original simulator's). */
export interface AutoflexOptions {
  /** Max-abs values kept (default 16, at most {@link AUTOFLEX_MAX_HISTORY}). */
  readonly history?: number;
  /** Standard deviations added to the history's max (default 3, from 0 to 1000). */
  readonly sigmas?: number;
  /** Margin in mantissa units, i.e. times the current scale 2^e (default 100, from 0 to 65536). */
  readonly marginUnits?: number;
}

/** What one Autoflex step decided for one tensor. */
export interface AutoflexStep {
  /** Exponent the observed tensor is quantized with. */
  readonly exponent: number;
  /** 2^exponent. */
  readonly scale: number;
  /** The tensor's max-abs reached 2^15 − 1 mantissa units at that exponent (it saturates), or was NaN/Inf. */
  readonly overflowed: boolean;
  /** The tensor's max-abs (as f32). */
  readonly maxAbs: number;
  /** Exponent predicted for the next tensor. */
  readonly nextExponent: number;
}

/** Kernel parameters: [H, f32 bits of sigmas, f32 bits of the margin]; throws naming the bad knob. */
export function autoflexParams(opts: AutoflexOptions = {}): number[] {
  const h = opts.history ?? 16, sigmas = opts.sigmas ?? 3, margin = opts.marginUnits ?? 100;
  if (!Number.isInteger(h) || h < 1 || h > AUTOFLEX_MAX_HISTORY) {
    throw new Error(`autoflex: history must be an integer from 1 to ${AUTOFLEX_MAX_HISTORY}, got ${h}`);
  }
  if (!(sigmas >= 0 && sigmas <= 1000)) throw new Error(`autoflex: sigmas must be from 0 to 1000, got ${sigmas}`);
  if (!(margin >= 0 && margin <= 65536)) {
    throw new Error(`autoflex: margin units must be from 0 to 65536, got ${margin}`);
  }
  return [h, f32Bits(sigmas), f32Bits(margin)];
}

/** The words of a fresh state (no exponent yet, empty history) for a history of `history` values. */
export function autoflexInitialState(history: number): Uint32Array {
  const words = new Uint32Array(history + STATE_HEAD);
  words[0] = NONE_BITS;
  return words;
}

/** floor(log2 |x|) of a finite non-zero f32 given by its magnitude bits. */
function floorLog2Bits(mag: number): number {
  const ef = mag >>> 23;
  return ef === 0 ? 31 - Math.clz32(mag) - 149 : ef - 127;
}

/** f32 bits of 2^k for k in [−149, 127]. */
const pow2Bits = (k: number) => (k >= -126 ? (k + 127) << 23 : 1 << (k + 149)) >>> 0;

/** The exponent a tensor of max-abs bits `a` is quantized with under `state` (NaN/Inf: the first step's 0). */
function exponentUsed(state: Uint32Array, a: number): number {
  if (state[0] !== NONE_BITS) return bitsToF32(state[0]);
  return a >= INF_BITS ? FLEX_EXP_MAX : flexExponentOf(a);
}

/** Next exponent from the history held in `s` (count n ≥ 1), e the exponent used; see the module doc. */
function predict(s: Uint32Array, n: number, e: number, sigmaBits: number, marginBits: number): number {
  let m = 0, sum = 0;
  for (let j = 0; j < n; j++) {
    const h = s[STATE_HEAD + j];
    m = Math.max(m, h);
    sum = f32AddBits(sum, h);
  }
  const r = f32RecipBits(intToBits(n)), mean = f32MulBits(sum, r), negMean = (mean ^ SIGN) >>> 0;
  let v = 0;
  for (let j = 0; j < n; j++) {
    const d = f32AddBits(s[STATE_HEAD + j], negMean);
    v = f32AddBits(v, f32MulBits(d, d));
  }
  v = f32MulBits(v, r);
  const b = f32AddBits(m, f32MulBits(marginBits, pow2Bits(e)));
  if (b === 0) return FLEX_EXP_MIN;
  const l = f32MulBits(f32MulBits(sigmaBits, sigmaBits), v);
  let big = floorLog2Bits(b);
  while (big < 14) {
    const d = f32AddBits(pow2Bits(big + 1), (b ^ SIGN) >>> 0);
    if (l < f32MulBits(d, d)) break;
    big++;
  }
  return Math.min(FLEX_EXP_MAX, Math.max(FLEX_EXP_MIN, big - 14));
}

/**
 * One Autoflex step on state words `state` for a tensor of max-abs bits `a`, written to `out` (same length,
 * not `state`); `params` as {@link autoflexParams} gives them. Returns the exponent used and whether it overflowed.
 * The CPU twin of the backend's update kernel.
 */
export function autoflexStepWords(
  state: Uint32Array,
  a: number,
  out: Uint32Array,
  params: ArrayLike<number>,
): { exponent: number; overflowed: boolean } {
  const h = params[0], e = exponentUsed(state, a);
  const overflowed = a > INF_BITS || f32MulBits(a, pow2Bits(-e)) >= OVERFLOW_BITS;
  out.fill(0);
  if (overflowed) {
    out[0] = f32Bits(Math.min(e + 1, FLEX_EXP_MAX));
    return { exponent: e, overflowed };
  }
  const held = bitsToF32(state[1]), drop = held === h ? 1 : 0, n = held + 1 - drop;
  for (let j = 0; j < held - drop; j++) out[STATE_HEAD + j] = state[STATE_HEAD + j + drop];
  out[STATE_HEAD + n - 1] = a;
  out[1] = intToBits(n);
  out[0] = f32Bits(predict(out, n, e, params[1], params[2]));
  return { exponent: e, overflowed };
}

/** WGSL twins of `floorLog2Bits`, `pow2Bits` and `predict` (state words in `out0`). */
const AUTOFLEX_WGSL = /* wgsl */ `
fn af_floor_log2(mag: u32) -> i32 {
  if ((mag >> 23u) == 0u) { return 31 - i32(countLeadingZeros(mag)) - 149; }
  return i32(mag >> 23u) - 127;
}
fn af_pow2(k: i32) -> u32 {
  if (k >= -126) { return u32(k + 127) << 23u; }
  return 1u << u32(k + 149);
}
fn af_used(e_word: u32, a: u32) -> i32 {
  if (e_word != ${NONE_BITS}u) { return i32(bitcast<f32>(e_word)); }
  if (a >= INF) { return ${FLEX_EXP_MAX}; }
  if (a == 0u) { return ${FLEX_EXP_MIN}; }
  return clamp(af_floor_log2(a) - 14, ${FLEX_EXP_MIN}, ${FLEX_EXP_MAX});
}
`;

const PREDICT_WGSL = `
  var m = 0u; var sum = 0u;
  for (var j = 0u; j < n; j++) { let h = out0[${STATE_HEAD}u + j]; m = max(m, h); sum = f32_add_bits(sum, h); }
  let r = f32_recip_bits(int_to_bits(i32(n)));
  let mean = f32_mul_bits(sum, r);
  var v = 0u;
  for (var j = 0u; j < n; j++) {
    let d = f32_add_bits(out0[${STATE_HEAD}u + j], mean ^ SIGN);
    v = f32_add_bits(v, f32_mul_bits(d, d));
  }
  v = f32_mul_bits(v, r);
  let b = f32_add_bits(m, f32_mul_bits(Q(2u), af_pow2(e)));
  var next = ${FLEX_EXP_MIN};
  if (b != 0u) {
    let l = f32_mul_bits(f32_mul_bits(Q(1u), Q(1u)), v);
    var big = af_floor_log2(b);
    loop {
      if (big >= 14) { break; }
      let d = f32_add_bits(af_pow2(big + 1), b ^ SIGN);
      if (l < f32_mul_bits(d, d)) { break; }
      big = big + 1;
    }
    next = clamp(big - 14, ${FLEX_EXP_MIN}, ${FLEX_EXP_MAX});
  }
  out0[0] = bitcast<u32>(f32(next));`;

/** The state update. Ins: state, max-abs (one word). Out: the new state. Params: {@link autoflexParams}. */
const AUTOFLEX_UPDATE_KERNEL: WordKernel = rangeKernel({
  name: "lowp_autoflex_update",
  inputs: 2,
  outputs: 1,
  range: (_start, _end, [state, amax], [out], p) => {
    autoflexStepWords(state.subarray(0, p[0] + STATE_HEAD), amax[0], out.subarray(0, p[0] + STATE_HEAD), p);
  },
  wgslHelpers: SCALED_WGSL + AUTOFLEX_WGSL,
  wgsl: `  let h = Q(0u);
  let a = in1[0];
  let e = af_used(in0[0], a);
  for (var j = 0u; j < h + ${STATE_HEAD}u; j++) { out0[j] = 0u; }
  if (a > INF || f32_mul_bits(a, af_pow2(-e)) >= ${OVERFLOW_BITS}u) {
    out0[0] = bitcast<u32>(f32(min(e + 1, ${FLEX_EXP_MAX})));
    return;
  }
  let held = u32(bitcast<f32>(in0[1]));
  var drop = 0u;
  if (held == h) { drop = 1u; }
  let n = held + 1u - drop;
  for (var j = 0u; j < held - drop; j++) { out0[${STATE_HEAD}u + j] = in0[${STATE_HEAD}u + j + drop]; }
  out0[${STATE_HEAD}u + n - 1u] = a;
  out0[1] = int_to_bits(i32(n));
${PREDICT_WGSL}`,
});

/** Scale words [2^e, 2^−e, 0] of the exponent used (NaN for a tensor with NaN/Inf). Ins: state, max-abs. */
const AUTOFLEX_SCALE_KERNEL: WordKernel = rangeKernel({
  name: "lowp_autoflex_scale",
  inputs: 2,
  outputs: 3,
  range: (_start, _end, [state, amax], [scale, inv, zp]) => {
    const a = amax[0], e = exponentUsed(state, a);
    [scale[0], inv[0], zp[0]] = a >= INF_BITS ? [NAN_BITS, NAN_BITS, 0] : [pow2Bits(e), pow2Bits(-e), 0];
  },
  wgslHelpers: SCALED_WGSL + AUTOFLEX_WGSL,
  wgsl: `  let a = in1[0];
  out2[0] = 0u;
  if (a >= INF) { out0[0] = QNAN; out1[0] = QNAN; return; }
  let e = af_used(in0[0], a);
  out0[0] = af_pow2(e); out1[0] = af_pow2(-e);`,
});

/** A fresh Autoflex state on `backend` (an f32 tensor of H + 2 words, see the module doc). */
export function autoflexState(backend: Backend, opts: AutoflexOptions = {}): Tensor {
  const words = autoflexInitialState(autoflexParams(opts)[0]);
  return tensor(asF32(words), { backend });
}

/** Checks that `state` is an Autoflex state for `opts`' history; throws naming `what`. */
function checkState(state: Tensor, params: number[], what: string): void {
  if (state.dtype !== "f32" || state.rank !== 1 || state.size !== params[0] + STATE_HEAD) {
    throw new Error(
      `${what}: an Autoflex state for a history of ${params[0]} is f32 [${params[0] + STATE_HEAD}], ` +
        `got ${state.describe()}`,
    );
  }
}

/** What {@link autoflexQuantDequant} returns. */
export interface AutoflexResult {
  /** x quantized to flex16+5 with the exponent Autoflex chose, and dequantized. */
  readonly values: Tensor;
  /** The state after this tensor (`update`), or null. */
  readonly state: Tensor | null;
}

/**
 * quantize → dequantize `x` (f32, one shared exponent) with the exponent its Autoflex `state` gives (the
 * tensor's own before the first step), on the backend without a readback; with `update` also returns the
 * state after this tensor (the step of the module doc). Rounding options as every quantizer's.
 */
export function autoflexQuantDequant(
  x: Tensor,
  state: Tensor,
  opts: AutoflexOptions & QuantizeOptions & { readonly update: boolean },
): AutoflexResult {
  requireF32(x, "flex16+5");
  const params = autoflexParams(opts), b = x.backend;
  checkState(state, params, "autoflexQuantDequant");
  if (state.backend !== b) throw new Error("autoflexQuantDequant: the state lives on another backend than x");
  const layout = layoutOf(x.shape, { kind: "tensor" }, "flex16+5");
  const r = x.size > 0 ? reduceRanges(b, x.storage, layoutOf([x.size], { kind: "tensor" }, "flex16+5")) : null;
  const amax = r ? r.amax : b.upload(new Uint32Array(1));
  if (r) freeAll(b, r.hi, r.lo);
  const scaleWords = [b.alloc(1), b.alloc(1), b.alloc(1)];
  b.runWords(AUTOFLEX_SCALE_KERNEL, [state.storage, amax], scaleWords, 1, []);
  const scales: ScaleSet = { scale: scaleWords[0], inv: scaleWords[1], zp: scaleWords[2] };
  const out = applyIntScales(b, x.storage, layout, scales, FLEX_MANTISSA_SPEC, opts, "values");
  freeAll(b, ...scaleWords);
  let next: Tensor | null = null;
  if (opts.update) {
    next = emptyTensor(b, state.shape);
    b.runWords(AUTOFLEX_UPDATE_KERNEL, [state.storage, amax], [next.storage], 1, params);
  }
  b.free(amax);
  return { values: new Tensor(b, out, x.shape, "f32"), state: next };
}

/** The exponent slot of a state read back (null before the first tensor), its count and history. */
export function autoflexStateOf(words: Uint32Array): { exponent: number | null; history: number[] } {
  const count = bitsToF32(words[1]);
  return {
    exponent: words[0] === NONE_BITS ? null : bitsToF32(words[0]),
    history: Array.from(asF32(words.slice(STATE_HEAD, STATE_HEAD + count))),
  };
}

/**
 * Autoflex on the host: the same step function as the backend's (see the
 * module doc), fed one max-abs at a time. Use one instance per tensor:
 *
 * @example
 * ```ts
 * import { cpuBackend, tensor } from "@lowp/core";
 * import { Autoflex } from "./autoflex.ts";
 * import { flexQuantizer } from "./flex.ts";
 * const flex = flexQuantizer("flex16+5")!, af = new Autoflex();
 * for (const v of [1, 1.5, 5]) {
 *   const x = tensor([v, -v / 2], { backend: cpuBackend() });
 *   const step = await af.next(x);
 *   const y = flex.quantDequantWith(x, step.exponent); // saturates at step 3, which overflowed
 *   console.assert(step.overflowed === (v === 5), y.shape);
 * }
 * ```
 */
export class Autoflex {
  readonly #params: number[];
  #state: Uint32Array;

  /**
   * Creates an Autoflex with an empty history.
   * @param opts history length, sigmas and margin (defaults 16, 3, 100)
   */
  constructor(opts: AutoflexOptions = {}) {
    this.#params = autoflexParams(opts);
    this.#state = autoflexInitialState(this.#params[0]);
  }

  /** The exponent predicted for the next tensor (null before the first one). */
  get exponent(): number | null {
    return autoflexStateOf(this.#state).exponent;
  }

  /** The max-abs values in the history, oldest first. */
  get history(): readonly number[] {
    return autoflexStateOf(this.#state).history;
  }

  /** A copy of the state words (as the backend's state tensor holds them). */
  get state(): Uint32Array {
    return this.#state.slice();
  }

  /** Reads x's max-abs and {@link Autoflex.observe}s it. */
  async next(x: Tensor): Promise<AutoflexStep> {
    return this.observe(await maxAbs(x));
  }

  /** One step from a tensor's max-abs (rounded to f32): the exponent for it, whether it overflowed, the next one. */
  observe(amax: number): AutoflexStep {
    const a = Number.isNaN(amax) ? NAN_BITS : f32Bits(Math.abs(amax));
    const out = new Uint32Array(this.#state.length);
    const { exponent, overflowed } = autoflexStepWords(this.#state, a, out, this.#params);
    this.#state = out;
    const next = this.exponent!;
    return { exponent, scale: 2 ** exponent, overflowed, maxAbs: bitsToF32(a), nextExponent: next };
  }
}
