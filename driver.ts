/**
 * deno-virtiofsd's driver: the other side of a vhost-user-fs device, as a library. It plays the
 * VMM and the guest's virtio-fs driver at once, so that any vhost-user-fs back end (ours, C or
 * Rust virtiofsd) can be driven and tested at the wire without a VM:
 *
 * - {@linkcode GuestRam}: guest memory in memfd regions, shared with the back end;
 * - {@linkcode GuestQueue}: the driver side of a split virtqueue (descriptor and indirect tables,
 *   avail and used rings, EVENT_IDX), with raw access for hostile tests;
 * - {@linkcode VhostUserFrontend}: the vhost-user front end (features, memory table, vrings,
 *   kicks and calls, the back-end request channel);
 * - {@linkcode FuseClient}: a FUSE client with a typed call for every opcode the device serves.
 *
 * The protocol's vocabulary (FUSE ABI, vhost-user codes and payloads, virtio and ring layout) is
 * exported as the namespaces `fuse`, `vhostUser` and `virtio`.
 *
 * @example
 * ```ts ignore
 * import { FuseClient, FUSE_ROOT_ID, O_RDWR, VhostUserFrontend } from "./driver.ts";
 * const fe = await VhostUserFrontend.connect("/tmp/vfs.sock", { queueSize: 1024 });
 * const fuse = new FuseClient(fe);
 * fuse.init();
 * const { entry, open } = fuse.create(FUSE_ROOT_ID, "hello.txt", O_RDWR, 0o644);
 * fuse.write(entry.nodeid, open.fh, 0, new TextEncoder().encode("hello\n"));
 * fuse.release(entry.nodeid, open.fh);
 * fe.close();
 * ```
 *
 * @module
 */
export * from "./src/driver/guest_ram.ts";
export * from "./src/driver/guest_queue.ts";
export * from "./src/driver/frontend.ts";
export * from "./src/driver/fuse_client.ts";
export * as fuse from "./src/wire/fuse.ts";
export * as vhostUser from "./src/wire/vhost_user.ts";
export * as virtio from "./src/wire/virtio.ts";
