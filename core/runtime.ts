/**
 * Process-wide state of the engine: the active backend, the stack of memory
 * scopes, and whether gradients are being recorded.
 *
 * @module
 */
import {
  type Backend,
  type BackendName,
  createCpuBackend,
  createWebGpuBackend,
  type WebGpuAvailability,
} from "@lowp/kernels";

/**
 * What {@link useBackend} accepts: a backend name or `auto` (WebGPU on a
 * hardware adapter, else CPU: a software adapter such as llvmpipe is slower
 * than the CPU backend).
 */
export type BackendChoice = BackendName | "auto";

let cpu: Backend | null = null;
let webgpu: Promise<WebGpuAvailability> | null = null;
let active: Backend | null = null;

/** The CPU reference backend (created on first use). */
export function cpuBackend(): Backend {
  return cpu ??= createCpuBackend();
}

/** The WebGPU backend, or `null` with the reason when no adapter exists. Created once. */
export function webgpuBackend(): Promise<WebGpuAvailability> {
  return webgpu ??= createWebGpuBackend().catch((e) => ({
    backend: null,
    reason: String(e?.message ?? e),
    fallback: false,
  }));
}

/**
 * Selects the backend new tensors are created on and returns it.
 * `webgpu` throws when no adapter exists; `auto` falls back to CPU.
 *
 * @example
 * ```ts
 * import { useBackend } from "@lowp/core";
 * const backend = await useBackend("cpu");
 * console.assert(backend.name === "cpu");
 * ```
 */
export async function useBackend(choice: BackendChoice = "auto"): Promise<Backend> {
  if (choice === "cpu") return active = cpuBackend();
  if (choice !== "webgpu" && choice !== "auto") {
    throw new Error(`unknown backend '${choice}': expected cpu, webgpu or auto`);
  }
  const { backend, reason, fallback } = await webgpuBackend();
  if (backend && (choice === "webgpu" || !fallback)) return active = backend;
  if (choice === "webgpu") throw new Error(`webgpu backend unavailable: ${reason}`);
  return active = cpuBackend();
}

/** Resolves the backend choice from `--backend` / the `BACKEND` environment variable, default `auto`. */
export function backendChoiceFromEnv(flag?: string): BackendChoice {
  const value = flag ?? Deno.env.get("BACKEND") ?? "auto";
  if (value !== "cpu" && value !== "webgpu" && value !== "auto") {
    throw new Error(`BACKEND/--backend must be cpu, webgpu or auto, got '${value}'`);
  }
  return value;
}

/** The backend new tensors go to (CPU until {@link useBackend} picks another). */
export function currentBackend(): Backend {
  return active ?? cpuBackend();
}

/** Something a scope can release. */
export interface Disposable {
  /** Releases the memory. Idempotent. */
  dispose(): void;
  /** True when the object was kept out of scope cleanup. */
  readonly kept: boolean;
}

const scopes: Disposable[][] = [];

/** Registers a new object with the innermost scope, if any. */
export function track(t: Disposable): void {
  if (scopes.length) scopes[scopes.length - 1].push(t);
}

/** Opens a scope (prefer {@link tidy}). */
export function beginScope(): void {
  scopes.push([]);
}

/** Closes the innermost scope, disposing everything it tracked except `keep` and kept objects. */
export function endScope(keep: ReadonlySet<Disposable> = new Set()): void {
  const scope = scopes.pop();
  if (!scope) throw new Error("endScope without beginScope");
  for (const t of scope) {
    if (keep.has(t)) track(t);
    else if (!t.kept) t.dispose();
  }
}

/**
 * Runs `fn` in a memory scope: every tensor created inside is released when it
 * returns, except the tensors in its result (a tensor, an array, or an object
 * of tensors), which move to the enclosing scope. `fn` must be synchronous.
 *
 * @example
 * ```ts
 * import { add, tensor, tidy } from "@lowp/core";
 * const y = tidy(() => add(tensor([1, 2]), tensor([3, 4])));
 * console.assert(y.shape[0] === 2);
 * ```
 */
export function tidy<T>(fn: () => T): T {
  beginScope();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    endScope();
    throw e;
  }
  if (result instanceof Promise) {
    endScope();
    throw new Error("tidy() takes a synchronous function; await outside of it");
  }
  endScope(collectDisposables(result));
  return result;
}

function collectDisposables(value: unknown, out = new Set<Disposable>()): Set<Disposable> {
  if (value && typeof value === "object") {
    if ("dispose" in value && "kept" in value) out.add(value as Disposable);
    else if (Array.isArray(value)) value.forEach((v) => collectDisposables(v, out));
    else if (Object.getPrototypeOf(value) === Object.prototype) {
      Object.values(value).forEach((v) => collectDisposables(v, out));
    }
  }
  return out;
}

let recording = true;

/** True while operations record the autograd graph. */
export function isGradEnabled(): boolean {
  return recording;
}

/**
 * Runs `fn` without recording gradients (inference, optimizer updates).
 *
 * @example
 * ```ts
 * import { mul, noGrad, tensor } from "@lowp/core";
 * const w = tensor([1, 2], { requiresGrad: true });
 * const y = noGrad(() => mul(w, 2));
 * console.assert(!y.requiresGrad);
 * ```
 */
export function noGrad<T>(fn: () => T): T {
  const previous = recording;
  recording = false;
  try {
    return fn();
  } finally {
    recording = previous;
  }
}
