/**
 * What `deno task ptq` writes and prints: the output folder (a run folder of
 * its own plus `report.json`, and the packed weights with `--pack`) and the
 * per-layer table.
 *
 * @module
 */
import { join } from "node:path";
import { type GPT, type NamePattern, saveTensors, type Tensor } from "@lowp/core";
import {
  PACKED_LAYOUT,
  PACKED_LAYOUT_KEY,
  packedBytes,
  packedEntries,
  type PackedTensor,
  type WeightQuantSpec,
} from "@lowp/formats";
import { type RawTensor, writeSafetensors } from "@lowp/core";
import { CHECKPOINT_FILE } from "./run_dir.ts";
import { BUFFER_PREFIX } from "./run_state.ts";
import type { LMRecipe } from "./schema.ts";
import { packedWeightBytes, type PtqLayerReport, ptqLayers } from "./ptq.ts";

/** `report.json`: the settings, the losses, the bytes and every layer's report. */
export interface PtqSummary {
  /** The run folder quantized. */
  run: string;
  /** The output folder. */
  out: string;
  /** `rtn`, `gptq` or `awq`. */
  method: string;
  /** Weight format. */
  format: string;
  /** Its scale sharing (`channel`, `group:N`, `block:N`, `none`). */
  granularity: string;
  /** Activation format (linear inputs, per tensor), or null. */
  act_format: string | null;
  /** Calibration sequences. */
  calib_samples: number;
  /** Seed of the calibration draw. */
  seed: number;
  /** GPTQ's settings. */
  gptq?: { block_size: number; damp: number; act_order: boolean };
  /** Backend that ran it. */
  backend: { name: string; adapter: string };
  /** Validation loss of the checkpoint. */
  val_loss_before: number;
  /** Validation loss after quantization. */
  val_loss_after: number;
  /** Seconds for calibration, quantization and both evaluations. */
  seconds: number;
  /** One report per quantized layer. */
  layers: PtqLayerReport[];
  /** Bytes of the quantized layers' weights: as f32, and packed in the format (codes and scales). */
  bytes: { f32: number; quantized: number };
}

/** What {@link writePtqFolder} stores besides the model. */
export interface PtqFolderOptions {
  /** The weight format (bytes of a layer without a record are those of its layout in this format). */
  spec: WeightQuantSpec;
  /** Write `weights.packed.safetensors` from `records`. */
  pack: boolean;
  /** Linear layers left in f32. */
  skip?: NamePattern;
  /**
   * Each quantized layer's packed storage by parameter name (`h.0.mlp.c_fc.weight`), as the method made it
   * (`PtqOptions.onRecord`): what `--pack` writes and the bytes count. Required for every layer with `pack`.
   */
  records?: ReadonlyMap<string, PackedTensor>;
}

/**
 * Writes the output folder through a temporary folder and a rename, so it
 * appears only complete (an existing folder of that name is replaced then).
 * Fills in `bytes` (from the records; a layer without one counts the bytes of
 * its layout in the format, which depend only on shapes and bits) and returns
 * the summary written. With `pack`, the packed file holds the records as
 * they are: never a re-quantization of the model's weights.
 */
export async function writePtqFolder(
  out: string,
  recipe: LMRecipe,
  model: GPT,
  summary: PtqSummary,
  opts: PtqFolderOptions,
): Promise<PtqSummary> {
  const tmp = `${out}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const layers = new Set(ptqLayers(model, opts.skip).map(([name]) => `${name}.weight`));
    const bytes = { f32: 0, quantized: 0 };
    const packed = new Map<string, RawTensor>();
    const metadata: Record<string, string> = { [PACKED_LAYOUT_KEY]: PACKED_LAYOUT };
    for (const [name, t] of model.namedParameters()) {
      if (!layers.has(name)) {
        if (opts.pack) packed.set(name, await rawF32(t));
        continue;
      }
      const p = opts.records?.get(name);
      bytes.f32 += 4 * t.size;
      bytes.quantized += p ? packedBytes(p) : await packedWeightBytes(t, opts.spec);
      if (!opts.pack) continue;
      if (!p) throw new Error(`ptq --pack: no stored record of ${name}`);
      const entries = packedEntries(name, p);
      for (const [key, raw] of entries.tensors) packed.set(key, raw);
      metadata[entries.metadata[0]] = entries.metadata[1];
    }
    const written = { ...summary, bytes };
    // Buffers (AWQ's input scales) go into both files under the checkpoint's names.
    const buffers = model.namedBuffers().map(([n, t]): [string, Tensor] => [BUFFER_PREFIX + n, t]);
    if (opts.pack) { for (const [name, t] of buffers) packed.set(name, await rawF32(t)); }
    await saveTensors(join(tmp, CHECKPOINT_FILE), [...model.namedParameters(), ...buffers], {
      step: "0",
      ptq: summary.method,
    });
    if (opts.pack) await writeSafetensors(join(tmp, "weights.packed.safetensors"), packed, metadata);
    await Deno.writeTextFile(
      join(tmp, "config.json"),
      JSON.stringify({ recipe, ptq: withoutLayers(written) }, null, 2),
    );
    await Deno.writeTextFile(join(tmp, "report.json"), JSON.stringify(written, null, 2));
    await Deno.remove(out, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, out);
    return written;
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

function withoutLayers(s: PtqSummary): Omit<PtqSummary, "layers"> {
  const { layers: _, ...rest } = s;
  return rest;
}

async function rawF32(t: Tensor): Promise<RawTensor> {
  const data = await t.data();
  return { dtype: "F32", shape: [...t.shape], data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

const sci = (x: number) => x === 0 ? "0" : Number.isFinite(x) ? x.toExponential(3) : String(x);

/** The printed report: a header, one row per layer, and the totals. */
export function ptqTable(s: PtqSummary): string {
  const rows = [["layer", "shape", "rel err", "rtn rel err", "seconds"]];
  for (const l of s.layers) {
    rows.push([l.name, `[${l.shape.join(",")}]`, sci(l.relError), sci(l.rtnRelError), l.seconds.toFixed(2)]);
  }
  const width = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = [
    `${s.method} ${s.format} ${s.granularity}${s.act_format ? `, activations ${s.act_format} per tensor` : ""}, ` +
    `${s.calib_samples} calibration sequences (seed ${s.seed}), on ${s.backend.name}: ${s.run} → ${s.out}`,
    ...rows.map((r) => r.map((cell, c) => c < 2 ? cell.padEnd(width[c]) : cell.padStart(width[c])).join("  ")),
  ];
  const ratio = s.bytes.quantized ? (s.bytes.f32 / s.bytes.quantized).toFixed(2) : "-";
  lines.push(
    `val loss ${s.val_loss_before.toFixed(4)} → ${s.val_loss_after.toFixed(4)} ` +
      `(${s.val_loss_after >= s.val_loss_before ? "+" : ""}${(s.val_loss_after - s.val_loss_before).toFixed(4)}); ` +
      `quantized weights ${s.bytes.f32} → ${s.bytes.quantized} bytes (${ratio}×); ${s.seconds.toFixed(1)} s`,
  );
  return lines.join("\n");
}
