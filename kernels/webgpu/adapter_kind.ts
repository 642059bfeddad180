/**
 * Tells a software WebGPU adapter (one that runs on the CPU) from a GPU by its info. Deno marks Mesa's
 * lavapipe (Vulkan) and llvmpipe (OpenGL) as `isFallbackAdapter`, but other runtimes and versions may not,
 * so the names are checked too. The GL backend reports the OpenGL renderer string, e.g.
 * `llvmpipe (LLVM 15.0.6, 256 bits)`, in `description` or `device`; Vulkan drivers report the device name.
 *
 * A software adapter is correct but slow: `auto` prefers the CPU backend to it, matmuls keep the small
 * tiling, and tests and benchmarks use small shapes there. Shader compilation can be slower still: Mesa's
 * OpenGL llvmpipe spends 7 to 80 s compiling one tiled matmul shader (measured, shader cache off).
 *
 * @module
 */

/** The fields of `GPUAdapterInfo` that {@link isSoftwareAdapter} reads (all optional). */
export interface AdapterInfoFields {
  /** The adapter's vendor (a name, or a PCI vendor id as a decimal string). */
  readonly vendor?: string;
  /** The adapter's architecture or family. */
  readonly architecture?: string;
  /** The device name or id. */
  readonly device?: string;
  /** A driver-provided description (the OpenGL renderer string on the GL backend). */
  readonly description?: string;
  /** The runtime's own verdict (Deno: a CPU device type). */
  readonly isFallbackAdapter?: boolean;
}

/**
 * Names of CPU renderers: Mesa's llvmpipe/lavapipe/softpipe/swrast, Google's SwiftShader, Microsoft's
 * WARP ("Basic Render Driver"), and any renderer calling itself software or an offscreen Mesa context.
 */
const SOFTWARE_NAMES =
  /\b(llvmpipe|lavapipe|softpipe|swrast|swiftshader|basic render driver|software (renderer|rasterizer|adapter)|mesa offscreen)\b/i;

/** Whether the adapter described by `info` renders in software (see the module notes). */
export function isSoftwareAdapter(info: AdapterInfoFields): boolean {
  if (info.isFallbackAdapter) return true;
  return [info.vendor, info.architecture, info.device, info.description].some((s) => !!s && SOFTWARE_NAMES.test(s));
}
