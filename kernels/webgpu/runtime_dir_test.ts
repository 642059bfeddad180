import assert from "node:assert/strict";
import { RUNTIME_DIR_ENV } from "./runtime_dir.ts";

const backendUrl = new URL("./backend.ts", import.meta.url).href;
const runtimeDirUrl = new URL("./runtime_dir.ts", import.meta.url).href;
const config = new URL("../../deno.json", import.meta.url).pathname;

/** Runs `source` in a fresh Deno with `flags`, XDG_RUNTIME_DIR removed from its environment. */
async function runWithoutRuntimeDir(source: string, flags: string[]) {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(script, source);
    const env = Deno.env.toObject();
    delete env[RUNTIME_DIR_ENV];
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--unstable-webgpu", "--config", config, ...flags, script],
      env,
      clearEnv: true,
      stdin: "null",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
  } finally {
    await Deno.remove(script);
  }
}

Deno.test("requesting a WebGPU adapter with XDG_RUNTIME_DIR unset prints no XDG_RUNTIME_DIR error", async () => {
  const source = `
    import { createWebGpuBackend } from "${backendUrl}";
    const { backend, reason } = await createWebGpuBackend();
    console.log(JSON.stringify({ adapter: backend?.adapter ?? null, reason, dir: Deno.env.get("${RUNTIME_DIR_ENV}") }));
  `;
  // The permissions `deno task train` and `deno task quantize` grant.
  const run = await runWithoutRuntimeDir(source, ["--allow-read", "--allow-write", "--allow-env"]);
  assert.equal(run.code, 0, run.stderr);
  const { adapter, reason, dir } = JSON.parse(run.stdout);
  if (adapter === null) return console.error(`webgpu: skipped (${reason})`);
  assert.doesNotMatch(run.stderr, /XDG_RUNTIME_DIR/);
  assert.match(dir, /lowp-runtime-/);
  assert.ok(!(await Deno.stat(dir).then(() => true, () => false)), `${dir} was left behind`);
});

Deno.test("ensureRuntimeDir: a private directory only where the variable is unset and the permissions allow", async () => {
  const source = `
    import { ensureRuntimeDir } from "${runtimeDirUrl}";
    const dir = ensureRuntimeDir();
    const mode = dir ? (Deno.statSync(dir).mode! & 0o777).toString(8) : null;
    console.log(JSON.stringify({ dir: dir ?? null, mode, again: ensureRuntimeDir() === dir }));
  `;
  const granted = await runWithoutRuntimeDir(source, ["--allow-read", "--allow-write", "--allow-env"]);
  const made = JSON.parse(granted.stdout);
  if (Deno.build.os === "linux") {
    assert.match(made.dir, /lowp-runtime-/, granted.stderr);
    assert.equal(made.mode, "700");
    assert.ok(made.again);
  }
  // Without write permission nothing is created and nothing prompts.
  const readOnly = await runWithoutRuntimeDir(source, ["--allow-read", "--allow-env"]);
  assert.equal(readOnly.code, 0, readOnly.stderr);
  assert.equal(JSON.parse(readOnly.stdout).dir, null);
  // A variable that is set is left alone.
  const set = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--config", config, source],
    env: { [RUNTIME_DIR_ENV]: "/run/user/4242" },
  }).output();
  assert.equal(JSON.parse(new TextDecoder().decode(set.stdout)).dir, null);
});
