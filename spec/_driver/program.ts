/**
 * A program of the project (an example, a fixture) run as its own process, serving on a socket in
 * a temporary directory: the library's specs drive it at the wire or from a guest, while this
 * test's front end (which waits synchronously) or QEMU runs apart from it.
 *
 * @module
 */
import { join } from "node:path";
import { PROJECT_ROOT } from "./daemon.ts";

/** A running program; disposing of it kills it (if still running) and removes its directory. */
export interface Program extends AsyncDisposable {
  /** The socket path it was given as its first argument. */
  socket: string;
  child: Deno.ChildProcess;
  /** Its stderr, once it has exited. */
  log(): Promise<string>;
  /** Resolves when its socket exists (it listens), or rejects after `ms`. */
  listening(ms?: number): Promise<void>;
}

/** Runs `deno run -A <entry> <socket> [...args]` (entry relative to the project). */
export async function startProgram(
  entry: string,
  env: Record<string, string> = {},
  args: string[] = [],
): Promise<Program> {
  const dir = await Deno.makeTempDir({ prefix: "program-" });
  const socket = join(dir, "vfs.sock");
  const logPath = join(dir, "stderr.log");
  const logFile = await Deno.open(logPath, { write: true, create: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(PROJECT_ROOT, entry), socket, ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Copied to a file as it comes, so that a chatty program never blocks on a full pipe.
  const copying = child.stderr.pipeTo(logFile.writable).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  const log = async (): Promise<string> => {
    await child.status;
    await copying;
    return Deno.readTextFileSync(logPath);
  };
  return {
    socket,
    child,
    log,
    async listening(ms = 30_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        try {
          Deno.lstatSync(socket);
          return;
        } catch { /* not yet */ }
        if (exited) throw new Error(`${entry} exited before listening:\n${await log()}`);
        if (Date.now() > deadline) throw new Error(`${entry} did not listen within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.status;
      await copying;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
