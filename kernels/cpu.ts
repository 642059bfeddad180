/**
 * The CPU reference backend: plain TypedArray loops with f32 semantics. Every
 * result is stored in a Float32Array (so each op rounds to f32 once), and
 * accumulations round to f32 at every step with `Math.fround`; nothing is
 * silently kept in f64. Reductions run in index order.
 *
 * Matmul is the exception to "plain loops": products of at least
 * {@link WASM_MATMUL_MIN_MACS} multiply-adds run in a WebAssembly SIMD kernel
 * (kernels/wasm/sgemm.wat, f32 multiply then f32 add per step, still in order
 * p = 0..k-1), smaller ones in {@link referenceMatmul}. The environment variable
 * `LOWP_CPU_KERNELS=reference` (read once at import; unset without env
 * permission) forces {@link referenceMatmul} for every size.
 *
 * @module
 */
import {
  type Backend,
  BackendLimitError,
  contiguousStrides,
  type DType,
  type MapInput,
  type MapOp,
  type MatmulShape,
  type ReduceOp,
  splitSum,
  type Storage,
  SUM_LANES,
  type TypedArray,
  type View,
  type WordKernel,
} from "./backend.ts";
import { philoxWords, wordToUniform } from "./philox.ts";
import { createPool, defaultWorkerCount } from "./cpu_pool.ts";
import { CPU_KERNELS, type CpuKernels, sgemmModule, sgemmUnavailableReason, SharedArena } from "./wasm/loader.ts";
import { pooledExecutor, type SgemmExecutor, singleThreadExecutor, wasmMatmul } from "./wasm/matmul.ts";

/** CPU storage: one ArrayBuffer viewed as f32, i32 and u32. */
export class CpuStorage implements Storage {
  /** f32 view. */
  readonly f32: Float32Array;
  /** i32 view. */
  readonly i32: Int32Array;
  /** u32 view. */
  readonly u32: Uint32Array;
  /** Number of 4-byte elements. */
  readonly length: number;
  /**
   * Creates a CpuStorage.
   * @param length number of 4-byte elements
   */
  constructor(length: number) {
    this.length = length;
    const buffer = new ArrayBuffer(length * 4);
    this.f32 = new Float32Array(buffer);
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }
  /** The view for `dtype`. */
  view(dtype: DType): TypedArray {
    return dtype === "f32" ? this.f32 : dtype === "i32" ? this.i32 : this.u32;
  }
}

const MAX_ELEMENTS = 2 ** 30;
/** Freed storage kept for reuse, at most this many elements (1 GiB). */
const POOL_MAX_ELEMENTS = 2 ** 28;
const fround = Math.fround;

/**
 * Walks `shape` one innermost row at a time: `visit(start, offsets, length)`
 * gets the flat index of the row's first element and each stride set's offset
 * of it; the caller loops over the row with the last stride of each set.
 */
function forEachRow(
  shape: readonly number[],
  strideSets: readonly (readonly number[])[],
  bases: readonly number[],
  visit: (start: number, offsets: number[], length: number) => void,
): void {
  const rank = shape.length;
  const total = shape.reduce((a, b) => a * b, 1);
  if (total === 0) return;
  if (rank === 0) return visit(0, bases.slice(), 1);
  const length = shape[rank - 1];
  const idx = new Array<number>(rank).fill(0);
  const offsets = bases.slice();
  for (let start = 0; start < total; start += length) {
    visit(start, offsets, length);
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]++;
      for (let s = 0; s < strideSets.length; s++) offsets[s] += strideSets[s][d];
      if (idx[d] < shape[d]) break;
      for (let s = 0; s < strideSets.length; s++) offsets[s] -= strideSets[s][d] * shape[d];
      idx[d] = 0;
    }
  }
}

const last = (strides: readonly number[]) => strides[strides.length - 1] ?? 0;

/**
 * The same walk as `shape` over two stride sets with fewer axes: size-1 axes dropped and each axis merged
 * into the next where both sets step over it as one (stride = next stride × next size). A copy between two
 * contiguous views becomes one row, a transpose two axes.
 */
function mergeAxes(
  shape: readonly number[],
  a: readonly number[],
  b: readonly number[],
): [number[], number[], number[]] {
  const dims: number[] = [], sa: number[] = [], sb: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const k = dims.length - 1;
    if (k >= 0 && sa[k] === a[d] * shape[d] && sb[k] === b[d] * shape[d]) {
      dims[k] *= shape[d], sa[k] = a[d], sb[k] = b[d];
    } else dims.push(shape[d]), sa.push(a[d]), sb.push(b[d]);
  }
  if (dims.length === 0) return [[1], [0], [0]]; // every axis had size 1 (a zero-size axis is kept)
  return [dims, sa, sb];
}

/** Tile edge of {@link transposeBlocked}: a 32×32 tile's source and destination lines stay in L1. */
const TRANSPOSE_TILE = 32;

/**
 * `y[to + i·rowStride + j] = x[from + i + j·colStride]` for i < rows, j < cols (a transpose): 4×4 blocks read
 * into locals and written out as four rows, in square tiles so that neither side walks memory a whole row
 * apart per element; the rows and columns past the last multiple of 4 one value at a time.
 */
function transposeBlocked(
  x: Uint32Array,
  from: number,
  colStride: number,
  y: Uint32Array,
  to: number,
  rowStride: number,
  rows: number,
  cols: number,
): void {
  const rows4 = rows - (rows % 4), cols4 = cols - (cols % 4);
  for (let i0 = 0; i0 < rows4; i0 += TRANSPOSE_TILE) {
    const i1 = Math.min(rows4, i0 + TRANSPOSE_TILE);
    for (let j0 = 0; j0 < cols4; j0 += TRANSPOSE_TILE) {
      const j1 = Math.min(cols4, j0 + TRANSPOSE_TILE);
      for (let j = j0; j < j1; j += 4) {
        const s0 = from + j * colStride, s1 = s0 + colStride, s2 = s1 + colStride, s3 = s2 + colStride;
        for (let i = i0; i < i1; i += 4) {
          const a0 = x[s0 + i], a1 = x[s0 + i + 1], a2 = x[s0 + i + 2], a3 = x[s0 + i + 3];
          const b0 = x[s1 + i], b1 = x[s1 + i + 1], b2 = x[s1 + i + 2], b3 = x[s1 + i + 3];
          const c0 = x[s2 + i], c1 = x[s2 + i + 1], c2 = x[s2 + i + 2], c3 = x[s2 + i + 3];
          const e0 = x[s3 + i], e1 = x[s3 + i + 1], e2 = x[s3 + i + 2], e3 = x[s3 + i + 3];
          let d = to + i * rowStride + j;
          y[d] = a0, y[d + 1] = b0, y[d + 2] = c0, y[d + 3] = e0, d += rowStride;
          y[d] = a1, y[d + 1] = b1, y[d + 2] = c1, y[d + 3] = e1, d += rowStride;
          y[d] = a2, y[d + 1] = b2, y[d + 2] = c2, y[d + 3] = e2, d += rowStride;
          y[d] = a3, y[d + 1] = b3, y[d + 2] = c3, y[d + 3] = e3;
        }
      }
    }
  }
  const edge = (i: number, j: number) => (y[to + i * rowStride + j] = x[from + i + j * colStride]);
  for (let i = 0; i < rows4; i++) for (let j = cols4; j < cols; j++) edge(i, j);
  for (let i = rows4; i < rows; i++) for (let j = 0; j < cols; j++) edge(i, j);
}

/**
 * The reference matmul: `out[i] = op(A[i])·op(B[i])` in plain JS, each output summed over p = 0..k-1 in
 * order, one f32 rounding per step: `a·b + acc` is exact product plus acc in f64, stored to f32 (a fused
 * multiply-add but for a rare double rounding through f64). The CPU backend uses it for small products and
 * under `LOWP_CPU_KERNELS=reference`; tests compare the WebAssembly kernel against it.
 */
export function referenceMatmul(a: Float32Array, b: Float32Array, out: Float32Array, s: MatmulShape): void {
  const { m, n, k } = s;
  // Element strides of A[i, p] inside one matrix.
  const aRow = s.transA ? 1 : k, aCol = s.transA ? m : 1;
  const acc = new Float32Array(4 * n);
  const bT = s.transB ? new Float32Array(k * n) : null;
  for (let bi = 0; bi < s.batch; bi++) {
    const aBase = bi * s.strideA, oBase = bi * m * n;
    // The inner loop wants B's rows contiguous: un-transpose B once per matrix.
    let bRows = b, bBase = bi * s.strideB;
    if (bT) {
      for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) bT[p * n + j] = b[bBase + j * k + p];
      bRows = bT;
      bBase = 0;
    }
    // Four rows at a time share each load of a B row; each output still sums p = 0..k-1 in order.
    for (let i0 = 0; i0 < m; i0 += 4) {
      const rows = Math.min(4, m - i0);
      acc.fill(0);
      for (let p = 0; p < k; p++) {
        const at = (r: number) => (r < rows ? a[aBase + (i0 + r) * aRow + p * aCol] : 0);
        const a0 = at(0), a1 = at(1), a2 = at(2), a3 = at(3);
        const bp = bBase + p * n;
        for (let j = 0; j < n; j++) {
          const bv = bRows[bp + j];
          acc[j] = a0 * bv + acc[j];
          acc[n + j] = a1 * bv + acc[n + j];
          acc[2 * n + j] = a2 * bv + acc[2 * n + j];
          acc[3 * n + j] = a3 * bv + acc[3 * n + j];
        }
      }
      out.set(acc.subarray(0, rows * n), oBase + i0 * n);
    }
  }
}

/**
 * Products of at least this many multiply-adds per matrix (m·n·k, 16³) go to the WebAssembly kernel
 * (kernels/wasm/), smaller ones to {@link referenceMatmul}. The kernel is already faster at 16³ (about 3x
 * here), so the threshold only keeps the tiny products, where either takes microseconds, on the reference
 * path. It depends on the shape alone: a given product always takes the same path and gives the same bits.
 */
export const WASM_MATMUL_MIN_MACS = 4096;

/** Whether `matmul` of this shape runs in WebAssembly: big enough, kernel built, no `LOWP_CPU_KERNELS=reference`. */
function useWasmMatmul(s: MatmulShape): boolean {
  return sgemmModule !== undefined && s.m * s.n * s.k >= WASM_MATMUL_MIN_MACS;
}

/** Options of {@link createCpuBackend}. */
export interface CpuBackendOptions {
  /**
   * `auto` (default: `LOWP_CPU_KERNELS`, else WebAssembly matmul and fused host kernels where they apply)
   * or `reference` (plain loops and word kernels only, as tests compare against).
   */
  kernels?: CpuKernels;
}

let executor: SgemmExecutor | undefined;
/**
 * The threads that run the WebAssembly matmul: a pool of `defaultWorkerCount()` participants (2 here;
 * `LOWP_CPU_WORKERS` overrides) over one shared memory, or this thread alone when workers cannot start.
 * Every output row block is computed by one thread in a fixed order, so the bits do not depend on the count.
 */
function matmulExecutor(): SgemmExecutor {
  if (executor) return executor;
  if (defaultWorkerCount() === 1 || !sgemmModule) return executor = singleThreadExecutor();
  const arena = new SharedArena();
  // Without read permission on the worker entry the pool quietly runs on this thread alone.
  return executor = pooledExecutor(arena, createPool({ memory: arena.memory, module: sgemmModule }));
}

let loops = 0;
/**
 * Compiles `return function NAME(params) { body }` with `fn` in scope, NAME unique per call (`prefix`, the
 * sanitized `name` and a counter). Each loop gets its own compiled code: V8 shares code and call feedback
 * between identical sources, so a loop shared by many ops would call `fn` through a megamorphic site.
 */
function compileLoop<T>(prefix: string, name: string, params: string, body: string, fn: unknown): T {
  const id = `${prefix}_${name.replace(/[^A-Za-z0-9_]/g, "_")}_${loops++}`;
  return new Function("fn", `return function ${id}(${params}) { ${body} };`)(fn) as T;
}

type MapLoop = (
  o: Float32Array,
  start: number,
  a: Float32Array,
  oa: number,
  sa: number,
  b: Float32Array | undefined,
  ob: number,
  sb: number,
  c: Float32Array | undefined,
  oc: number,
  sc: number,
  n: number,
  q0: number,
  q1: number,
) => void;

/**
 * A map loop's body per arity: only the inputs the op has are read, and unit strides (every dense input,
 * and most rows) take a loop without index multiplies.
 */
const MAP_BODIES = [1, 1, 2, 3].map((arity) => {
  const read = (at: (x: string) => string) =>
    ["a", "b", "c"].map((x, i) => (i < arity ? `${x}[${at(x)}]` : "0")).join(", ");
  const unit = ["a", "b", "c"].slice(0, arity).map((x) => `s${x} === 1`).join(" && ");
  return `if (${unit}) { for (let j = 0; j < n; j++) o[start + j] = fn(${read((x) => `o${x} + j`)}, q0, q1); }
    else { for (let j = 0; j < n; j++) o[start + j] = fn(${read((x) => `o${x} + j * s${x}`)}, q0, q1); }`;
});

const mapLoops = new WeakMap<MapOp, MapLoop>();
/** One strided loop per op (see {@link compileLoop}), so the JIT can inline `op.cpu` into it. */
function mapLoop(op: MapOp): MapLoop {
  let loop = mapLoops.get(op);
  if (!loop) {
    loop = compileLoop<MapLoop>(
      "map",
      op.name,
      "o, start, a, oa, sa, b, ob, sb, c, oc, sc, n, q0, q1",
      MAP_BODIES[Math.min(op.arity, 3)],
      op.cpu,
    );
    mapLoops.set(op, loop);
  }
  return loop;
}

type WordLoop = (items: number, ins: readonly Uint32Array[], outs: readonly Uint32Array[], p: Uint32Array) => void;
const wordLoops = new WeakMap<WordKernel, WordLoop>();
/** One item loop per word kernel (see {@link compileLoop}). */
function wordLoop(kernel: WordKernel): WordLoop {
  let loop = wordLoops.get(kernel);
  if (!loop) {
    const body = "for (let i = 0; i < items; i++) fn(i, ins, outs, p);";
    loop = compileLoop<WordLoop>("words", kernel.name, "items, ins, outs, p", body, kernel.cpu);
    wordLoops.set(kernel, loop);
  }
  return loop;
}

/** Σ x[base + r·inner] for r = 0..size-1 in order, rounding to f32 at every step. */
/**
 * Largest value of the contiguous run x[base, base + size) and its first index; the first NaN wins. The same
 * result as the strided loop of `reduce`, in a loop the JIT keeps tight (full reductions such as a tensor's
 * amax for per-tensor scaling).
 */
function maxRun(x: Float32Array, base: number, size: number): [number, number] {
  let best = x[base], at = 0;
  if (best !== best) return [best, 0];
  for (let r = 1; r < size; r++) {
    const v = x[base + r];
    if (v > best) best = v, at = r;
    else if (v !== v) return [v, r];
  }
  return [best, at];
}

/** Smallest value of the run and its first index; the first NaN wins (see {@link maxRun}). */
function minRun(x: Float32Array, base: number, size: number): [number, number] {
  let best = x[base], at = 0;
  if (best !== best) return [best, 0];
  for (let r = 1; r < size; r++) {
    const v = x[base + r];
    if (v < best) best = v, at = r;
    else if (v !== v) return [v, r];
  }
  return [best, at];
}

function sequentialSum(x: Float32Array, base: number, size: number, inner: number): number {
  let acc = 0;
  for (let r = 0; r < size; r++) acc = fround(acc + x[base + r * inner]);
  return acc;
}

/** The same sum in the lane order of {@link splitSum} (`lanes`: scratch of SUM_LANES). */
function splitSumAt(x: Float32Array, base: number, size: number, inner: number, lanes: Float32Array): number {
  for (let t = 0; t < SUM_LANES; t++) {
    let acc = 0;
    for (let r = t; r < size; r += SUM_LANES) acc = fround(acc + x[base + r * inner]);
    lanes[t] = acc;
  }
  for (let s = SUM_LANES / 2; s >= 1; s >>= 1) for (let t = 0; t < s; t++) lanes[t] = fround(lanes[t] + lanes[t + s]);
  return lanes[0];
}

/**
 * `reduce("sum")` with `inner > 1` (e.g. a bias gradient, summing the rows of [rows, width]): every column
 * summed in the order {@link sequentialSum} or {@link splitSumAt} would sum it, the columns side by side, so
 * the rows are read in memory order instead of one column at a time (same bits). Partial sums are kept in a
 * Float32Array, whose stores round to f32 as `fround` does.
 */
function columnSums(x: Float32Array, outer: number, size: number, inner: number, out: Float32Array): void {
  const lanes = splitSum(size) ? SUM_LANES : 1;
  const acc = new Float32Array(lanes * inner);
  const row = (buffer: Float32Array, r: number) => buffer.subarray(r * inner, (r + 1) * inner);
  for (let o = 0; o < outer; o++) {
    if (o > 0) acc.fill(0);
    const rows = x.subarray(o * size * inner, (o + 1) * size * inner);
    // Lane by lane, so that the lane's partial sums (one row) stay in L1 while its rows stream past.
    for (let t = 0; t < lanes; t++) {
      const sum = row(acc, t);
      for (let r = t; r < size; r += lanes) {
        const v = row(rows, r);
        for (let j = 0; j < inner; j++) sum[j] += v[j];
      }
    }
    for (let s = lanes / 2; s >= 1; s >>= 1) {
      for (let t = 0; t < s; t++) {
        const sum = row(acc, t), v = row(acc, t + s);
        for (let j = 0; j < inner; j++) sum[j] += v[j];
      }
    }
    out.set(row(acc, 0), o * inner);
  }
}

/** The CPU backend: a {@link Backend} whose storages are host arrays ({@link CpuStorage}). */
export interface CpuBackend extends Backend {
  /** Always `cpu`. */
  readonly name: "cpu";
  /**
   * True when number formats may run their fused host kernels (WebAssembly over the storages' host
   * arrays, `@lowp/formats` host_quant.ts) in place of the reference word kernels; both give the same
   * bits. False under `LOWP_CPU_KERNELS=reference` and for `createCpuBackend({ kernels: "reference" })`.
   */
  readonly hostKernels: boolean;
}

/** Whether `backend` is a CPU backend that lets number formats run fused host kernels (see {@link CpuBackend}). */
export function usesHostKernels(backend: Backend): backend is CpuBackend {
  return backend.name === "cpu" && (backend as Partial<CpuBackend>).hostKernels === true;
}

/**
 * Creates a CPU backend (the process-wide `LOWP_CPU_KERNELS` setting wins over `options.kernels`). Throws
 * when it would use the WebAssembly matmul and this runtime cannot compile it (the error names the switch).
 */
export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  const reference = CPU_KERNELS === "reference" || options.kernels === "reference";
  // No quiet fallback to the JS loops: their results differ in the last bits (kernels/wasm/loader.ts).
  if (!reference && !sgemmModule) throw new Error(sgemmUnavailableReason);
  let live = 0;
  const pool = new Map<number, CpuStorage[]>();
  let pooled = 0;
  const cpu = (s: Storage) => s as CpuStorage;
  return {
    name: "cpu" as const,
    adapter: `${Deno.build.arch} ${Deno.build.os} (TypedArray reference${
      sgemmModule && !reference ? ", WebAssembly SIMD matmul" : ""
    })`,
    hostKernels: !reference,
    alloc(length) {
      if (length > MAX_ELEMENTS) {
        throw new BackendLimitError(`cpu: cannot allocate ${length} elements (limit ${MAX_ELEMENTS})`);
      }
      live++;
      const reused = pool.get(length)?.pop();
      if (reused) pooled -= length;
      return reused ?? new CpuStorage(length);
    },
    upload(data) {
      const s = this.alloc(data.length) as CpuStorage;
      s.u32.set(new Uint32Array(data.buffer, data.byteOffset, data.length));
      return s;
    },
    read(storage, dtype) {
      return Promise.resolve(cpu(storage).view(dtype).slice());
    },
    free(storage) {
      live--;
      // Keep freed arrays for reuse (a training step frees and allocates the same sizes every time), up to a cap.
      if (pooled + storage.length > POOL_MAX_ELEMENTS) return;
      const list = pool.get(storage.length) ?? [];
      list.push(storage as CpuStorage);
      pool.set(storage.length, list);
      pooled += storage.length;
    },
    liveCount: () => live,
    sync: () => Promise.resolve(),

    fill(out, value, dtype) {
      cpu(out).view(dtype).fill(value);
    },

    map(op: MapOp, inputs: readonly MapInput[], shape, out, p0, p1) {
      const o = cpu(out).f32;
      const [a, b, c] = inputs.map((x) => cpu(x.storage).f32);
      const loop = mapLoop(op);
      const q0 = fround(p0), q1 = fround(p1); // parameters travel as f32, as on the GPU
      const dense = contiguousStrides(shape);
      if (inputs.every((x) => x.strides.every((st, d) => st === dense[d] || shape[d] === 1))) {
        loop(o, 0, a, 0, 1, b, 0, 1, c, 0, 1, shape.reduce((x, y) => x * y, 1), q0, q1);
        return;
      }
      const [sa, sb, sc] = inputs.map((x) => last(x.strides));
      forEachRow(shape, inputs.map((x) => x.strides), inputs.map(() => 0), (start, [oa, ob, oc], length) => {
        loop(o, start, a, oa, sa, b, ob, sb, c, oc, sc, length, q0, q1);
      });
    },

    reduce(op: ReduceOp, input, outer, size, inner, out) {
      const x = cpu(input).f32;
      if (op === "sum" && inner > 1) return columnSums(x, outer, size, inner, cpu(out).f32);
      const split = splitSum(size), lanes = split ? new Float32Array(SUM_LANES) : null;
      const isArg = op === "argmax" || op === "argmin";
      const of = cpu(out).f32, oi = cpu(out).i32;
      // max/min/arg*: NaN wins (propagates); ties keep the first index.
      const better = op === "max" || op === "argmax"
        ? (v: number, best: number) => v > best || (v !== v && best === best)
        : (v: number, best: number) => v < best || (v !== v && best === best);
      for (let o = 0; o < outer; o++) {
        for (let j = 0; j < inner; j++) {
          const base = o * size * inner + j;
          if (op === "sum") {
            of[o * inner + j] = split ? splitSumAt(x, base, size, inner, lanes!) : sequentialSum(x, base, size, inner);
            continue;
          }
          if (inner === 1 && size > 0) {
            const [best, bestIndex] = op === "max" || op === "argmax" ? maxRun(x, base, size) : minRun(x, base, size);
            if (isArg) oi[o] = bestIndex;
            else of[o] = best;
            continue;
          }
          let best = size > 0 ? x[base] : NaN, bestIndex = 0;
          for (let r = 1; r < size; r++) {
            const v = x[base + r * inner];
            if (better(v, best)) {
              best = v;
              bestIndex = r;
            }
          }
          if (isArg) oi[o * inner + j] = bestIndex;
          else of[o * inner + j] = best;
        }
      }
    },

    matmul(aS, bS, outS, s: MatmulShape) {
      const a = cpu(aS).f32, b = cpu(bS).f32, out = cpu(outS).f32;
      if (!reference && useWasmMatmul(s)) wasmMatmul(a, b, out, s, matmulExecutor());
      else referenceMatmul(a, b, out, s);
    },

    copy(src, srcView: View, dst, dstView: View, shape) {
      const x = cpu(src).u32, y = cpu(dst).u32;
      const [dims, srcStrides, dstStrides] = mergeAxes(shape, srcView.strides, dstView.strides);
      const rank = dims.length, ss = last(srcStrides), ds = last(dstStrides);
      if (rank === 2 && ss !== 1 && ds === 1 && srcStrides[0] === 1) {
        return transposeBlocked(x, srcView.offset, ss, y, dstView.offset, dstStrides[0], dims[0], dims[1]);
      }
      forEachRow(dims, [srcStrides, dstStrides], [srcView.offset, dstView.offset], (_, [from, to], length) => {
        // set() pays a subarray and a call per row: the plain loop is cheaper for short rows.
        if (ss === 1 && ds === 1 && length >= 16) y.set(x.subarray(from, from + length), to);
        else for (let j = 0; j < length; j++) y[to + j * ds] = x[from + j * ss];
      });
    },

    gather(table, indices, count, rowLength, tableRows, out) {
      const t = cpu(table).f32, idx = cpu(indices).i32, o = cpu(out).f32;
      for (let i = 0; i < count; i++) {
        const r = idx[i];
        if (r < 0 || r >= tableRows) o.fill(0, i * rowLength, (i + 1) * rowLength);
        else o.set(t.subarray(r * rowLength, (r + 1) * rowLength), i * rowLength);
      }
    },

    scatterAddRows(grad, indices, count, rowLength, rows, out) {
      const g = cpu(grad).f32, idx = cpu(indices).i32, o = cpu(out).f32;
      o.fill(0, 0, rows * rowLength);
      for (let i = 0; i < count; i++) {
        const r = idx[i];
        if (r < 0 || r >= rows) continue;
        for (let j = 0; j < rowLength; j++) o[r * rowLength + j] = fround(o[r * rowLength + j] + g[i * rowLength + j]);
      }
    },

    oneHot(indices, count, depth, out) {
      const idx = cpu(indices).i32, o = cpu(out).f32;
      o.fill(0, 0, count * depth);
      for (let i = 0; i < count; i++) if (idx[i] >= 0 && idx[i] < depth) o[i * depth + idx[i]] = 1;
    },

    runWords(kernel, inputs, outputs, items, params) {
      const ins = inputs.map((x) => cpu(x).u32), outs = outputs.map((x) => cpu(x).u32);
      const p = Uint32Array.from(params);
      if (kernel.cpuRange) kernel.cpuRange(0, items, ins, outs, p);
      else wordLoop(kernel)(items, ins, outs, p);
    },

    randomUniform(out, seed, stream, offset) {
      const o = cpu(out);
      philoxWords(o.u32, seed, stream, offset);
      for (let i = 0; i < o.length; i++) o.f32[i] = wordToUniform(o.u32[i]);
    },
  };
}
