/**
 * `deno task quantize --format F [--granularity tensor|channel:AXIS|group:G] [--rounding nearest|nearest-away|stochastic]
 * [--seed S] [--pack] [--json] [--backend cpu|webgpu|auto] IN.safetensors OUT.safetensors`
 *
 * Quantizes every F32 tensor of a safetensors file. Without `--pack` each is
 * fake-quantized (quantize → dequantize, stored as F32 again); with `--pack`
 * each F32 tensor `NAME` is stored as its bit-packed parts (`NAME.codes`,
 * `NAME.scales`, ...), one U8 tensor per part holding exactly ⌈count·bits/8⌉
 * bytes of the little-endian bit stream of formats/pack.ts, plus a
 * `__metadata__` entry `lowp.packed.NAME` (JSON: format, shape, meta and per
 * part name, tensor, bits, format, count, shape) and `lowp.packing:
 * lsb-first-u8-v1`; {@link restore} turns such a file back into the
 * fake-quantized F32 tensors, bit for bit. Tensors of other dtypes are copied
 * unchanged and listed as skipped; input metadata is kept, and
 * `lowp.quantize` records the options.
 *
 * Prints a per-tensor table (shape, elements, MSE, SQNR, max abs error, bytes
 * before → after, "after" being what the tensor occupies in OUT) and a total
 * line, or with `--json` one JSON object. Stochastic rounding draws from
 * Philox with key `--seed` and stream {@link tensorStream}(NAME), so tensors
 * get independent draws that do not depend on which other tensors the file
 * holds.
 *
 * Bad input (unknown format, granularity a format does not take, bad seed,
 * unreadable or hostile file, OUT = IN, a tensor whose shape does not fit the
 * format's blocks) is reported as one `error: ...` line with exit code 1, and
 * nothing is written: everything is computed in memory first, then OUT is
 * written atomically.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, resolve } from "node:path";
import {
  type Backend,
  type BackendChoice,
  backendChoiceFromEnv,
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
import { type Granularity, parseGranularity, type QuantizeOptions, type Quantizer } from "./spec.ts";

const USAGE = "usage: deno task quantize --format F [--granularity tensor|channel:AXIS|group:G] " +
  "[--rounding nearest|nearest-away|stochastic] [--seed S] [--pack] [--json] [--backend cpu|webgpu|auto] " +
  "IN.safetensors OUT.safetensors";

const ROUNDINGS: readonly Rounding[] = ["nearest", "nearest-away", "stochastic"];

/** `__metadata__` key recording the options of the run (JSON). */
export const QUANTIZE_KEY = "lowp.quantize";

/** What {@link quantizeFile} is asked to do. */
export interface QuantizeFileOptions {
  /** Format name, as `parseFormat` takes it. */
  format: string;
  /** `tensor`, `channel:AXIS` or `group:G`; only for formats with a free scale granularity. */
  granularity?: string;
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
  options: Required<Omit<QuantizeFileOptions, "granularity" | "backend">> & { granularity: string | null };
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
  const quantOpts: QuantizeOptions = { rounding, seed, granularity };
  // Options a format turns down (e.g. stochastic rounding for nf4) fail here, before any file is touched:
  // one call on a tiny CPU tensor whose shape fits the blocks, groups or channel axis.
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
  return { quantizer, quantOpts };
}

/**
 * Whether the format rejects a tensor of `shape` (probed once per shape on a tiny CPU tensor): block and group
 * layouts differ between formats (MX and INT groups must tile the last axis, NF4 allows a short last block).
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
      quantizer.quantDequant(x, opts).dispose();
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
  const last = shape.at(-1);
  const g = opts.granularity;
  // The probe stands for "last axis not a multiple of k" (or a scalar): k + 1 values, or a rank-0 tensor.
  const misfit = (k: number) => last === undefined ? [] : [k + 1];
  const block = quantizer.blockSize;
  if (block !== null && (last === undefined || last % block !== 0)) {
    if (probeRejects(quantizer, opts, misfit(block), cache)) {
      return `format '${quantizer.name}' needs the last dimension divisible by its block size ${block}`;
    }
  }
  if (g?.kind === "group" && (last === undefined || last % g.size !== 0)) {
    if (probeRejects(quantizer, opts, misfit(g.size), cache)) {
      return `--granularity group:${g.size} needs the last dimension divisible by ${g.size} (groups run along it)`;
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

const num = (x: number | undefined, digits = 3) =>
  x === undefined ? "" : x === Infinity ? "inf" : Number.isNaN(x) ? "nan" : x === 0 ? "0" : x.toExponential(digits - 1);

/** SQNR text: `inf` for an exact result, `-` when undefined (no elements, or an all-zero tensor quantized exactly). */
const db = (x: number) => x === Infinity ? "inf" : Number.isNaN(x) ? "-" : x.toFixed(2);

function totals(r: QuantizeReport) {
  const q = r.tensors.filter((t) => !t.skipped);
  const sum = (f: (t: TensorReport) => number, ts = r.tensors) => ts.reduce((s, t) => s + f(t), 0);
  const noise = sum((t) => t.noise!, q);
  const elements = sum((t) => t.elements, q);
  return {
    tensors: r.tensors.length,
    quantized: q.length,
    skipped: r.tensors.length - q.length,
    elements: sum((t) => t.elements),
    mse: elements ? noise / elements : 0,
    sqnrDb: 10 * Math.log10(sum((t) => t.signal!, q) / noise),
    bytesBefore: sum((t) => t.bytesBefore),
    bytesAfter: sum((t) => t.bytesAfter),
    fileBytes: r.fileBytes,
  };
}

/** The human-readable report: a header line, one row per tensor, a total line. */
export function formatTable(r: QuantizeReport): string {
  const o = r.options;
  const lines = [
    `${o.format}${o.granularity ? ` ${o.granularity}` : ""}, rounding ${o.rounding}${
      o.rounding === "stochastic" ? ` (seed ${o.seed})` : ""
    }, ${
      o.pack ? "packed codes" : "fake-quantized F32"
    }, on ${r.backend.name} (${r.backend.adapter}): ${r.input} → ${r.output}`,
  ];
  const rows = [["tensor", "shape", "elements", "MSE", "SQNR dB", "max |err|", "bytes before → after", ""]];
  for (const t of r.tensors) {
    const head = [t.name, `[${t.shape.join(",")}]`, String(t.elements)];
    const bytes = `${t.bytesBefore} → ${t.bytesAfter}`;
    if (t.skipped) rows.push([...head, "-", "-", "-", bytes, `skipped (${t.skipped})`]);
    else {
      rows.push([...head, num(t.mse), db(t.sqnrDb!), num(t.maxAbsError), bytes, ""]);
    }
  }
  const width = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  // Names, shapes and notes align left, numbers right.
  const left = new Set([0, 1, 7]);
  for (const row of rows) {
    lines.push(
      row.map((cell, c) => left.has(c) ? cell.padEnd(width[c]) : cell.padStart(width[c])).join("  ").trimEnd(),
    );
  }
  const t = totals(r);
  const ratio = t.bytesAfter && t.bytesAfter !== t.bytesBefore
    ? ` (${(t.bytesBefore / t.bytesAfter).toFixed(2)}× smaller)`
    : "";
  lines.push(
    `total: ${t.tensors} tensors (${t.quantized} quantized, ${t.skipped} skipped), ${t.elements} elements, ` +
      `MSE ${num(t.mse)}, SQNR ${db(t.sqnrDb)} dB, ` +
      `tensor bytes ${t.bytesBefore} → ${t.bytesAfter}${ratio}, file ${t.fileBytes} bytes`,
  );
  return lines.join("\n");
}

/** The machine-readable report (`--json`); SQNR is null when the error is zero (infinite) or undefined. */
export function reportJson(r: QuantizeReport): Record<string, unknown> {
  const finite = (x: number | undefined) => (x === undefined || Number.isFinite(x) ? x : null);
  const t = totals(r);
  return {
    input: r.input,
    output: r.output,
    ...r.options,
    backend: r.backend.name,
    adapter: r.backend.adapter,
    tensors: r.tensors.map((row) => ({
      name: row.name,
      shape: row.shape,
      dtype: row.dtype,
      elements: row.elements,
      ...(row.skipped
        ? { skipped: row.skipped }
        : { mse: finite(row.mse), sqnr_db: finite(row.sqnrDb), max_abs_error: finite(row.maxAbsError) }),
      bytes_before: row.bytesBefore,
      bytes_after: row.bytesAfter,
    })),
    total: {
      tensors: t.tensors,
      quantized: t.quantized,
      skipped: t.skipped,
      elements: t.elements,
      mse: finite(t.mse),
      sqnr_db: finite(t.sqnrDb),
      bytes_before: t.bytesBefore,
      bytes_after: t.bytesAfter,
      file_bytes: t.fileBytes,
    },
  };
}

/** `--opt -1` → `--opt=-1`: parseArgs takes a value that starts with a dash only in the `=` form. */
function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (/^--(seed|granularity|format|rounding|backend)$/.test(args[i]) && /^-\d/.test(args[i + 1] ?? "")) {
      out.push(`${args[i]}=${args[++i]}`);
    } else out.push(args[i]);
  }
  return out;
}

async function main(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinNegativeValues(args),
      allowPositionals: true,
      options: {
        format: { type: "string" },
        granularity: { type: "string" },
        rounding: { type: "string" },
        seed: { type: "string" },
        pack: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        backend: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new QuantizeError(`${(e as Error).message} (${USAGE})`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.format === undefined) throw new QuantizeError(`--format is required (${USAGE})`);
  if (positionals.length !== 2) {
    throw new QuantizeError(`expected IN.safetensors OUT.safetensors, got ${positionals.length} path(s) (${USAGE})`);
  }
  if (values.seed !== undefined && !/^\d+$/.test(values.seed)) {
    throw new QuantizeError(`--seed '${values.seed}': expected an integer from 0 to 4294967295`);
  }
  const opts: QuantizeFileOptions = {
    format: values.format,
    granularity: values.granularity,
    rounding: (values.rounding ?? "nearest") as Rounding,
    seed: values.seed === undefined ? 0 : Number(values.seed),
    pack: values.pack,
  };
  try {
    opts.backend = backendChoiceFromEnv(values.backend);
  } catch (e) {
    throw new QuantizeError((e as Error).message);
  }
  const report = await quantizeFile(positionals[0], positionals[1], opts);
  console.log(values.json ? JSON.stringify(reportJson(report)) : formatTable(report));
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    // Anything else is a bug: still one line, the stack with LOWP_DEBUG=1.
    const message = e instanceof Error ? e.message : String(e);
    console.error(`error: ${message.replace(/\s*\n\s*/g, " ")}`);
    if (!(e instanceof QuantizeError) && Deno.env.get("LOWP_DEBUG")) console.error(e);
    Deno.exit(1);
  }
}
