/**
 * The libc FFI layer: typed wrappers that throw `ErrnoError` (or return `-errno` on hot paths).
 * This folder is the only place that calls `Deno.dlopen`; nothing outside it sees the raw
 * symbol table.
 *
 * @module
 */
export * from "./constants.ts";
export { check, Errno, errno, ErrnoError, type ErrnoName, errnoName, orNegErrno } from "./errno.ts";
export * from "./event.ts";
export * from "./fs.ts";
export * from "./io.ts";
export * from "./layout.ts";
export * from "./memory.ts";
export * from "./namespace.ts";
export * from "./pointers.ts";
export * from "./socket.ts";
export * from "./seccomp.ts";
