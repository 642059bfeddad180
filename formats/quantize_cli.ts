/**
 * `deno task quantize --format F [--granularity tensor|channel:AXIS|group:G] [--axis N]
 * [--rounding nearest|nearest-away|stochastic] [--seed S] [--pack] [--json] [--backend cpu|webgpu|auto]
 * IN.safetensors OUT.safetensors`
 *
 * Quantizes every F32 tensor of a safetensors file (see quantize_file.ts for
 * what is written) and prints a per-tensor table (shape, elements, MSE, SQNR,
 * max abs error, bytes before → after) and a total line, or with `--json` one
 * JSON object. `--axis N` runs the blocks of a block format (MX, NVFP4, NF4)
 * or the groups of `group:G` along axis N of every tensor (default -1, the
 * last; negative counts from the end). Bad input (unknown format, granularity
 * a format does not take, an axis a format or tensor does not have, bad seed, unreadable or hostile file, OUT = IN, a tensor whose shape does
 * not fit the format's blocks) is one `error: ...` line with exit code 1, and
 * nothing is written.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { backendChoiceFromEnv } from "@lowp/core";
import type { Rounding } from "./element.ts";
import { formatTable, reportJson } from "./quantize_report.ts";
import { QuantizeError, quantizeFile, type QuantizeFileOptions } from "./quantize_file.ts";

const USAGE = "usage: deno task quantize --format F [--granularity tensor|channel:AXIS|group:G] [--axis N] " +
  "[--rounding nearest|nearest-away|stochastic] [--seed S] [--pack] [--json] [--backend cpu|webgpu|auto] " +
  "IN.safetensors OUT.safetensors";

function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (/^--(seed|granularity|axis|format|rounding|backend)$/.test(args[i]) && /^-\d/.test(args[i + 1] ?? "")) {
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
        axis: { type: "string" },
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
  if (values.axis !== undefined && !/^-?\d+$/.test(values.axis)) {
    throw new QuantizeError(`--axis '${values.axis}': expected an integer (negative counts from the last axis)`);
  }
  const opts: QuantizeFileOptions = {
    format: values.format,
    granularity: values.granularity,
    axis: values.axis === undefined ? undefined : Number(values.axis),
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
