/**
 * Blockwise Walsh–Hadamard transform along the last axis, orthonormal
 * (scaled by 1/√b, so it is its own inverse), with optional random ±1 signs:
 * `y = H·D·x` per block of b values, D = diag(signs). Rotating both operands
 * of a product along the reduction axis spreads outliers before quantizing and
 * cancels in the product (QuaRot, QuIP#; Quartet arXiv 2505.14669 uses b = 32
 * and fresh random signs in every backward step).
 *
 * H is Sylvester's: H₁ = [1], H₂ₙ = [[Hₙ, Hₙ], [Hₙ, -Hₙ]] (scipy.linalg.hadamard),
 * computed with the in-place fast transform (log₂ b butterfly stages of f32
 * adds/subtracts) then one multiply by fl(1/√b). This is float arithmetic:
 * each output is within (log₂ b + 2)·2⁻²⁴·Σ|x_block|/√b of the exact value. The
 * CPU rounds to f32 after every operation in the same order as the WGSL, and
 * WGSL's +, -, × are correctly rounded, so the backends agree bit for bit
 * unless a GPU flushes subnormals (measured: bit-identical on lavapipe).
 * Signs are applied by flipping the sign bit, which is exact.
 *
 * @module
 */
import { emptyTensor, record, type Tensor } from "@lowp/core";
import { f32Bits, PHILOX_WGSL, rangeKernel, type WordKernel } from "@lowp/kernels";
import { hostHadamard } from "./host_quant.ts";
import { randomWord } from "./kernels.ts";

/** Largest block the kernel handles (its private array holds 256 f32). */
export const HADAMARD_MAX_BLOCK = 256;

/**
 * Random ±1 signs keyed like every other draw of the project: index j's sign
 * is the top bit of Philox word `offset + j` of (seed, stream) (1 = negative).
 * Advance `offset` (or the seed) each step for fresh signs.
 */
export interface HadamardSigns {
  /** Philox seed (u32). */
  readonly seed: number;
  /** Philox stream (u32, default 0). */
  readonly stream?: number;
  /** First Philox word (default 0). */
  readonly offset?: number;
  /**
   * `block` (default): one sign vector of length b shared by every block, j = position in the block
   * (a single randomized b×b matrix H·D, as Quartet). `column`: j = index along the last axis, so each block
   * of a row gets its own signs (still shared by all rows).
   */
  readonly per?: "block" | "column";
}

/** Options of {@link hadamard} and {@link inverseHadamard}. */
export interface HadamardOptions {
  /** Block size b: a power of two from 2 to 256 (Quartet: 32) that divides the last dimension. */
  readonly block: number;
  /** Random ±1 signs D (none: plain H). */
  readonly signs?: HadamardSigns;
}

/** Sign mode words: no signs, signs before the transform (H·D), signs after it (D·H). */
const NO_SIGNS = 0, SIGNS_BEFORE = 1, SIGNS_AFTER = 2;

// Params: [b, sign mode, last dim, per (0 block, 1 column), seed, stream, offset lo, offset hi, fl(1/√b) bits].
const scratch = new Float32Array(HADAMARD_MAX_BLOCK);
const scratchWords = new Uint32Array(scratch.buffer);
const scaleValue = new Float32Array(1);
const scaleWord = new Uint32Array(scaleValue.buffer);
const signCache = new WeakMap<Uint32Array, Uint32Array>();

/** The sign-bit masks of one call (cached per parameter array: one call, one table). */
function signMasks(p: Uint32Array): Uint32Array {
  let masks = signCache.get(p);
  if (!masks) {
    masks = new Uint32Array(p[3] === 1 ? p[2] : p[0]);
    for (let j = 0; j < masks.length; j++) masks[j] = (randomWord(p[4], p[5], p[6], p[7], j) & 0x80000000) >>> 0;
    signCache.set(p, masks);
  }
  return masks;
}

/**
 * One block per item: load (flipping signs for H·D), butterflies, scale, store (flipping signs for D·H).
 * The CPU twin stores every intermediate in a Float32Array, i.e. rounds each f32 operation as WGSL does
 * (f64 then f32 rounding of +, -, × is innocuous double rounding: 53 ≥ 2·24 + 2).
 */
const HADAMARD_KERNEL: WordKernel = rangeKernel({
  name: "hadamard_block",
  inputs: 1,
  outputs: 1,
  range: (first, last, [x], [out], p) => {
    const b = p[0], mode = p[1], perColumn = p[3] === 1, lastDim = p[2];
    const masks = mode === NO_SIGNS ? null : signMasks(p);
    scaleWord[0] = p[8];
    const scale = scaleValue[0];
    for (let i = first; i < last; i++) {
      const base = i * b;
      for (let t = 0; t < b; t++) {
        const sign = mode === SIGNS_BEFORE ? masks![perColumn ? (base + t) % lastDim : t] : 0;
        scratchWords[t] = (x[base + t] ^ sign) >>> 0;
      }
      for (let h = 1; h < b; h *= 2) {
        for (let s = 0; s < b; s += 2 * h) {
          for (let j = s; j < s + h; j++) {
            const a = scratch[j], c = scratch[j + h];
            scratch[j] = a + c;
            scratch[j + h] = a - c;
          }
        }
      }
      for (let t = 0; t < b; t++) {
        scratch[t] = scratch[t] * scale;
        const sign = mode === SIGNS_AFTER ? masks![perColumn ? (base + t) % lastDim : t] : 0;
        out[base + t] = (scratchWords[t] ^ sign) >>> 0;
      }
    }
  },
  wgslHelpers: PHILOX_WGSL + /* wgsl */ `
fn had_sign(base: u32, t: u32) -> u32 {
  var j = t;
  if (Q(3u) == 1u) { j = (base + t) % Q(2u); }
  return philox_word(Q(4u), Q(5u), Q(6u), Q(7u), j) & 0x80000000u;
}
`,
  wgsl: `  let b = Q(0u); let mode = Q(1u); let base = i * b;
  var buf: array<f32, 256>;
  for (var t = 0u; t < b; t++) {
    var w = in0[base + t];
    if (mode == 1u) { w = w ^ had_sign(base, t); }
    buf[t] = bitcast<f32>(w);
  }
  for (var h = 1u; h < b; h = h * 2u) {
    for (var s = 0u; s < b; s = s + 2u * h) {
      for (var j = s; j < s + h; j++) { let a = buf[j]; let c = buf[j + h]; buf[j] = a + c; buf[j + h] = a - c; }
    }
  }
  let scale = bitcast<f32>(Q(8u));
  for (var t = 0u; t < b; t++) {
    var w = bitcast<u32>(buf[t] * scale);
    if (mode == 2u) { w = w ^ had_sign(base, t); }
    out0[base + t] = w;
  }`,
});

/** Throws unless `x` can be transformed with these options; returns the block size. */
function checkArgs(op: string, x: Tensor, opts: HadamardOptions): number {
  const b = opts.block;
  if (x.dtype !== "f32") throw new Error(`${op}: ${x.describe()} must be f32`);
  if (!Number.isInteger(b) || b < 2 || b > HADAMARD_MAX_BLOCK || (b & (b - 1)) !== 0) {
    throw new Error(`${op}: block size ${b} must be a power of two from 2 to ${HADAMARD_MAX_BLOCK}`);
  }
  const last = x.shape[x.rank - 1];
  if (x.rank === 0 || last % b !== 0) {
    throw new Error(`${op}: the last dimension of ${x.describe()} must be a multiple of the block size ${b}`);
  }
  return b;
}

/** Runs the kernel: H·D·x (`inverse` false) or D·H·x (`inverse` true). No autograd. */
function transformRaw(x: Tensor, opts: HadamardOptions, inverse: boolean): Tensor {
  const b = checkArgs(inverse ? "inverseHadamard" : "hadamard", x, opts);
  if (x.size === 0) return emptyTensor(x.backend, x.shape);
  const s = opts.signs;
  const mode = !s ? NO_SIGNS : inverse ? SIGNS_AFTER : SIGNS_BEFORE;
  const offset = s?.offset ?? 0;
  const scaleBits = f32Bits(1 / Math.sqrt(b));
  const params = [
    b,
    mode,
    x.shape[x.rank - 1],
    s?.per === "column" ? 1 : 0,
    (s?.seed ?? 0) >>> 0,
    (s?.stream ?? 0) >>> 0,
    offset % 4294967296,
    Math.floor(offset / 4294967296),
    scaleBits,
  ];
  const masks = () => mode === NO_SIGNS ? null : signMasks(Uint32Array.from(params));
  const fused = hostHadamard(x, b, masks, mode, scaleBits);
  if (fused) return fused;
  const out = emptyTensor(x.backend, x.shape);
  x.backend.runWords(HADAMARD_KERNEL, [x.storage], [out.storage], x.size / b, params);
  return out;
}

function transform(x: Tensor, opts: HadamardOptions, inverse: boolean): Tensor {
  const y = transformRaw(x, opts, inverse);
  // (H·D)ᵀ = D·H since H is symmetric: the gradient of one direction is the other direction.
  return record(y, inverse ? "inverseHadamard" : "hadamard", [x], (g) => [transform(g, opts, !inverse)]);
}

/**
 * Orthonormal blockwise Walsh–Hadamard transform along the last axis:
 * `y = H·D·x` for every block of `opts.block` consecutive values (D = the
 * optional random signs). Differentiable: the gradient is D·H·g. Without signs
 * it is its own inverse. Source: Sylvester's construction with the fast
 * Walsh–Hadamard butterflies; randomized as in QuIP# / Quartet.
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { hadamard } from "./hadamard.ts";
 * const y = hadamard(tensor([1, 1, 1, 1]), { block: 4 }); // [2, 0, 0, 0]
 * ```
 */
export function hadamard(x: Tensor, opts: HadamardOptions): Tensor {
  return transform(x, opts, false);
}

/**
 * Inverse of {@link hadamard} with the same options: `x = D·H·y` (up to f32
 * rounding). Differentiable: the gradient is H·D·g.
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * import { hadamard, inverseHadamard } from "./hadamard.ts";
 * const opts = { block: 4, signs: { seed: 7 } };
 * const x = inverseHadamard(hadamard(tensor([1, 2, 3, 4]), opts), opts); // [1, 2, 3, 4]
 * ```
 */
export function inverseHadamard(y: Tensor, opts: HadamardOptions): Tensor {
  return transform(y, opts, true);
}
