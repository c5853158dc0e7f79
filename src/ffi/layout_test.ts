import assert from "node:assert/strict";
import {
  CMSGHDR,
  cmsgLen,
  cmsgSpace,
  EPOLL_EVENT,
  IOVEC,
  MSGHDR,
  POLLFD,
  RLIMIT,
  SOCKADDR_UN,
  STAT,
  STATFS,
  UCRED,
} from "./layout.ts";

const C_PROGRAM = `
#define _GNU_SOURCE
#include <stdio.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#define P(name, value) printf("%s %zu\\n", name, (size_t)(value))
int main(void) {
  P("iovec.size", sizeof(struct iovec)); P("iovec.base", offsetof(struct iovec, iov_base));
  P("iovec.len", offsetof(struct iovec, iov_len));
  P("msghdr.size", sizeof(struct msghdr)); P("msghdr.name", offsetof(struct msghdr, msg_name));
  P("msghdr.namelen", offsetof(struct msghdr, msg_namelen)); P("msghdr.iov", offsetof(struct msghdr, msg_iov));
  P("msghdr.iovlen", offsetof(struct msghdr, msg_iovlen)); P("msghdr.control", offsetof(struct msghdr, msg_control));
  P("msghdr.controllen", offsetof(struct msghdr, msg_controllen)); P("msghdr.flags", offsetof(struct msghdr, msg_flags));
  P("cmsghdr.size", sizeof(struct cmsghdr)); P("cmsghdr.len", offsetof(struct cmsghdr, cmsg_len));
  P("cmsghdr.level", offsetof(struct cmsghdr, cmsg_level)); P("cmsghdr.type", offsetof(struct cmsghdr, cmsg_type));
  P("cmsghdr.data", CMSG_LEN(0)); P("cmsg_space.4", CMSG_SPACE(4)); P("cmsg_space.12", CMSG_SPACE(12));
  P("cmsg_len.12", CMSG_LEN(12));
  P("epoll_event.size", sizeof(struct epoll_event)); P("epoll_event.events", offsetof(struct epoll_event, events));
  P("epoll_event.data", offsetof(struct epoll_event, data));
  P("pollfd.size", sizeof(struct pollfd)); P("pollfd.fd", offsetof(struct pollfd, fd));
  P("pollfd.events", offsetof(struct pollfd, events)); P("pollfd.revents", offsetof(struct pollfd, revents));
  P("sockaddr_un.size", sizeof(struct sockaddr_un)); P("sockaddr_un.path", offsetof(struct sockaddr_un, sun_path));
  P("rlimit.size", sizeof(struct rlimit)); P("rlimit.max", offsetof(struct rlimit, rlim_max));
  P("ucred.size", sizeof(struct ucred)); P("ucred.uid", offsetof(struct ucred, uid)); P("ucred.gid", offsetof(struct ucred, gid));
  P("stat.size", sizeof(struct stat)); P("stat.dev", offsetof(struct stat, st_dev));
  P("stat.ino", offsetof(struct stat, st_ino)); P("stat.nlink", offsetof(struct stat, st_nlink));
  P("stat.mode", offsetof(struct stat, st_mode)); P("stat.uid", offsetof(struct stat, st_uid));
  P("stat.gid", offsetof(struct stat, st_gid)); P("stat.rdev", offsetof(struct stat, st_rdev));
  P("stat.size_field", offsetof(struct stat, st_size)); P("stat.blksize", offsetof(struct stat, st_blksize));
  P("stat.blocks", offsetof(struct stat, st_blocks)); P("stat.atime", offsetof(struct stat, st_atim));
  P("stat.mtime", offsetof(struct stat, st_mtim)); P("stat.ctime", offsetof(struct stat, st_ctim));
  P("statfs.size", sizeof(struct statfs)); P("statfs.bsize", offsetof(struct statfs, f_bsize));
  P("statfs.blocks", offsetof(struct statfs, f_blocks)); P("statfs.bfree", offsetof(struct statfs, f_bfree));
  P("statfs.bavail", offsetof(struct statfs, f_bavail)); P("statfs.files", offsetof(struct statfs, f_files));
  P("statfs.ffree", offsetof(struct statfs, f_ffree)); P("statfs.namelen", offsetof(struct statfs, f_namelen));
  P("statfs.frsize", offsetof(struct statfs, f_frsize));
  return 0;
}
`;

async function cLayout(): Promise<Map<string, number>> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/layout.c`, C_PROGRAM);
    const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/layout`, `${dir}/layout.c`] })
      .output();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const out = await new Deno.Command(`${dir}/layout`).output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    return new Map(lines.map((l) => {
      const [k, v] = l.split(" ");
      return [k ?? "", Number(v)];
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("layout constants match the C compiler's struct layouts", async () => {
  const c = await cLayout();
  const ours: Record<string, number> = {
    "iovec.size": IOVEC.size,
    "iovec.base": IOVEC.base,
    "iovec.len": IOVEC.len,
    "msghdr.size": MSGHDR.size,
    "msghdr.name": MSGHDR.name,
    "msghdr.namelen": MSGHDR.namelen,
    "msghdr.iov": MSGHDR.iov,
    "msghdr.iovlen": MSGHDR.iovlen,
    "msghdr.control": MSGHDR.control,
    "msghdr.controllen": MSGHDR.controllen,
    "msghdr.flags": MSGHDR.flags,
    "cmsghdr.size": CMSGHDR.size,
    "cmsghdr.len": CMSGHDR.len,
    "cmsghdr.level": CMSGHDR.level,
    "cmsghdr.type": CMSGHDR.type,
    "cmsghdr.data": CMSGHDR.data,
    "cmsg_space.4": cmsgSpace(4),
    "cmsg_space.12": cmsgSpace(12),
    "cmsg_len.12": cmsgLen(12),
    "epoll_event.size": EPOLL_EVENT.size,
    "epoll_event.events": EPOLL_EVENT.events,
    "epoll_event.data": EPOLL_EVENT.data,
    "pollfd.size": POLLFD.size,
    "pollfd.fd": POLLFD.fd,
    "pollfd.events": POLLFD.events,
    "pollfd.revents": POLLFD.revents,
    "sockaddr_un.size": SOCKADDR_UN.size,
    "sockaddr_un.path": SOCKADDR_UN.path,
    "rlimit.size": RLIMIT.size,
    "rlimit.max": RLIMIT.max,
    "ucred.size": UCRED.size,
    "ucred.uid": UCRED.uid,
    "ucred.gid": UCRED.gid,
    "stat.size": STAT.size,
    "stat.dev": STAT.dev,
    "stat.ino": STAT.ino,
    "stat.nlink": STAT.nlink,
    "stat.mode": STAT.mode,
    "stat.uid": STAT.uid,
    "stat.gid": STAT.gid,
    "stat.rdev": STAT.rdev,
    "stat.size_field": STAT.sizeField,
    "stat.blksize": STAT.blksize,
    "stat.blocks": STAT.blocks,
    "stat.atime": STAT.atime,
    "stat.mtime": STAT.mtime,
    "stat.ctime": STAT.ctime,
    "statfs.size": STATFS.size,
    "statfs.bsize": STATFS.bsize,
    "statfs.blocks": STATFS.blocks,
    "statfs.bfree": STATFS.bfree,
    "statfs.bavail": STATFS.bavail,
    "statfs.files": STATFS.files,
    "statfs.ffree": STATFS.ffree,
    "statfs.namelen": STATFS.namelen,
    "statfs.frsize": STATFS.frsize,
  };
  for (const [name, value] of Object.entries(ours)) {
    assert.equal(value, c.get(name), name);
  }
  assert.equal(c.size, Object.keys(ours).length);
});
