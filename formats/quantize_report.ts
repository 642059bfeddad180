/**
 * The per-tensor table and the JSON that `deno task quantize` prints.
 *
 * @module
 */
import type { QuantizeReport, TensorReport } from "./quantize_file.ts";

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
    `${o.format}${o.granularity ? ` ${o.granularity}` : ""}${
      o.axis === undefined ? "" : ` along axis ${o.axis}`
    }, rounding ${o.rounding}${o.rounding === "stochastic" ? ` (seed ${o.seed})` : ""}, ${
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
