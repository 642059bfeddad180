/**
 * Fused quantize-dequantize on the CPU backend: `quantDequant` of the
 * element formats, MX, NVFP4, NF4 and INT-k in one WebAssembly SIMD pass
 * per block (`wasm/quant.wat`, compiled at import from the binary that
 * `deno task wasm` embeds in `wasm/quant_wasm.ts`, like the matmul kernel), instead of the reference word kernels' integer emulation one
 * item at a time. The bits are the same: the kernels do each reference step
 * as the IEEE f32 operation it emulates (see the WAT file's header), and
 * `host_quant_test.ts` compares them with the reference on values chosen to
 * break them (ties, subnormals, overflow, NaN, ±Inf, ±0, tiny and huge scales).
 *
 * Each entry point returns `null` when it does not apply, and the quantizer
 * then runs its word kernels: another backend, a CPU backend made with
 * `kernels: "reference"` (or `LOWP_CPU_KERNELS=reference`), `nearest-away`
 * rounding, and the cases listed at each function. `nearest` and
 * `stochastic` rounding are fused (the Philox words are drawn in the module
 * too). Codes (`quantize`) always come from the word kernels.
 *
 * Data moves through the module's memory in chunks of about 64 KiB (copy in,
 * run, copy out), so a pass streams the tensor once through the cache; one
 * thread does the work (the matmul's worker pool is not used here).
 *
 * Blocks along a non-last axis (values `stride` apart, see `scaling.ts`) go
 * through the same kernels: a chunk is a tile of B rows (one block's length)
 * by up to TILE/B columns of one slab of the tensor, copied in row by row
 * (in one piece when the tile is the whole slab) and transposed inside the
 * module's memory so each block is contiguous, then transposed back on the
 * way out. That is the staging copy every chunk
 * already takes, plus one in-cache transpose each way; the tensor itself is
 * never transposed. Stochastic draws are then made per block (one `philox`
 * call of B words at the block's index in the blocked order).
 *
 * @module
 */
import {
  type Backend,
  bitsToF32,
  compileKernel,
  CPU_KERNELS,
  CpuStorage,
  f32Bits,
  philoxWords,
  type Storage,
  usesHostKernels,
} from "@lowp/kernels";
import { f32MulBits } from "./exact.ts";
import { emptyTensor, type Tensor } from "@lowp/core";
import { quantizeBits, type QuantParams } from "./element.ts";
import { drawIndex, roundToInt } from "./scaling.ts";
import type { QuantizeOptions } from "./spec.ts";
import { QUANT_WASM } from "./wasm/quant_wasm.ts";

/** The exports of wasm/quant.wat (addresses in bytes, counts as named). */
interface QuantKernels {
  memory: WebAssembly.Memory;
  amax(at: number, vectors: number): number;
  element(
    at: number,
    out: number,
    vectors: number,
    mbits: number,
    emin: number,
    maxBits: number,
    ovf: number,
    rd: number,
  ): void;
  scaled_element(
    at: number,
    out: number,
    vectors: number,
    mbits: number,
    emin: number,
    maxBits: number,
    ovf: number,
    rd: number,
    s: number,
    inv: number,
  ): void;
  mx(
    at: number,
    out: number,
    blocks: number,
    mbits: number,
    emin: number,
    maxBits: number,
    ovf: number,
    emax: number,
    rd: number,
    ceilAbove: number,
  ): void;
  nvfp4(
    at: number,
    out: number,
    blocks: number,
    st: number,
    r6: number,
    eMbits: number,
    eEmin: number,
    eMax: number,
    sMbits: number,
    sEmin: number,
    sMax: number,
    rd: number,
    amaxAt: number,
  ): void;
  int(
    at: number,
    out: number,
    groups: number,
    vectors: number,
    lr: number,
    qmin: number,
    qmax: number,
    asymmetric: number,
    rd: number,
  ): void;
  nf4(at: number, out: number, blocks: number, table: number): void;
  transpose(at: number, out: number, rows: number, cols: number): void;
  hadamard(at: number, out: number, masks: number, n: number, b: number, scale: number, mode: number): void;
  int_given(
    at: number,
    out: number,
    vectors: number,
    inv: number,
    s: number,
    zp: number,
    qmin: number,
    qmax: number,
    rd: number,
  ): void;
  quest(
    at: number,
    out: number,
    mask: number,
    blocks: number,
    c2: number,
    tiny: number,
    mbits: number,
    emin: number,
    maxBits: number,
    rd: number,
  ): void;
  philox(out: number, count: number, seed: number, stream: number, lo: number, hi: number): void;
}

/**
 * The fused kernels, or undefined under `LOWP_CPU_KERNELS=reference`. Where the module does not compile
 * (a runtime without WebAssembly SIMD) the word kernels run instead, said once on stderr: unlike the
 * matmul's, that fallback gives the same bits, only slower.
 */
function load(): QuantKernels | undefined {
  if (CPU_KERNELS === "reference") return undefined;
  try {
    const module = compileKernel(QUANT_WASM, "quantization kernels (formats/wasm/quant.wat)");
    return new WebAssembly.Instance(module, {}).exports as unknown as QuantKernels;
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}; formats use their word kernels (same bits, slower)`);
    return undefined;
  }
}

/** Compiled at import, so whether the fused path exists is settled before the first quantization. */
const kernels = load();

/** Whether the fused kernels are there (false under `LOWP_CPU_KERNELS=reference`). */
export const HOST_QUANT_AVAILABLE: boolean = kernels !== undefined;

/** Elements per chunk copied through the module's memory (64 KiB of f32). */
const CHUNK = 16384;
/**
 * Values per tile of strided blocks (256 KiB of f32): larger than a contiguous chunk, as each tile row is
 * its own copy and fewer, longer rows were measured faster.
 */
const TILE = 4 * CHUNK;
/** The largest group the INT-k kernel takes in one piece (4 MiB of f32); larger ones use the word kernels. */
const MAX_GROUP = 1 << 20;
const PAGE = 65536;
/** Bytes at the start of the module's memory kept for a kernel's constant table (NF4's 31 words). */
const CONSTANTS = 256;

/** f32 bits as a number and back (the WebAssembly f32 parameters take values). */
const bitsView = new Uint32Array(1), floatView = new Float32Array(bitsView.buffer);
function f32Of(bits: number): number {
  bitsView[0] = bits;
  return floatView[0];
}

/** The Philox key and first word of a stochastic rounding (null: round to nearest). */
type Draw = { seed: number; stream: number; offset: number } | null;

/** The host array of `x` and its rounding when the fused path may run on it with these options, else null. */
function hostInput(x: Tensor, opts: QuantizeOptions): { xs: Float32Array; draw: Draw } | null {
  if (!usesHostKernels(x.backend) || !(x.storage instanceof CpuStorage)) return null;
  const draw = drawOf(opts);
  return draw === undefined ? null : { xs: x.storage.f32.subarray(0, x.size), draw };
}

/** The rounding's draw (null: nearest), or undefined where the fused kernels cannot run (none, or another rounding). */
function drawOf(opts: QuantizeOptions): Draw | undefined {
  const rounding = opts.rounding ?? "nearest";
  if (!kernels || (rounding !== "nearest" && rounding !== "stochastic")) return undefined;
  return rounding === "stochastic"
    ? { seed: (opts.seed ?? 0) >>> 0, stream: (opts.stream ?? 0) >>> 0, offset: opts.offset ?? 0 }
    : null;
}

/** A new f32 tensor shaped like `x` and its host array. */
function hostOutput(x: Tensor): [Tensor, Float32Array] {
  const out = emptyTensor(x.backend, x.shape, "f32");
  return [out, (out.storage as CpuStorage).f32];
}

/** The module's memory as f32, grown to at least `bytes`. */
function memoryF32(k: QuantKernels, bytes: number): Float32Array {
  const have = k.memory.buffer.byteLength;
  if (bytes > have) k.memory.grow(Math.ceil((bytes - have) / PAGE));
  return new Float32Array(k.memory.buffer);
}

/** Where a chunk of {@link chunked} lies: its first element in x and its length, and its extra region. */
interface Chunk {
  /** Index in x of the chunk's first element. */
  readonly start: number;
  /** Elements in the chunk. */
  readonly length: number;
  /** Address of the region of `extra` words per element (the same for every chunk, so it keeps what is put there). */
  readonly extraAt: number;
}

/**
 * Runs `run(inAt, outAt, units, rd, chunk)` over `x` in chunks of whole units of `unit` elements (a multiple of
 * 4 dividing x.length), copying each chunk in and its result out to `out`. With a `draw`, each chunk's Philox
 * words (element i of x takes word offset + i) are filled `rd` bytes after its values; else rd = 0. `extra`
 * words per element of the chunk's span are kept after those for the kernel's own use (a second output, a
 * table), at `chunk.extraAt`.
 */
function chunked(
  k: QuantKernels,
  x: Float32Array,
  out: Float32Array,
  unit: number,
  draw: Draw,
  run: (inAt: number, outAt: number, units: number, rd: number, chunk: Chunk) => void,
  extra = 0,
): void {
  const span = Math.max(1, Math.floor(CHUNK / unit)) * unit;
  const extraAt = CONSTANTS + (draw ? 12 : 8) * span;
  const mem = memoryF32(k, extraAt + 4 * extra * span);
  const inAt = CONSTANTS, outAt = CONSTANTS + 4 * span, randAt = CONSTANTS + 8 * span;
  for (let start = 0; start < x.length; start += span) {
    const length = Math.min(span, x.length - start);
    mem.set(x.subarray(start, start + length), inAt / 4);
    if (draw) {
      const word = draw.offset + start;
      k.philox(randAt, length, draw.seed, draw.stream, word % 2 ** 32, Math.floor(word / 2 ** 32));
    }
    run(inAt, outAt, length / unit, draw ? randAt - inAt : 0, { start, length, extraAt });
    out.set(mem.subarray(outAt / 4, outAt / 4 + length), start);
  }
}

/** Where blocks of `block` values lie: `stride` apart along an axis of length `run` (see `scaling.ts`). */
export interface HostBlocks {
  /** Values per block. */
  readonly block: number;
  /** Distance between a block's consecutive values (1: contiguous). */
  readonly stride: number;
  /** Length of the blocked axis (orders the stochastic draws, `drawIndex`). */
  readonly run: number;
}

/**
 * {@link chunked} for blocks along any axis: contiguous blocks (stride 1) go straight to it; strided
 * ones are staged in tiles of `block` rows × up to TILE/block columns of one slab (the `block`·stride
 * values from which `stride` blocks are interleaved), transposed in the module's memory so the kernel
 * sees whole contiguous blocks, and transposed back. Draws: the `block` words at each block's index in
 * the blocked order.
 */
function blockwise(
  k: QuantKernels,
  x: Float32Array,
  out: Float32Array,
  where: HostBlocks,
  draw: Draw,
  run: (inAt: number, outAt: number, units: number, rd: number) => void,
): void {
  const { block, stride } = where;
  if (stride === 1) return chunked(k, x, out, block, draw, run);
  // Tiles of up to TILE values: a whole slab when it fits (one copy each way), else one copy per row.
  const cols = Math.min(stride, Math.max(1, Math.floor(TILE / block)));
  const span = cols * block;
  const mem = memoryF32(k, CONSTANTS + (draw ? 16 : 12) * span);
  const stageAt = CONSTANTS, inAt = stageAt + 4 * span, outAt = inAt + 4 * span, randAt = outAt + 4 * span;
  const stage = stageAt / 4;
  for (let slab = 0; slab < x.length; slab += block * stride) {
    for (let j0 = 0; j0 < stride; j0 += cols) {
      const c = Math.min(cols, stride - j0);
      if (c === stride) mem.set(x.subarray(slab, slab + span), stage);
      else {
        for (let r = 0; r < block; r++) {
          mem.set(x.subarray(slab + r * stride + j0, slab + r * stride + j0 + c), stage + r * c);
        }
      }
      k.transpose(stageAt, inAt, block, c);
      if (draw) {
        for (let j = 0; j < c; j++) {
          const word = draw.offset + drawIndex(slab + j0 + j, stride, where.run);
          k.philox(randAt + 4 * j * block, block, draw.seed, draw.stream, word % 2 ** 32, Math.floor(word / 2 ** 32));
        }
      }
      run(inAt, outAt, c, draw ? randAt - inAt : 0);
      k.transpose(outAt, stageAt, c, block);
      if (c === stride) out.set(mem.subarray(stage, stage + span), slab);
      else {
        for (let r = 0; r < block; r++) {
          out.set(mem.subarray(stage + r * c, stage + (r + 1) * c), slab + r * stride + j0);
        }
      }
    }
  }
}

/** What overflow becomes in the kernels, before the sign: ±max, ±Inf or NaN (`QuantParams.overflow`). */
function overflowBits(q: QuantParams): number {
  return q.overflow === 0 ? q.maxBits : q.overflow === 1 ? 0x7f800000 : 0x7fc00000;
}

/** Whether the kernels' rounding covers `q`: a mantissa bit at least, and normal quanta (see quant.wat). */
function roundable(q: QuantParams): boolean {
  return q.mbits >= 1 && q.emin - q.mbits >= -126;
}

/** `quantDequant` of a plain element format with quantizer `q` (`float.ts`), or null. */
export function hostElement(x: Tensor, q: QuantParams, opts: QuantizeOptions): Tensor | null {
  return elementPass(x, q, opts, null);
}

/**
 * round(x · s) · inv for a per-tensor scaled element format (`tensor_scale.ts`), with `scale` = [s, 1/s] on the
 * CPU backend, in one pass; or null.
 */
export function hostScaledElement(x: Tensor, q: QuantParams, scale: Tensor, opts: QuantizeOptions): Tensor | null {
  if (!(scale.storage instanceof CpuStorage)) return null;
  const sc = scale.storage.f32;
  return elementPass(x, q, opts, [sc[0], sc[1]]);
}

/** The element pass of {@link hostElement}, scaled by [s, inv] when given. */
function elementPass(x: Tensor, q: QuantParams, opts: QuantizeOptions, scale: [number, number] | null): Tensor | null {
  const input = hostInput(x, opts);
  if (!input || !roundable(q)) return null;
  const { xs, draw } = input;
  const [out, os] = hostOutput(x);
  const body = xs.length - (xs.length % 4);
  chunked(kernels!, xs.subarray(0, body), os, 4, draw, (at, to, units, rd) => {
    if (scale) {
      kernels!.scaled_element(at, to, units, q.mbits, q.emin, q.maxBits, overflowBits(q), rd, scale[0], scale[1]);
    } else kernels!.element(at, to, units, q.mbits, q.emin, q.maxBits, overflowBits(q), rd);
  });
  // The last < 4 values, as the word kernels do them.
  const xu = new Uint32Array(xs.buffer, xs.byteOffset, xs.length);
  const ou = new Uint32Array(os.buffer, os.byteOffset, os.length);
  const rand = new Uint32Array(1);
  const [s, inv] = scale ? scale.map((v) => f32Bits(v)) : [0, 0];
  for (let i = body; i < xs.length; i++) {
    if (draw) philoxWords(rand, draw.seed, draw.stream, draw.offset + i);
    if (!scale) ou[i] = quantizeBits(xu[i], q, draw ? 2 : 0, rand[0]);
    else ou[i] = f32MulBits(quantizeBits(f32MulBits(xu[i], s), q, draw ? 2 : 0, rand[0]), inv);
  }
  return out;
}

/**
 * `quantDequant` of an MX format with float elements of quantizer `q` and emax `emax` (≥ 0) under scale
 * rounding `floor` or `rceil` (`mx.ts`; other scale roundings and MXINT8 return null), blocks of 32 `stride`
 * apart. `rceil` adds one to the floor exponent where amax's significand exceeds the element max's, which is
 * `mxSharedExponent`'s rule when floor(log2 max) = emax (every MX float element).
 */
export function hostMx(
  x: Tensor,
  where: { readonly stride: number; readonly run: number },
  q: QuantParams,
  emax: number,
  rule: string,
  opts: QuantizeOptions,
): Tensor | null {
  const input = hostInput(x, opts);
  const rceil = rule === "rceil" && (q.maxBits >>> 23) - 127 === emax;
  if (!input || !(rule === "floor" || rceil) || !roundable(q) || emax < 0) return null;
  const ceilAbove = rceil ? q.maxBits & 0x7fffff : 0x800000;
  const [out, os] = hostOutput(x);
  blockwise(kernels!, input.xs, os, { ...where, block: 32 }, input.draw, (at, to, blocks, rd) => {
    kernels!.mx(at, to, blocks, q.mbits, q.emin, q.maxBits, overflowBits(q), emax, rd, ceilAbove);
  });
  return out;
}

/** The largest `bits & 0x7fffffff` of `xs` (length a multiple of 4), in chunks through the module's memory. */
function hostAmaxBits(xs: Float32Array): number {
  const k = kernels!, mem = memoryF32(k, CONSTANTS + 4 * CHUNK);
  let m = 0;
  for (let start = 0; start < xs.length; start += CHUNK) {
    const length = Math.min(CHUNK, xs.length - start);
    mem.set(xs.subarray(start, start + length), CONSTANTS / 4);
    m = Math.max(m, k.amax(CONSTANTS, length / 4) >>> 0);
  }
  return m;
}

/** NVFP4 parameters the kernel takes besides the data: element and scale quantizers. */
export interface HostNvfp4Params {
  /** E2M1, saturating. */
  readonly element: QuantParams;
  /** UE4M3, saturating. */
  readonly scale: QuantParams;
  /** s_t from the tensor's amax bits (`nvfp4TensorScaleBits`). */
  readonly tensorScale: (amaxBits: number) => number;
  /** RN(1/RN(6·s_t)) from s_t (f32 bits). */
  readonly blockFactor: (st: number) => number;
}

/** `quantDequant` of NVFP4 (`nvfp4.ts`; blocks of 16 `stride` apart), or null. */
export function hostNvfp4(
  x: Tensor,
  where: { readonly stride: number; readonly run: number },
  p: HostNvfp4Params,
  opts: QuantizeOptions,
): Tensor | null {
  const input = hostInput(x, opts);
  if (!input) return null;
  const { xs, draw } = input;
  const [out, os] = hostOutput(x);
  const st = p.tensorScale(hostAmaxBits(xs));
  if ((st & 0x7fffffff) > 0x7f800000) {
    new Uint32Array(os.buffer, os.byteOffset, os.length).fill(0x7fc00000); // a NaN or Inf anywhere: all NaN
    return out;
  }
  const stValue = f32Of(st), r6 = f32Of(p.blockFactor(st)), e = p.element, s = p.scale;
  blockwise(kernels!, xs, os, { ...where, block: 16 }, draw, (at, to, blocks, rd) => {
    kernels!.nvfp4(at, to, blocks, stValue, r6, e.mbits, e.emin, e.maxBits, s.mbits, s.emin, s.maxBits, rd, 0);
  });
  return out;
}

/**
 * `quantDequant` of INT-k (`int.ts`, symmetric or with a zero point) whose groups are `inner` values
 * (`outer` = 1: per-tensor, per-group, or per-channel on the first axis) with `inner` a multiple of 4 up
 * to 2^20 (up to 16384 for groups along a non-last axis, `stride` > 1), or null. `levelsRecip` is
 * fround(1/L) as f32 bits, [qmin, qmax] the code range.
 */
export function hostInt(
  x: Tensor,
  layout: { outer: number; inner: number; stride: number; run: number },
  signed: boolean,
  levelsRecip: number,
  [qmin, qmax]: [number, number],
  opts: QuantizeOptions,
): Tensor | null {
  const input = hostInput(x, opts);
  if (!input || layout.outer !== 1 || layout.inner % 4 !== 0) return null;
  if (layout.inner > (layout.stride === 1 ? MAX_GROUP : CHUNK)) return null;
  const [out, os] = hostOutput(x);
  const lr = f32Of(levelsRecip), g = layout.inner, asymmetric = signed ? 0 : 1;
  const where = { block: g, stride: layout.stride, run: layout.run };
  blockwise(kernels!, input.xs, os, where, input.draw, (at, to, groups, rd) => {
    kernels!.int(at, to, groups, g / 4, lr, qmin, qmax, asymmetric, rd);
  });
  return out;
}

/**
 * `quantDequant` of NF4 without double quantization (`nf4.ts`; blocks of 64 `stride` apart), or null.
 * `table` holds the f32 bits of the 16 code values then the 15 midpoints.
 */
export function hostNf4(
  x: Tensor,
  where: { readonly stride: number; readonly run: number },
  table: readonly number[],
  opts: QuantizeOptions,
): Tensor | null {
  const input = hostInput(x, opts);
  if (!input || input.draw) return null;
  const [out, os] = hostOutput(x);
  const k = kernels!;
  new Uint32Array(k.memory.buffer, 0, table.length).set(table); // in the CONSTANTS bytes; growing keeps it
  blockwise(k, input.xs, os, { ...where, block: 64 }, null, (at, to, blocks) => k.nf4(at, to, blocks, 0));
  return out;
}

/**
 * The blockwise Hadamard transform of `hadamard.ts` on the CPU backend in one WebAssembly SIMD pass, or null
 * (no fused kernels, or blocks below 4). `signs()` gives the sign bit of each position of one period (the block,
 * or the last axis for per-column signs), or null, and `mode` says when they apply (0 never, 1 before, 2 after).
 */
export function hostHadamard(
  x: Tensor,
  block: number,
  signs: () => Uint32Array | null,
  mode: number,
  scaleBits: number,
): Tensor | null {
  if (!kernels || block < 4 || !usesHostKernels(x.backend) || !(x.storage instanceof CpuStorage)) return null;
  const masks = signs();
  const [out, os] = hostOutput(x);
  const period = masks?.length ?? block; // a multiple of the block, dividing the tensor
  chunked(kernels, x.storage.f32.subarray(0, x.size), os, period, null, (at, to, _units, _rd, chunk) => {
    if (masks && chunk.start === 0) {
      // One mask per value of the span (chunks start on a period); the region keeps them for the later chunks.
      const words = new Uint32Array(kernels!.memory.buffer, chunk.extraAt, chunk.length);
      for (let i = 0; i < words.length; i += period) words.set(masks, i);
    }
    kernels!.hadamard(at, to, chunk.extraAt, chunk.length, block, f32Of(scaleBits), masks ? mode : 0);
  }, masks ? 1 : 0);
  return out;
}

/**
 * QuEST MXFP4 (`quest.ts`) on the CPU backend in one WebAssembly pass: the values and the trust mask, or null.
 * `q` is E2M1's quantizer, `c2Bits` and `tinyBits` the f32 bits of c² and of the guard (1e-8)².
 */
export function hostQuest(
  x: Tensor,
  q: QuantParams,
  c2Bits: number,
  tinyBits: number,
  opts: QuantizeOptions,
): { values: Tensor; trust: Tensor } | null {
  const input = hostInput(x, opts);
  if (!input) return null;
  const [values, vs] = hostOutput(x), [trust, ts] = hostOutput(x);
  chunked(kernels!, input.xs, vs, 32, input.draw, (at, to, blocks, rd, chunk) => {
    const { start, length, extraAt } = chunk;
    kernels!.quest(at, to, extraAt, blocks, f32Of(c2Bits), tinyBits, q.mbits, q.emin, q.maxBits, rd);
    ts.set(new Float32Array(kernels!.memory.buffer, extraAt, length), start); // the trust mask
  }, 1);
  return { values, trust };
}

/**
 * INT-k values of the `n` values in `x` under one given scale (f32 bits `scale`, finite and not 0, with a
 * finite reciprocal `inv`) and zero point: per-tensor INT-k and Flexpoint (`int.ts` applyIntScales) on the CPU
 * backend, or null. Rounding as `hostInput` takes it; draws are the values' flat indices.
 */
export function hostIntGiven(
  backend: Backend,
  x: Storage,
  n: number,
  scale: { scale: number; inv: number; zp: number } | null,
  [qmin, qmax]: [number, number],
  opts: QuantizeOptions,
): Storage | null {
  const draw = drawOf(opts);
  if (!scale || draw === undefined || !usesHostKernels(backend) || !(x instanceof CpuStorage)) return null;
  const out = backend.alloc(n) as CpuStorage;
  const xs = x.f32.subarray(0, n), os = out.f32.subarray(0, n);
  const s = bitsToF32(scale.scale), inv = bitsToF32(scale.inv), zp = scale.zp;
  const body = n - (n % 4);
  chunked(kernels!, xs.subarray(0, body), os, 4, draw, (at, to, units, rd) => {
    kernels!.int_given(at, to, units, inv, s, zp, qmin, qmax, rd);
  });
  // The last < 4 values, as the word kernel does them.
  const rand = new Uint32Array(1);
  for (let i = body; i < n; i++) {
    if (draw) philoxWords(rand, draw.seed, draw.stream, draw.offset + i);
    const q = roundToInt(f32Bits(Math.fround(xs[i] * inv)), draw ? 2 : 0, rand[0]) + zp;
    os[i] = Math.fround((Math.min(qmax, Math.max(qmin, q)) - zp) * s);
  }
  return out;
}

/**
 * `quantDequant` of NVFP4 along the last axis with a given amax per block of 16 (`blockAmax`, f32 bits, e.g.
 * each block's 16 × 16 tile's) and tensor scale (`st` bits), rounding to nearest; or null.
 */
export function hostNvfp4Given(
  x: Tensor,
  blockAmax: Uint32Array,
  st: number,
  p: HostNvfp4Params,
  opts: QuantizeOptions,
): Tensor | null {
  const input = hostInput(x, opts);
  if (!input || input.draw || (st & 0x7fffffff) >= 0x7f800000) return null;
  const [out, os] = hostOutput(x);
  const stValue = f32Of(st), r6 = f32Of(p.blockFactor(st)), e = p.element, s = p.scale;
  chunked(kernels!, input.xs, os, 16, null, (at, to, blocks, _rd, { start, extraAt }) => {
    new Uint32Array(kernels!.memory.buffer, extraAt, blocks).set(blockAmax.subarray(start / 16, start / 16 + blocks));
    kernels!.nvfp4(at, to, blocks, stValue, r6, e.mbits, e.emin, e.maxBits, s.mbits, s.emin, s.maxBits, 0, extraAt);
  }, 1 / 16);
  return out;
}
