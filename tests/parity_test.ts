/**
 * WebGPU against the CPU reference: every op of `OP_CASES` (shared with the
 * gradient check) plus larger and higher-rank cases, forward and backward
 * (the gradient of Σ op(x)·R for a fixed random R, w.r.t. every input), on
 * identical host inputs. Then the integer-valued kernels (Philox, argmax,
 * one-hot) and a dispatch past the 65535-workgroup fold.
 */
import assert from "node:assert/strict";
import {
  add,
  argmax,
  argmin,
  broadcastTo,
  concat,
  cpuBackend,
  crossEntropy,
  full,
  gather,
  gelu,
  layerNorm,
  matmul,
  max,
  min,
  mul,
  oneHot,
  permute,
  rand,
  slice,
  softmax,
  sum,
  Tensor,
  tensor,
} from "@lowp/core";
import {
  type Backend,
  chooseMatmulTile,
  type GpuContext,
  MATMUL_TILES,
  type MatmulTile,
  webGpuBackend,
} from "@lowp/kernels";
import {
  analyticGradients,
  assertClose,
  constant,
  gpuBackendOrSkip,
  type HostInput,
  hostInputs,
  OP_CASES,
  type OpCase,
  randomArray,
  seedOf,
  type Tolerance,
  uniform,
} from "./helpers.ts";

/** A parity tolerance; with `terms`, the relative part scales with Σ|terms| (the op on |inputs| and |R|). */
type ParityTolerance = Tolerance & { readonly terms?: boolean };

const EXACT: ParityTolerance = { rtol: 0, atol: 0 };
const ROUNDED: ParityTolerance = { rtol: 1e-6, atol: 1e-7 };
const TRANSCENDENTAL: ParityTolerance = { rtol: 1e-5, atol: 1e-6 };
const DOT: ParityTolerance = { rtol: 1e-5, atol: 0, terms: true };
const COMPOSITE: ParityTolerance = { rtol: 1e-5, atol: 1e-6 };

/**
 * Per-op tolerances of WebGPU against the CPU reference, for the forward value and for every input gradient.
 * Allowed error per element: atol + rtol·|cpu value| (or rtol·Σ|terms| where `terms`). Inputs are O(1).
 */
const TOLERANCES: Record<string, ParityTolerance> = {
  // EXACT (bit-identical, -0 told from +0). Data movement and selection copy bits. WGSL +, -, * round correctly,
  // and so does the CPU, which rounds the exact f64 result once to f32 (f64 has more than 2·24 + 2 bits, so there
  // is no double rounding). Backward passes of these ops only add gradients, in the same index order on both
  // backends (sum reduction, scatter-add), so they are bit-identical too. Philox and one-hot are integer logic.
  neg: EXACT,
  square: EXACT,
  relu: EXACT,
  abs: EXACT,
  add: EXACT,
  sub: EXACT,
  mul: EXACT,
  maximum: EXACT,
  minimum: EXACT,
  where: EXACT,
  sum: EXACT,
  sumTo: EXACT,
  max: EXACT, // gradient: 1/count with count = 1 (no ties in the inputs), then a multiply
  min: EXACT,
  reshape: EXACT,
  permute: EXACT,
  transpose: EXACT,
  broadcastTo: EXACT,
  slice: EXACT,
  concat: EXACT,
  split: EXACT,
  squeeze: EXACT,
  unsqueeze: EXACT,
  clone: EXACT,
  gather: EXACT,
  fill: EXACT,
  rand: EXACT,
  argmax: EXACT,
  argmin: EXACT,
  oneHot: EXACT,
  // ROUNDED. WGSL allows 2.5 ulp for x/y and for sqrt (lavapipe happens to round correctly, but other GPUs need
  // not); a backward pass chains up to three such ops: 1e-6 ≈ 8 ulp. atol 1e-7 ≈ 1 ulp of the O(1) mean that
  // variance subtracts, which becomes an absolute error of the centred values.
  div: ROUNDED,
  sqrt: ROUNDED,
  mean: ROUNDED,
  variance: ROUNDED,
  // TRANSCENDENTAL. The CPU uses correctly rounded Math.exp/log/tanh/pow; WGSL bounds exp to 3 + 2|x| ulp, log to
  // 2^-21 absolute near 1, inverseSqrt to 2 ulp, and tanh/pow to what they are derived from (pow = exp2(y·log2 x)).
  // rtol 1e-5 ≈ 80 ulp covers |x| ≤ 3 plus the backward's extra ops; atol 1e-6 covers log's absolute bound and
  // outputs that pass through 0 (tanh, silu). lavapipe uses at most 4% of it.
  exp: TRANSCENDENTAL,
  log: TRANSCENDENTAL,
  rsqrt: TRANSCENDENTAL,
  tanh: TRANSCENDENTAL,
  sigmoid: TRANSCENDENTAL,
  // gelu's derivative is 0.5·(1 + t) + 0.5·x·(1 - t²)·c(x) with t = tanh(z): the GPU evaluates it in f32, the CPU in
  // f64, and near |x| = 4 an error δ in t ≈ ±1 reaches the result as ≈ 10·δ (lavapipe, δ = 1 ulp: 9e-7 measured).
  // WGSL bounds tanh only through exp (3 + 2|z| ulp, z ≈ 5.5 here), i.e. δ up to ~15 ulp: atol 1e-5.
  gelu: { rtol: 1e-5, atol: 1e-5 },
  silu: TRANSCENDENTAL,
  pow: TRANSCENDENTAL,
  // DOT. Same accumulation order on both backends, but WGSL's fma() may be computed unfused (lavapipe does), while
  // the CPU's f64 a·b + acc rounded once is effectively fused: about a third of the outputs differ by an ulp of a
  // partial sum, even at K = 4. The result may cancel to ~0, so the error is measured against Σ|a·b| (the same
  // product of |A| and |B|): each backend is within K·2^-24·Σ|terms| of the exact value, and 1e-5 ≥ 2·K·2^-24 for
  // K ≤ 80 (largest K here: 70; batch-summed gradients reach K = 210, where the typical √K growth applies).
  // lavapipe uses at most 2% of it.
  matmul: DOT,
  // COMPOSITE: exp/log/rsqrt and reductions (and matmul, for attention) over O(1) values. Errors stay at a few ulp
  // of the largest intermediate; atol covers outputs that cancel to ~0 (centred layerNorm outputs, softmax
  // gradients, log-probabilities near 0). lavapipe uses at most 8% of it (layerNorm [4,256]).
  softmax: COMPOSITE,
  softmaxLastAxis: COMPOSITE,
  logSoftmax: COMPOSITE,
  crossEntropy: COMPOSITE,
  layerNorm: COMPOSITE,
  rmsNorm: COMPOSITE,
  attention: COMPOSITE,
};

const gpu = await gpuBackendOrSkip();
const cpu = cpuBackend();

function toleranceOf(op: string): ParityTolerance {
  const tol = TOLERANCES[op];
  if (!tol) throw new Error(`no parity tolerance for '${op}': add it to TOLERANCES with the reason`);
  return tol;
}

const absInput = ({ data, shape }: HostInput): HostInput => ({ data: data.map(Math.abs), shape });

/** Forward and input gradients of a case on both backends, compared with the op's tolerance. */
async function checkCase(device: Backend, c: OpCase): Promise<void> {
  const tol = toleranceOf(c.op);
  const inputs = hostInputs(c);
  const projection = (n: number) => randomArray(n, seedOf(c.name) ^ 0x5eed);
  const want = await analyticGradients(c.fn, inputs, projection, cpu);
  const got = await analyticGradients(c.fn, inputs, projection, device);
  const scale = tol.terms
    ? await analyticGradients(c.fn, inputs.map(absInput), (n) => projection(n).map(Math.abs), cpu)
    : undefined;
  assertClose(got.out, want.out, tol, `${c.name}: forward`, scale?.out);
  got.grads.forEach((g, i) => assertClose(g, want.grads[i], tol, `${c.name}: d/d(input ${i})`, scale?.grads[i]));
}

const matmulCase = (sa: number[], sb: number[], transA = false, transB = false): OpCase => ({
  op: "matmul",
  name: `matmul [${sa}]${transA ? "ᵀ" : ""} x [${sb}]${transB ? "ᵀ" : ""}`,
  inputs: [{ shape: sa }, { shape: sb }],
  fn: (a, b) => matmul(a, b, { transA, transB }),
});

/** Sizes the tiny gradcheck cases do not reach: tile edges, several workgroups, rank 6. */
const LARGER_CASES: OpCase[] = [
  matmulCase([1, 1], [1, 1]),
  matmulCase([65, 33], [33, 70]),
  matmulCase([3, 65, 33], [3, 33, 70]),
  matmulCase([3, 33, 65], [3, 33, 70], true, false),
  matmulCase([3, 65, 33], [3, 70, 33], false, true),
  matmulCase([3, 33, 65], [3, 70, 33], true, true),
  matmulCase([1, 65, 33], [3, 33, 70]),
  matmulCase([2, 3, 65, 33], [33, 70]),
  {
    op: "permute",
    name: "permute rank 6",
    inputs: [{ shape: [2, 1, 3, 2, 2, 3] }],
    fn: (x) => permute(x, [5, 3, 0, 4, 1, 2]),
  },
  {
    op: "broadcastTo",
    name: "broadcastTo rank 6",
    inputs: [{ shape: [1, 3, 1, 2, 1, 2] }],
    fn: (x) => broadcastTo(x, [2, 3, 2, 2, 3, 2]),
  },
  {
    op: "add",
    name: "add rank 6 broadcast [2,1,3,1,2,1] with [3,2,2,3]",
    inputs: [{ shape: [2, 1, 3, 1, 2, 1] }, { shape: [3, 2, 2, 3] }],
    fn: (a, b) => add(a, b),
  },
  {
    op: "sum",
    name: "sum rank 6 over axes [1,3,5]",
    inputs: [{ shape: [2, 2, 3, 2, 2, 3] }],
    fn: (x) => sum(x, [1, 3, 5]),
  },
  {
    op: "slice",
    name: "slice rank 6",
    inputs: [{ shape: [2, 3, 2, 3, 2, 3] }],
    fn: (x) => slice(x, [1, 0, 1, 1, 0, 1], [1, 3, 1, 2, 2, -1]),
  },
  {
    op: "concat",
    name: "concat [40,30] and [40,50] on axis 1",
    inputs: [{ shape: [40, 30] }, { shape: [40, 50] }],
    fn: (a, b) => concat([a, b], 1),
  },
  { op: "sum", name: "sum [3,1000] axis 1", inputs: [{ shape: [3, 1000] }], fn: (x) => sum(x, 1) },
  // Long axes take the split (lane) order on both backends: whole tensors, a strided axis, an odd length.
  { op: "sum", name: "sum [256,257] all (split)", inputs: [{ shape: [256, 257] }], fn: (x) => sum(x) },
  { op: "sum", name: "sum [1024,24] axis 0 (split, strided)", inputs: [{ shape: [1024, 24] }], fn: (x) => sum(x, 0) },
  { op: "sum", name: "sum [2,513,3] axis 1 (split)", inputs: [{ shape: [2, 513, 3] }], fn: (x) => sum(x, 1) },
  { op: "gelu", name: "gelu [40,70]", inputs: [{ shape: [40, 70], gen: uniform(-4, 4) }], fn: (x) => gelu(x) },
  { op: "softmax", name: "softmax [4,300]", inputs: [{ shape: [4, 300], gen: uniform(-4, 4) }], fn: (x) => softmax(x) },
  {
    op: "layerNorm",
    name: "layerNorm [4,256]",
    inputs: [{ shape: [4, 256] }, { shape: [256] }, { shape: [256] }],
    fn: (x, w, b) => layerNorm(x, w, b),
  },
  {
    op: "layerNorm",
    name: "layerNorm [1024,16] (weight and bias gradients as split sums)",
    inputs: [{ shape: [1024, 16] }, { shape: [16] }, { shape: [16] }],
    fn: (x, w, b) => layerNorm(x, w, b),
  },
  {
    op: "crossEntropy",
    name: "crossEntropy [16,100]",
    inputs: [{ shape: [16, 100], gen: uniform(-4, 4) }],
    fn: (x) =>
      crossEntropy(x, constant(x, Array.from({ length: 16 }, (_, i) => i === 5 ? -100 : (i * 37) % 100), [16], "i32")),
  },
  {
    op: "gather",
    name: "gather [100,16] by 300 indices",
    inputs: [{ shape: [100, 16] }],
    fn: (t) => gather(t, constant(t, Array.from({ length: 300 }, (_, i) => (i * i) % 97), [300], "i32")),
  },
];

for (const c of [...OP_CASES, ...LARGER_CASES]) {
  Deno.test({ name: `parity ${c.name}`, ignore: !gpu, fn: () => checkCase(gpu!, c) });
}

// ---------------------------------------------------------------- forward-only, integer-valued kernels

/** Rows with ties, signed zeros, infinities and NaN: first-index tie-breaking and NaN propagation must agree. */
const EDGE = [
  [1, 3, 3, 0, -1, 2],
  [NaN, 1, 2, NaN, 0, 0],
  [0, -0, 0, -0, 0, 0],
  [-5, -5, -Infinity, Infinity, 4, Infinity],
];
const edge = (backend: Backend) => tensor(EDGE, { backend });

/** Kernels with no gradient, compared on their exact output (bits, or i32 values). */
const FORWARD_CASES: { op: string; name: string; build: (backend: Backend) => Tensor }[] = [
  ...[
    { seed: 1, stream: 0, offset: 0, shape: [5] },
    { seed: 0xdeadbeef, stream: 7, offset: 3, shape: [3, 7] },
    { seed: 42, stream: 1, offset: 2 ** 32 - 2, shape: [1000] }, // word counter crosses 2^32
    { seed: 42, stream: 2, offset: 2 ** 34 - 6, shape: [2, 300] }, // block counter crosses 2^32
  ].map(({ shape, ...key }) => ({
    op: "rand",
    name: `rand [${shape}] seed ${key.seed} stream ${key.stream} offset ${key.offset}`,
    build: (backend: Backend) => rand(shape, key, { backend }),
  })),
  ...[0, 1, -1].flatMap((axis) => [
    { op: "argmax", name: `argmax axis ${axis} with ties and NaN`, build: (b: Backend) => argmax(edge(b), axis) },
    { op: "argmin", name: `argmin axis ${axis} with ties and NaN`, build: (b: Backend) => argmin(edge(b), axis) },
    { op: "max", name: `max axis ${axis} with NaN and ±0`, build: (b: Backend) => max(edge(b), axis) },
    { op: "min", name: `min axis ${axis} with NaN and ±0`, build: (b: Backend) => min(edge(b), axis) },
  ]),
  {
    op: "oneHot",
    name: "oneHot depth 5 with out-of-range indices",
    build: (b) => oneHot(tensor([[-100, 0, 3], [4, 5, 2]], { dtype: "i32", backend: b }), 5),
  },
];

for (const c of FORWARD_CASES) {
  Deno.test({
    name: `parity ${c.name}`,
    ignore: !gpu,
    async fn() {
      const [want, got] = await Promise.all([cpu, gpu!].map(async (backend) => {
        const t = c.build(backend);
        const data = await t.data();
        t.dispose();
        return data;
      }));
      assertClose(got, want, toleranceOf(c.op), c.name);
    },
  });
}

/** Past 65535 workgroups of 256 threads the 1-D kernels fold their grid into y (about 1 s on lavapipe). */
Deno.test({
  name: "parity fill and broadcast add past the 65535-workgroup fold",
  ignore: !gpu,
  async fn() {
    const n = 65535 * 256 + 1024;
    const host = new Float32Array(n);
    for (let i = 0; i < n; i++) host[i] = i;
    // Upload directly: tensor() copies through a JS array, which takes seconds at this size.
    const x = new Tensor(gpu!, gpu!.upload(host), [n], "f32");
    const half = tensor([0.5], { shape: [], backend: gpu! });
    const y = add(x, half); // a 0-d operand takes the strided (index-math) path of the map kernel
    const filled = full([n], -3.25, { backend: gpu! });
    const [sum, fill] = [await y.data(), await filled.data()];
    [x, half, y, filled].forEach((t) => t.dispose());
    // The CPU backend computes fround(i + 0.5) and a constant; comparing with those directly saves seconds.
    assertClose(sum, host.map((v) => v + 0.5), toleranceOf("add"), "add past the fold");
    assertClose(fill, new Float32Array(n).fill(-3.25), toleranceOf("fill"), "fill past the fold");
  },
});

Deno.test("empty tensors upload, compute and read back on WebGPU", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const t = tensor(new Float32Array(0), { shape: [0, 3], backend: gpu });
  const y = add(mul(t, 2), 1);
  assert.deepEqual(y.shape, [0, 3]);
  assert.equal((await y.data()).length, 0);
  assert.deepEqual(await sum(t, 0).toArray(), [0, 0, 0]);
});

/** Set to 1 (CI does) to run every matmul tiling on a software adapter too. */
const ALL_TILINGS_ENV = "LOWP_TEST_ALL_TILINGS";

/**
 * The tilings the test below runs: all of them on a hardware adapter (or with {@link ALL_TILINGS_ENV}=1), else
 * only the one a software adapter uses (`small`, already compiled by the matmul cases above). Compiling a
 * tiled matmul shader takes ~0.1 s on Mesa's Vulkan lavapipe but 7 to 80 s on its OpenGL llvmpipe (measured,
 * shader cache off): the full set (6 tilings x 4 transposes) ran over 15 minutes there.
 */
function tilingsToTest(context: GpuContext): Record<string, MatmulTile> {
  const maxStorageBytes = context.device.limits.maxComputeWorkgroupStorageSize;
  const all: Record<string, MatmulTile> = {
    small: MATMUL_TILES.small,
    large: chooseMatmulTile(4096, 4096, 1, { fallback: false, maxStorageBytes }), // bk 32, 16 or 8 by the limit
    scalarLarge: { tm: 8, tn: 8, bk: 8 },
    scalarSmall: { tm: 4, tn: 4, bk: 16 },
    vec4Loop: { tm: 8, tn: 8, bk: 16, vec4: true },
    largeBk8: { tm: 8, tn: 8, bk: 8, vec4: true, unroll: true },
  };
  if (!context.fallback || Deno.env.get(ALL_TILINGS_ENV) === "1") return all;
  const skipped = Object.keys(all).filter((name) => name !== "small");
  console.error(
    `webgpu: matmul tilings ${skipped.join(", ")} skipped on the software adapter ${context.adapterName} ` +
      `(slow to compile there; ${ALL_TILINGS_ENV}=1 runs them)`,
  );
  return { small: all.small };
}

Deno.test("every matmul tiling matches the CPU and gives the same bits as the others, transposes and batches included", async () => {
  const gpu = await gpuBackendOrSkip();
  if (!gpu) return;
  const context = (gpu as Backend & { context: GpuContext }).context;
  const tilings = tilingsToTest(context);
  const tooBig = { tm: 8, tn: 8, bk: 64 };
  assert.throws(
    () => webGpuBackend(context, { matmulTile: tooBig }),
    /bytes of workgroup memory but the adapter allows/,
  );
  const cases: [number[], number[], boolean, boolean][] = [
    [[130, 70], [70, 140], false, false],
    [[70, 130], [70, 140], true, false],
    [[130, 70], [140, 70], false, true],
    [[2, 70, 130], [2, 140, 70], true, true],
    [[1, 5], [5, 3], false, false],
  ];
  for (const [sa, sb, transA, transB] of cases) {
    const a = randomArray(sa.reduce((x, y) => x * y), seedOf(`la${sa}`), -1, 1);
    const b = randomArray(sb.reduce((x, y) => x * y), seedOf(`lb${sb}`), -1, 1);
    const on = (backend: Backend) =>
      matmul(tensor(a, { shape: sa, backend }), tensor(b, { shape: sb, backend }), { transA, transB }).data();
    const cpu = cpuBackend();
    const scale = await matmul(
      tensor(a.map(Math.abs), { shape: sa, backend: cpu }),
      tensor(b.map(Math.abs), { shape: sb, backend: cpu }),
      { transA, transB },
    ).data();
    const want = await on(cpu);
    let first: Uint32Array | null = null;
    for (const [name, tile] of Object.entries(tilings)) {
      const got = await on(webGpuBackend(context, { matmulTile: tile }));
      const what = `${name}: [${sa}]·[${sb}]${transA ? " transA" : ""}${transB ? " transB" : ""}`;
      // DOT tolerance: 1e-5 relative to Σ|a||b| per output (see the table above).
      got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) <= 1e-5 * scale[i] + 1e-30, `${what} at ${i}`));
      // Every tiling sums k in increasing order with one fma per k.
      const bits = new Uint32Array(got.buffer);
      if (first) assert.deepEqual(bits, first, `${what}: bits`);
      first ??= bits;
    }
  }
});
