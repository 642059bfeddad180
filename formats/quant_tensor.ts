/**
 * {@link QuantTensor}: a quantized tensor that lives on the backend in its
 * packed form (the format's bit width, not 32 bits per code) and
 * dequantizes on the fly in a kernel that reads the packed bits.
 *
 * Each part (element codes, scales, zero points, ...) is one u32 storage
 * holding the bit stream of `pack.ts` (`lowp.packing: lsb-first-u8-v1`):
 * the words read as little-endian bytes are exactly the bytes
 * `deno task quantize --pack` stores for that part, so saving and loading
 * copy bytes and nothing else.
 *
 * Memory: a QuantTensor is one unit for the memory scopes of `@lowp/core`
 * ({@link tidy}): created inside a scope it is released at the scope's end
 * unless returned or {@link QuantTensor.keep kept}; its part storages are
 * never released separately.
 *
 * @module
 */
import {
  type Backend,
  currentBackend,
  type Disposable,
  type RawTensor,
  readSafetensors,
  type SafetensorsFile,
  Tensor,
  track,
  writeSafetensors,
} from "@lowp/core";
import { PACK_KERNEL } from "./_packed_kernels.ts";
import { checkMeta, type PackedFamily, packedFamily } from "./_packed_families.ts";
import type { MxQuantizeOptions } from "./mx.ts";
import type { Nf4Options } from "./nf4.ts";
import type { Nvfp4Options } from "./nvfp4.ts";
import {
  PACKED_LAYOUT,
  PACKED_LAYOUT_KEY,
  packedBytes,
  packedEntries,
  type PackedPart,
  type PackedTensor,
  packedWords,
  partBytes,
  unpackFile,
} from "./pack.ts";
import { parseFormat } from "./registry.ts";
import { parseGranularity, type QuantizedPart, type Quantizer } from "./spec.ts";

/**
 * Options of {@link QuantTensor.fromTensor}: those of every format (`axis` included: the axis blocks and
 * groups run along) plus NF4's, MX's and NVFP4's own.
 */
export type QuantTensorOptions = Nf4Options & MxQuantizeOptions & Nvfp4Options;

/** One packed part of a {@link QuantTensor}. */
export interface QuantTensorPart {
  /** Role, e.g. `codes`, `scales` (as in {@link QuantizedPart}). */
  readonly name: string;
  /** Bits per code (1 to 32). */
  readonly bits: number;
  /** How to read a code: a format name (`e4m3`, `e8m0`, `f32`, ...). */
  readonly format: string;
  /** Number of codes. */
  readonly count: number;
  /** Shape of the part's codes (as in the unpacked {@link QuantizedPart}). */
  readonly shape: readonly number[];
  /** ⌈count·bits/32⌉ u32 words on the backend, in the bit-stream layout of pack.ts. */
  readonly words: Tensor;
}

const META_ENCODER = new TextEncoder();

/** The layout options a format's `meta` records (granularity, block axis, double quantization, scale rounding, 2-D blocks). */
function optionsFromMeta(meta: Readonly<Record<string, number | string>>): QuantTensorOptions {
  const opts: { -readonly [K in keyof QuantTensorOptions]: QuantTensorOptions[K] } = {};
  if (typeof meta.granularity === "string") opts.granularity = parseGranularity(meta.granularity);
  if (typeof meta.axis === "number") opts.axis = meta.axis; // absent: the last axis, the quantizers' default
  if (meta.block2d === 1) opts.block2d = true;
  if (meta.doubleQuant !== undefined) opts.doubleQuant = meta.doubleQuant === 1;
  if (typeof meta.scaleRounding === "string") {
    opts.scaleRounding = meta.scaleRounding as QuantTensorOptions["scaleRounding"];
  }
  return opts;
}

/**
 * Whether two metas describe the same layout: equal entries in any order, an absent or negative `axis` read
 * as the axis it names (absent: the last, as tensors packed before the option were blocked).
 */
function sameMeta(a: Readonly<Record<string, number | string>>, b: typeof a, rank: number): boolean {
  const norm = (m: typeof a) => {
    const axis = typeof m.axis === "number" ? m.axis : rank - 1;
    const all: Record<string, number | string> = { ...m, axis: axis < 0 ? axis + rank : axis };
    return JSON.stringify(Object.keys(all).sort().map((k) => [k, all[k]]));
  };
  return norm(a) === norm(b);
}

/** The packed family of `format`, or a clear error naming what is supported. */
function familyOf(format: string, where: string): PackedFamily {
  const family = packedFamily(format);
  if (!family) throw new Error(`${where}: format '${format}' has no packed dequantize`);
  return family;
}

/** Packs the u32 codes of `part` into `words` (⌈count·bits/32⌉ words) on the codes' backend. */
function packInto(part: QuantizedPart, words: Tensor): void {
  const count = part.codes.size;
  if (count * part.bits >= 2 ** 32) {
    throw new Error(`QuantTensor: part '${part.name}' holds ${count}×${part.bits} bits, more than 2^32 in one part`);
  }
  const items = packedWords(count, part.bits);
  if (items > 0) {
    part.codes.backend.runWords(PACK_KERNEL, [part.codes.storage], [words.storage], items, [part.bits, count]);
  }
}

/**
 * A quantized tensor stored packed on its backend: codes at the format's bit
 * width plus packed scales, the original shape, the format and its `meta`.
 * {@link QuantTensor.dequantize} reads the packed bits in a kernel and gives
 * the same f32 bits as `quantizer.quantDequant(x, opts)` on either backend.
 *
 * @example
 * ```ts
 * import { QuantTensor } from "@lowp/formats";
 * import { randn, tidy } from "@lowp/core";
 * const w = randn([128, 64], { seed: 1, stream: 0 });
 * const q = QuantTensor.fromTensor(w, "nf4", { doubleQuant: true }).keep(); // frozen base weight
 * console.assert(q.byteSize < w.size); // about half a byte per value
 * const y = tidy(() => q.dequantize()); // f32, equal to parseFormat("nf4").quantDequant(w, { doubleQuant: true })
 * console.assert(y.shape[0] === 128);
 * q.dispose();
 * ```
 */
export class QuantTensor implements Disposable {
  /** Canonical format name. */
  readonly format: string;
  /** Shape of the original tensor. */
  readonly shape: readonly number[];
  /** Scalars needed to restore the values (as in `Quantized.meta`). */
  readonly meta: Readonly<Record<string, number | string>>;
  /** The packed parts, codes first (as in `Quantized.parts`). */
  readonly parts: readonly QuantTensorPart[];
  /** The format's quantizer. */
  readonly quantizer: Quantizer;
  readonly #family: PackedFamily;
  #kept = false;
  #disposed = false;

  private constructor(
    quantizer: Quantizer,
    shape: readonly number[],
    meta: Readonly<Record<string, number | string>>,
    parts: QuantTensorPart[],
  ) {
    this.quantizer = quantizer;
    this.format = quantizer.name;
    this.shape = Object.freeze([...shape]);
    this.meta = Object.freeze({ ...meta });
    this.parts = Object.freeze(parts);
    this.#family = familyOf(this.format, "QuantTensor");
    checkMeta(this.#family, meta, `QuantTensor ${this.format}`);
    track(this);
  }

  /**
   * Quantizes `x` with `format` (a name for `parseFormat`, or a quantizer) and packs the codes on the
   * device (no readback). `opts` are the quantizer's options (rounding, granularity, `axis` of the blocks or
   * groups, seed/stream/offset for stochastic rounding, NF4's `doubleQuant`, MX's `scaleRounding`, NVFP4's
   * `block2d`).
   */
  static fromTensor(x: Tensor, format: string | Quantizer, opts: QuantTensorOptions = {}): QuantTensor {
    const quantizer = typeof format === "string" ? parseFormat(format) : format;
    familyOf(quantizer.name, "QuantTensor.fromTensor");
    const q = quantizer.quantize(x, opts);
    try {
      const parts = q.parts.map((part) => {
        const words = new Tensor(
          part.codes.backend,
          part.codes.backend.alloc(packedWords(part.codes.size, part.bits)),
          [
            packedWords(part.codes.size, part.bits),
          ],
          "u32",
        ).keep();
        packInto(part, words);
        return {
          name: part.name,
          bits: part.bits,
          format: part.format,
          count: part.codes.size,
          shape: [...part.codes.shape],
          words,
        };
      });
      return new QuantTensor(quantizer, x.shape, q.meta, parts);
    } finally {
      q.parts.forEach((part) => part.codes.dispose());
    }
  }

  /**
   * Uploads a packed tensor (as `unpackFile` reads it from a `quantize --pack` file) to `backend` (default:
   * the current backend). Throws naming the format and part when the parts do not fit the format and shape.
   */
  static fromPacked(p: PackedTensor, backend: Backend = currentBackend()): QuantTensor {
    const where = `QuantTensor.fromPacked '${p.format}' [${p.shape.join(",")}]`;
    const quantizer = parseFormat(p.format);
    const family = familyOf(quantizer.name, where);
    checkMeta(family, p.meta, where);
    let expected: [string, number][];
    try {
      expected = family.parts(p.shape, p.meta);
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
    const names = p.parts.map((part) => part.name).join(", ");
    if (p.parts.length !== expected.length || expected.some(([name], k) => p.parts[k].name !== name)) {
      throw new Error(`${where}: parts are [${names}], expected [${expected.map(([name]) => name).join(", ")}]`);
    }
    const parts = p.parts.map((part, k) => {
      if (part.count !== expected[k][1]) {
        throw new Error(`${where}: part '${part.name}' has ${part.count} codes, expected ${expected[k][1]}`);
      }
      if (k === 0 && part.bits !== quantizer.elementBits) {
        throw new Error(`${where}: codes are ${part.bits} bits wide, the format's are ${quantizer.elementBits}`);
      }
      const need = packedWords(part.count, part.bits);
      if (part.words.length < need) {
        throw new Error(`${where}: part '${part.name}' has ${part.words.length} words, needs ${need}`);
      }
      const words = new Tensor(backend, backend.upload(part.words.slice(0, need)), [need], "u32").keep();
      return { name: part.name, bits: part.bits, format: part.format, count: part.count, shape: part.shape, words };
    });
    return new QuantTensor(quantizer, p.shape, p.meta, parts);
  }

  /** The backend holding the parts. */
  get backend(): Backend {
    return this.parts[0].words.backend;
  }
  /** Number of values. */
  get size(): number {
    return this.shape.reduce((a, d) => a * d, 1);
  }
  /** Bytes of the packed parts: Σ ⌈count·bits/8⌉ (as stored in a `--pack` file; the last word's padding not counted). */
  get dataBytes(): number {
    return this.parts.reduce((sum, part) => sum + partBytes(part), 0);
  }
  /** True size in bytes: {@link dataBytes} plus the UTF-8 JSON of `meta` (what restoring needs besides the parts). */
  get byteSize(): number {
    return this.dataBytes + META_ENCODER.encode(JSON.stringify(this.meta)).byteLength;
  }
  /** True when kept out of scope cleanup. */
  get kept(): boolean {
    return this.#kept;
  }
  /** True after {@link dispose}. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Keeps this tensor (all its parts) alive past the end of the enclosing scope, e.g. as a frozen parameter; returns it. */
  keep(): this {
    this.#kept = true;
    return this;
  }

  /** "quant tensor nf4 [128,64]" for messages. */
  describe(): string {
    return `quant tensor ${this.format} [${this.shape.join(",")}]`;
  }

  /**
   * The f32 values, computed by a kernel that reads the packed codes and scales directly (no unpacked copy
   * of the codes). Equal bit for bit to the format's `quantDequant` of the quantized input, on every backend.
   */
  dequantize(): Tensor {
    this.#check("dequantize");
    const backend = this.backend, out = backend.alloc(this.size);
    const parts = new Map(this.parts.map((part) => [part.name, { storage: part.words.storage, bits: part.bits }]));
    try {
      if (this.size > 0) this.#family.dequantize(backend, parts, this.shape, this.meta, out);
    } catch (e) {
      backend.free(out);
      throw e;
    }
    return new Tensor(backend, out, this.shape, "f32");
  }

  /**
   * Re-quantizes `x` (same shape and backend) into the same packed storage, without readback. The layout
   * options come from `meta` (granularity, block axis, double quantization, scale rounding, 2-D blocks; they
   * override those of `opts`); `opts` adds rounding,
   * `saturate` and the Philox seed/stream/offset of stochastic rounding. Returns this.
   */
  assignFrom(x: Tensor, opts: QuantTensorOptions = {}): this {
    this.#check("assignFrom");
    const where = `${this.describe()}.assignFrom`;
    if (x.shape.length !== this.shape.length || x.shape.some((d, k) => d !== this.shape[k])) {
      throw new Error(`${where}: ${x.describe()} does not have shape [${this.shape.join(",")}]`);
    }
    if (x.backend !== this.backend) throw new Error(`${where}: ${x.describe()} is on another backend`);
    const q = this.quantizer.quantize(x, { ...opts, ...optionsFromMeta(this.meta) });
    try {
      if (!sameMeta(q.meta, this.meta, this.shape.length)) {
        throw new Error(
          `${where}: the new values have meta ${JSON.stringify(q.meta)}, not ${JSON.stringify(this.meta)}`,
        );
      }
      q.parts.forEach((part, k) => {
        const mine = this.parts[k];
        if (part.name !== mine?.name || part.bits !== mine.bits || part.codes.size !== mine.count) {
          throw new Error(`${where}: part '${part.name}' does not fit the stored '${mine?.name}'`);
        }
      });
      q.parts.forEach((part, k) => packInto(part, this.parts[k].words));
    } finally {
      q.parts.forEach((part) => part.codes.dispose());
    }
    return this;
  }

  /** Reads the packed words back (plain data, as `pack` gives it): for saving with `packedEntries`. */
  async toPacked(): Promise<PackedTensor> {
    this.#check("toPacked");
    const parts: PackedPart[] = [];
    for (const part of this.parts) {
      const words = (await part.words.data()) as Uint32Array;
      parts.push({
        name: part.name,
        bits: part.bits,
        format: part.format,
        count: part.count,
        shape: part.shape,
        words,
      });
    }
    const p = { format: this.format, shape: [...this.shape], meta: { ...this.meta }, parts };
    if (packedBytes(p) !== this.dataBytes) throw new Error(`${this.describe()}: packed size mismatch`); // a bug
    return p;
  }

  /** Releases every part's storage (idempotent). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.parts.forEach((part) => part.words.dispose());
  }

  #check(what: string): void {
    if (this.#disposed) throw new Error(`${this.describe()}: ${what}() after dispose()`);
  }
}

/**
 * Writes `tensors` to `path` (atomically) in the layout `deno task quantize --pack` writes: per QuantTensor
 * `NAME` one U8 tensor `NAME.PART` per part and the metadata entry `lowp.packed.NAME`, plus
 * `lowp.packing: lsb-first-u8-v1`; `plain` tensors and `metadata` entries are stored as given.
 */
export async function saveQuantTensors(
  path: string,
  tensors: ReadonlyMap<string, QuantTensor>,
  plain: ReadonlyMap<string, RawTensor> = new Map(),
  metadata: Readonly<Record<string, string>> = {},
): Promise<void> {
  const out = new Map(plain);
  const meta: Record<string, string> = { ...metadata, [PACKED_LAYOUT_KEY]: PACKED_LAYOUT };
  for (const [name, qt] of tensors) {
    const entries = packedEntries(name, await qt.toPacked());
    for (const [key, raw] of entries.tensors) {
      if (out.has(key)) throw new Error(`saveQuantTensors ${path}: tensor '${key}' is written twice`);
      out.set(key, raw);
    }
    meta[entries.metadata[0]] = entries.metadata[1];
  }
  await writeSafetensors(path, out, meta);
}

/** What {@link loadQuantTensors} returns: the packed tensors on the backend, the other tensors and metadata. */
export interface LoadedQuantTensors {
  /** The packed tensors by name, uploaded. */
  quant: Map<string, QuantTensor>;
  /** Tensors that are not parts of a packed tensor, unchanged. */
  plain: Map<string, RawTensor>;
  /** `__metadata__` entries other than the packing ones. */
  metadata: Record<string, string>;
}

/**
 * Loads the packed tensors of a safetensors file (a path, or a file already decoded) written by
 * `deno task quantize --pack` or {@link saveQuantTensors} onto `backend` (default: the current backend).
 */
export async function loadQuantTensors(
  source: string | SafetensorsFile,
  backend: Backend = currentBackend(),
): Promise<LoadedQuantTensors> {
  const file = typeof source === "string" ? await readSafetensors(source) : source;
  const { packed, plain, metadata } = unpackFile(file, typeof source === "string" ? source : "<file>");
  const quant = new Map<string, QuantTensor>();
  try {
    for (const [name, p] of packed) {
      try {
        quant.set(name, QuantTensor.fromPacked(p, backend));
      } catch (e) {
        throw new Error(`tensor '${name}': ${(e as Error).message}`);
      }
    }
  } catch (e) {
    quant.forEach((qt) => qt.dispose());
    throw e;
  }
  return { quant, plain, metadata };
}
