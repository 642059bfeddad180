/**
 * Packed dequantize vs fake quantization, same tensor, same run: elements/s
 * of `QuantTensor.dequantize()` (a kernel reading the packed codes and
 * scales) against `quantizer.quantDequant(x)` (quantize and dequantize from
 * f32), which gives the same bits. One line per format:
 * `{"bench": "packed_dequant", "format", "options", "elements", "value"
 * (dequantize, elements/s), "quant_dequant" (elements/s),
 * "ratio_vs_quant_dequant" (> 1: dequantize is faster), "packed_bytes"
 * (QuantTensor.byteSize), "f32_bytes", ...}`. Shapes and timing as
 * bench/fake_quant.ts.
 *
 * @module
 */
import { type Backend, randn } from "@lowp/core";
import type { QuantTensorOptions } from "@lowp/formats";
import { FAKE_QUANT_SHAPE, FAKE_QUANT_SOFTWARE_SHAPE, type FakeQuantTiming, measureCalls } from "./fake_quant.ts";
import { emit, type Line, messageOf, progress, round } from "./report.ts";

/** One measured format and its options. */
export interface PackedDequantCase {
  /** Format name, as `parseFormat` takes it. */
  format: string;
  /** Quantizer options (granularity, double quantization). */
  opts: QuantTensorOptions;
  /** The options as the line shows them. */
  label: string;
}

/** The formats measured: the QLoRA base weight, ECO's FP8 and INT4-g128 weights, the 4-bit block formats. */
export const PACKED_DEQUANT_CASES: readonly PackedDequantCase[] = [
  { format: "nf4", opts: { doubleQuant: true }, label: "doubleQuant" },
  { format: "nf4", opts: {}, label: "" },
  { format: "e4m3", opts: {}, label: "" },
  { format: "int4", opts: { granularity: { kind: "group", size: 128 } }, label: "group:128" },
  { format: "mxfp4", opts: {}, label: "" },
  { format: "nvfp4", opts: {}, label: "" },
];

/** Emits one `packed_dequant` line per case for `backend`; `head` carries backend/adapter fields. */
export async function benchPackedDequant(
  backend: Backend,
  kind: "cpu" | "software" | "hardware",
  head: Line,
  t: FakeQuantTiming,
): Promise<void> {
  const shape = kind === "software" ? FAKE_QUANT_SOFTWARE_SHAPE : FAKE_QUANT_SHAPE;
  const elements = shape.reduce((a, d) => a * d, 1);
  const formats = await import("@lowp/formats");
  const x = randn(shape, { seed: 11, stream: 0 }, 1, { backend }).keep();
  try {
    for (const c of PACKED_DEQUANT_CASES) {
      const line: Line = { ...head, bench: "packed_dequant", format: c.format, options: c.label, elements, shape };
      progress(`${backend.name} packed_dequant ${c.format} ${c.label}`);
      try {
        const quantizer = formats.parseFormat(c.format);
        const qt = formats.QuantTensor.fromTensor(x, quantizer, c.opts).keep();
        try {
          const packed = await measureCalls(backend, () => qt.dequantize(), elements, t);
          const fake = await measureCalls(backend, () => quantizer.quantDequant(x, c.opts), elements, t);
          emit({
            ...line,
            value: round(packed.value),
            unit: "elements/s",
            ms_per_call: round(packed.msPerCall),
            quant_dequant: round(fake.value),
            quant_dequant_ms_per_call: round(fake.msPerCall),
            ratio_vs_quant_dequant: round(packed.value / fake.value, 3),
            packed_bytes: qt.byteSize,
            f32_bytes: 4 * elements,
            reps: t.reps,
          });
        } finally {
          qt.dispose();
        }
      } catch (e) {
        emit({ ...line, error: messageOf(e) });
      }
    }
  } finally {
    x.dispose();
  }
}
