/**
 * Loads the WebAssembly sgemm kernel: reads `sgemm.wat` next to this file, assembles it with npm:wabt
 * (SIMD enabled) and compiles it once into a cached `WebAssembly.Module`; no binary is committed. Also the
 * shared memory the kernel runs on ({@link SharedArena}) and {@link instantiateSgemm}, which a worker calls
 * with the same memory to run the kernel on the same data.
 *
 * The module is assembled at import time (top-level await, ~50 ms: loading wabt dominates) so that whether
 * the CPU backend uses WebAssembly is settled before its first matmul: a matmul is synchronous, and a path
 * that switched from the JS loop to WebAssembly half-way through a run would change results mid-run.
 *
 * Why read the .wat file rather than embed its text in a .ts module: the kernel stays one plain WAT file that
 * wabt, editors and diffs see as is. The cost is a file read: where this module is used without read
 * permission for that file (or from a remote URL without net permission), the kernel is unavailable, the CPU
 * backend keeps its JS loop, and one line on stderr says so. Permissions are queried first, so nothing ever
 * prompts. `LOWP_CPU_KERNELS=reference` skips all of it (wabt is not even imported).
 *
 * @module
 */
import { BackendLimitError } from "../backend.ts";

/**
 * Which kernels the CPU backend uses: `auto` (the WebAssembly matmul above a size threshold, and the fused
 * WebAssembly quantize-dequantize of `@lowp/formats`) or `reference` (JS loops and word kernels only).
 */
export type CpuKernels = "auto" | "reference";

/** Reads `LOWP_CPU_KERNELS` once; without env permission (or unset) it is `auto`, never a prompt. */
function cpuKernelsFromEnv(): CpuKernels {
  let value: string | undefined;
  try {
    const name = "LOWP_CPU_KERNELS";
    if (Deno.permissions.querySync({ name: "env", variable: name }).state === "granted") value = Deno.env.get(name);
  } catch {
    // no Deno.permissions (not Deno) or a denied query: unset
  }
  if (value === undefined || value === "" || value === "auto") return "auto";
  if (value === "reference") return "reference";
  console.error(`lowp: LOWP_CPU_KERNELS='${value}' is not 'reference' or 'auto'; using 'auto'`);
  return "auto";
}

/** The `LOWP_CPU_KERNELS` setting this process runs with (read once, at import). */
export const CPU_KERNELS: CpuKernels = cpuKernelsFromEnv();

const WAT_URL = new URL("./sgemm.wat", import.meta.url);

/** The WAT source at `url`, or why it cannot be read without asking for a permission. */
async function readWat(url: URL): Promise<string> {
  if (url.protocol === "file:") {
    const state = Deno.permissions.querySync({ name: "read", path: url }).state;
    if (state !== "granted") throw new Error(`no read permission for ${url.pathname}`);
    return await Deno.readTextFile(url);
  }
  const state = Deno.permissions.querySync({ name: "net", host: url.host }).state;
  if (state !== "granted") throw new Error(`no net permission for ${url.host}`);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return await response.text();
}

/** The wabt instance: npm:wabt is loaded once for every module assembled. */
type Wabt = Awaited<ReturnType<typeof import("wabt")>>;
let wabtInstance: Promise<Wabt> | undefined;

/**
 * Reads the WAT file at `url` (a `file:` URL needs read permission, a remote one net permission; neither
 * is ever prompted for) and assembles it with npm:wabt, SIMD and threads enabled, into a compiled module.
 * Rejects with the reason when it cannot (no permission, a syntax error with its line, invalid code).
 */
export async function assembleWat(url: URL): Promise<WebAssembly.Module> {
  const text = await readWat(url);
  const wabt = await (wabtInstance ??= import("wabt").then(({ default: init }) => init()));
  const parsed = wabt.parseWat(url.pathname.split("/").pop() ?? "module.wat", text, { simd: true, threads: true });
  try {
    // No parsed.validate(): its typings take no feature flags, so it rejects the shared memory; the
    // WebAssembly.Module constructor validates anyway (wabt's parse already reports syntax errors by line).
    const { buffer } = parsed.toBinary({});
    return new WebAssembly.Module(new Uint8Array(buffer)); // a copy: wabt types its buffer as possibly shared
  } finally {
    parsed.destroy();
  }
}

let pending: Promise<WebAssembly.Module> | undefined;

/**
 * The compiled sgemm module, assembled on first call and cached (also under `LOWP_CPU_KERNELS=reference`,
 * for tests and tools that want the kernel explicitly). Rejects with the reason it cannot be built.
 */
export function loadSgemmModule(): Promise<WebAssembly.Module> {
  return pending ??= assembleWat(WAT_URL);
}

/** What the CPU backend gets at import: the module, or why there is none (`reference` or a failure). */
async function initialModule(): Promise<{ module?: WebAssembly.Module; reason: string }> {
  if (CPU_KERNELS === "reference") return { reason: "LOWP_CPU_KERNELS=reference" };
  try {
    return { module: await loadSgemmModule(), reason: "" };
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    console.error(`lowp: WebAssembly matmul kernel unavailable (${reason}); the CPU backend uses its JS loop`);
    return { reason };
  }
}

const initial = await initialModule();

/** The sgemm module if it was built at import (and not disabled by `LOWP_CPU_KERNELS`), else `undefined`. */
export const sgemmModule: WebAssembly.Module | undefined = initial.module;
/** Why {@link sgemmModule} is `undefined` (empty when it is there). */
export const sgemmUnavailableReason: string = initial.reason;

/** The kernel's exports (see sgemm.wat for the operand layout; addresses and strides in bytes). */
export interface SgemmKernel {
  /** `C[rowStart..rowEnd, 0..n) = A·B`: packed A at `a`, packed B at `b`, C at `c` with `ldc` (8·j ≥ n) per row. */
  sgemm(
    a: number,
    b: number,
    c: number,
    m: number,
    n: number,
    k: number,
    ldc: number,
    rowStart: number,
    rowEnd: number,
  ): void;
  /** Items `[itemStart, itemEnd)` of a batch, item t = row tile t % ⌈m/4⌉ of matrix ⌊t / ⌈m/4⌉⌋. */
  sgemm_batch(
    a: number,
    b: number,
    c: number,
    strideA: number,
    strideB: number,
    strideC: number,
    m: number,
    n: number,
    k: number,
    ldc: number,
    itemStart: number,
    itemEnd: number,
  ): void;
}

/**
 * An instance of the sgemm module over `memory` (a shared `WebAssembly.Memory` with `maximum` ≤ 65536
 * pages). Each worker makes its own from the same module and memory (both can be posted to a worker).
 */
export function instantiateSgemm(
  memory: WebAssembly.Memory,
  module: WebAssembly.Module | undefined = sgemmModule,
): SgemmKernel {
  if (!module) throw new Error(`sgemm kernel unavailable: ${sgemmUnavailableReason}`);
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as SgemmKernel;
}

const PAGE = 65536;
const MAX_PAGES = 65536; // 4 GiB: all a 32-bit address reaches
const ALIGN = 64; // a cache line: packed panels start on one

/**
 * A bump allocator over a shared `WebAssembly.Memory` for the staging buffers of one matmul at a time:
 * {@link reset}, then {@link alloc} each buffer. The memory grows when needed and never shrinks (it keeps
 * the largest matmul's footprint). Growing a shared memory keeps its data and its address; views made
 * before only keep their old length, so take views ({@link f32}) after the allocations they cover.
 */
export class SharedArena {
  /** The memory (shared, so it can be posted to workers). */
  readonly memory: WebAssembly.Memory;
  #top = ALIGN;

  /** Creates the arena with `initialPages` of 64 KiB. */
  constructor(initialPages = 16) {
    this.memory = new WebAssembly.Memory({ initial: initialPages, maximum: MAX_PAGES, shared: true });
  }

  /** Frees everything allocated (offset 0 stays unused, so 0 is never a valid buffer). */
  reset(): void {
    this.#top = ALIGN;
  }

  /** Allocates `bytes` (64-byte aligned) and returns the byte offset; grows the memory as needed. */
  alloc(bytes: number): number {
    const at = this.#top;
    const top = at + Math.ceil(bytes / ALIGN) * ALIGN;
    const have = this.memory.buffer.byteLength;
    if (top > have) {
      const pages = Math.ceil((top - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) {
        throw new BackendLimitError(`cpu: a matmul needs ${top} bytes of WebAssembly memory (limit 4 GiB)`);
      }
      this.memory.grow(pages);
    }
    this.#top = top;
    return at;
  }

  /** A Float32Array view of `length` elements at byte offset `at`, on the memory's current buffer. */
  f32(at: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, at, length);
  }
}
