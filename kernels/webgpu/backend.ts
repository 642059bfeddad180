/**
 * The WebGPU backend: each primitive of {@link Backend} as one WGSL dispatch,
 * recorded into a shared command encoder and submitted only when the host
 * needs a result.
 *
 * @module
 */
import {
  type Backend,
  BackendLimitError,
  contiguousStrides,
  type DType,
  type MatmulShape,
  splitSum,
  type Storage,
  type TypedArray,
  WORD_KERNEL_MAX_PARAMS,
} from "../backend.ts";
import { isSoftwareAdapter } from "./adapter_kind.ts";
import { GpuContext, type GpuStorage, grid1d } from "./context.ts";
import { chooseMatmulTile, MATMUL_TILES, matmulShader, type MatmulTile, tileStorageBytes } from "./matmul.ts";
import {
  COPY_SHADER,
  FILL_SHADER,
  GATHER_SHADER,
  mapShader,
  MAX_RANK,
  ONE_HOT_SHADER,
  RANDOM_UNIFORM_SHADER,
  reduceShader,
  SCATTER_ADD_ROWS_SHADER,
  SPLIT_SUM_SHADER,
  wordKernelShader,
} from "./shaders.ts";
import { ensureRuntimeDir } from "./runtime_dir.ts";

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);
const i32Bits = new Int32Array(f32Bits.buffer);
function bitsOf(value: number, dtype: DType): number {
  if (dtype === "f32") f32Bits[0] = value;
  else if (dtype === "i32") i32Bits[0] = value;
  else u32Bits[0] = value;
  return u32Bits[0];
}

/** Uniform words for the strided kernels: [n, rank, x, y, shape[8], strides...[8]]. */
function stridedParams(shape: readonly number[], strideSets: readonly (readonly number[])[], x: number, y: number) {
  if (shape.length > MAX_RANK) throw new BackendLimitError(`webgpu: rank ${shape.length} exceeds ${MAX_RANK}`);
  const p = new Uint32Array(12 + 8 * 3);
  p[0] = shape.reduce((a, b) => a * b, 1);
  p[1] = shape.length;
  p[2] = x;
  p[3] = y;
  shape.forEach((d, k) => p[4 + k] = d);
  strideSets.forEach((set, s) => set.forEach((v, k) => p[12 + s * 8 + k] = v));
  return p;
}

/** The outcome of {@link createWebGpuBackend}. */
export interface WebGpuAvailability {
  /** The backend, or null when WebGPU is unavailable. */
  backend: Backend | null;
  /** Why the backend is null. */
  reason: string;
  /**
   * True for a software adapter (e.g. llvmpipe/lavapipe, on Vulkan or OpenGL; see {@link isSoftwareAdapter}):
   * correct, but slower than the CPU backend.
   */
  fallback: boolean;
}

/**
 * Requests an adapter and device and returns the WebGPU backend, or `null`
 * (with the reason) when this runtime has no adapter. Sets a private
 * `XDG_RUNTIME_DIR` first where it is unset (see {@link ensureRuntimeDir}).
 */
export async function createWebGpuBackend(): Promise<WebGpuAvailability> {
  if (!("gpu" in navigator)) return { backend: null, reason: "navigator.gpu is not available", fallback: false };
  ensureRuntimeDir(); // before the first request: that is when the graphics loaders probe for a display
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return { backend: null, reason: "no adapter", fallback: false };
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
    },
  });
  return {
    backend: webGpuBackend(new GpuContext(device, adapter.info)),
    reason: "",
    fallback: isSoftwareAdapter(adapter.info),
  };
}

/** Options of {@link webGpuBackend}. */
export interface WebGpuOptions {
  /**
   * Matmul tiling: `auto` (default) picks by size and adapter; `small`/`large` or an explicit
   * {@link MatmulTile} force one for every product (tests, tuning).
   */
  matmulTile?: "auto" | keyof typeof MATMUL_TILES | MatmulTile;
}

/** Wraps a {@link GpuContext} as a {@link Backend}. */
export function webGpuBackend(ctx: GpuContext, opts: WebGpuOptions = {}): Backend & { context: GpuContext } {
  const forcedTile = typeof opts.matmulTile === "object"
    ? opts.matmulTile
    : opts.matmulTile && opts.matmulTile !== "auto"
    ? MATMUL_TILES[opts.matmulTile]
    : null;
  const adapter = { fallback: ctx.fallback, maxStorageBytes: ctx.device.limits.maxComputeWorkgroupStorageSize };
  if (forcedTile && tileStorageBytes(forcedTile) > adapter.maxStorageBytes) {
    throw new BackendLimitError(
      `webgpu: matmul tile ${JSON.stringify(forcedTile)} stages ${tileStorageBytes(forcedTile)} bytes of workgroup ` +
        `memory but the adapter allows ${adapter.maxStorageBytes}`,
    );
  }
  const gpu = (s: Storage) => (s as GpuStorage).buffer;
  const run1d = (source: string, buffers: GPUBuffer[], params: number[] | Uint32Array, threads: number) =>
    ctx.dispatch({ source, buffers, params: Uint32Array.from(params), workgroups: grid1d(threads) });
  return {
    name: "webgpu",
    adapter: ctx.adapterName,
    context: ctx,
    alloc: (length) => ctx.acquire(length),
    upload(data: TypedArray) {
      const s = ctx.acquire(data.length);
      ctx.write(s, data);
      return s;
    },
    async read(storage, dtype) {
      const bytes = await ctx.read(storage as GpuStorage);
      return dtype === "f32"
        ? new Float32Array(bytes)
        : dtype === "i32"
        ? new Int32Array(bytes)
        : new Uint32Array(bytes);
    },
    free: (s) => ctx.release(s as GpuStorage),
    liveCount: () => ctx.liveCount,
    sync: () => ctx.sync(),

    fill(out, value, dtype) {
      run1d(FILL_SHADER, [gpu(out)], [out.length, bitsOf(value, dtype)], out.length);
    },

    map(op, inputs, shape, out, p0, p1) {
      const dense = contiguousStrides(shape);
      const contiguous = inputs.every((x) => x.strides.every((s, d) => s === dense[d] || shape[d] === 1));
      const params = stridedParams(shape, inputs.map((x) => x.strides), bitsOf(p0, "f32"), bitsOf(p1, "f32"));
      run1d(mapShader(op, contiguous), [gpu(out), ...inputs.map((x) => gpu(x.storage))], params, params[0]);
    },

    reduce(op, input, outer, size, inner, out) {
      const params = [outer * inner, size, inner];
      if (op !== "sum" || !splitSum(size)) {
        return run1d(reduceShader(op), [gpu(input), gpu(out)], params, outer * inner);
      }
      ctx.dispatch({
        source: SPLIT_SUM_SHADER,
        buffers: [gpu(input), gpu(out)],
        params: Uint32Array.from(params),
        workgroups: grid1d(outer * inner, 1),
      });
    },

    matmul(a, b, out, s: MatmulShape) {
      const tile = forcedTile ?? chooseMatmulTile(s.m, s.n, s.batch, adapter);
      ctx.dispatch({
        source: matmulShader(s.transA, s.transB, tile),
        buffers: [gpu(a), gpu(b), gpu(out)],
        params: Uint32Array.of(s.m, s.n, s.k, s.strideA, s.strideB),
        workgroups: [Math.ceil(s.n / (16 * tile.tn)), Math.ceil(s.m / (16 * tile.tm)), s.batch],
      });
    },

    copy(src, srcView, dst, dstView, shape) {
      const params = stridedParams(shape, [srcView.strides, dstView.strides], srcView.offset, dstView.offset);
      run1d(COPY_SHADER, [gpu(src), gpu(dst)], params, params[0]);
    },

    gather(table, indices, count, rowLength, tableRows, out) {
      run1d(
        GATHER_SHADER,
        [gpu(table), gpu(indices), gpu(out)],
        [count * rowLength, rowLength, tableRows],
        count * rowLength,
      );
    },

    scatterAddRows(grad, indices, count, rowLength, rows, out) {
      run1d(
        SCATTER_ADD_ROWS_SHADER,
        [gpu(grad), gpu(indices), gpu(out)],
        [rows * rowLength, rowLength, count],
        rows * rowLength,
      );
    },

    oneHot(indices, count, depth, out) {
      run1d(ONE_HOT_SHADER, [gpu(indices), gpu(out)], [count * depth, depth], count * depth);
    },

    runWords(kernel, inputs, outputs, items, params) {
      if (params.length > WORD_KERNEL_MAX_PARAMS) {
        throw new BackendLimitError(
          `webgpu: ${kernel.name} passes ${params.length} parameters (max ${WORD_KERNEL_MAX_PARAMS})`,
        );
      }
      const source = wordKernelShader(kernel);
      run1d(source, [...inputs, ...outputs].map(gpu), [items, ...params], items);
    },

    randomUniform(out, seed, stream, offset) {
      const lo = offset % 4294967296, hi = Math.floor(offset / 4294967296);
      run1d(RANDOM_UNIFORM_SHADER, [gpu(out)], [out.length, seed >>> 0, stream >>> 0, lo, hi], out.length);
    },
  };
}
