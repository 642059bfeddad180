/**
 * Runs the Python peers (bench/peers.py: numpy and PyTorch) and returns their JSON lines. Never required:
 * no Python, a missing `--allow-run` or a failing script turns into `skipped` or `error` lines.
 *
 * Which Python: the first `python3` on PATH often is not the one with torch (a pyenv or venv one with
 * numpy, next to Debian's /usr/bin/python3 with `python3-torch`), so every candidate is probed (without
 * importing anything: fast) and the first with torch runs the peers, else the first with numpy.
 * `LOWP_PEER_PYTHON=/path/to/python` puts one first. When no candidate has torch, a line says so and lists
 * what was searched.
 *
 * Threads: the peers run with as many threads as the CPU backend has matmul workers
 * (`defaultWorkerCount()`, i.e. `LOWP_CPU_WORKERS`, default 2): OMP/MKL/OpenBLAS/BLIS env variables for the
 * BLAS libraries, `torch.set_num_threads`, threadpoolctl where installed. Every peer line says `threads`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { defaultWorkerCount } from "@lowp/kernels";
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
  /** CPU threads for every peer (default: the CPU backend's worker count). */
  threads?: number;
  /** Set by {@link runPeers} when no Python has torch: why, for peers.py's `skipped` line. */
  torch_missing?: string;
}

/** Environment variable naming a Python to try first. */
export const PEER_PYTHON_ENV = "LOWP_PEER_PYTHON";

/** What a Python interpreter offers the peers (from {@link probePython}). */
export interface PythonProbe {
  /** The command or path as given. */
  readonly path: string;
  /** `sys.executable` after symlinks, to drop duplicates (`python3` and `/usr/bin/python3.11`). */
  readonly executable: string;
  /** Python version, e.g. `3.11.2`. */
  readonly version: string;
  /** torch's version, or null when it is not installed there. */
  readonly torch: string | null;
  /** numpy's version, or null. */
  readonly numpy: string | null;
}

const PROBE = `
import importlib.util, json, os, sys
def version(name):
    if importlib.util.find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception:
        return "?"
print(json.dumps({"executable": os.path.realpath(sys.executable), "version": sys.version.split()[0],
                  "torch": version("torch"), "numpy": version("numpy")}))
`;

/** Probes one interpreter without importing torch or numpy (they are only looked up); null if it does not run. */
export async function probePython(path: string): Promise<PythonProbe | null> {
  try {
    const out = await new Deno.Command(path, {
      args: ["-c", PROBE],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(20_000),
    }).output();
    if (!out.success) return null;
    return { path, ...JSON.parse(new TextDecoder().decode(out.stdout)) };
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) throw e;
    return null; // not there, not executable, or not a Python
  }
}

/**
 * The interpreters to probe, in order: `LOWP_PEER_PYTHON`, every `python3` on PATH (like `which -a`), then
 * /usr/local/bin/python3 and /usr/bin/python3. Duplicates by path are dropped here, by real executable later.
 */
export function pythonCandidates(env: (name: string) => string | undefined = (n) => Deno.env.get(n)): string[] {
  const list: string[] = [];
  const first = env(PEER_PYTHON_ENV);
  if (first) list.push(first);
  for (const dir of (env("PATH") ?? "").split(":")) if (dir) list.push(`${dir.replace(/\/+$/, "")}/python3`);
  list.push("/usr/local/bin/python3", "/usr/bin/python3");
  return [...new Set(list)];
}

/**
 * Picks the Python that runs the peers from the probes (in candidate order, failures as null): the first
 * with torch, else the first with numpy, else the first that runs. `torchMissing` says why torch will be
 * skipped (what was searched), or is undefined when the chosen Python has torch.
 */
export function choosePython(
  probes: readonly (PythonProbe | null)[],
): { python: PythonProbe | null; torchMissing?: string } {
  const seen = new Set<string>();
  const found = probes.filter((p): p is PythonProbe =>
    p !== null && !seen.has(p.executable) && !!seen.add(p.executable)
  );
  const withTorch = found.find((p) => p.torch !== null);
  if (withTorch) return { python: withTorch };
  const python = found.find((p) => p.numpy !== null) ?? found[0] ?? null;
  const searched = found.map((p) => `${p.path} (Python ${p.version}${p.numpy ? `, numpy ${p.numpy}` : ""})`);
  const torchMissing = found.length === 0
    ? "no Python found"
    : `torch is not installed in any Python found: ${searched.join(", ")}; ` +
      `on Debian/Ubuntu \`apt-get install python3-torch\` adds it to /usr/bin/python3, ` +
      `or set ${PEER_PYTHON_ENV} to a Python that has it`;
  return { python, torchMissing };
}

/**
 * Environment variables that cap the threads of the BLAS and OpenMP runtimes numpy and torch use, and
 * `OMP_WAIT_POLICY=PASSIVE` unless `waitPolicy` (the caller's own setting) is given. Why passive: torch's
 * OpenMP workers and OpenBLAS's pthreads are two pools of `threads` threads on the same cores, and OpenMP
 * workers spinning between parallel regions starve the BLAS threads. Measured on a 2-core VM with Debian's
 * torch 1.13 and OpenBLAS, tiny-GPT step at 2 threads: 4,100-5,100 tokens/s spinning, 8,500-13,500 passive
 * (1 thread: 7,900-11,000).
 */
export function threadEnv(threads: number, waitPolicy?: string): Record<string, string> {
  const n = String(threads);
  return {
    OMP_NUM_THREADS: n,
    MKL_NUM_THREADS: n,
    OPENBLAS_NUM_THREADS: n,
    BLIS_NUM_THREADS: n,
    VECLIB_MAXIMUM_THREADS: n,
    NUMEXPR_NUM_THREADS: n,
    OMP_WAIT_POLICY: waitPolicy || "PASSIVE",
  };
}

const SCRIPT = fileURLToPath(new URL("./peers.py", import.meta.url));

/** Runs peers.py with the chosen Python and thread count; returns its lines (progress goes to stderr). */
export async function runPeers(config: PeerConfig, timeoutS = 900): Promise<Line[]> {
  const threads = config.threads ?? defaultWorkerCount();
  let output: Deno.CommandOutput;
  try {
    await Deno.stat(SCRIPT);
    const { python, torchMissing } = choosePython(await Promise.all(pythonCandidates().map(probePython)));
    if (!python) return [{ bench: "peers", peer: "python", skipped: "no Python found (python3 on PATH, /usr/bin)" }];
    progress(
      `peers: ${python.path} (Python ${python.version}, torch ${python.torch ?? "missing"}, ${threads} threads)`,
    );
    output = await new Deno.Command(python.path, {
      args: [SCRIPT, JSON.stringify({ ...config, threads, torch_missing: torchMissing })],
      env: threadEnv(threads, Deno.env.get("OMP_WAIT_POLICY")),
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(timeoutS * 1000),
    }).output();
  } catch (e) {
    const why = e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied
      ? "needs --allow-run (and --allow-env, --allow-read) to find and start python3"
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
