/**
 * Formats by name: every name the project accepts (API, YAML, CLI) resolves
 * here to a {@link Quantizer}.
 *
 * @module
 */
import { floatQuantizer } from "./float.ts";
import { flexQuantizer } from "./flex.ts";
import { intQuantizer } from "./int.ts";
import { mxQuantizer } from "./mx.ts";
import { nf4Quantizer } from "./nf4.ts";
import { nvfp4Quantizer } from "./nvfp4.ts";
import { scaleQuantizer } from "./scale_quantizer.ts";
import type { Quantizer } from "./spec.ts";

const FAMILIES = [
  scaleQuantizer,
  floatQuantizer,
  mxQuantizer,
  nvfp4Quantizer,
  intQuantizer,
  nf4Quantizer,
  flexQuantizer,
];

/** Every fixed format name (generic `eXmY` names are accepted too). */
export const FORMAT_NAMES: readonly string[] = [
  "e4m3",
  "e5m2",
  "e2m3",
  "e3m2",
  "e2m1",
  ...[2, 3, 4, 5, 6, 7, 8].flatMap((k) => [`int${k}`, `uint${k}`]),
  "mxfp8_e4m3",
  "mxfp8_e5m2",
  "mxfp6_e2m3",
  "mxfp6_e3m2",
  "mxfp4",
  "mxint8",
  "nvfp4",
  "nf4",
  "flex16+5",
  "e8m0",
  "ue4m3",
  "ue5m3",
];

const cache = new Map<string, Quantizer>();

/**
 * The quantizer for a format name; throws one error listing the known names
 * when the name is unknown.
 *
 * @example
 * ```ts
 * import { parseFormat } from "@lowp/formats";
 * import { tensor } from "@lowp/core";
 * const y = parseFormat("e2m1").quantDequant(tensor([0.3, 2.6, 9])); // [0.5, 3, 6]
 * ```
 */
export function parseFormat(name: string): Quantizer {
  const known = cache.get(name);
  if (known) return known;
  for (const family of FAMILIES) {
    const q = family(name);
    if (q) {
      cache.set(name, q);
      return q;
    }
  }
  throw new Error(
    `unknown format '${name}': expected one of ${FORMAT_NAMES.join(", ")}, or eXmY (1 <= X <= 8, 0 <= Y <= 23)`,
  );
}
