/**
 * The Tensor: a shape, a dtype and reference-counted storage on a backend,
 * plus the autograd node that produced it.
 *
 * @module
 */
import { type Backend, type DType, sizeOf, type Storage, type TypedArray } from "@lowp/kernels";
import { currentBackend, type Disposable, isGradEnabled, track } from "./runtime.ts";

/** Storage shared by a tensor and its reshaped aliases; freed when the last holder lets go. */
class SharedStorage {
  refs = 1;
  constructor(readonly backend: Backend, readonly storage: Storage) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) this.backend.free(this.storage);
  }
}

/** How a tensor's gradient flows to its inputs. */
export interface GradNode {
  /** The op's name, for error messages. */
  readonly op: string;
  /** The tensors the op read. */
  readonly inputs: readonly Tensor[];
  /** Given the output gradient, returns one gradient per input (null where none flows). */
  readonly backward: (grad: Tensor) => readonly (Tensor | null)[];
}

/** An n-dimensional array on a backend. Create tensors with `tensor`, `zeros`, `randn` and friends. */
export class Tensor implements Disposable {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Whether gradients flow to (or through) this tensor. */
  requiresGrad = false;
  /** Accumulated gradient (leaves, and non-leaves after {@link Tensor.retainGrad}). */
  grad: Tensor | null = null;
  /** The op that produced this tensor while gradients were recorded. */
  node: GradNode | null = null;
  /** Optional name used in error messages and checkpoints. */
  name?: string;
  #shared: SharedStorage;
  #kept = false;
  #retainsGrad = false;
  #disposed = false;

  /** Wraps `storage` (taking ownership) as a tensor. Prefer the creation functions. */
  constructor(backend: Backend, storage: Storage, shape: readonly number[], dtype: DType) {
    this.#shared = new SharedStorage(backend, storage);
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    track(this);
  }

  /** The backend holding the data. */
  get backend(): Backend {
    return this.#shared.backend;
  }
  /** Number of elements. */
  get size(): number {
    return sizeOf(this.shape);
  }
  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }
  /** The raw storage (for kernels). Throws on a disposed tensor. */
  get storage(): Storage {
    if (this.#disposed) throw new Error(`${this.describe()} was used after dispose()`);
    return this.#shared.storage;
  }
  /** True when kept out of scope cleanup (parameters, optimizer state, gradients). */
  get kept(): boolean {
    return this.#kept;
  }
  /** True after {@link Tensor.dispose}. */
  get disposed(): boolean {
    return this.#disposed;
  }
  /** Whether this non-leaf tensor keeps its gradient after backward. */
  get retainsGrad(): boolean {
    return this.#retainsGrad;
  }

  /** "tensor 'name' [2,3] f32" for messages. */
  describe(): string {
    return `tensor${this.name ? ` '${this.name}'` : ""} [${this.shape.join(",")}] ${this.dtype}`;
  }

  /** A new tensor of another shape sharing this storage (no copy, no autograd). */
  alias(shape: readonly number[] = this.shape): Tensor {
    const shared = this.storageRef().retain();
    const t = new Tensor(shared.backend, shared.storage, shape, this.dtype);
    t.#shared = shared; // replaces the fresh record, which never owned the storage
    return t;
  }

  /** Keeps this tensor alive past the end of the enclosing scope; returns it. */
  keep(): this {
    this.#kept = true;
    return this;
  }

  /** Asks backward() to store this non-leaf tensor's gradient in `.grad`. */
  retainGrad(): this {
    this.#retainsGrad = true;
    return this;
  }

  /** Marks this tensor as a trainable leaf. */
  requireGrad(flag = true): this {
    if (flag && this.dtype !== "f32") throw new Error(`${this.describe()}: only f32 tensors can require gradients`);
    this.requiresGrad = flag;
    return this;
  }

  /** Replaces this tensor's contents with `value`'s (same shape), sharing its storage. */
  assign(value: Tensor): this {
    if (value.shape.length !== this.shape.length || value.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(`assign: ${this.describe()} cannot take a value of shape [${value.shape.join(",")}]`);
    }
    if (value.backend !== this.backend) {
      throw new Error(`assign: ${this.describe()} and the value live on different backends`);
    }
    const next = value.storageRef().retain();
    this.#shared.release();
    this.#shared = next;
    return this;
  }

  /** Releases the storage (idempotent). The gradient is released too. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#shared.release();
    this.node = null;
    this.grad?.dispose();
    this.grad = null;
  }

  /** Reads the data back as a flat typed array. */
  data(): Promise<TypedArray> {
    return this.backend.read(this.storage, this.dtype);
  }

  /** Reads the data back as nested arrays. */
  async toArray(): Promise<unknown> {
    const flat = Array.from(await this.data());
    const nest = (offset: number, d: number): unknown => {
      if (d === this.shape.length) return flat[offset];
      const stride = sizeOf(this.shape.slice(d + 1));
      return Array.from({ length: this.shape[d] }, (_, i) => nest(offset + i * stride, d + 1));
    };
    return nest(0, 0);
  }

  /** Reads a one-element tensor as a number. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): ${this.describe()} has ${this.size} elements, expected 1`);
    return (await this.data())[0];
  }

  /** Used by aliasing and assign: the shared storage record. */
  private storageRef(): SharedStorage {
    if (this.#disposed) throw new Error(`${this.describe()} was used after dispose()`);
    return this.#shared;
  }
}

/** Allocates an output tensor of `shape` on `backend`. */
export function emptyTensor(backend: Backend, shape: readonly number[], dtype: DType = "f32"): Tensor {
  return new Tensor(backend, backend.alloc(sizeOf(shape)), shape, dtype);
}

/**
 * Attaches an autograd node to `out` when recording is on and an input needs
 * gradients. Returns `out`.
 */
export function record(
  out: Tensor,
  op: string,
  inputs: readonly Tensor[],
  backward: (grad: Tensor) => readonly (Tensor | null)[],
): Tensor {
  if (isGradEnabled() && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { op, inputs, backward };
  }
  return out;
}

/** Throws unless all tensors share one backend; returns it. */
export function sameBackend(op: string, ...tensors: Tensor[]): Backend {
  const b = tensors[0]?.backend ?? currentBackend();
  for (const t of tensors) {
    if (t.backend !== b) throw new Error(`${op}: ${t.describe()} is on ${t.backend.name}, expected ${b.name}`);
  }
  return b;
}
