import assert from "node:assert/strict";
import { formatDuration, Progress } from "./progress.ts";

/** A Progress on a fake clock (milliseconds) that collects its lines. */
function setup(total: number, everyMs?: number) {
  const clock = { t: 5_000 };
  const lines: string[] = [];
  const progress = new Progress({ total, label: "tiny", write: (l) => lines.push(l), now: () => clock.t, everyMs });
  return { clock, lines, progress };
}

Deno.test("formatDuration", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(7), "0:07");
  assert.equal(formatDuration(59.6), "1:00");
  assert.equal(formatDuration(125), "2:05");
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatDuration(36000), "10:00:00");
  assert.equal(formatDuration(NaN), "?");
});

Deno.test("format computes percentage, fields, elapsed and ETA from the average rate", () => {
  const { clock, progress } = setup(200);
  clock.t += 12_000; // 40 steps in 12 s -> 0.3 s/step -> 160 steps left take 48 s
  assert.equal(
    progress.format(40, { loss: 2.34123, "tok/s": 312, lr: 3e-4, phase: "warmup" }),
    "[tiny] step 40/200 (20.0%) | loss 2.3412 | 312 tok/s | lr 3.000e-4 | phase warmup | elapsed 0:12 | ETA 0:48",
  );
  assert.equal(progress.format(0), "[tiny] step 0/200 (0.0%) | elapsed 0:12 | ETA ?");
  assert.equal(progress.format(200), "[tiny] step 200/200 (100.0%) | elapsed 0:12 | ETA 0:00");
});

Deno.test("format without label", () => {
  const p = new Progress({ total: 10, now: () => 0 });
  assert.equal(p.format(5), "step 5/10 (50.0%) | elapsed 0:00 | ETA 0:00");
});

Deno.test("update is throttled to everyMs and always prints the last step", () => {
  const { clock, lines, progress } = setup(10, 1000);
  const steps: number[] = [];
  for (let step = 1; step <= 10; step++) {
    clock.t += 300;
    progress.update(step);
    if (lines.length > steps.length) steps.push(step);
  }
  // prints at 1200 ms (step 4), 2400 ms (step 8), and the last step at 3000 ms
  assert.deepEqual(steps, [4, 8, 10]);
  assert.equal(lines[0], "[tiny] step 4/10 (40.0%) | elapsed 0:01 | ETA 0:02");
  assert.equal(lines[2], "[tiny] step 10/10 (100.0%) | elapsed 0:03 | ETA 0:00");
});

Deno.test("update passes fields and everyMs 0 prints every step", () => {
  const { clock, lines, progress } = setup(3, 0);
  for (let step = 1; step <= 3; step++) {
    clock.t += 1000;
    progress.update(step, { loss: 1.5 });
  }
  assert.equal(lines.length, 3);
  assert.equal(lines[1], "[tiny] step 2/3 (66.7%) | loss 1.5000 | elapsed 0:02 | ETA 0:01");
});

Deno.test("after a resume the ETA counts only the steps done since the clock started", () => {
  const clock = { t: 0 };
  const progress = new Progress({ total: 200, start: 150, write: () => {}, now: () => clock.t });
  clock.t += 10_000; // 10 steps (150 -> 160) in 10 s -> 1 s/step -> 40 steps left take 40 s
  assert.equal(progress.format(160), "step 160/200 (80.0%) | elapsed 0:10 | ETA 0:40");
  assert.equal(progress.format(150), "step 150/200 (75.0%) | elapsed 0:10 | ETA ?");
});
