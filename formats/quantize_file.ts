/**
 * Quantizing a whole safetensors file (the library behind `deno task
 * quantize`). Without packing each F32 tensor is fake-quantized (quantize →
 * dequantize, stored as F32 again); with packing each F32 tensor `NAME` is
 * stored as its bit-packed parts (`NAME.codes`, `NAME.scales`, ...), one U8
 * tensor per part holding exactly ⌈count·bits/8⌉ bytes of the little-endian
 * bit stream of formats/pack.ts, plus a `__metadata__` entry
 * `lowp.packed.NAME` (JSON: format, shape, meta and per part name, tensor,
 * bits, format, count, shape; the meta names the axis blocks and groups ran
 * along) and `lowp.packing: lsb-first-u8-v1`;
 * {@link restore} turns such a file back into the fake-quantized F32 tensors,
 * bit for bit. Tensors of other dtypes are copied unchanged and listed as
 * skipped; input metadata is kept, and `lowp.quantize` records the options
 * (`axis` only when given: blocks and groups run along the last axis unless
 * `axis` names another, for every tensor, counted from the end when negative).
 * Stochastic rounding draws from Philox with key `seed` and stream
 * {@link tensorStream}(NAME), so tensors get independent draws that do not
 * depend on which other tensors the file holds.
 *
 * Everything is validated and computed in memory first, then OUT is written
 * atomically: bad input writes nothing.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import {
  type Backend,
  type BackendChoice,
  cpuBackend,
  currentBackend,
  type RawTensor,
  readSafetensors,
  type SafetensorsFile,
  type Tensor,
  tensor,
  useBackend,
  writeSafetensors,
  zeros,
} from "@lowp/core";
import type { Rounding } from "./element.ts";
import { floatQuantizer } from "./float.ts";
import { pack, PACKED_LAYOUT, PACKED_LAYOUT_KEY, packedBytes, packedEntries, unpack, unpackFile } from "./pack.ts";
import { parseFormat } from "./registry.ts";
import { resolveAxis } from "./scaling.ts";
import { type Granularity, parseGranularity, type QuantizeOptions, type Quantizer } from "./spec.ts";

const ROUNDINGS: readonly Rounding[] = ["nearest", "nearest-away", "stochastic"];

/** `__metadata__` key recording the options of the run (JSON). */
export const QUANTIZE_KEY = "lowp.quantize";

/** What {@link quantizeFile} is asked to do. */
export interface QuantizeFileOptions {
  /** Format name, as `parseFormat` takes it. */
  format: string;
  /** `tensor`, `channel:AXIS` or `group:G`; only for formats with a free scale granularity. */
  granularity?: string;
  /**
   * The axis blocks (block formats) or groups (`group:G`) run along, in every tensor (default -1, the last;
   * negative counts from the end). Recorded in each packed tensor's meta, so {@link restore} reads it back.
   */
  axis?: number;
  /** Rounding mode (default `nearest`). */
  rounding?: Rounding;
  /** Philox seed for stochastic rounding (default 0). */
  seed?: number;
  /** Store packed codes + scales instead of fake-quantized F32. */
  pack?: boolean;
  /** Backend to select once the input is validated (default: keep the current one). */
  backend?: BackendChoice;
}

/** One row of the report. */
export interface TensorReport {
  /** Tensor name. */
  name: string;
  /** Its shape. */
  shape: number[];
  /** Its safetensors dtype. */
  dtype: string;
  /** Number of elements. */
  elements: number;
  /** Bytes of the tensor in IN. */
  bytesBefore: number;
  /** Bytes it occupies in OUT (all its parts when packed; header not counted). */
  bytesAfter: number;
  /** Why it was copied unchanged (`dtype I32`), when it was. */
  skipped?: string;
  /** Mean squared error of the quantized values. */
  mse?: number;
  /** 10·log10(Σx² / Σ(x−q)²) in dB; Infinity when the error is zero. */
  sqnrDb?: number;
  /** Largest |x − q|. */
  maxAbsError?: number;
  /** Σx² (for the total SQNR). */
  signal?: number;
  /** Σ(x−q)² (for the total SQNR). */
  noise?: number;
}

/** What a run did. */
export interface QuantizeReport {
  /** Input path. */
  input: string;
  /** Output path. */
  output: string;
  /** The options, resolved. */
  options: Required<Omit<QuantizeFileOptions, "granularity" | "axis" | "backend">> & {
    granularity: string | null;
    /** The `axis` option, when given. */
    axis?: number;
  };
  /** Backend name and adapter the quantizers ran on. */
  backend: { name: string; adapter: string };
  /** One row per tensor, by name. */
  tensors: TensorReport[];
  /** Size of OUT in bytes (header included). */
  fileBytes: number;
}

/** A user error: reported as one line, exit code 1. */
export class QuantizeError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "QuantizeError";
  }
}

/** Philox stream of tensor `name` for stochastic rounding: FNV-1a (32-bit) of its UTF-8 bytes. */
export function tensorStream(name: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** The quantizer for `format`, turning an unknown name into a {@link QuantizeError} (it lists the known ones). */
function quantizerFor(format: string): Quantizer {
  try {
    return parseFormat(format);
  } catch (e) {
    throw new QuantizeError((e as Error).message);
  }
}

/** Validates the options that do not depend on the file; returns the quantizer and its options. */
export function resolveOptions(opts: QuantizeFileOptions): { quantizer: Quantizer; quantOpts: QuantizeOptions } {
  const quantizer = quantizerFor(opts.format);
  const rounding = opts.rounding ?? "nearest";
  if (!ROUNDINGS.includes(rounding)) {
    throw new QuantizeError(`--rounding '${rounding}': expected one of ${ROUNDINGS.join(", ")}`);
  }
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new QuantizeError(`--seed ${seed}: expected an integer from 0 to 4294967295`);
  }
  let granularity: Granularity | undefined;
  if (opts.granularity !== undefined) {
    if (quantizer.blockSize !== null) {
      throw new QuantizeError(
        `format '${quantizer.name}' has fixed blocks of ${quantizer.blockSize} values and takes no --granularity`,
      );
    }
    if (floatQuantizer(quantizer.name)) {
      throw new QuantizeError(
        `format '${quantizer.name}' is a plain element format (no scale) and takes no --granularity`,
      );
    }
    try {
      granularity = parseGranularity(opts.granularity);
    } catch (e) {
      throw new QuantizeError((e as Error).message);
    }
  }
  if (opts.axis !== undefined) {
    if (!Number.isInteger(opts.axis)) throw new QuantizeError(`--axis ${opts.axis}: expected an integer`);
    if (quantizer.blockSize === null && granularity?.kind !== "group") {
      throw new QuantizeError(
        `--axis applies to block formats and --granularity group:G; format '${quantizer.name}'${
          granularity ? ` with --granularity ${opts.granularity}` : ""
        } has no blocks or groups`,
      );
    }
  }
  const quantOpts: QuantizeOptions = { rounding, seed, granularity };
  // Options a format turns down (e.g. stochastic rounding for nf4) fail here, before any file is touched:
  // one call on a tiny CPU tensor whose shape fits the blocks, groups or channel axis (the axis is checked
  // per tensor, against its rank).
  const k = quantizer.blockSize ?? (granularity?.kind === "group" ? granularity.size : 1);
  const rank = granularity?.kind === "channel" ? Math.max(granularity.axis + 1, -granularity.axis, 1) : 1;
  const probe = zeros([...Array(rank - 1).fill(1), k], { backend: cpuBackend() });
  try {
    quantizer.quantDequant(probe, quantOpts).dispose();
  } catch (e) {
    throw new QuantizeError(`format '${quantizer.name}' with these options: ${(e as Error).message}`);
  } finally {
    probe.dispose();
  }
  return { quantizer, quantOpts: opts.axis === undefined ? quantOpts : { ...quantOpts, axis: opts.axis } };
}

/**
 * Whether the format rejects a tensor of `shape` (probed once per shape on a tiny CPU tensor, along its last
 * axis): block and group layouts differ between formats (MX and INT groups must tile their axis).
 */
function probeRejects(
  quantizer: Quantizer,
  opts: QuantizeOptions,
  shape: number[],
  cache: Map<string, boolean>,
): boolean {
  const key = shape.join(",");
  let rejects = cache.get(key);
  if (rejects === undefined) {
    const x = zeros(shape, { backend: cpuBackend() });
    try {
      quantizer.quantDequant(x, { ...opts, axis: undefined }).dispose();
      rejects = false;
    } catch {
      rejects = true;
    } finally {
      x.dispose();
    }
    cache.set(key, rejects);
  }
  return rejects;
}

/** Why an F32 tensor of `shape` cannot be quantized with these options, or null. */
function shapeProblem(
  shape: readonly number[],
  quantizer: Quantizer,
  opts: QuantizeOptions,
  cache: Map<string, boolean>,
): string | null {
  const g = opts.granularity;
  let dim = shape.at(-1), which = "the last dimension";
  if (opts.axis !== undefined && shape.length > 0) {
    try {
      const a = resolveAxis("--axis", shape, opts.axis);
      [dim, which] = [shape[a], `dimension ${a} (--axis ${opts.axis})`];
    } catch (e) {
      return (e as Error).message;
    }
  }
  // The probe stands for "the axis is not a multiple of k" (or a scalar): k + 1 values, or a rank-0 tensor.
  const misfit = (k: number) => dim === undefined ? [] : [k + 1];
  const block = quantizer.blockSize;
  if (block !== null && (dim === undefined || dim % block !== 0)) {
    if (probeRejects(quantizer, opts, misfit(block), cache)) {
      return `format '${quantizer.name}' needs ${which} divisible by its block size ${block}`;
    }
  }
  if (g?.kind === "group" && (dim === undefined || dim % g.size !== 0)) {
    if (probeRejects(quantizer, opts, misfit(g.size), cache)) {
      return `--granularity group:${g.size} needs ${which} divisible by ${g.size} (groups run along it)`;
    }
  }
  if (g?.kind === "channel" && (g.axis < -shape.length || g.axis >= shape.length)) {
    return `--granularity channel:${g.axis} needs an axis in [${-shape.length}, ${shape.length})`;
  }
  return null;
}

function f32View(raw: RawTensor): Float32Array {
  // decodeSafetensors copies each tensor into its own buffer, but copy again if a caller hands us an odd offset.
  const data = raw.data.byteOffset % 4 ? raw.data.slice() : raw.data;
  return new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
}

/** Error statistics of `y` against `x`, accumulated in f64. */
function errorStats(x: Float32Array, y: Float32Array) {
  let signal = 0, noise = 0, maxAbsError = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - y[i];
    signal += x[i] * x[i];
    noise += d * d;
    const a = Math.abs(d);
    if (a > maxAbsError || Number.isNaN(a)) maxAbsError = a;
  }
  return { signal, noise, maxAbsError, mse: x.length ? noise / x.length : 0, sqnrDb: 10 * Math.log10(signal / noise) };
}

async function samePath(a: string, b: string): Promise<boolean> {
  if (resolve(a) === resolve(b)) return true;
  try {
    return (await Deno.realPath(a)) === (await Deno.realPath(b)); // links to the same file
  } catch {
    return false; // OUT does not exist yet
  }
}

async function checkPaths(input: string, output: string): Promise<void> {
  if (await samePath(input, output)) {
    throw new QuantizeError(`output '${output}' is the input file; choose another path`);
  }
  const dir = dirname(resolve(output));
  const info = await Deno.stat(dir).catch(() => null);
  if (!info?.isDirectory) throw new QuantizeError(`output '${output}': directory '${dir}' does not exist`);
}

async function readInput(path: string): Promise<SafetensorsFile> {
  try {
    return await readSafetensors(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new QuantizeError(`cannot read '${path}': no such file`);
    if (e instanceof Deno.errors.IsADirectory) throw new QuantizeError(`cannot read '${path}': is a directory`);
    throw new QuantizeError(e instanceof Error ? e.message : String(e)); // SafetensorsError names the file
  }
}

/**
 * Quantizes every F32 tensor of `input` and writes `output` (atomically), after validating everything.
 * Throws a {@link QuantizeError} (and writes nothing) on bad input. Runs on the current backend.
 */
export async function quantizeFile(input: string, output: string, opts: QuantizeFileOptions): Promise<QuantizeReport> {
  const { quantizer, quantOpts } = resolveOptions(opts);
  await checkPaths(input, output);
  const file = await readInput(input);
  const probes = new Map<string, boolean>();
  for (const [name, raw] of file.tensors) {
    const problem = raw.dtype === "F32" ? shapeProblem(raw.shape, quantizer, quantOpts, probes) : null;
    if (problem) throw new QuantizeError(`tensor '${name}' [${raw.shape.join(",")}]: ${problem}`);
  }

  // Started only now: a bad file is reported before any adapter start-up (and its driver chatter).
  let backend = currentBackend();
  try {
    if (opts.backend) backend = await useBackend(opts.backend);
  } catch (e) {
    throw new QuantizeError((e as Error).message);
  }
  const out = new Map<string, RawTensor>();
  const metadata: Record<string, string> = { ...file.metadata };
  const rows: TensorReport[] = [];
  for (const [name, raw] of file.tensors) {
    const bytesBefore = raw.data.byteLength;
    const head = { name, shape: [...raw.shape], dtype: raw.dtype, elements: raw.shape.reduce((a, d) => a * d, 1) };
    if (raw.dtype !== "F32") {
      if (out.has(name)) throw new QuantizeError(`tensor '${name}' clashes with a packed part of the same name`);
      out.set(name, raw);
      rows.push({ ...head, bytesBefore, bytesAfter: bytesBefore, skipped: `dtype ${raw.dtype}` });
      continue;
    }
    const x = f32View(raw);
    const result = await quantizeOne(name, x, raw.shape, quantizer, { ...quantOpts, stream: tensorStream(name) }, {
      backend,
      pack: opts.pack ?? false,
    });
    let bytesAfter = 0;
    for (const [key, t] of result.tensors) {
      if (out.has(key) || (key !== name && file.tensors.has(key))) {
        throw new QuantizeError(`tensor '${name}': packed part '${key}' clashes with a tensor of the same name`);
      }
      out.set(key, t);
      bytesAfter += t.data.byteLength;
    }
    if (result.metadata) {
      if (result.metadata[0] in file.metadata) {
        throw new QuantizeError(`tensor '${name}': the input already has metadata '${result.metadata[0]}'`);
      }
      metadata[result.metadata[0]] = result.metadata[1];
      metadata[PACKED_LAYOUT_KEY] = PACKED_LAYOUT;
    }
    rows.push({ ...head, bytesBefore, bytesAfter, ...errorStats(x, result.values) });
  }

  const options = {
    format: quantizer.name,
    granularity: opts.granularity ?? null,
    rounding: quantOpts.rounding!,
    seed: quantOpts.seed!,
    pack: opts.pack ?? false,
    ...(opts.axis === undefined ? {} : { axis: opts.axis }),
  };
  metadata[QUANTIZE_KEY] = JSON.stringify(options);
  await writeSafetensors(output, out, metadata);
  return {
    input,
    output,
    options,
    backend: { name: backend.name, adapter: backend.adapter },
    tensors: rows,
    fileBytes: (await Deno.stat(output)).size,
  };
}

/** Quantizes one tensor: the stored entries and the values they stand for. */
async function quantizeOne(
  name: string,
  x: Float32Array,
  shape: number[],
  quantizer: Quantizer,
  quantOpts: QuantizeOptions,
  { backend, pack: packed }: { backend: Backend; pack: boolean },
): Promise<{ tensors: [string, RawTensor][]; metadata?: [string, string]; values: Float32Array }> {
  const disposeAll = (ts: Tensor[]) => ts.forEach((t) => t.dispose());
  const input = tensor(x, { shape, backend });
  const made: Tensor[] = [input];
  try {
    if (!packed) {
      const y = quantizer.quantDequant(input, quantOpts);
      made.push(y);
      const values = (await y.data()) as Float32Array;
      const data = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      return { tensors: [[name, { dtype: "F32", shape, data }]], values };
    }
    const q = quantizer.quantize(input, quantOpts);
    made.push(...q.parts.map((p) => p.codes));
    const p = await pack(q);
    const y = quantizer.dequantize(q);
    made.push(y);
    const values = (await y.data()) as Float32Array;
    const entries = packedEntries(name, p);
    if (entries.tensors.reduce((s, [, t]) => s + t.data.byteLength, 0) !== packedBytes(p)) {
      throw new Error("packed entries do not add up to packedBytes"); // a bug, not a user error
    }
    return { ...entries, values };
  } catch (e) {
    if (e instanceof QuantizeError) throw e;
    throw new QuantizeError(`tensor '${name}' [${shape.join(",")}]: ${(e as Error).message}`);
  } finally {
    disposeAll(made);
  }
}

/**
 * Reads a file written by `quantize --pack` and returns it as the run without `--pack` would have written
 * it: every packed tensor dequantized to F32 (bit-exact), other tensors and metadata unchanged (the packing
 * entries dropped). Dequantizes on `backend` (default: the current backend).
 */
export async function restore(path: string, backend: Backend = currentBackend()): Promise<SafetensorsFile> {
  const { packed, plain, metadata } = unpackFile(await readSafetensors(path), path);
  const tensors = new Map(plain);
  for (const [name, p] of packed) {
    const q = unpack(p, backend);
    const y = parseFormat(p.format).dequantize(q);
    const values = (await y.data()) as Float32Array;
    y.dispose();
    q.parts.forEach((part) => part.codes.dispose());
    tensors.set(name, { dtype: "F32", shape: [...p.shape], data: new Uint8Array(values.buffer, 0, values.byteLength) });
  }
  return { tensors: new Map([...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))), metadata };
}
