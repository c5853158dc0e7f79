/**
 * Worker entry of the sandbox supervisor: joins the daemon's mount namespace on this thread,
 * and there, first makes the shared directory a mount of its own (a recursive bind mount of it
 * on itself, before the daemon opens it: the daemon's descriptors then belong to the mount that
 * becomes the root, submounts included), then, when told, makes it the root
 * (`pivot_root(".", ".")`, the old root detached). Posts "" after each step, or why it failed.
 * The thread is thrown away afterwards.
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

/** The steps, in order. */
export type PivotStep = { step: "bind"; nsPath: string; share: string } | { step: "pivot" };

declare const self: {
  onmessage: ((e: MessageEvent<PivotStep>) => void) | null;
  postMessage(msg: string): void;
};

let share = "/";
self.onmessage = (e) => {
  const m = e.data;
  try {
    if (m.step === "bind") {
      // setns refuses a thread that shares its working directory with others.
      const r = unshareFsRaw();
      if (r < 0) throw new Error(`unshare(CLONE_FS): errno ${-r}`);
      joinMountNamespace(m.nsPath);
      share = m.share;
      if (share !== "/") bindOnItself(share);
    } else if (share !== "/") {
      chdir(share);
      pivotRootHere();
    }
    self.postMessage("");
  } catch (err) {
    self.postMessage(err instanceof Error ? err.message : String(err));
  }
};
