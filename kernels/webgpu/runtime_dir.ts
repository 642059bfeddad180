/**
 * A private `XDG_RUNTIME_DIR` for the WebGPU stack. On Linux, requesting an adapter makes the Vulkan and
 * EGL loaders probe for a Wayland display, and libwayland prints `error: XDG_RUNTIME_DIR is invalid or not
 * set in the environment.` (twice per process) when the variable is unset, as it is in containers, CI and
 * SSH sessions without a login manager. Nothing is wrong then: compute needs no display.
 *
 * {@link ensureRuntimeDir} sets the variable, only when it is unset, to a new directory of this process
 * (mode 0700, so no other user can place a socket there) and removes that directory when the process
 * unloads. It asks for no permission: without env access to the variable or write access it leaves
 * things as they are (the message then stays).
 *
 * @module
 */

/** The variable libwayland reads. */
export const RUNTIME_DIR_ENV = "XDG_RUNTIME_DIR";

/** Operating systems whose graphics loaders may probe Wayland. */
const PROBING_OS: readonly string[] = ["linux", "freebsd", "openbsd", "netbsd"];

let created: string | undefined;

/** Whether `descriptor` is already granted; never prompts (and false where permissions cannot be queried). */
function granted(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Sets `XDG_RUNTIME_DIR` to a new private directory when it is unset (see the module notes) and returns
 * that directory; returns `undefined` and changes nothing when the variable is set, on an OS without
 * Wayland, or without env permission for the variable or write permission.
 */
export function ensureRuntimeDir(): string | undefined {
  if (created !== undefined) return created;
  if (!PROBING_OS.includes(Deno.build.os)) return undefined;
  if (!granted({ name: "env", variable: RUNTIME_DIR_ENV }) || !granted({ name: "write" })) return undefined;
  if (Deno.env.get(RUNTIME_DIR_ENV) !== undefined) return undefined;
  const dir = Deno.makeTempDirSync({ prefix: "lowp-runtime-" });
  Deno.chmodSync(dir, 0o700);
  Deno.env.set(RUNTIME_DIR_ENV, dir);
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // already gone: nothing to clean up
    }
  });
  return created = dir;
}
