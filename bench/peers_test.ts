import assert from "node:assert/strict";
import { choosePython, PEER_PYTHON_ENV, pythonCandidates, type PythonProbe, runPeers, threadEnv } from "./peers.ts";

const probe = (path: string, executable: string, torch: string | null, numpy: string | null): PythonProbe => ({
  path,
  executable,
  version: "3.11.2",
  torch,
  numpy,
});

Deno.test("pythonCandidates: LOWP_PEER_PYTHON, then each python3 on PATH in order, then /usr/local/bin and /usr/bin", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.deepEqual(pythonCandidates(env({ PATH: "/root/.pyenv/shims:/usr/bin/:/bin" })), [
    "/root/.pyenv/shims/python3",
    "/usr/bin/python3",
    "/bin/python3",
    "/usr/local/bin/python3",
  ]);
  assert.deepEqual(pythonCandidates(env({ [PEER_PYTHON_ENV]: "/opt/venv/bin/python", PATH: "" })), [
    "/opt/venv/bin/python",
    "/usr/local/bin/python3",
    "/usr/bin/python3",
  ]);
});

Deno.test("choosePython: the first with torch even when an earlier one has numpy; duplicates count once", () => {
  const pyenv = probe("/root/.pyenv/shims/python3", "/root/.pyenv/versions/3.11.7/bin/python3.11", null, "2.4.6");
  const debian = probe("/usr/bin/python3", "/usr/bin/python3.11", "1.13.1", "1.24.2");
  const same = probe("/bin/python3", "/usr/bin/python3.11", "1.13.1", "1.24.2");
  assert.deepEqual(choosePython([pyenv, null, debian, same]), { python: debian });
});

Deno.test("choosePython: without torch anywhere, the first with numpy, and a reason listing what was searched", () => {
  const bare = probe("/bin/python3", "/usr/bin/python3.11", null, null);
  const pyenv = probe("/root/.pyenv/shims/python3", "/root/.pyenv/versions/3.11.7/bin/python3.11", null, "2.4.6");
  const { python, torchMissing } = choosePython([bare, pyenv, null]);
  assert.equal(python, pyenv);
  assert.match(torchMissing!, /torch is not installed in any Python found: \/bin\/python3 \(Python 3\.11\.2\), /);
  assert.match(torchMissing!, /\/root\/\.pyenv\/shims\/python3 \(Python 3\.11\.2, numpy 2\.4\.6\)/);
  assert.match(torchMissing!, /apt-get install python3-torch/);
  assert.deepEqual(choosePython([null, null]), { python: null, torchMissing: "no Python found" });
});

Deno.test("threadEnv caps every BLAS/OpenMP runtime at the given count", () => {
  const env = threadEnv(3);
  for (const name of ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]) assert.equal(env[name], "3");
  assert.equal(env.OMP_WAIT_POLICY, "PASSIVE");
  assert.equal(threadEnv(2, "ACTIVE").OMP_WAIT_POLICY, "ACTIVE"); // the caller's own setting wins
});

Deno.test("runPeers: every CPU peer line says its threads, and a missing torch is a skipped line with the reason", async () => {
  const config = {
    cpu_sizes: [32],
    cuda_sizes: [],
    matmul: { reps: 1, target_s: 0.001, max_per_sync: 1 },
    gpt: { run: false, size: "", arch: {}, opt: {}, target_s: 0, min_steps: 0, max_steps: 0 },
    threads: 3,
    fake_quant: { run: false },
    gptq: { run: true, sizes: [64], sequences: 4, tokens: 8, batch: 2, reps: 1 },
  };
  const lines = await runPeers(config, 120);
  if (lines.length === 1 && lines[0].skipped) return console.error(`peers: skipped (${lines[0].skipped})`);
  const measured = lines.filter((l) => typeof l.value === "number" && l.backend !== "torch-cuda");
  for (const line of measured) assert.equal(line.threads, 3, JSON.stringify(line));
  const torch = lines.filter((l) => l.backend === "torch-cpu");
  const torchSkip = lines.find((l) => l.bench === "peers" && l.peer === "torch");
  assert.ok(torch.length > 0 || typeof torchSkip?.skipped === "string", JSON.stringify(lines));
  if (torch.length > 0) {
    const gptq = torch.find((l) => l.bench === "gptq");
    assert.equal(gptq?.size, "64x64", JSON.stringify(lines));
    assert.ok(typeof gptq?.value === "number" && gptq.value > 0, JSON.stringify(gptq));
  }
});
