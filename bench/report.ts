/**
 * Output helpers for the benchmarks: the machine description stamped on every
 * line, JSON lines on stdout, progress on stderr, and small statistics.
 *
 * @module
 */
import { cpus } from "node:os";

/** One measurement (or skip/error notice), printed as one JSON line. */
export type Line = Record<string, unknown> & { bench: string };

/**
 * The CPU model from /proc/cpuinfo (`model name`, else ARM's `Hardware`/`CPU part`). Deno 2 lets a
 * program read /proc only with --allow-all, so without it this asks `node:os` `cpus()` (--allow-sys),
 * which parses the same file on Linux.
 */
function cpuModel(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    for (const key of ["model name", "Hardware", "Processor", "cpu model", "CPU part"]) {
      const m = info.match(new RegExp(`^${key}\\s*:\\s*(.+)$`, "m"));
      if (m) return m[1].trim();
    }
  } catch {
    // not Linux, or no permission for /proc
  }
  try {
    const model = cpus()[0]?.model?.trim();
    if (model) return model;
  } catch {
    // no --allow-sys
  }
  return "unknown cpu";
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown-host";
  }
}

/** `hostname, os, arch, cpu model, N cores` (cores = navigator.hardwareConcurrency). */
export const machine: string = [
  hostname(),
  Deno.build.os,
  Deno.build.arch,
  cpuModel(),
  `${navigator.hardwareConcurrency} cores`,
].join(", ");

/** Prints one JSON line on stdout, with the machine description added after `bench`/`backend`/`adapter`. */
export function emit(line: Line): void {
  const { bench, backend, adapter, ...rest } = line;
  const ordered: Record<string, unknown> = { bench };
  if (backend !== undefined) ordered.backend = backend;
  if (adapter !== undefined) ordered.adapter = adapter;
  ordered.machine = machine;
  console.log(JSON.stringify({ ...ordered, ...rest }));
}

/** Progress and notes, on stderr. */
export function progress(message: string): void {
  console.error(`[bench] ${message}`);
}

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Rounds to `digits` significant digits (keeps the JSON readable). */
export function round(x: number, digits = 4): number {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)) : x;
}

/** The message of an error. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
