/**
 * Loads the WebAssembly sgemm kernel: compiles the binary that `deno task wasm` assembled from `sgemm.wat`
 * (kept in `sgemm_wasm.ts`, checked against the .wat by tools/wasm_test.ts) once, at import, into a
 * `WebAssembly.Module`. Also the shared memory the kernel runs on ({@link SharedArena}) and
 * {@link instantiateSgemm}, which a worker calls with the same memory to run the kernel on the same data.
 *
 * No file is read and no assembler is loaded, so the kernel is there whatever the permissions and wherever
 * the package is imported from: whether the CPU backend uses WebAssembly, and so its results, never depend
 * on them. `LOWP_CPU_KERNELS=reference` is the one switch to the JS loops. Should the module not compile
 * (a runtime without WebAssembly SIMD or threads), there is no quiet fallback: {@link sgemmModule} is
 * undefined with the reason in {@link sgemmUnavailableReason}, and creating a CPU backend that would use it
 * throws that reason and names the switch. (A silent switch to the JS loops would change results, which
 * round differently in the last bit.)
 *
 * @module
 */
import { BackendLimitError } from "../backend.ts";
import { SGEMM_WASM } from "./sgemm_wasm.ts";

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

/**
 * Compiles an embedded WebAssembly binary (`what` names it in the error). Throws, naming the kernel and
 * the `LOWP_CPU_KERNELS=reference` switch, where this runtime cannot compile it.
 */
export function compileKernel(bytes: Uint8Array<ArrayBuffer>, what: string): WebAssembly.Module {
  try {
    return new WebAssembly.Module(bytes);
  } catch (e) {
    throw new Error(
      `lowp: the WebAssembly ${what} does not compile in this runtime (${e instanceof Error ? e.message : e}); ` +
        `LOWP_CPU_KERNELS=reference runs the CPU backend on its JS loops instead`,
    );
  }
}

let compiled: WebAssembly.Module | Error | undefined;

/**
 * The compiled sgemm module, compiled on first call (at import unless `LOWP_CPU_KERNELS=reference`; tests
 * and tools may ask for it under `reference` too). Throws the reason it does not compile.
 */
export function sgemmKernelModule(): WebAssembly.Module {
  if (compiled === undefined) {
    try {
      compiled = compileKernel(SGEMM_WASM, "matmul kernel (kernels/wasm/sgemm.wat)");
    } catch (e) {
      compiled = e as Error;
    }
  }
  if (compiled instanceof Error) throw compiled;
  return compiled;
}

/** What the CPU backend gets at import: the module, or why there is none (`reference` or a failure). */
function initialModule(): { module?: WebAssembly.Module; reason: string } {
  if (CPU_KERNELS === "reference") return { reason: "LOWP_CPU_KERNELS=reference" };
  try {
    return { module: sgemmKernelModule(), reason: "" };
  } catch (e) {
    return { reason: (e as Error).message };
  }
}

const initial = initialModule();

/** The sgemm module the CPU backend uses, or `undefined` under `LOWP_CPU_KERNELS=reference` (or on failure). */
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
