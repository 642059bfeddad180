/**
 * Throttled progress lines for long training runs, e.g.
 * `[tiny] step 40/200 (20.0%) | loss 2.3412 | 312 tok/s | elapsed 0:12 | ETA 0:48`.
 *
 * @module
 */

/** Options for {@linkcode Progress}. */
export interface ProgressOptions {
  /** Number of steps in the run. */
  total: number;
  /** Printed in brackets at the start of each line. */
  label?: string;
  /** Receives each line (without newline); defaults to writing the line plus "\n" to stderr. */
  write?: (line: string) => void;
  /** Clock in milliseconds; defaults to `performance.now`. */
  now?: () => number;
  /** Minimum milliseconds between printed lines (default 1000); the last step always prints. */
  everyMs?: number;
  /** Steps done before the clock starts (a resumed run): the ETA counts only the steps done since. */
  start?: number;
}

/** Formats whole seconds as "m:ss" or "h:mm:ss", e.g. 7 -> "0:07", 3723 -> "1:02:03"; "?" when not finite. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

/** Integers as is; floats with 4 decimals, or 4 significant digits in exponent form when tiny (e.g. a learning rate). */
function formatValue(value: number | string): string {
  if (typeof value === "string" || Number.isInteger(value)) return String(value);
  return value !== 0 && Math.abs(value) < 1e-3 ? value.toExponential(3) : value.toFixed(4);
}

/** On a terminal, redraws one line in place (newline at the end); elsewhere (logs, CI) prints one line each time. */
function writeStderr(total: number): (line: string) => void {
  const encoder = new TextEncoder();
  const tty = Deno.stderr.isTerminal();
  return (line) => {
    const last = line.includes(`step ${total}/${total} `);
    Deno.stderr.writeSync(encoder.encode(tty ? `\r\x1b[2K${line}${last ? "\n" : ""}` : `${line}\n`));
  };
}

/**
 * Reports progress of a run of `total` steps. Fields whose key contains "/" are units and print after the value
 * (`{"tok/s": 312}` -> "312 tok/s"); other fields print as "key value" (`{loss: 2.34}` -> "loss 2.3400").
 */
export class Progress {
  #total: number;
  #label?: string;
  #write: (line: string) => void;
  #now: () => number;
  #everyMs: number;
  #start: number;
  #startStep: number;
  #lastPrint: number;

  /** Starts the clock; the first line prints once `everyMs` has passed (or at the last step). */
  constructor(opts: ProgressOptions) {
    this.#total = opts.total;
    this.#label = opts.label;
    this.#write = opts.write ?? writeStderr(opts.total);
    this.#now = opts.now ?? (() => performance.now());
    this.#everyMs = opts.everyMs ?? 1000;
    this.#startStep = opts.start ?? 0;
    this.#start = this.#lastPrint = this.#now();
  }

  /** Records that `done` steps are complete; prints a line when at least everyMs passed since the last print, and always at the last step. */
  update(done: number, fields?: Record<string, number | string>): void {
    const t = this.#now();
    if (done < this.#total && t - this.#lastPrint < this.#everyMs) return;
    this.#lastPrint = t;
    this.#write(this.format(done, fields));
  }

  /**
   * Formats the line: "[label] step 40/200 (20.0%) | loss 2.3412 | 312 tok/s | elapsed 0:12 | ETA 0:48" — ETA
   * from the average rate of the steps done since the clock started; elapsed is this part's time.
   */
  format(done: number, fields: Record<string, number | string> = {}): string {
    const elapsed = (this.#now() - this.#start) / 1000;
    const pct = this.#total > 0 ? (100 * done / this.#total).toFixed(1) : "100.0";
    const since = done - this.#startStep;
    const eta = since > 0 ? elapsed / since * Math.max(0, this.#total - done) : NaN;
    const parts = [`${this.#label ? `[${this.#label}] ` : ""}step ${done}/${this.#total} (${pct}%)`];
    for (const [key, value] of Object.entries(fields)) {
      parts.push(key.includes("/") ? `${formatValue(value)} ${key}` : `${key} ${formatValue(value)}`);
    }
    parts.push(`elapsed ${formatDuration(elapsed)}`, `ETA ${formatDuration(eta)}`);
    return parts.join(" | ");
  }
}
