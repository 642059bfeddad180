/**
 * Test helpers: two {@link Quantized} records have the same layout (format,
 * shape, meta, and per part name, bits, format and shape), and the same
 * storage (also every code word).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Quantized } from "../spec.ts";

/** Asserts `got` and `want` store the same thing; `what` names the case in a failure. */
export async function sameRecord(got: Quantized, want: Quantized, what: string): Promise<void> {
  sameLayout(got, want, what);
  for (let k = 0; k < want.parts.length; k++) {
    const [a, b] = [await got.parts[k].codes.data(), await want.parts[k].codes.data()];
    const bad = b.findIndex((v, i) => v !== a[i]);
    assert.equal(bad, -1, `${what}: part ${want.parts[k].name} word ${bad} is ${a[bad]}, want ${b[bad]}`);
  }
}

/** Asserts `got` and `want` have the same format, shape, meta and parts (names, bits, formats, shapes). */
export function sameLayout(got: Quantized, want: Quantized, what: string): void {
  assert.equal(got.format, want.format, `${what}: format`);
  assert.deepEqual([...got.shape], [...want.shape], `${what}: shape`);
  assert.deepEqual(got.meta, want.meta, `${what}: meta`);
  const head = (q: Quantized) =>
    q.parts.map((p) => ({ name: p.name, bits: p.bits, format: p.format, shape: p.codes.shape }));
  assert.deepEqual(head(got), head(want), `${what}: parts`);
}
