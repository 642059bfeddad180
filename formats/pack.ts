/**
 * Dense bit packing of a {@link Quantized} tensor for storage, and back.
 *
 * Layout of one part (each part is packed on its own): its `count` codes,
 * each `bits` wide (1 to 32), form one little-endian bit stream; value `i`
 * occupies bits `[i·bits, (i+1)·bits)` of that stream, least significant bit
 * first. Bit `k` of the stream is bit `k % 32` of word `⌊k / 32⌋`, so the u32
 * words read as little-endian bytes are the same stream byte by byte (bit `k`
 * is bit `k % 8` of byte `⌊k / 8⌋`). Values may straddle words. The unused
 * high bits of the last word are zero. Example: 4-bit codes `[1, 2, 3]` pack
 * to the single word `0x321`.
 *
 * {@link packedBytes} reports the exact storage size, Σ ⌈count·bits / 8⌉ bytes:
 * the padding of the last u32 word of a part is not counted (a byte-granular
 * store such as safetensors U8, see {@link packedToSafetensors}, needs only
 * those bytes).
 *
 * @example
 * ```ts
 * import { floatQuantizer } from "./float.ts";
 * import { pack, packedBytes, unpack } from "./pack.ts";
 * import { tensor } from "@lowp/core";
 * const e4m3 = floatQuantizer("e4m3")!;
 * const p = await pack(e4m3.quantize(tensor([0.5, -1, 3, 448])));
 * console.assert(packedBytes(p) === 4); // four 8-bit codes
 * const y = e4m3.dequantize(unpack(p));
 * console.assert((await y.data()).join() === "0.5,-1,3,448");
 * ```
 *
 * @module
 */
import { type Backend, currentBackend, type RawTensor, tensor } from "@lowp/core";
import type { Quantized } from "./spec.ts";

/** One packed part: the codes of one {@link QuantizedPart} as a dense bit stream. */
export interface PackedPart {
  /** Role, e.g. `codes`, `scales`. */
  readonly name: string;
  /** Bits per code (1 to 32). */
  readonly bits: number;
  /** How to read a code (a format name, as in the part). */
  readonly format: string;
  /** Number of codes: the product of `shape`. */
  readonly count: number;
  /** Shape of the part's code tensor, restored by {@link unpack}. */
  readonly shape: readonly number[];
  /** ⌈count·bits / 32⌉ words holding the bit stream (see the module doc for the layout). */
  readonly words: Uint32Array;
}

/** A {@link Quantized} tensor with every part bit-packed; plain data, no tensors. */
export interface PackedTensor {
  /** Canonical format name. */
  readonly format: string;
  /** Shape of the original tensor. */
  readonly shape: readonly number[];
  /** Scalars needed to restore the values, as in {@link Quantized.meta}. */
  readonly meta: Readonly<Record<string, number | string>>;
  /** The packed parts, in the order of {@link Quantized.parts}. */
  readonly parts: readonly PackedPart[];
}

function checkBits(bits: number, where: string): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 32) {
    throw new Error(`${where}: bits must be an integer from 1 to 32, got ${bits}`);
  }
}

/** Number of u32 words holding `count` codes of `bits` bits. */
export function packedWords(count: number, bits: number): number {
  return Math.ceil((count * bits) / 32);
}

/**
 * Packs `codes` (each below 2^bits) into a dense little-endian bit stream of
 * u32 words. Throws when a code does not fit in `bits` bits.
 */
export function packCodes(codes: ArrayLike<number>, bits: number): Uint32Array {
  checkBits(bits, "packCodes");
  const n = codes.length;
  const words = new Uint32Array(packedWords(n, bits));
  if (bits === 32) {
    words.set(codes);
    return words;
  }
  const limit = 2 ** bits;
  let bit = 0; // position of the next value in the stream
  for (let i = 0; i < n; i++, bit += bits) {
    const c = codes[i];
    if (!(c >= 0 && c < limit) || !Number.isInteger(c)) {
      throw new Error(`packCodes: code ${c} at index ${i} does not fit in ${bits} bits`);
    }
    const w = bit >>> 5;
    const s = bit & 31;
    words[w] |= c << s;
    // The bits shifted past the top of word w start the next word.
    if (s + bits > 32) words[w + 1] |= c >>> (32 - s);
  }
  return words;
}

/** Reads `count` codes of `bits` bits back from a stream packed by {@link packCodes}. */
export function unpackCodes(words: Uint32Array, count: number, bits: number): Uint32Array {
  checkBits(bits, "unpackCodes");
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`unpackCodes: bad count ${count}`);
  const need = packedWords(count, bits);
  if (words.length < need) {
    throw new Error(`unpackCodes: ${count} codes of ${bits} bits need ${need} words, got ${words.length}`);
  }
  if (bits === 32) return words.slice(0, count);
  const out = new Uint32Array(count);
  const mask = 2 ** bits - 1;
  let bit = 0;
  for (let i = 0; i < count; i++, bit += bits) {
    const w = bit >>> 5;
    const s = bit & 31;
    let v = words[w] >>> s;
    if (s + bits > 32) v |= words[w + 1] << (32 - s);
    out[i] = v & mask;
  }
  return out;
}

/** Exact storage size of one part in bytes: ⌈count·bits / 8⌉ (the u32 padding is not counted). */
export function partBytes(part: Pick<PackedPart, "count" | "bits">): number {
  return Math.ceil((part.count * part.bits) / 8);
}

/** Exact storage size in bytes: Σ ⌈count·bits / 8⌉ over the parts; the padding of the last u32 word is not counted. */
export function packedBytes(p: PackedTensor): number {
  return p.parts.reduce((sum, part) => sum + partBytes(part), 0);
}

/** Reads every part's codes back to the host and packs them densely. */
export async function pack(q: Quantized): Promise<PackedTensor> {
  const parts: PackedPart[] = [];
  for (const part of q.parts) {
    const where = `pack ${q.format} part '${part.name}'`;
    checkBits(part.bits, where);
    if (part.codes.dtype !== "u32") throw new Error(`${where}: codes are ${part.codes.dtype}, expected u32`);
    const codes = await part.codes.data();
    parts.push({
      name: part.name,
      bits: part.bits,
      format: part.format,
      count: codes.length,
      shape: [...part.codes.shape],
      words: packCodes(codes, part.bits),
    });
  }
  return { format: q.format, shape: [...q.shape], meta: { ...q.meta }, parts };
}

/** Restores a {@link Quantized} (codes as u32 tensors) on `backend` (default: the current backend). */
export function unpack(p: PackedTensor, backend: Backend = currentBackend()): Quantized {
  const parts = p.parts.map((part) => {
    const where = `unpack ${p.format} part '${part.name}'`;
    checkBits(part.bits, where);
    const size = part.shape.reduce((a, d) => a * d, 1);
    if (size !== part.count) throw new Error(`${where}: count ${part.count} does not match shape [${part.shape}]`);
    const codes = unpackCodes(part.words, part.count, part.bits);
    return {
      name: part.name,
      bits: part.bits,
      format: part.format,
      codes: tensor(codes, { shape: part.shape, dtype: "u32", backend }),
    };
  });
  return { format: p.format, shape: [...p.shape], parts, meta: { ...p.meta } };
}

// Typed arrays use the platform byte order; every platform Deno runs on (x86-64, ARM64) is little-endian,
// which is what the stream layout and safetensors both require.

/** The packed stream of a part as exactly {@link partBytes} little-endian bytes. */
export function partToBytes(part: PackedPart): Uint8Array {
  return new Uint8Array(part.words.buffer, part.words.byteOffset, partBytes(part)).slice();
}

/** The words of a part from its {@link partToBytes} bytes (zero-padded to whole words). */
export function partFromBytes(bytes: Uint8Array, count: number, bits: number): Uint32Array {
  checkBits(bits, "partFromBytes");
  const need = Math.ceil((count * bits) / 8);
  if (bytes.byteLength !== need) {
    throw new Error(`${count} codes of ${bits} bits need ${need} bytes, got ${bytes.byteLength}`);
  }
  const words = new Uint32Array(packedWords(count, bits));
  new Uint8Array(words.buffer).set(bytes);
  return words;
}

/** `__metadata__` key marking a file with packed tensors; its value names the layout version. */
export const PACKED_LAYOUT_KEY = "lowp.packing";
/** Value of {@link PACKED_LAYOUT_KEY}: the layout of the module doc, one U8 tensor per part. */
export const PACKED_LAYOUT = "lsb-first-u8-v1";
/** Prefix of the `__metadata__` key describing packed tensor `NAME`: `lowp.packed.NAME`. */
export const PACKED_KEY_PREFIX = "lowp.packed.";

/** What the `lowp.packed.NAME` metadata entry holds (as a JSON string). */
interface PackedHeader {
  format: string;
  shape: number[];
  meta: Record<string, number | string>;
  parts: { name: string; tensor: string; bits: number; format: string; count: number; shape: number[] }[];
}

/**
 * The safetensors entries storing packed tensor `name`: one U8 tensor `name.PART` per part (shape
 * `[bytes]`, exactly {@link partBytes} bytes of the stream) and one `__metadata__` entry
 * `lowp.packed.NAME` with the JSON `{format, shape, meta, parts: [{name, tensor, bits, format, count, shape}]}`.
 * Files that hold such tensors also carry `lowp.packing: lsb-first-u8-v1`.
 */
export function packedEntries(
  name: string,
  p: PackedTensor,
): { tensors: [string, RawTensor][]; metadata: [string, string] } {
  const header: PackedHeader = { format: p.format, shape: [...p.shape], meta: { ...p.meta }, parts: [] };
  const tensors: [string, RawTensor][] = [];
  for (const part of p.parts) {
    const key = `${name}.${part.name}`;
    const bytes = partToBytes(part);
    tensors.push([key, { dtype: "U8", shape: [bytes.byteLength], data: bytes }]);
    header.parts.push({
      name: part.name,
      tensor: key,
      bits: part.bits,
      format: part.format,
      count: part.count,
      shape: [...part.shape],
    });
  }
  return { tensors, metadata: [PACKED_KEY_PREFIX + name, JSON.stringify(header)] };
}

/** A decoded file split into packed tensors, the other tensors, and the other metadata. */
export interface UnpackedFile {
  /** Packed tensors by their original name. */
  packed: Map<string, PackedTensor>;
  /** Tensors that are not parts of a packed tensor, unchanged. */
  plain: Map<string, RawTensor>;
  /** `__metadata__` entries other than the packing ones. */
  metadata: Record<string, string>;
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isShape = (x: unknown): x is number[] => Array.isArray(x) && x.every(isCount);

/** Reads the packed tensors of a safetensors file written with {@link packedEntries}; `source` labels errors. */
export function unpackFile(
  file: { tensors: Map<string, RawTensor>; metadata: Record<string, string> },
  source = "<file>",
): UnpackedFile {
  const packed = new Map<string, PackedTensor>();
  const plain = new Map(file.tensors);
  const metadata: Record<string, string> = {};
  const fail = (name: string, why: string): never => {
    throw new Error(`${source}: packed tensor '${name}': ${why}`);
  };
  for (const [key, value] of Object.entries(file.metadata)) {
    if (!key.startsWith(PACKED_KEY_PREFIX)) {
      if (key !== PACKED_LAYOUT_KEY) metadata[key] = value;
      continue;
    }
    const name = key.slice(PACKED_KEY_PREFIX.length);
    if (file.metadata[PACKED_LAYOUT_KEY] !== PACKED_LAYOUT) {
      fail(
        name,
        `${PACKED_LAYOUT_KEY} is ${JSON.stringify(file.metadata[PACKED_LAYOUT_KEY])}, need '${PACKED_LAYOUT}'`,
      );
    }
    let h: PackedHeader;
    try {
      h = JSON.parse(value);
    } catch (e) {
      return fail(name, `metadata is not JSON: ${(e as Error).message}`);
    }
    if (typeof h?.format !== "string" || !isShape(h.shape) || !Array.isArray(h.parts)) {
      fail(name, "metadata needs format, shape and parts");
    }
    const meta = h.meta ?? {};
    if (typeof meta !== "object" || Object.values(meta).some((v) => typeof v !== "number" && typeof v !== "string")) {
      fail(name, "meta must be an object of numbers and strings");
    }
    const parts: PackedPart[] = h.parts.map((part) => {
      const ok = typeof part?.name === "string" && typeof part.tensor === "string" && typeof part.format === "string" &&
        Number.isInteger(part.bits) && part.bits >= 1 && part.bits <= 32 && isCount(part.count) &&
        isShape(part.shape) &&
        part.shape.reduce((a, d) => a * d, 1) === part.count;
      if (!ok) fail(name, `part ${JSON.stringify(part)} needs name, tensor, format, bits 1..32 and count = shape size`);
      const raw = plain.get(part.tensor);
      if (!raw) return fail(name, `part tensor '${part.tensor}' is missing`);
      if (raw.dtype !== "U8") fail(name, `part tensor '${part.tensor}' is ${raw.dtype}, expected U8`);
      plain.delete(part.tensor);
      try {
        const words = partFromBytes(raw.data, part.count, part.bits);
        return { name: part.name, bits: part.bits, format: part.format, count: part.count, shape: part.shape, words };
      } catch (e) {
        return fail(name, `part tensor '${part.tensor}': ${(e as Error).message}`);
      }
    });
    packed.set(name, { format: h.format, shape: h.shape, meta, parts });
  }
  return { packed, plain, metadata };
}
