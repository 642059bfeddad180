/**
 * Shared test utilities: the WebGPU backend (or a skip), a tolerance-aware
 * array comparison, seeded random inputs, a finite-difference gradient check,
 * and the table of op cases that both `gradcheck_test.ts` and
 * `parity_test.ts` run.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  abs,
  add,
  attention,
  backward,
  type BinaryFn,
  broadcastTo,
  clone,
  concat,
  cpuBackend,
  crossEntropy,
  div,
  exp,
  type ForwardContext,
  gather,
  gelu,
  type GPT,
  layerNorm,
  log,
  logSoftmax,
  matmul,
  max,
  maximum,
  mean,
  min,
  minimum,
  mul,
  neg,
  noGrad,
  permute,
  pow,
  relu,
  reshape,
  rmsNorm,
  rsqrt,
  sigmoid,
  silu,
  slice,
  softmax,
  softmaxLastAxis,
  split,
  sqrt,
  square,
  squeeze,
  sub,
  sum,
  sumTo,
  tanh,
  type Tensor,
  tensor,
  tidy,
  transpose,
  unsqueeze,
  variance,
  webgpuBackend,
  where,
} from "@lowp/core";
import { type Backend, philoxWords, sizeOf, wordToUniform } from "@lowp/kernels";

// ---------------------------------------------------------------- backends

let skipNoticePrinted = false;

/**
 * The WebGPU backend, or `null` when this runtime has no adapter. A skip is
 * announced once on stderr as `webgpu: skipped (<reason>)`; with
 * `REQUIRE_WEBGPU=1` (set in CI) a missing adapter throws instead.
 */
export async function gpuBackendOrSkip(): Promise<Backend | null> {
  const { backend, reason } = await webgpuBackend();
  if (backend) return backend;
  if (Deno.env.get("REQUIRE_WEBGPU") === "1") {
    throw new Error(`webgpu: required by REQUIRE_WEBGPU=1 but unavailable (${reason})`);
  }
  if (!skipNoticePrinted) {
    skipNoticePrinted = true;
    console.error(`webgpu: skipped (${reason})`);
  }
  return null;
}

// ---------------------------------------------------------------- comparison

/** Allowed error per element: `atol + rtol · scale`, scale = |expected| unless given. */
export interface Tolerance {
  /** Relative part. */
  readonly rtol: number;
  /** Absolute part. */
  readonly atol: number;
}

/**
 * Asserts `|actual - expected| <= atol + rtol·scale` elementwise, where scale
 * is `|expected[i]|` or `scale[i]` when given (e.g. the sum of |terms| of a dot
 * product). NaN must meet NaN. With rtol = atol = 0 the check is exact and
 * tells -0 from +0 (`Object.is`). Fails naming the label, the worst index,
 * both values and the tolerances.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  label: string,
  scale?: ArrayLike<number>,
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length} differs from the expected ${expected.length}`);
  }
  const exact = tol.rtol === 0 && tol.atol === 0;
  let bad = 0, worst = -1, worstExcess = -Infinity;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    let excess: number;
    if (exact) excess = Object.is(a, e) ? -1 : Infinity;
    else if (a === e) continue; // also covers equal infinities
    else {
      const err = Math.abs(a - e); // NaN when exactly one side is NaN
      const allowed = tol.atol + tol.rtol * (scale ? scale[i] : Math.abs(e));
      excess = Number.isNaN(err) || !Number.isFinite(err) ? Infinity : err - allowed;
    }
    if (excess <= 0) continue;
    bad++;
    if (excess > worstExcess) [worst, worstExcess] = [i, excess];
  }
  if (bad === 0) return;
  const a = actual[worst], e = expected[worst];
  const allowed = tol.atol + tol.rtol * (scale ? scale[worst] : Math.abs(e));
  throw new Error(
    `${label}: ${bad} of ${actual.length} elements out of tolerance; worst at index ${worst}: ` +
      `actual ${a}, expected ${e}, |diff| ${Math.abs(a - e)} > allowed ${allowed} ` +
      `(rtol ${tol.rtol}, atol ${tol.atol}${scale ? `, scale ${scale[worst]}` : ""})`,
  );
}

// ---------------------------------------------------------------- random inputs

/** Philox stream reserved for test inputs (the seed varies per input). */
const TEST_STREAM = 0x7e57;

/** `n` f32 values uniform in [lo, hi) from Philox (seed, test stream): the same on every run and machine. */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const words = philoxWords(new Uint32Array(n), seed, TEST_STREAM, 0);
  return Float32Array.from(words, (w) => lo + (hi - lo) * wordToUniform(w));
}

/** A stable 32-bit seed from a test name (FNV-1a), so reordering tests does not change inputs. */
export function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Makes `n` input values from a seed. */
export type Gen = (n: number, seed: number) => Float32Array;

/** Uniform values in [lo, hi). */
export const uniform = (lo: number, hi: number): Gen => (n, seed) => randomArray(n, seed, lo, hi);

/**
 * Distinct values `offset + 0.25·k` for consecutive integers k around 0, in a
 * seeded random order: no ties and no value near a kink at 0 (|x| >= offset),
 * and two sets with offsets 1/16 and 3/16 never come closer than 1/8.
 */
export const distinct = (offset = 1 / 16): Gen => (n, seed) => {
  const values = Float32Array.from({ length: n }, (_, k) => offset + 0.25 * (k - Math.floor(n / 2)));
  const words = philoxWords(new Uint32Array(n), seed, TEST_STREAM + 1, 0);
  for (let i = n - 1; i > 0; i--) {
    const j = words[i] % (i + 1);
    [values[i], values[j]] = [values[j], values[i]];
  }
  return values;
};

const U = uniform(-1, 1);
const POSITIVE = uniform(0.5, 2);

// ---------------------------------------------------------------- gradient check

/** One input of {@link gradCheck}: host data and its shape. */
export interface HostInput {
  /** Values, row-major. */
  readonly data: Float32Array;
  /** Shape. */
  readonly shape: readonly number[];
}

/** Options for {@link gradCheck}. */
export interface GradCheckOptions {
  /** Seed of the random output projection R (default derived from the label). */
  seed?: number;
  /** Step (default 2^-7); keep it a power of two so x ± k·h stays exact on the 2^-12 input grid. */
  h?: number;
  /** Tolerance of analytic against numerical gradients (default {@link GRADCHECK_TOLERANCE}). */
  tol?: Tolerance;
  /** Backend to evaluate on (default: the CPU reference). */
  backend?: Backend;
  /** Name used in failure messages. */
  label?: string;
}

/**
 * Default gradcheck tolerance, and why it can be this tight:
 * - the loss is L(x) = Σ R·fn(x) for a fixed random R, accumulated in f64 on the host from the f32 outputs, so
 *   only the f32 rounding of the outputs that depend on the perturbed element is noise (the others are
 *   bit-identical in every evaluation and cancel);
 * - the 4-point stencil (f(x-2h) - 8f(x-h) + 8f(x+h) - f(x+2h)) / 12h has truncation error h⁴·f⁽⁵⁾/30 ≈ 1e-10·f⁽⁵⁾
 *   at h = 2^-7, and amplifies output rounding by 1.5/h ≈ 200: a few ulp of O(1) outputs give ~1e-5;
 * - inputs are snapped to multiples of 2^-12, so every perturbed point x ± k·h is exact in f32.
 * Measured: every case in OP_CASES passes with atol = 1.9e-5, rtol = 3.8e-5 (worst: layerNorm, whose output
 * rounding is largest). 1e-4 + 2e-4·|g| leaves a ~5x margin while still catching a gradient that is off by 1e-3
 * absolute or 0.1% relative (both tried as mutations).
 */
export const GRADCHECK_TOLERANCE: Tolerance = { rtol: 2e-4, atol: 1e-4 };

const STENCIL: readonly (readonly [number, number])[] = [[-2, 1], [-1, -8], [1, 8], [2, -1]];
const GRID = 4096; // inputs are snapped to multiples of 1/GRID

/** Evaluates `fn` without recording a graph and returns its output on the host. */
async function evaluate(fn: (...xs: Tensor[]) => Tensor, inputs: readonly HostInput[], backend: Backend) {
  const y = noGrad(() => tidy(() => fn(...inputs.map(({ data, shape }) => tensor(data, { shape, backend })))));
  const out = await y.data() as Float32Array;
  y.dispose();
  return out;
}

/** Analytic gradients of Σ R·fn(xs) (R seeds backward directly) w.r.t. every input. */
export async function analyticGradients(
  fn: (...xs: Tensor[]) => Tensor,
  inputs: readonly HostInput[],
  projection: (n: number) => Float32Array,
  backend: Backend,
): Promise<{ out: Float32Array; grads: Float32Array[] }> {
  const leaves = inputs.map(({ data, shape }) => tensor(data, { shape, backend, requiresGrad: true }));
  // The graph's intermediates are released when tidy ends, so backward must run inside it.
  const y = tidy(() => {
    const y = fn(...leaves);
    backward(y, tensor(projection(y.size), { shape: y.shape, backend }));
    return y;
  });
  const out = await y.data() as Float32Array;
  const grads = await Promise.all(
    leaves.map(async (x) => x.grad ? await x.grad.data() as Float32Array : new Float32Array(x.size)),
  );
  [y, ...leaves].forEach((t) => t.dispose());
  return { out, grads };
}

/**
 * Finite-difference check of the gradients of `fn` w.r.t. every input. The
 * loss is L = Σ R·fn(x) for a fixed random projection R (so any output shape
 * works); its numerical derivative uses a fourth-order central stencil on
 * inputs snapped to a 2^-12 grid. See {@link GRADCHECK_TOLERANCE} for the error budget.
 */
export async function gradCheck(
  fn: (...xs: Tensor[]) => Tensor,
  inputs: readonly HostInput[],
  opts: GradCheckOptions = {},
): Promise<void> {
  const label = opts.label ?? "gradCheck";
  const backend = opts.backend ?? cpuBackend();
  const h = opts.h ?? 2 ** -7;
  const seed = opts.seed ?? seedOf(label) ^ 0x9e3779b9;
  const snapped = inputs.map(({ data, shape }) => ({ data: data.map((v) => Math.round(v * GRID) / GRID), shape }));
  let r: Float32Array = new Float32Array(0);
  const projection = (n: number) => r = randomArray(n, seed);
  const { grads } = await analyticGradients(fn, snapped, projection, backend);
  const loss = async () => {
    const y = await evaluate(fn, snapped, backend);
    let acc = 0;
    for (let i = 0; i < y.length; i++) acc += r[i] * y[i];
    return acc;
  };
  for (const [j, { data }] of snapped.entries()) {
    const numeric = new Float64Array(data.length);
    for (let e = 0; e < data.length; e++) {
      const saved = data[e];
      for (const [k, w] of STENCIL) {
        data[e] = saved + k * h;
        numeric[e] += w * await loss();
      }
      data[e] = saved;
      numeric[e] /= 12 * h;
    }
    if (numeric.every((v) => Math.abs(v) < 1e-6)) {
      throw new Error(`${label}: input ${j} has an all-zero numerical gradient, so the case does not exercise it`);
    }
    assertClose(grads[j], numeric, opts.tol ?? GRADCHECK_TOLERANCE, `${label}: d/d(input ${j})`);
  }
}

// ---------------------------------------------------------------- op cases

/** Shape and value generator of one differentiable input of an {@link OpCase}. */
export interface InputSpec {
  /** Shape. */
  readonly shape: readonly number[];
  /** Values (default uniform in [-1, 1)). */
  readonly gen?: Gen;
}

/** One op applied to random inputs; run by the gradient check and by the WebGPU/CPU parity test. */
export interface OpCase {
  /** The op under test: parity's tolerance key and gradcheck's coverage key. */
  readonly op: string;
  /** Unique test name. */
  readonly name: string;
  /** The differentiable inputs. */
  readonly inputs: readonly InputSpec[];
  /** Builds the output; constants (indices, masks) must go on `xs[0].backend`. */
  readonly fn: (...xs: Tensor[]) => Tensor;
}

/** The host inputs of a case (seeded by its name). */
export function hostInputs(c: OpCase): HostInput[] {
  const seed = seedOf(c.name);
  return c.inputs.map(({ shape, gen }, i) => ({ data: (gen ?? U)(sizeOf(shape), seed + i), shape }));
}

/** A constant f32 or i32 tensor on the backend of `like`. */
export function constant(like: Tensor, data: number[], shape: readonly number[], dtype: "f32" | "i32" = "f32"): Tensor {
  return tensor(data, { shape, dtype, backend: like.backend });
}

/** A 0/1 f32 mask with a fixed irregular pattern. */
function mask(like: Tensor, shape: readonly number[]): Tensor {
  return constant(like, Array.from({ length: sizeOf(shape) }, (_, i) => (i * 7) % 5 < 3 ? 1 : 0), shape);
}

const fmt = (s: readonly number[]) => `[${s.join(",")}]`;

const UNARY: [string, (x: Tensor) => Tensor, Gen][] = [
  ["neg", neg, U],
  ["exp", exp, uniform(-2, 2)],
  ["log", log, uniform(0.25, 3)],
  ["sqrt", sqrt, uniform(0.25, 3)],
  ["rsqrt", rsqrt, uniform(0.25, 3)],
  ["square", square, U],
  ["tanh", tanh, uniform(-2, 2)],
  ["sigmoid", sigmoid, uniform(-3, 3)],
  ["relu", relu, distinct()],
  ["gelu", gelu, uniform(-3, 3)],
  ["silu", silu, uniform(-3, 3)],
  ["abs", abs, distinct()],
];

const unaryCases = (): OpCase[] =>
  UNARY.map(([op, f, gen]) => ({ op, name: `${op} [2,3,4]`, inputs: [{ shape: [2, 3, 4], gen }], fn: f }));

/** Binary ops with generators for each side (away from poles and kinks) and the numbers used as operands. */
const BINARY: { op: string; f: BinaryFn; a: Gen; b: Gen; left: number; right: number }[] = [
  { op: "add", f: add, a: U, b: U, left: 2, right: 0.5 },
  { op: "sub", f: sub, a: U, b: U, left: 1, right: 0.5 },
  { op: "mul", f: mul, a: U, b: U, left: 3, right: -1.5 },
  { op: "div", f: div, a: U, b: POSITIVE, left: 2, right: 4 },
  { op: "pow", f: pow, a: POSITIVE, b: uniform(-2, 2), left: 2, right: 3 },
  { op: "maximum", f: maximum, a: distinct(1 / 16), b: distinct(3 / 16), left: 0.1, right: 0.1 },
  { op: "minimum", f: minimum, a: distinct(1 / 16), b: distinct(3 / 16), left: 0.1, right: 0.1 },
];
const BINARY_SHAPES: [number[], number[]][] = [[[2, 3], [2, 3]], [[3, 1, 4], [2, 4]], [[2, 4], [3, 1, 4]], [
  [2, 3],
  [],
]];

const binaryCases = (): OpCase[] =>
  BINARY.flatMap(({ op, f, a, b, left, right }): OpCase[] => [
    ...BINARY_SHAPES.map(([sa, sb]) => ({
      op,
      name: `${op}(a, b) ${fmt(sa)} with ${fmt(sb)}`,
      inputs: [{ shape: sa, gen: a }, { shape: sb, gen: b }],
      fn: (x: Tensor, y: Tensor) => f(x, y),
    })),
    { op, name: `${op}(${left}, x)`, inputs: [{ shape: [2, 3], gen: b }], fn: (x) => f(left, x) },
    { op, name: `${op}(x, ${right})`, inputs: [{ shape: [2, 3], gen: a }], fn: (x) => f(x, right) },
  ]);

const whereCases = (): OpCase[] => [
  {
    op: "where",
    name: "where(c, a, b) [2,3]",
    inputs: [{ shape: [2, 3] }, { shape: [2, 3] }],
    fn: (a, b) => where(mask(a, [2, 3]), a, b),
  },
  {
    op: "where",
    name: "where(c [3,1,4], a [2,4], b [3,1,1])",
    inputs: [{ shape: [2, 4] }, { shape: [3, 1, 1] }],
    fn: (a, b) => where(mask(a, [3, 1, 4]), a, b),
  },
  { op: "where", name: "where(c, x, 0.5)", inputs: [{ shape: [2, 3] }], fn: (x) => where(mask(x, [2, 3]), x, 0.5) },
  { op: "where", name: "where(c, -1, x)", inputs: [{ shape: [2, 3] }], fn: (x) => where(mask(x, [2, 3]), -1, x) },
];

type Reduction = (x: Tensor, axes?: number | readonly number[], opts?: { keepDims?: boolean }) => Tensor;
const REDUCTIONS: [string, Reduction, Gen][] = [
  ["sum", sum, U],
  ["mean", mean, U],
  ["variance", variance, U],
  ["max", max, distinct()],
  ["min", min, distinct()],
];
const REDUCE_AXES: [number | number[] | undefined, boolean][] = [
  [undefined, false],
  [1, false],
  [-1, true],
  [[0, 2], false],
  [[0, 1], true],
];

const reductionCases = (): OpCase[] =>
  REDUCTIONS.flatMap(([op, f, gen]) =>
    REDUCE_AXES.map(([axes, keepDims]) => ({
      op,
      name: `${op} [2,3,4] axes ${JSON.stringify(axes) ?? "all"}${keepDims ? " keepDims" : ""}`,
      inputs: [{ shape: [2, 3, 4], gen }],
      fn: (x: Tensor) => f(x, axes, { keepDims }),
    }))
  );

const X234 = [{ shape: [2, 3, 4] }];
const shapeCases = (): OpCase[] => [
  { op: "sumTo", name: "sumTo [2,3,4] to [3,1]", inputs: X234, fn: (x) => sumTo(x, [3, 1]) },
  { op: "reshape", name: "reshape [2,3,4] to [4,6]", inputs: X234, fn: (x) => reshape(x, [4, 6]) },
  { op: "reshape", name: "reshape [2,3,4] to [-1]", inputs: X234, fn: (x) => reshape(x, [-1]) },
  { op: "permute", name: "permute [2,3,4] by [2,0,1]", inputs: X234, fn: (x) => permute(x, [2, 0, 1]) },
  { op: "transpose", name: "transpose [2,3,4] last two", inputs: X234, fn: (x) => transpose(x) },
  { op: "transpose", name: "transpose [2,3,4] dims 0 and 2", inputs: X234, fn: (x) => transpose(x, 0, 2) },
  {
    op: "broadcastTo",
    name: "broadcastTo [3,1] to [2,3,4]",
    inputs: [{ shape: [3, 1] }],
    fn: (x) => broadcastTo(x, [2, 3, 4]),
  },
  { op: "broadcastTo", name: "broadcastTo [] to [2,3]", inputs: [{ shape: [] }], fn: (x) => broadcastTo(x, [2, 3]) },
  {
    op: "slice",
    name: "slice [2,3,4] at [0,1,1] size [2,2,-1]",
    inputs: X234,
    fn: (x) => slice(x, [0, 1, 1], [2, 2, -1]),
  },
  {
    op: "concat",
    name: "concat [2,1,4], [2,3,4], [2,2,4] on axis 1",
    inputs: [{ shape: [2, 1, 4] }, { shape: [2, 3, 4] }, { shape: [2, 2, 4] }],
    fn: (a, b, c) => concat([a, b, c], 1),
  },
  {
    op: "concat",
    name: "concat [2,3], [2,1] on axis -1",
    inputs: [{ shape: [2, 3] }, { shape: [2, 1] }],
    fn: (a, b) => concat([a, b], -1),
  },
  {
    op: "split",
    name: "split [2,6] into 1,3,2 on axis 1",
    inputs: [{ shape: [2, 6] }],
    fn: (x) => concat(split(x, [1, 3, 2], 1).reverse(), 1),
  },
  { op: "unsqueeze", name: "unsqueeze [2,3] at 1", inputs: [{ shape: [2, 3] }], fn: (x) => unsqueeze(x, 1) },
  { op: "squeeze", name: "squeeze [2,1,3] at 1", inputs: [{ shape: [2, 1, 3] }], fn: (x) => squeeze(x, 1) },
  { op: "clone", name: "clone [2,3]", inputs: [{ shape: [2, 3] }], fn: (x) => mul(clone(x), x) },
];

/** [shape of a, shape of b, transA, transB]. */
const MATMULS: [number[], number[], boolean, boolean][] = [
  [[3, 4], [4, 5], false, false],
  [[4, 3], [4, 5], true, false],
  [[3, 4], [5, 4], false, true],
  [[4, 3], [5, 4], true, true],
  [[2, 3, 4], [2, 4, 5], false, false],
  [[2, 4, 3], [2, 4, 5], true, false],
  [[2, 3, 4], [2, 5, 4], false, true],
  [[2, 4, 3], [2, 5, 4], true, true],
  [[2, 3, 4], [4, 5], false, false],
  [[2, 3, 4], [5, 4], false, true],
  [[1, 3, 4], [2, 4, 5], false, false],
  [[3, 4], [2, 4, 5], false, false],
  [[2, 1, 3, 4], [3, 4, 5], false, false],
];

const matmulCases = (): OpCase[] =>
  MATMULS.map(([sa, sb, transA, transB]) => ({
    op: "matmul",
    name: `matmul ${fmt(sa)}${transA ? "ᵀ" : ""} x ${fmt(sb)}${transB ? "ᵀ" : ""}`,
    inputs: [{ shape: sa }, { shape: sb }],
    fn: (a: Tensor, b: Tensor) => matmul(a, b, { transA, transB }),
  }));

const T5x3 = [{ shape: [5, 3] }];
const X235 = [{ shape: [2, 3, 5], gen: uniform(-2, 2) }];
const QKV = (shape: number[]) => [{ shape }, { shape }, { shape }];
const nnCases = (): OpCase[] => [
  {
    op: "gather",
    name: "gather [5,3] by [2,3] with repeated rows",
    inputs: T5x3,
    fn: (t) => gather(t, constant(t, [0, 2, 2, 4, 0, 2], [2, 3], "i32")),
  },
  {
    op: "gather",
    name: "gather [5,3] with out-of-range rows",
    inputs: T5x3,
    fn: (t) => gather(t, constant(t, [1, 7, -1, 1], [4], "i32")),
  },
  { op: "softmax", name: "softmax [2,3,5] axis -1", inputs: X235, fn: (x) => softmax(x) },
  { op: "softmax", name: "softmax [2,3,5] axis 1", inputs: X235, fn: (x) => softmax(x, 1) },
  {
    op: "softmaxLastAxis",
    name: "softmaxLastAxis causal, scale 0.7 [2,4,4]",
    inputs: [{ shape: [2, 4, 4] }],
    fn: (x) => softmaxLastAxis(x, { scale: 0.7, causal: true }),
  },
  { op: "logSoftmax", name: "logSoftmax [2,3,5] axis -1", inputs: X235, fn: (x) => logSoftmax(x) },
  { op: "logSoftmax", name: "logSoftmax [2,3,5] axis 0", inputs: X235, fn: (x) => logSoftmax(x, 0) },
  {
    op: "crossEntropy",
    name: "crossEntropy [2,3,5] ignoring -100",
    inputs: X235,
    fn: (x) => crossEntropy(x, constant(x, [1, 4, -100, 0, 2, 3], [2, 3], "i32")),
  },
  {
    op: "crossEntropy",
    name: "crossEntropy [4,5] with ignoreIndex 5",
    inputs: [{ shape: [4, 5], gen: uniform(-2, 2) }],
    fn: (x) => crossEntropy(x, constant(x, [4, 5, 0, 4], [4], "i32"), { ignoreIndex: 5 }),
  },
  {
    op: "layerNorm",
    name: "layerNorm [2,3,6] with weight and bias",
    inputs: [{ shape: [2, 3, 6] }, { shape: [6] }, { shape: [6] }],
    fn: (x, w, b) => layerNorm(x, w, b),
  },
  {
    op: "layerNorm",
    name: "layerNorm [3,6] without affine",
    inputs: [{ shape: [3, 6] }],
    fn: (x) => layerNorm(x, null, null),
  },
  {
    op: "rmsNorm",
    name: "rmsNorm [2,3,6] with weight",
    inputs: [{ shape: [2, 3, 6] }, { shape: [6] }],
    fn: (x, w) => rmsNorm(x, w),
  },
  { op: "rmsNorm", name: "rmsNorm [3,6] without weight", inputs: [{ shape: [3, 6] }], fn: (x) => rmsNorm(x, null) },
  { op: "attention", name: "attention [2,4,3]", inputs: QKV([2, 4, 3]), fn: (q, k, v) => attention(q, k, v) },
  {
    op: "attention",
    name: "attention [2,4,3] causal",
    inputs: QKV([2, 4, 3]),
    fn: (q, k, v) => attention(q, k, v, { causal: true }),
  },
  {
    op: "attention",
    name: "attention [1,2,5,3] causal",
    inputs: QKV([1, 2, 5, 3]),
    fn: (q, k, v) => attention(q, k, v, { causal: true }),
  },
];

/** Every differentiable op of `@lowp/core` on small random inputs (kept away from kinks and poles). */
export const OP_CASES: readonly OpCase[] = [
  ...unaryCases(),
  ...binaryCases(),
  ...whereCases(),
  ...reductionCases(),
  ...shapeCases(),
  ...matmulCases(),
  ...nnCases(),
];

/** The f32 bits of a tensor's values. */
export async function bitsOf(t: Tensor): Promise<Uint32Array> {
  const d = await t.data();
  return new Uint32Array(d.buffer, d.byteOffset, d.length);
}

/** Exact comparison of two bit arrays, naming the first difference. */
export function assertSameBits(got: Uint32Array, want: Uint32Array, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  const bad = got.findIndex((g, i) => g !== want[i]);
  if (bad >= 0) {
    assert.fail(`${label}: differs at ${bad}: 0x${got[bad].toString(16)}, expected 0x${want[bad].toString(16)}`);
  }
}

/** Runs `script` with `deno run` (read, write, env) and `args`; returns its exit code, stdout and stderr. */
export async function runScript(script: string, args: readonly string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", script, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** The logits of `model` on `tokens` (no gradient), read back to the host. */
export async function logitsOf(model: GPT, tokens: Tensor, ctx: ForwardContext = {}): Promise<Float32Array> {
  const y = noGrad(() => model.forward(tokens, ctx));
  const data = (await y.data()) as Float32Array;
  y.dispose();
  return data;
}

/** `steps` plain SGD steps of `model` on one batch, on its trainable parameters (no optimizer package needed). */
export function sgdSteps(model: GPT, batch: () => [Tensor, Tensor], steps: number, lr: number): void {
  for (let i = 0; i < steps; i++) {
    tidy(() => {
      const [tokens, targets] = batch();
      backward(model.loss(tokens, targets, { step: i, training: true }));
      for (const [, p] of model.namedParameters({ trainable: true })) noGrad(() => p.assign(sub(p, mul(p.grad!, lr))));
      model.zeroGrad();
    });
  }
}
