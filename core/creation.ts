/**
 * Creating tensors: from host data, constants, ranges, and random draws from
 * the shared Philox stream.
 *
 * @module
 */
import { type Backend, type DType, philoxWords, sizeOf, type TypedArray, wordToUniform } from "@lowp/kernels";
import { currentBackend } from "./runtime.ts";
import { emptyTensor, Tensor } from "./tensor.ts";

/** Options for creating a tensor. */
export interface CreateOptions {
  /** Element type (default f32). */
  dtype?: DType;
  /** Backend (default: the active one). */
  backend?: Backend;
  /** Mark as a trainable leaf. */
  requiresGrad?: boolean;
  /** Name for messages and checkpoints. */
  name?: string;
}

/** Nested number arrays accepted by {@link tensor}. */
export type NestedNumbers = number | readonly NestedNumbers[];

function inferShape(data: NestedNumbers): number[] {
  const shape: number[] = [];
  let level: NestedNumbers = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0] as NestedNumbers;
  }
  return shape;
}

function flatten(data: NestedNumbers, out: number[] = []): number[] {
  if (Array.isArray(data)) { for (const d of data) flatten(d, out); }
  else out.push(data as number);
  return out;
}

function typed(dtype: DType, n: number): TypedArray {
  return dtype === "f32" ? new Float32Array(n) : dtype === "i32" ? new Int32Array(n) : new Uint32Array(n);
}

function finish(t: Tensor, opts: CreateOptions): Tensor {
  if (opts.name) t.name = opts.name;
  if (opts.requiresGrad) t.requireGrad();
  return t;
}

/**
 * A tensor from nested arrays or a flat typed array (give `shape` for flat data).
 *
 * @example
 * ```ts
 * import { tensor } from "@lowp/core";
 * const x = tensor([[1, 2, 3], [4, 5, 6]]);
 * console.assert(x.shape.join() === "2,3");
 * ```
 */
export function tensor(
  data: NestedNumbers | TypedArray | readonly number[],
  opts: CreateOptions & { shape?: readonly number[] } = {},
): Tensor {
  const dtype = opts.dtype ?? (data instanceof Int32Array ? "i32" : data instanceof Uint32Array ? "u32" : "f32");
  const shape = opts.shape ?? (ArrayBuffer.isView(data) ? [data.length] : inferShape(data as NestedNumbers));
  const flat = ArrayBuffer.isView(data) ? data : flatten(data as NestedNumbers);
  if (flat.length !== sizeOf(shape)) {
    throw new Error(`tensor: ${flat.length} values do not fill shape [${shape.join(",")}] (ragged or wrong shape)`);
  }
  const host = typed(dtype, flat.length);
  host.set(flat); // converts between element types (e.g. Float32Array data as i32) by value
  const backend = opts.backend ?? currentBackend();
  return finish(new Tensor(backend, backend.upload(host), shape, dtype), opts);
}

/** A tensor of `shape` filled with `value`. */
export function full(shape: readonly number[], value: number, opts: CreateOptions = {}): Tensor {
  const dtype = opts.dtype ?? "f32";
  const t = emptyTensor(opts.backend ?? currentBackend(), shape, dtype);
  if (t.size > 0) t.backend.fill(t.storage, value, dtype);
  return finish(t, opts);
}

/** Zeros of `shape`. */
export function zeros(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

/** Ones of `shape`. */
export function ones(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/** [start, start+step, ...) below `end` (one argument: [0, end)). */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  const [lo, hi] = end === undefined ? [0, start] : [start, end];
  const n = Math.max(0, Math.ceil((hi - lo) / step));
  const host = typed(opts.dtype ?? "f32", n);
  for (let i = 0; i < n; i++) host[i] = lo + i * step;
  return tensor(host, { ...opts, shape: [n] });
}

/** Where random numbers come from: Philox key (seed, stream) and the first word's counter. */
export interface RandomKey {
  /** Seed (u32). */
  seed: number;
  /** Stream id (u32): one per parameter or purpose, so draws never overlap. */
  stream: number;
  /** Word offset within the stream (default 0). */
  offset?: number;
}

/**
 * Standard-normal draws (Box–Muller on Philox words), scaled by `std`. Drawn on
 * the host so every backend gets bit-identical values.
 */
export function randn(shape: readonly number[], key: RandomKey, std = 1, opts: CreateOptions = {}): Tensor {
  const n = sizeOf(shape);
  const words = philoxWords(new Uint32Array(2 * Math.ceil(n / 2)), key.seed, key.stream, key.offset ?? 0);
  const host = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    // u1 in (0, 1] so log(u1) is finite.
    const u1 = 1 - wordToUniform(words[i]), u2 = wordToUniform(words[i + 1]);
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    host[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) host[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return tensor(host, { ...opts, shape });
}

/**
 * Uniform draws in [0, 1), generated on the tensor's backend by the Philox
 * kernel: identical bits on every backend for the same key.
 */
export function rand(shape: readonly number[], key: RandomKey, opts: CreateOptions = {}): Tensor {
  const backend = opts.backend ?? currentBackend();
  const t = emptyTensor(backend, shape);
  if (t.size > 0) backend.randomUniform(t.storage, key.seed, key.stream, key.offset ?? 0);
  return finish(t, opts);
}
