/**
 * Worker entry of the sandbox supervisor: joins the daemon's mount namespace on this thread and
 * makes the shared directory its root (a bind mount of it on itself, `pivot_root(".", ".")`,
 * the old root detached). Posts "" when done, or why not. The thread is thrown away afterwards.
 *
 * @module
 */
import {
  bindOnItself,
  chdir,
  joinMountNamespace,
  pivotRootHere,
  unshareFsRaw,
} from "../ffi/mod.ts";

declare const self: {
  onmessage: ((e: MessageEvent<{ nsPath: string; share: string }>) => void) | null;
  postMessage(msg: string): void;
};

self.onmessage = (e) => {
  self.onmessage = null;
  const { nsPath, share } = e.data;
  try {
    // setns refuses a thread that shares its working directory with others.
    const r = unshareFsRaw();
    if (r < 0) throw new Error(`unshare(CLONE_FS): errno ${-r}`);
    joinMountNamespace(nsPath);
    if (share !== "/") {
      bindOnItself(share);
      chdir(share);
      pivotRootHere();
    }
    self.postMessage("");
  } catch (err) {
    self.postMessage(err instanceof Error ? err.message : String(err));
  }
};
