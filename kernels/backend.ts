/**
 * The contract every backend implements: a handful of primitive kernels over
 * flat, row-major storage. Tensor-level ops (in `@lowp/core`) are built from
 * these, so a backend is complete once these kernels agree with the CPU
 * reference.
 *
 * @module
 */

/** Element types a storage can hold. All are 4 bytes wide. */
export type DType = "f32" | "i32" | "u32";

/** A typed array matching a {@link DType}. */
export type TypedArray = Float32Array | Int32Array | Uint32Array;

/** Backend names accepted by {@link Backend.name}. */
export type BackendName = "cpu" | "webgpu";

/** An opaque handle to a backend's memory holding `length` 4-byte elements. */
export interface Storage {
  /** Number of 4-byte elements. */
  readonly length: number;
}

/**
 * An elementwise operation defined once as a scalar expression, in both
 * TypeScript (the reference) and WGSL. Inputs are named `a`, `b`, `c`; the two
 * scalar parameters `p0`, `p1` are passed as uniforms.
 */
export interface MapOp {
  /** Unique name; also the cache key together with the WGSL text. */
  readonly name: string;
  /** Number of tensor inputs (1 to 3). */
  readonly arity: 1 | 2 | 3;
  /** Reference implementation; the result is rounded to f32 on store. */
  readonly cpu: (a: number, b: number, c: number, p0: number, p1: number) => number;
  /** WGSL expression over `a`, `b`, `c` (f32) and `p0`, `p1` (f32). */
  readonly wgsl: string;
}

/** One input of a {@link Backend.map} call: storage plus broadcast strides. */
export interface MapInput {
  /** The input's storage. */
  readonly storage: Storage;
  /** Element stride per output dimension (0 where the input is broadcast). */
  readonly strides: readonly number[];
}

/** The TypeScript loop of a word kernel over items [start, end). */
export type WordRange = (
  start: number,
  end: number,
  ins: readonly Uint32Array[],
  outs: readonly Uint32Array[],
  params: Uint32Array,
) => void;

/**
 * A kernel over raw 32-bit words, defined once for both backends and run once
 * per item (an element, a row or a block). Number formats use it: working on
 * the bits with integer operations makes CPU and GPU results identical.
 */
export interface WordKernel {
  /** Unique name (the cache key together with the WGSL). */
  readonly name: string;
  /** Number of input storages (read as u32 words). */
  readonly inputs: number;
  /** Number of output storages (written as u32 words). */
  readonly outputs: number;
  /** Reference implementation of item `i`. `params` are the call's parameters. */
  readonly cpu: (i: number, ins: readonly Uint32Array[], outs: readonly Uint32Array[], params: Uint32Array) => void;
  /**
   * Optional whole-call implementation for items [start, end), used by the CPU backend when present (it can
   * set up views once instead of per item); must give the same words as `cpu`.
   */
  readonly cpuRange?: WordRange;
  /**
   * WGSL body of item `i` (a `u32` in scope): reads `in0[..]`, `in1[..]`, writes `out0[..]`, ...
   * (all `array<u32>`), and parameter `k` as `Q(k)` (u32).
   */
  readonly wgsl: string;
  /** WGSL functions and constants the body calls. */
  readonly wgslHelpers?: string;
}

/** Most parameters a {@link WordKernel} call may pass. */
export const WORD_KERNEL_MAX_PARAMS = 60;

/** Reductions over the middle axis of an `[outer, size, inner]` view. */
export type ReduceOp = "sum" | "max" | "min" | "argmax" | "argmin";

/** Lanes of a split sum (see {@link splitSum}); a power of two. */
export const SUM_LANES = 256;

/**
 * Whether a `sum` over an axis of `size` elements is split: lane t of {@link SUM_LANES} adds elements
 * t, t + 256, t + 512, … in order, then the lanes combine pairwise, `lane[t] += lane[t + s]` for
 * s = 128, 64, …, 1, and lane 0 is the sum. Every backend sums in this order when it applies, so sums stay
 * bit-identical across backends; it applies to long axes (at least 512 elements), where one GPU thread per
 * output would otherwise walk the whole axis alone (the global gradient norm sums each parameter so).
 */
export function splitSum(size: number): boolean {
  return size >= 2 * SUM_LANES;
}

/** Shape of a batched matrix product `out[b] = op(A[b]) · op(B[b])`. */
export interface MatmulShape {
  /** Number of matrices in the batch. */
  readonly batch: number;
  /** Rows of the result. */
  readonly m: number;
  /** Columns of the result. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** A is stored as [k, m] (read transposed) instead of [m, k]. */
  readonly transA: boolean;
  /** B is stored as [n, k] (read transposed) instead of [k, n]. */
  readonly transB: boolean;
  /** Elements between consecutive A matrices (0 broadcasts one A). */
  readonly strideA: number;
  /** Elements between consecutive B matrices (0 broadcasts one B). */
  readonly strideB: number;
}

/** A strided view of flat storage: element `i` sits at `offset + Σ i_d·strides_d`. */
export interface View {
  /** Element offset of the view's first element. */
  readonly offset: number;
  /** Element stride per dimension of the copied shape. */
  readonly strides: readonly number[];
}

/**
 * A compute backend. All kernels write into a caller-provided output storage,
 * work in f32 arithmetic, and reduce in a fixed order so that the same inputs
 * always give the same bits.
 */
export interface Backend {
  /** `cpu` or `webgpu`. */
  readonly name: BackendName;
  /** Human-readable description of the device (adapter name, CPU model). */
  readonly adapter: string;
  /** Allocates `length` elements; contents are unspecified. */
  alloc(length: number): Storage;
  /** Copies host data into new storage. */
  upload(data: TypedArray): Storage;
  /** Reads storage back to the host as the given dtype. */
  read(storage: Storage, dtype: DType): Promise<TypedArray>;
  /** Returns storage to the backend; it must not be used afterwards. */
  free(storage: Storage): void;
  /** Number of storages currently allocated and not yet freed. */
  liveCount(): number;
  /** Waits until all queued work has finished. */
  sync(): Promise<void>;

  /** Sets every element to `value` (as the dtype's bits). */
  fill(out: Storage, value: number, dtype: DType): void;
  /** Elementwise `op` over broadcast inputs into contiguous `out` of `shape`. */
  map(op: MapOp, inputs: readonly MapInput[], shape: readonly number[], out: Storage, p0: number, p1: number): void;
  /** Reduces the middle axis of `[outer, size, inner]` (a long `sum` in the order of {@link splitSum}); argmax/argmin write i32. */
  reduce(op: ReduceOp, input: Storage, outer: number, size: number, inner: number, out: Storage): void;
  /** Batched matrix product into contiguous `[batch, m, n]`. */
  matmul(a: Storage, b: Storage, out: Storage, shape: MatmulShape): void;
  /** Copies the strided view `src` of shape `shape` into the strided view `dst` (4-byte elements, any dtype). */
  copy(src: Storage, srcView: View, dst: Storage, dstView: View, shape: readonly number[]): void;
  /** `out[i, :] = table[indices[i], :]` for i32 `indices`; rows out of range give zeros. */
  gather(table: Storage, indices: Storage, count: number, rowLength: number, tableRows: number, out: Storage): void;
  /** `out[r, :] = Σ_{i: indices[i] = r} grad[i, :]`, summed in increasing `i`. */
  scatterAddRows(grad: Storage, indices: Storage, count: number, rowLength: number, rows: number, out: Storage): void;
  /** `out[i, j] = (indices[i] == j) ? 1 : 0` as f32. */
  oneHot(indices: Storage, count: number, depth: number, out: Storage): void;
  /** Runs `kernel` for items 0..items-1 over u32 views of the storages. */
  runWords(
    kernel: WordKernel,
    inputs: readonly Storage[],
    outputs: readonly Storage[],
    items: number,
    params: readonly number[],
  ): void;
  /** Uniform f32 in [0, 1) from Philox-4x32-10 keyed by (seed, stream), counter starting at `offset`. */
  randomUniform(out: Storage, seed: number, stream: number, offset: number): void;
}

/** Thrown when a request exceeds what a backend can hold or dispatch. */
export class BackendLimitError extends Error {
  /**
   * Creates a BackendLimitError.
   * @param message what limit was exceeded and by what
   */
  constructor(message: string) {
    super(message);
    this.name = "BackendLimitError";
  }
}

/** Row-major strides of a contiguous tensor of `shape`. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

/** Number of elements in `shape`. */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
