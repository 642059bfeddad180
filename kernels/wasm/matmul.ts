/**
 * The CPU backend's WebAssembly matmul: packs A and B into the kernel's panel layout in a shared
 * `WebAssembly.Memory`, has the kernel compute C, and copies C out.
 *
 * Threads: {@link wasmMatmul} packs and copies on the calling thread and hands the computation to an
 * {@link SgemmExecutor} as one {@link SgemmCall} (plain numbers). The work is {@link sgemmItemCount} items (row
 * tiles of every matrix) of the kernel's `sgemm_batch` export, which any thread with its own
 * {@link instantiateSgemm} instance over the arena's memory can compute in ranges ({@link pooledExecutor}).
 * Every C element is summed over p = 0..k-1 in the same order whoever computes its tile, so any split gives
 * the same bits.
 *
 * @module
 */
import type { MatmulShape } from "../backend.ts";
import { instantiateSgemm, SharedArena } from "./loader.ts";

/** Rows per kernel tile (one `sgemm_batch` item). */
export const SGEMM_ROW_BLOCK = 4;
/** Columns per packed B panel (C's staging row pitch is n rounded up to it). */
export const SGEMM_COL_BLOCK = 8;

/** A batch of products packed in shared memory: `count` matrices, all addresses and strides in bytes. */
export interface SgemmCall {
  /** Packed A of the first matrix. */
  readonly a: number;
  /** Packed B of the first matrix. */
  readonly b: number;
  /** C of the first matrix (row-major, `ldc` elements per row). */
  readonly c: number;
  /** Bytes between consecutive packed A (0: one A for all). */
  readonly strideA: number;
  /** Bytes between consecutive packed B (0: one B for all). */
  readonly strideB: number;
  /** Bytes between consecutive C. */
  readonly strideC: number;
  /** Number of matrices. */
  readonly count: number;
  /** Rows of C. */
  readonly m: number;
  /** Columns of C. */
  readonly n: number;
  /** Inner dimension. */
  readonly k: number;
  /** Elements per C row (a multiple of {@link SGEMM_COL_BLOCK}). */
  readonly ldc: number;
}

/** Arguments of the kernel's `sgemm_batch` export before its item range (see sgemm.wat). */
export function sgemmBatchArgs(
  call: SgemmCall,
): [a: number, b: number, c: number, sA: number, sB: number, sC: number, m: number, n: number, k: number, ldc: number] {
  return [call.a, call.b, call.c, call.strideA, call.strideB, call.strideC, call.m, call.n, call.k, call.ldc];
}

/**
 * Items of `call` for `sgemm_batch`: one per tile of {@link SGEMM_ROW_BLOCK} rows of each matrix, so any split
 * of `[0, items)` into ranges computes each tile exactly once.
 */
export function sgemmItemCount(call: SgemmCall): number {
  return call.count * Math.ceil(call.m / SGEMM_ROW_BLOCK);
}

/** Where {@link wasmMatmul} stages operands and who computes them. */
export interface SgemmExecutor {
  /** The shared memory the staging buffers live in (every kernel instance that runs them must use it). */
  readonly arena: SharedArena;
  /** Computes every item of `call` and returns when C is complete. */
  run(call: SgemmCall): void;
}

/** What {@link pooledExecutor} needs of a thread pool (kernels/cpu_pool.ts `CpuPool` has it). */
export interface ItemPool {
  /** Runs exported `fn(...args, start, end)` over `[0, items)` split between threads; returns when all are done. */
  run(fn: string, args: readonly number[], items: number): void;
}

let single: SgemmExecutor | undefined;

/** The calling thread alone: one kernel instance over a private arena (created on first use). */
export function singleThreadExecutor(): SgemmExecutor {
  if (single) return single;
  const arena = new SharedArena();
  const kernel = instantiateSgemm(arena.memory);
  return single = { arena, run: (call) => kernel.sgemm_batch(...sgemmBatchArgs(call), 0, sgemmItemCount(call)) };
}

/**
 * An executor over a pool whose instances of the sgemm module import `arena.memory`: `pool.run("sgemm_batch",
 * ...)` with {@link sgemmBatchArgs} and {@link sgemmItemCount}.
 */
export function pooledExecutor(arena: SharedArena, pool: ItemPool): SgemmExecutor {
  return { arena, run: (call) => pool.run("sgemm_batch", sgemmBatchArgs(call), sgemmItemCount(call)) };
}

/**
 * Packs `m` rows of A (`[m, k]`, or `[k, m]` when `transA`) from `src[base..]` into 4-row panels at element
 * `at` of `dst`: element (i, p) at `at + (⌊i/4⌋·k + p)·4 + i%4`; rows past m are zero.
 */
function packA(src: Float32Array, base: number, m: number, k: number, transA: boolean, dst: Float32Array, at: number) {
  const rowStep = transA ? 1 : k, pStep = transA ? m : 1; // element (i, p) at base + i·rowStep + p·pStep
  for (let i0 = 0; i0 < m; i0 += 4) {
    let o = at + i0 * k;
    const s0 = base + i0 * rowStep;
    if (i0 + 4 <= m) {
      const s1 = s0 + rowStep, s2 = s1 + rowStep, s3 = s2 + rowStep;
      for (let q = 0; q < k * pStep; q += pStep, o += 4) {
        dst[o] = src[s0 + q];
        dst[o + 1] = src[s1 + q];
        dst[o + 2] = src[s2 + q];
        dst[o + 3] = src[s3 + q];
      }
    } else {
      const rows = m - i0;
      for (let p = 0; p < k; p++, o += 4) {
        for (let r = 0; r < 4; r++) dst[o + r] = r < rows ? src[s0 + r * rowStep + p * pStep] : 0;
      }
    }
  }
}

/**
 * Packs B (`[k, n]`, or `[n, k]` when `transB`) from `src[base..]` into 8-column panels at element `at` of
 * `dst`: element (p, j) at `at + (⌊j/8⌋·k + p)·8 + j%8`; columns past n are zero.
 */
function packB(src: Float32Array, base: number, n: number, k: number, transB: boolean, dst: Float32Array, at: number) {
  const full = n - (n % 8), panelStep = 8 * k;
  if (!transB) {
    // B's rows in order, each spread over the panels: ~3x faster than panel by panel, which reads each
    // cache line twice far apart (B is 4 MiB at n = 1024).
    for (let p = 0; p < k; p++) {
      const row = base + p * n;
      for (let j0 = 0, o = at + p * 8; j0 < full; j0 += 8, o += panelStep) {
        for (let c = 0; c < 8; c++) dst[o + c] = src[row + j0 + c];
      }
    }
  } else {
    // Column j of op(B) is row j of the stored [n, k]: eight rows read in step.
    for (let j0 = 0; j0 < full; j0 += 8) {
      const s0 = base + j0 * k, s1 = s0 + k, s2 = s1 + k, s3 = s2 + k, s4 = s3 + k, s5 = s4 + k, s6 = s5 + k;
      const s7 = s6 + k;
      for (let p = 0, o = at + j0 * k; p < k; p++, o += 8) {
        dst[o] = src[s0 + p];
        dst[o + 1] = src[s1 + p];
        dst[o + 2] = src[s2 + p];
        dst[o + 3] = src[s3 + p];
        dst[o + 4] = src[s4 + p];
        dst[o + 5] = src[s5 + p];
        dst[o + 6] = src[s6 + p];
        dst[o + 7] = src[s7 + p];
      }
    }
  }
  if (full === n) return;
  const cols = n - full, colStep = transB ? k : 1, pStep = transB ? 1 : n; // (p, j) at base + p·pStep + j·colStep
  for (let p = 0, o = at + full * k; p < k; p++, o += 8) {
    for (let c = 0; c < 8; c++) dst[o + c] = c < cols ? src[base + p * pStep + (full + c) * colStep] : 0;
  }
}

/** Staging bytes above which a batch is computed in several calls (each at least one matrix). */
const BATCH_BYTES = 256 * 2 ** 20;

/**
 * `out[i] = op(A[i])·op(B[i])` for every matrix of the batch (contiguous `[batch, m, n]` out), like the
 * backend's `matmul`, through the WebAssembly kernel. A and B are packed once per call when their batch
 * stride is 0. `executor` computes the products (default: this thread).
 */
export function wasmMatmul(
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  shape: MatmulShape,
  executor: SgemmExecutor = singleThreadExecutor(),
): void {
  const { batch, m, n, k, transA, transB } = shape;
  if (batch === 0 || m === 0 || n === 0) return;
  const ldc = Math.ceil(n / SGEMM_COL_BLOCK) * SGEMM_COL_BLOCK;
  const aElems = Math.ceil(m / SGEMM_ROW_BLOCK) * SGEMM_ROW_BLOCK * k, bElems = ldc * k, cElems = m * ldc;
  const perMatrix = 4 * ((shape.strideA ? aElems : 0) + (shape.strideB ? bElems : 0) + cElems);
  const chunk = Math.max(1, Math.min(batch, Math.floor(BATCH_BYTES / perMatrix)));
  const { arena } = executor;
  for (let first = 0; first < batch; first += chunk) {
    const count = Math.min(chunk, batch - first);
    const aCount = shape.strideA ? count : 1, bCount = shape.strideB ? count : 1;
    arena.reset();
    const aAt = arena.alloc(4 * aElems * aCount), bAt = arena.alloc(4 * bElems * bCount);
    const cAt = arena.alloc(4 * cElems * count);
    const mem = arena.f32(0, cAt / 4 + cElems * count); // after the allocations: covers them all
    for (let i = 0; i < aCount; i++) {
      packA(a, (first + i) * shape.strideA, m, k, transA, mem, aAt / 4 + i * aElems);
    }
    for (let i = 0; i < bCount; i++) {
      packB(b, (first + i) * shape.strideB, n, k, transB, mem, bAt / 4 + i * bElems);
    }
    executor.run({
      a: aAt,
      b: bAt,
      c: cAt,
      strideA: shape.strideA ? 4 * aElems : 0,
      strideB: shape.strideB ? 4 * bElems : 0,
      strideC: 4 * cElems,
      count,
      m,
      n,
      k,
      ldc,
    });
    const c = cAt / 4, o = first * m * n; // (byte offsets reach 4 GiB: no >> 2)
    if (ldc === n) out.set(mem.subarray(c, c + count * cElems), o);
    else {
      for (let r = 0; r < count * m; r++) out.set(mem.subarray(c + r * ldc, c + r * ldc + n), o + r * n);
    }
  }
}
