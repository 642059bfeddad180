/**
 * The WebGPU plumbing under the kernels: a buffer pool, a pipeline cache keyed
 * by WGSL source, one command encoder that collects dispatches until a read (or
 * a full uniform arena) forces a submit, and a uniform arena so each dispatch
 * gets its own parameters without a buffer of its own.
 *
 * @module
 */
import { BackendLimitError, type Storage } from "../backend.ts";
import { isSoftwareAdapter } from "./adapter_kind.ts";

/** A pooled GPU buffer holding `length` 4-byte elements. */
export class GpuStorage implements Storage {
  /** The pooled buffer (may be larger than needed). */
  readonly buffer: GPUBuffer;
  /** Elements in use. */
  readonly length: number;
  /**
   * Creates a GpuStorage.
   * @param buffer the pooled buffer
   * @param length elements in use
   */
  constructor(buffer: GPUBuffer, length: number) {
    this.buffer = buffer;
    this.length = length;
  }
}

/** Parameters are written into 256-byte slots (the WebGPU uniform offset alignment). */
const SLOT_BYTES = 256;
const SLOTS = 512;
/** Bind groups kept for reuse (a training step of the tiny GPT uses a few hundred). */
const BIND_GROUP_CACHE = 8192;

/** A bind-group layout shape: `key` lists the storage bindings' access (`r` read, `w` read_write). */
interface Layout {
  readonly key: string;
  readonly bindGroupLayout: GPUBindGroupLayout;
  readonly pipelineLayout: GPUPipelineLayout;
}

/** Threads per workgroup for the 1-D kernels. */
export const WORKGROUP = 256;

/** Options for {@link GpuContext.dispatch}. */
export interface Dispatch {
  /** WGSL source; binding 0 is the uniform slot, then `buffers` in order from binding 1. */
  readonly source: string;
  /** Storage buffers bound at 1, 2, ... */
  readonly buffers: readonly GPUBuffer[];
  /** Up to 64 u32 parameters (f32 values go in as their bits). */
  readonly params: Uint32Array;
  /** Workgroup counts (x, y, z). */
  readonly workgroups: readonly [number, number, number];
}

/** Owns a GPUDevice and everything needed to feed it. */
export class GpuContext {
  /** Description of the adapter, for benchmark output. */
  readonly adapterName: string;
  /** True for a software adapter (llvmpipe/lavapipe, Vulkan or OpenGL: {@link isSoftwareAdapter}). */
  readonly fallback: boolean;
  /** Number of dispatches recorded since creation (for dispatches/step figures). */
  dispatchCount = 0;
  private readonly pool = new Map<number, GPUBuffer[]>();
  /** Pool sizes whose free list got a buffer since it was last sorted. */
  private readonly unsorted = new Set<number>();
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: Layout }>();
  private readonly layouts = new Map<string, Layout>();
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly bufferIds = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 0;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly uniformHost = new Uint32Array((SLOT_BYTES * SLOTS) / 4);
  private readonly uniform: GPUBuffer;
  private slot = 0;
  private live = 0;
  private error: string | null = null;

  /** The device everything runs on. */
  readonly device: GPUDevice;
  /**
   * Creates a GpuContext.
   * @param device the device to use
   * @param info the adapter's info
   */
  constructor(device: GPUDevice, info: GPUAdapterInfo) {
    this.device = device;
    this.fallback = isSoftwareAdapter(info);
    this.adapterName = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(" ");
    this.uniform = device.createBuffer({
      size: SLOT_BYTES * SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.addEventListener("uncapturederror", (e) => {
      this.error ??= (e as GPUUncapturedErrorEvent).error.message;
    });
  }

  /** Largest storage a single binding may hold, in 4-byte elements. */
  get maxElements(): number {
    return Math.floor(this.device.limits.maxStorageBufferBindingSize / 4);
  }

  /** Number of storages handed out and not yet released. */
  get liveCount(): number {
    return this.live;
  }

  /** Takes a buffer of at least `length` elements from the pool. */
  acquire(length: number, what = "tensor"): GpuStorage {
    if (length > this.maxElements) {
      throw new BackendLimitError(
        `webgpu: ${what} needs ${length} elements (${length * 4} bytes) but the adapter binds at most ` +
          `${this.device.limits.maxStorageBufferBindingSize} bytes per buffer`,
      );
    }
    const bytes = bucketBytes(length * 4);
    const free = this.pool.get(bytes);
    if (free && this.unsorted.delete(bytes)) free.sort((a, b) => this.#bufferId(b) - this.#bufferId(a));
    const buffer = free?.pop() ?? this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.live++;
    return new GpuStorage(buffer, length);
  }

  /**
   * Returns a buffer to the pool. Pending dispatches that read it still run first (queue order). The
   * pool hands out the free buffer of a size with the lowest id, not the last one freed: which buffers
   * a step gets then depends only on which are free, not on the order they were freed in, so a training
   * step binds the same buffers as the step before (or the one before that) and reuses its bind groups.
   */
  release(s: GpuStorage): void {
    this.live--;
    const list = this.pool.get(s.buffer.size) ?? [];
    list.push(s.buffer);
    this.pool.set(s.buffer.size, list);
    this.unsorted.add(s.buffer.size);
  }

  /** Writes host data into a storage. Pending work is submitted first so it keeps its order. */
  write(s: GpuStorage, data: ArrayBufferView): void {
    if (data.byteLength === 0) return; // a zero-byte writeBuffer aborts some runtimes
    this.flush();
    this.device.queue.writeBuffer(s.buffer, 0, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  }

  /** Records one compute dispatch into the open encoder. */
  dispatch(d: Dispatch): void {
    if (d.workgroups.some((w) => w > this.device.limits.maxComputeWorkgroupsPerDimension)) {
      throw new BackendLimitError(
        `webgpu: dispatch of ${d.workgroups.join("x")} workgroups exceeds the adapter's ` +
          `${this.device.limits.maxComputeWorkgroupsPerDimension} per dimension`,
      );
    }
    if (d.workgroups.some((w) => w === 0)) return;
    if (this.slot === SLOTS) this.flush();
    const { pipeline, layout } = this.#pipeline(d.source);
    this.uniformHost.set(d.params, (this.slot * SLOT_BYTES) / 4);
    const bindGroup = this.#bindGroup(layout, d.buffers);
    this.encoder ??= this.device.createCommandEncoder();
    this.pass ??= this.encoder.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup, [this.slot * SLOT_BYTES]);
    this.slot++;
    this.pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
    this.dispatchCount++;
  }

  /**
   * The bind group of `buffers` under `layout`, made once and reused: the uniform slot is a dynamic
   * offset, so a training step that binds the same pooled buffers again (it does, step after step) skips
   * `createBindGroup`, the larger part of a dispatch's host cost. Pooled buffers are never destroyed, so
   * a cached group stays valid; the cache is dropped whole past {@link BIND_GROUP_CACHE} entries.
   */
  #bindGroup(layout: Layout, buffers: readonly GPUBuffer[]): GPUBindGroup {
    let key = layout.key;
    for (const b of buffers) key += `,${this.#bufferId(b)}`;
    let group = this.bindGroups.get(key);
    if (!group) {
      if (this.bindGroups.size >= BIND_GROUP_CACHE) this.bindGroups.clear();
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.uniform, size: SLOT_BYTES } }];
      buffers.forEach((buffer, i) => entries.push({ binding: i + 1, resource: { buffer } }));
      group = this.device.createBindGroup({ layout: layout.bindGroupLayout, entries });
      this.bindGroups.set(key, group);
    }
    return group;
  }

  #bufferId(b: GPUBuffer): number {
    let id = this.bufferIds.get(b);
    if (id === undefined) this.bufferIds.set(b, id = this.nextBufferId++);
    return id;
  }

  /**
   * The explicit layout of a shader's bindings: binding 0 the uniform slot (dynamic offset), then each
   * `var<storage, read>` / `var<storage, read_write>` in binding order, read from the source.
   */
  #layout(source: string): Layout {
    const access = [...source.matchAll(/@binding\((\d+)\) var<storage, (read_write|read)>/g)]
      .sort((a, b) => Number(a[1]) - Number(b[1]))
      .map((m, i) => {
        if (Number(m[1]) !== i + 1) {
          throw new Error(`webgpu: storage bindings must be 1, 2, ... (found @binding(${m[1]}))`);
        }
        return m[2] === "read" ? "r" : "w";
      }).join("");
    let layout = this.layouts.get(access);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [{
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: SLOT_BYTES },
      }];
      [...access].forEach((a, i) =>
        entries.push({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: a === "r" ? "read-only-storage" : "storage" },
        })
      );
      const bindGroupLayout = this.device.createBindGroupLayout({ entries });
      const pipelineLayout = this.device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout] });
      layout = { key: access, bindGroupLayout, pipelineLayout };
      this.layouts.set(access, layout);
    }
    return layout;
  }

  /** Submits everything recorded so far (no wait). */
  flush(): void {
    if (!this.encoder) return;
    this.pass?.end();
    this.device.queue.writeBuffer(this.uniform, 0, this.uniformHost.buffer, 0, this.slot * SLOT_BYTES);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.pass = null;
    this.slot = 0;
  }

  /** Copies `length` elements of a storage back to the host. */
  async read(s: GpuStorage): Promise<ArrayBuffer> {
    const bytes = Math.max(4, s.length * 4);
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.flush();
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(s.buffer, 0, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const copy = staging.getMappedRange().slice(0, s.length * 4);
    staging.unmap();
    staging.destroy();
    this.#throwIfFailed();
    return copy;
  }

  /** Waits for the queue to drain. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.#throwIfFailed();
  }

  #throwIfFailed(): void {
    if (this.error) {
      const message = this.error;
      this.error = null;
      throw new Error(`webgpu: a kernel failed validation: ${message}`);
    }
  }

  #pipeline(source: string): { pipeline: GPUComputePipeline; layout: Layout } {
    let p = this.pipelines.get(source);
    if (!p) {
      const module = this.device.createShaderModule({ code: source });
      const layout = this.#layout(source);
      const pipeline = this.device.createComputePipeline({
        layout: layout.pipelineLayout,
        compute: { module, entryPoint: "main" },
      });
      p = { pipeline, layout };
      this.pipelines.set(source, p);
    }
    return p;
  }
}

/** Pool size classes: powers of two up to 1 MiB, then whole MiBs. */
function bucketBytes(bytes: number): number {
  const b = Math.max(16, bytes);
  if (b <= 1 << 20) return 2 ** Math.ceil(Math.log2(b));
  return Math.ceil(b / (1 << 20)) * (1 << 20);
}

/** Workgroup counts for `threads` 1-D threads, folding into y past the per-dimension limit. */
export function grid1d(threads: number, perGroup = WORKGROUP): [number, number, number] {
  const groups = Math.ceil(threads / perGroup);
  if (groups <= 65535) return [groups, 1, 1];
  return [65535, Math.ceil(groups / 65535), 1];
}

/** WGSL prelude for 1-D kernels: the uniform slot, `P(i)` accessor and the flat thread index. */
export const PRELUDE = /* wgsl */ `
@group(0) @binding(0) var<uniform> u: array<vec4<u32>, 16>;
fn P(i: u32) -> u32 { return u[i / 4u][i % 4u]; }
fn PF(i: u32) -> f32 { return bitcast<f32>(P(i)); }
`;

/** WGSL entry point header for 1-D kernels; the body sees `i`, the flat thread index. */
export const ENTRY_1D = /* wgsl */ `
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WORKGROUP}u;
`;
