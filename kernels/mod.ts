/**
 * Backends and their kernels: the {@link Backend} contract, the CPU reference
 * backend, the WebGPU backend (WGSL), and the Philox-4x32-10 generator shared
 * by both.
 *
 * @module
 */
export * from "./backend.ts";
export { type CpuBackend, type CpuBackendOptions, CpuStorage, createCpuBackend, usesHostKernels } from "./cpu.ts";
export { compileKernel, CPU_KERNELS, type CpuKernels } from "./wasm/loader.ts";
export { createWebGpuBackend, type WebGpuAvailability, webGpuBackend, type WebGpuOptions } from "./webgpu/backend.ts";
export { type Dispatch, GpuContext, GpuStorage } from "./webgpu/context.ts";
export { type AdapterInfoFields, isSoftwareAdapter } from "./webgpu/adapter_kind.ts";
export { ensureRuntimeDir } from "./webgpu/runtime_dir.ts";
export { chooseMatmulTile, MATMUL_TILES, type MatmulTile, tileStorageBytes } from "./webgpu/matmul.ts";
export { philox4x32, PHILOX_WGSL, philoxWords, wordToUniform } from "./philox.ts";
export { type CpuPool, createPool, defaultWorkerCount, type PoolOptions } from "./cpu_pool.ts";
export { asF32, bitsToF32, f32Bits, rangeKernel } from "./word_kernel.ts";
