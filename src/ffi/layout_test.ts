import assert from "node:assert/strict";
import {
  CMSGHDR,
  cmsgLen,
  cmsgSpace,
  DIRENT64,
  EPOLL_EVENT,
  FILE_HANDLE,
  IOVEC,
  MAX_HANDLE_SZ,
  MSGHDR,
  POLLFD,
  RLIMIT,
  SOCKADDR_UN,
  STAT,
  STATFS,
  STATX,
  TIMESPEC,
  UCRED,
} from "./layout.ts";
import * as K from "./constants.ts";
import { makedev } from "./fs.ts";

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
#include <sys/xattr.h>
#include <sys/sysmacros.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <sched.h>
#include <time.h>
#include <linux/falloc.h>
#include <linux/stat.h>
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
  P("timespec.size", sizeof(struct timespec)); P("timespec.nsec", offsetof(struct timespec, tv_nsec));
  P("statx.size", sizeof(struct statx)); P("statx.mask", offsetof(struct statx, stx_mask));
  P("statx.blksize", offsetof(struct statx, stx_blksize)); P("statx.nlink", offsetof(struct statx, stx_nlink));
  P("statx.uid", offsetof(struct statx, stx_uid)); P("statx.gid", offsetof(struct statx, stx_gid));
  P("statx.mode", offsetof(struct statx, stx_mode)); P("statx.ino", offsetof(struct statx, stx_ino));
  P("statx.size_field", offsetof(struct statx, stx_size)); P("statx.blocks", offsetof(struct statx, stx_blocks));
  P("statx.atime", offsetof(struct statx, stx_atime)); P("statx.ctime", offsetof(struct statx, stx_ctime));
  P("statx.mtime", offsetof(struct statx, stx_mtime));
  P("statx.timestamp_nsec", offsetof(struct statx_timestamp, tv_nsec));
  P("statx.rdev_major", offsetof(struct statx, stx_rdev_major)); P("statx.rdev_minor", offsetof(struct statx, stx_rdev_minor));
  P("statx.dev_major", offsetof(struct statx, stx_dev_major)); P("statx.dev_minor", offsetof(struct statx, stx_dev_minor));
  P("statx.mnt_id", offsetof(struct statx, stx_mnt_id));
  P("dirent64.ino", offsetof(struct dirent64, d_ino)); P("dirent64.off", offsetof(struct dirent64, d_off));
  P("dirent64.reclen", offsetof(struct dirent64, d_reclen)); P("dirent64.type", offsetof(struct dirent64, d_type));
  P("dirent64.name", offsetof(struct dirent64, d_name));
  P("file_handle.size", sizeof(struct file_handle));
  P("file_handle.bytes", offsetof(struct file_handle, handle_bytes));
  P("file_handle.type", offsetof(struct file_handle, handle_type));
  P("file_handle.handle", offsetof(struct file_handle, f_handle)); P("MAX_HANDLE_SZ", MAX_HANDLE_SZ);
  P("makedev.259.70000", makedev(259, 70000));
  P("O_WRONLY", O_WRONLY); P("O_RDWR", O_RDWR); P("O_ACCMODE", O_ACCMODE); P("O_CREAT", O_CREAT);
  P("O_EXCL", O_EXCL); P("O_NOCTTY", O_NOCTTY); P("O_TRUNC", O_TRUNC); P("O_APPEND", O_APPEND);
  P("O_DSYNC", O_DSYNC); P("FASYNC", FASYNC); P("O_DIRECT", O_DIRECT);
  P("O_NOATIME", O_NOATIME); P("O_SYNC", O_SYNC); P("O_TMPFILE", O_TMPFILE); P("O_PATH", O_PATH);
  P("O_NOFOLLOW", O_NOFOLLOW); P("O_CLOEXEC", O_CLOEXEC); P("O_DIRECTORY", O_DIRECTORY);
  P("O_NONBLOCK", O_NONBLOCK); P("F_DUPFD_CLOEXEC", F_DUPFD_CLOEXEC);
  P("MSG_DONTWAIT", MSG_DONTWAIT); P("MSG_PEEK", MSG_PEEK);
  P("FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  P("DT_DIR", DT_DIR); P("DT_REG", DT_REG); P("DT_LNK", DT_LNK);
  P("AT_REMOVEDIR", AT_REMOVEDIR); P("AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW); P("AT_EACCESS", AT_EACCESS);
  P("AT_EMPTY_PATH", AT_EMPTY_PATH); P("AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW);
  P("RENAME_NOREPLACE", RENAME_NOREPLACE); P("RENAME_EXCHANGE", RENAME_EXCHANGE);
  P("RENAME_WHITEOUT", RENAME_WHITEOUT); P("UTIME_NOW", UTIME_NOW); P("UTIME_OMIT", UTIME_OMIT);
  P("SEEK_DATA", SEEK_DATA); P("SEEK_HOLE", SEEK_HOLE); P("SEEK_END", SEEK_END);
  P("S_IFMT", S_IFMT); P("S_IFSOCK", S_IFSOCK); P("S_IFLNK", S_IFLNK); P("S_IFREG", S_IFREG);
  P("S_IFBLK", S_IFBLK); P("S_IFDIR", S_IFDIR); P("S_IFCHR", S_IFCHR); P("S_IFIFO", S_IFIFO);
  P("S_ISUID", S_ISUID); P("S_ISGID", S_ISGID); P("S_IXGRP", S_IXGRP);
  P("STATX_BASIC_STATS", STATX_BASIC_STATS); P("STATX_MNT_ID", STATX_MNT_ID);
  P("XATTR_CREATE", XATTR_CREATE); P("XATTR_REPLACE", XATTR_REPLACE); P("CLONE_FS", CLONE_FS);
  P("R_OK", R_OK); P("W_OK", W_OK); P("X_OK", X_OK);
  P("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE); P("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
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
    "timespec.size": TIMESPEC.size,
    "timespec.nsec": TIMESPEC.nsec,
    "statx.size": STATX.size,
    "statx.mask": STATX.mask,
    "statx.blksize": STATX.blksize,
    "statx.nlink": STATX.nlink,
    "statx.uid": STATX.uid,
    "statx.gid": STATX.gid,
    "statx.mode": STATX.mode,
    "statx.ino": STATX.ino,
    "statx.size_field": STATX.sizeField,
    "statx.blocks": STATX.blocks,
    "statx.atime": STATX.atime,
    "statx.ctime": STATX.ctime,
    "statx.mtime": STATX.mtime,
    "statx.timestamp_nsec": STATX.timestampNsec,
    "statx.rdev_major": STATX.rdevMajor,
    "statx.rdev_minor": STATX.rdevMinor,
    "statx.dev_major": STATX.devMajor,
    "statx.dev_minor": STATX.devMinor,
    "statx.mnt_id": STATX.mntId,
    "dirent64.ino": DIRENT64.ino,
    "dirent64.off": DIRENT64.off,
    "dirent64.reclen": DIRENT64.reclen,
    "dirent64.type": DIRENT64.type,
    "dirent64.name": DIRENT64.name,
    "file_handle.size": FILE_HANDLE.size,
    "file_handle.bytes": FILE_HANDLE.bytes,
    "file_handle.type": FILE_HANDLE.type,
    "file_handle.handle": FILE_HANDLE.handle,
    MAX_HANDLE_SZ,
    "makedev.259.70000": Number(makedev(259, 70000)),
  };
  for (
    const name of [
      "O_WRONLY",
      "O_RDWR",
      "O_ACCMODE",
      "O_CREAT",
      "O_EXCL",
      "O_NOCTTY",
      "O_TRUNC",
      "O_APPEND",
      "O_DSYNC",
      "FASYNC",
      "O_DIRECT",
      "O_NOATIME",
      "O_SYNC",
      "O_TMPFILE",
      "O_PATH",
      "O_NOFOLLOW",
      "O_CLOEXEC",
      "O_DIRECTORY",
      "O_NONBLOCK",
      "AT_REMOVEDIR",
      "AT_SYMLINK_FOLLOW",
      "AT_EACCESS",
      "AT_EMPTY_PATH",
      "AT_SYMLINK_NOFOLLOW",
      "RENAME_NOREPLACE",
      "RENAME_EXCHANGE",
      "RENAME_WHITEOUT",
      "UTIME_NOW",
      "UTIME_OMIT",
      "SEEK_DATA",
      "SEEK_HOLE",
      "SEEK_END",
      "S_IFMT",
      "S_IFSOCK",
      "S_IFLNK",
      "S_IFREG",
      "S_IFBLK",
      "S_IFDIR",
      "S_IFCHR",
      "S_IFIFO",
      "S_ISUID",
      "S_ISGID",
      "S_IXGRP",
      "STATX_BASIC_STATS",
      "STATX_MNT_ID",
      "XATTR_CREATE",
      "XATTR_REPLACE",
      "CLONE_FS",
      "R_OK",
      "W_OK",
      "X_OK",
      "FALLOC_FL_KEEP_SIZE",
      "FALLOC_FL_PUNCH_HOLE",
      "F_DUPFD_CLOEXEC",
      "MSG_DONTWAIT",
      "MSG_PEEK",
      "FALLOC_FL_ZERO_RANGE",
      "DT_DIR",
      "DT_REG",
      "DT_LNK",
    ] as const
  ) ours[name] = K[name];
  for (const [name, value] of Object.entries(ours)) {
    assert.equal(value, c.get(name), name);
  }
  assert.equal(c.size, Object.keys(ours).length);
});
