/**
 * Dependency-free reader and writer for the safetensors format.
 *
 * Layout: an 8-byte little-endian u64 header length `N`, then `N` bytes of UTF-8 JSON, then the data buffer.
 * The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the
 * data buffer) plus an optional `__metadata__` object of strings. Decoding validates everything the reference
 * implementation does, so a hostile file fails with one {@link SafetensorsError} instead of garbage tensors.
 *
 * @module
 */

/** Element types defined by the safetensors format. */
export type SafetensorsDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "U16"
  | "U32"
  | "U64"
  | "BOOL"
  | "F8_E4M3"
  | "F8_E5M2";

/** One tensor as stored on disk: dtype, shape and its raw little-endian bytes. */
export interface RawTensor {
  /** Element type. */
  dtype: SafetensorsDType;
  /** Dimensions; `[]` is a scalar. */
  shape: number[];
  /** Raw little-endian bytes, exactly `product(shape) * bytesPerElement(dtype)` long. */
  data: Uint8Array;
}

/** A decoded safetensors file. */
export interface SafetensorsFile {
  /** Tensors by name. */
  tensors: Map<string, RawTensor>;
  /** The `__metadata__` entries, or `{}` when absent. */
  metadata: Record<string, string>;
}

/** Raised for any malformed input; the message always starts with the source label (`"file.safetensors: ..."`). */
export class SafetensorsError extends Error {
  /** Creates an error whose message is prefixed with `source`. */
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "SafetensorsError";
  }
}

/** Largest accepted header, in bytes; the same bound as the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

const METADATA_KEY = "__metadata__";

/** Size in bytes of one element of `dtype`. */
export function bytesPerElement(dtype: SafetensorsDType): number {
  return DTYPE_BYTES[dtype];
}

function isDType(x: unknown): x is SafetensorsDType {
  return typeof x === "string" && Object.hasOwn(DTYPE_BYTES, x);
}

function isShape(x: unknown): x is number[] {
  return Array.isArray(x) && x.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** Expected byte size, or -1 if it does not fit in a safe integer (a hostile shape). */
function byteSize(dtype: SafetensorsDType, shape: number[]): number {
  const n = shape.reduce((a, d) => a * d, bytesPerElement(dtype));
  return Number.isSafeInteger(n) ? n : -1;
}

function checkStringRecord(source: string, metadata: unknown): Record<string, string> {
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
    throw new SafetensorsError(source, `${METADATA_KEY} must be an object of strings`);
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") throw new SafetensorsError(source, `${METADATA_KEY}["${k}"] is not a string`);
  }
  return { ...metadata } as Record<string, string>;
}

/**
 * Serializes tensors (sorted by name, so output is deterministic) and optional metadata to safetensors bytes.
 * The header is space-padded so the data buffer starts 8-byte aligned.
 */
export function encodeSafetensors(
  tensors: Map<string, RawTensor> | Record<string, RawTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const source = "<encode>";
  const entries = (tensors instanceof Map ? [...tensors] : Object.entries(tensors))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // Null prototype so a tensor named "__proto__" becomes a plain key, not a prototype swap.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    header[METADATA_KEY] = checkStringRecord(source, metadata);
  }
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === METADATA_KEY) throw new SafetensorsError(source, `tensor name "${METADATA_KEY}" is reserved`);
    if (!isDType(t.dtype)) throw new SafetensorsError(source, `tensor "${name}": unknown dtype ${String(t.dtype)}`);
    if (!isShape(t.shape)) throw new SafetensorsError(source, `tensor "${name}": shape must be non-negative integers`);
    const expected = byteSize(t.dtype, t.shape);
    if (t.data.byteLength !== expected) {
      throw new SafetensorsError(
        source,
        `tensor "${name}": data is ${t.data.byteLength} bytes but ${t.dtype}${
          JSON.stringify(t.shape)
        } needs ${expected}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces (valid JSON whitespace) so 8 + N is a multiple of 8, as the reference writer does.
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const [, t] of entries) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** Parses and validates safetensors bytes; `source` labels error messages (e.g. the file path). */
export function decodeSafetensors(bytes: Uint8Array, source = "<buffer>"): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw new SafetensorsError(source, `truncated: ${bytes.byteLength} bytes, need at least 8 for the header length`);
  }
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(source, `header too large: ${n64} bytes (max ${MAX_HEADER_BYTES})`);
  }
  const n = Number(n64);
  if (8 + n > bytes.byteLength) {
    throw new SafetensorsError(source, `truncated: header needs ${n} bytes but only ${bytes.byteLength - 8} remain`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new SafetensorsError(source, `header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new SafetensorsError(source, "header is not a JSON object");
  }

  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  let metadata: Record<string, string> = {};
  const infos: { name: string; dtype: SafetensorsDType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      metadata = checkStringRecord(source, info);
      continue;
    }
    const at = `tensor "${name}"`;
    if (typeof info !== "object" || info === null) throw new SafetensorsError(source, `${at}: entry is not an object`);
    const { dtype, shape, data_offsets: offs } = info as Record<string, unknown>;
    if (!isDType(dtype)) throw new SafetensorsError(source, `${at}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!isShape(shape)) {
      throw new SafetensorsError(
        source,
        `${at}: shape ${JSON.stringify(shape)} is not an array of non-negative integers`,
      );
    }
    if (
      !Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offs[0] > offs[1]
    ) {
      throw new SafetensorsError(
        source,
        `${at}: data_offsets ${JSON.stringify(offs)} is not [begin, end] with begin <= end`,
      );
    }
    const [begin, end] = offs as number[];
    if (end > dataLen) {
      throw new SafetensorsError(source, `${at}: data_offsets [${begin}, ${end}] past end of data (${dataLen} bytes)`);
    }
    const expected = byteSize(dtype, shape);
    if (end - begin !== expected) {
      throw new SafetensorsError(
        source,
        `${at}: size mismatch: data_offsets span ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${
          expected < 0 ? "too many" : expected
        }`,
      );
    }
    infos.push({ name, dtype, shape, begin, end });
  }

  // Like the reference, the tensors must tile the data buffer exactly: no overlaps, holes or trailing bytes.
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let prev = 0;
  let prevName = "";
  for (const t of infos) {
    if (t.begin < prev) {
      throw new SafetensorsError(
        source,
        `tensor "${t.name}": overlaps tensor "${prevName}" (begins at ${t.begin} < ${prev})`,
      );
    }
    if (t.begin > prev) {
      throw new SafetensorsError(
        source,
        `tensor "${t.name}": gap in data buffer (begins at ${t.begin}, expected ${prev})`,
      );
    }
    prev = t.end;
    prevName = t.name;
  }
  if (prev !== dataLen) {
    throw new SafetensorsError(source, `data buffer is ${dataLen} bytes but tensors cover only ${prev} (gap at end)`);
  }

  const tensors = new Map<string, RawTensor>();
  for (const t of infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    // slice() copies, so the result does not keep the whole file buffer alive.
    tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data: bytes.slice(dataStart + t.begin, dataStart + t.end) });
  }
  return { tensors, metadata };
}

/** Writes tensors to `path` atomically: the bytes go to `path + ".tmp"`, then are renamed over `path`. */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, RawTensor> | Record<string, RawTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const tmp = path + ".tmp";
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Reads and validates a safetensors file; errors name `path`. */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  return decodeSafetensors(await Deno.readFile(path), path);
}
