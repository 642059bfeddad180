/**
 * Tensors to and from safetensors files: save named tensors, and load a file
 * into existing parameters with every name, dtype and shape checked.
 *
 * @module
 */
import type { DType } from "@lowp/kernels";
import { type RawTensor, readSafetensors, type SafetensorsDType, writeSafetensors } from "./safetensors.ts";
import { tensor } from "./creation.ts";
import type { Tensor } from "./tensor.ts";

const TO_FILE: Record<DType, SafetensorsDType> = { f32: "F32", i32: "I32", u32: "U32" };
const FROM_FILE: Partial<Record<SafetensorsDType, DType>> = { F32: "f32", I32: "i32", U32: "u32" };

/** Reads tensors back to the host and writes them (atomically) as safetensors. */
export async function saveTensors(
  path: string,
  named: readonly (readonly [string, Tensor])[],
  metadata: Record<string, string> = {},
): Promise<void> {
  const raw = new Map<string, RawTensor>();
  for (const [name, t] of named) {
    const data = await t.data();
    raw.set(name, {
      dtype: TO_FILE[t.dtype],
      shape: [...t.shape],
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    });
  }
  await writeSafetensors(path, raw, metadata);
}

/** Loads every tensor of a safetensors file (f32/i32/u32) onto the active backend. */
export async function loadTensors(
  path: string,
): Promise<{ tensors: Map<string, Tensor>; metadata: Record<string, string> }> {
  const file = await readSafetensors(path);
  const tensors = new Map<string, Tensor>();
  for (const [name, raw] of file.tensors) {
    const dtype = FROM_FILE[raw.dtype];
    if (!dtype) {
      throw new Error(`${path}: tensor '${name}' has dtype ${raw.dtype}; only F32, I32 and U32 load as tensors`);
    }
    const bytes = raw.data.slice().buffer;
    const data = dtype === "f32"
      ? new Float32Array(bytes)
      : dtype === "i32"
      ? new Int32Array(bytes)
      : new Uint32Array(bytes);
    tensors.set(name, tensor(data, { shape: raw.shape, dtype }));
  }
  return { tensors, metadata: file.metadata };
}

/**
 * Copies `loaded` tensors into `params` by name. Every parameter must be
 * present with the same dtype and shape; extra names in the file are an error
 * unless `allowExtra` (e.g. optimizer state stored alongside).
 */
export function assignByName(
  params: readonly (readonly [string, Tensor])[],
  loaded: Map<string, Tensor>,
  source: string,
  allowExtra = false,
): void {
  const problems: string[] = [];
  for (const [name, p] of params) {
    const t = loaded.get(name);
    if (!t) problems.push(`missing '${name}' [${p.shape}]`);
    else if (t.dtype !== p.dtype || t.shape.join() !== p.shape.join()) {
      problems.push(`'${name}' is ${t.dtype} [${t.shape}], expected ${p.dtype} [${p.shape}]`);
    }
  }
  if (!allowExtra) {
    const known = new Set(params.map(([n]) => n));
    for (const name of loaded.keys()) if (!known.has(name)) problems.push(`unexpected '${name}'`);
  }
  if (problems.length) throw new Error(`${source}: checkpoint does not match the model: ${problems.join("; ")}`);
  for (const [name, p] of params) p.assign(loaded.get(name)!);
}
