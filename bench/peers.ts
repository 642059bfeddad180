/**
 * Runs the Python peers (bench/peers.py: numpy and PyTorch) when `python3` is
 * there, and returns their JSON lines. Never required: a missing python3, a
 * missing `--allow-run` or a failing script turns into `skipped` lines.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { type Line, messageOf, progress } from "./report.ts";

/** What peers.py is told (see its CFG uses). */
export interface PeerConfig {
  /** Sizes for numpy and torch-cpu. */
  cpu_sizes: number[];
  /** Sizes for torch-cuda. */
  cuda_sizes: number[];
  /** Matmul timing knobs (as bench/matmul.ts). */
  matmul: { reps: number; target_s: number; max_per_sync: number };
  /** Tiny-GPT step: architecture, optimizer, step-count knobs, and whether to run it at all. */
  gpt: {
    run: boolean;
    size: string;
    arch: Record<string, number>;
    opt: Record<string, unknown>;
    steps?: number;
    target_s: number;
    min_steps: number;
    max_steps: number;
  };
}

const SCRIPT = fileURLToPath(new URL("./peers.py", import.meta.url));

/** Runs peers.py; returns its lines (already-printed progress goes to stderr). */
export async function runPeers(config: PeerConfig, timeoutS = 900): Promise<Line[]> {
  let output: Deno.CommandOutput;
  try {
    await Deno.stat(SCRIPT);
    output = await new Deno.Command("python3", {
      args: [SCRIPT, JSON.stringify(config)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(timeoutS * 1000),
    }).output();
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "python3 not found"
      : e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied
      ? "needs --allow-run to start python3"
      : `python3 failed to start: ${messageOf(e)}`;
    return [{ bench: "peers", peer: "torch", skipped: why }];
  }
  const lines: Line[] = [];
  for (const text of new TextDecoder().decode(output.stdout).split("\n")) {
    if (!text.trim()) continue;
    try {
      const line = JSON.parse(text);
      if (line && typeof line === "object" && typeof line.bench === "string") lines.push(line);
      else progress(`peers.py: ${text}`);
    } catch {
      progress(`peers.py: ${text}`);
    }
  }
  if (!output.success) {
    const why = output.signal ? `killed by ${output.signal} (timeout ${timeoutS} s?)` : `exit code ${output.code}`;
    lines.push({ bench: "peers", peer: "python", error: `peers.py ${why}` });
  }
  return lines;
}
