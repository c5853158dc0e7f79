/**
 * Linux constants (x86-64) for the calls the wrappers make, under their C names.
 *
 * @module
 */

/** Address family for UNIX sockets. */
export const AF_UNIX = 1;
/** Stream socket type. */
export const SOCK_STREAM = 1;
/** Datagram socket type (syslog's /dev/log). */
export const SOCK_DGRAM = 2;
/** Set close-on-exec on a new socket. */
export const SOCK_CLOEXEC = 0o2000000;
/** Set O_NONBLOCK on a new socket. */
export const SOCK_NONBLOCK = 0o4000;
/** Socket-level options and control messages. */
export const SOL_SOCKET = 1;
/** Control message carrying file descriptors. */
export const SCM_RIGHTS = 1;
/** Peer credentials option. */
export const SO_PEERCRED = 17;
/** Socket type option. */
export const SO_TYPE = 3;
/** Socket is listening option. */
export const SO_ACCEPTCONN = 30;
/** Received fds get close-on-exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** No SIGPIPE on a closed peer. */
export const MSG_NOSIGNAL = 0x4000;
/** Do not block. */
export const MSG_DONTWAIT = 0x40;
/** recvmsg: look at the data without taking it. */
export const MSG_PEEK = 0x2;
/** msg_flags: the control data was truncated (fds were dropped). */
export const MSG_CTRUNC = 0x8;
/** msg_flags: the datagram was truncated. */
export const MSG_TRUNC = 0x20;
/** Shut down both directions. */
export const SHUT_RDWR = 2;

/** Pages may not be accessed at all (a reservation: touching it faults). */
export const PROT_NONE = 0;
/** Pages may be read. */
export const PROT_READ = 1;
/** Pages may be written. */
export const PROT_WRITE = 2;
/** Share the mapping with other mappers of the file. */
export const MAP_SHARED = 1;
/** Private copy-on-write mapping. */
export const MAP_PRIVATE = 2;
/** Place the mapping exactly at the address given, replacing whatever was mapped there. */
export const MAP_FIXED = 0x10;
/** Anonymous mapping. */
export const MAP_ANONYMOUS = 0x20;
/** Reserve no swap space for the mapping (address space only). */
export const MAP_NORESERVE = 0x4000;
/** memfd: close-on-exec. */
export const MFD_CLOEXEC = 1;

/** eventfd: close-on-exec. */
export const EFD_CLOEXEC = 0o2000000;
/** eventfd: non-blocking. */
export const EFD_NONBLOCK = 0o4000;
/** epoll_create1: close-on-exec. */
export const EPOLL_CLOEXEC = 0o2000000;
/** epoll_ctl: add. */
export const EPOLL_CTL_ADD = 1;
/** epoll_ctl: delete. */
export const EPOLL_CTL_DEL = 2;
/** epoll_ctl: modify. */
export const EPOLL_CTL_MOD = 3;
/** Readable. */
export const EPOLLIN = 0x1;
/** Writable. */
export const EPOLLOUT = 0x4;
/** Error. */
export const EPOLLERR = 0x8;
/** Hang-up. */
export const EPOLLHUP = 0x10;
/** Peer closed its end. */
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered: report each change once. */
export const EPOLLET = 0x80000000;
/** poll: readable. */
export const POLLIN = 0x1;
/** poll: writable. */
export const POLLOUT = 0x4;
/** poll: error. */
export const POLLERR = 0x8;
/** poll: hang-up. */
export const POLLHUP = 0x10;
/** poll: fd not open. */
export const POLLNVAL = 0x20;

/** fcntl: get fd flags. */
export const F_GETFD = 1;
/** fcntl: set fd flags. */
export const F_SETFD = 2;
/** fcntl: get file status flags. */
export const F_GETFL = 3;
/** fcntl: set file status flags. */
export const F_SETFL = 4;
/** fcntl: duplicate to the lowest free fd >= arg, close-on-exec. */
export const F_DUPFD_CLOEXEC = 1030;
/** fd flag: close-on-exec. */
export const FD_CLOEXEC = 1;
/** File status flag: non-blocking. */
export const O_NONBLOCK = 0o4000;
/** Resource: number of open files. */
export const RLIMIT_NOFILE = 7;
/** getrlimit/setrlimit: the largest core dump. */
export const RLIMIT_CORE = 4;
/** flock: exclusive lock. */
export const LOCK_EX = 2;
/** flock: do not block (EWOULDBLOCK when held). */
export const LOCK_NB = 4;
/** flock: release. */
export const LOCK_UN = 8;

/** openat: read only. */
export const O_RDONLY = 0;
/** openat: a path-only descriptor. */
export const O_PATH = 0o10000000;
/** openat: do not follow a final symlink. */
export const O_NOFOLLOW = 0o400000;
/** openat: close-on-exec. */
export const O_CLOEXEC = 0o2000000;
/** openat: must be a directory. */
export const O_DIRECTORY = 0o200000;
/** *at calls: operate on the fd itself when the path is empty. */
export const AT_EMPTY_PATH = 0x1000;
/** *at calls: do not follow a final symlink. */
export const AT_SYMLINK_NOFOLLOW = 0x100;
/** The "directory fd" meaning the current directory. */
export const AT_FDCWD = -100;
/** openat: write only. */
export const O_WRONLY = 1;
/** openat: read and write. */
export const O_RDWR = 2;
/** The access mode bits of the open flags. */
export const O_ACCMODE = 3;
/** openat: create the file if it does not exist. */
export const O_CREAT = 0o100;
/** openat: with O_CREAT, fail if the file exists. */
export const O_EXCL = 0o200;
/** openat: do not make a terminal the controlling terminal. */
export const O_NOCTTY = 0o400;
/** openat: truncate to length 0. */
export const O_TRUNC = 0o1000;
/** openat: every write appends. */
export const O_APPEND = 0o2000;
/** openat: synchronized data integrity writes. */
export const O_DSYNC = 0o10000;
/** openat: signal-driven I/O. */
export const FASYNC = 0o20000;
/** openat: bypass the page cache. */
export const O_DIRECT = 0o40000;
/** openat: allow files larger than 2 GiB (always on x86-64). */
export const O_LARGEFILE = 0o100000;
/** openat: do not update the access time. */
export const O_NOATIME = 0o1000000;
/** openat: synchronized file integrity writes (includes O_DSYNC). */
export const O_SYNC = 0o4010000;
/** openat: an unnamed temporary file in the directory given (includes O_DIRECTORY). */
export const O_TMPFILE = 0o20200000;
/** unlinkat: remove a directory. */
export const AT_REMOVEDIR = 0x200;
/** linkat: follow a final symlink (a /proc/self/fd link included). */
export const AT_SYMLINK_FOLLOW = 0x400;
/** faccessat: check with the effective (fs) ids rather than the real ones. */
export const AT_EACCESS = 0x200;
/** renameat2: fail with EEXIST rather than replace the target. */
export const RENAME_NOREPLACE = 1;
/** renameat2: swap the two names atomically. */
export const RENAME_EXCHANGE = 2;
/** renameat2: leave a whiteout (char device 0/0) in place of the source. */
export const RENAME_WHITEOUT = 4;
/** utimensat: set this time to now. */
export const UTIME_NOW = 0x3fffffff;
/** utimensat: leave this time alone. */
export const UTIME_OMIT = 0x3ffffffe;
/** lseek: from the start. */
export const SEEK_SET = 0;
/** lseek: from the current position. */
export const SEEK_CUR = 1;
/** lseek: from the end. */
export const SEEK_END = 2;
/** lseek: the next data at or after the offset. */
export const SEEK_DATA = 3;
/** lseek: the next hole at or after the offset. */
export const SEEK_HOLE = 4;
/** st_mode: the file type bits. */
export const S_IFMT = 0o170000;
/** st_mode: socket. */
export const S_IFSOCK = 0o140000;
/** st_mode: symbolic link. */
export const S_IFLNK = 0o120000;
/** st_mode: regular file. */
export const S_IFREG = 0o100000;
/** st_mode: block device. */
export const S_IFBLK = 0o60000;
/** st_mode: directory. */
export const S_IFDIR = 0o40000;
/** st_mode: character device. */
export const S_IFCHR = 0o20000;
/** st_mode: set-user-ID. */
export const S_ISUID = 0o4000;
/** st_mode: set-group-ID. */
export const S_ISGID = 0o2000;
/** st_mode: execute by group. */
export const S_IXGRP = 0o0010;
/** st_mode: FIFO. */
export const S_IFIFO = 0o10000;
/** statx: the fields of struct stat (type, mode, nlink, uid, gid, times, ino, size, blocks). */
export const STATX_BASIC_STATS = 0x7ff;
/** statx: the mount id (Linux ≥ 5.8). */
export const STATX_MNT_ID = 0x1000;
/** setxattr: fail if the attribute exists. */
export const XATTR_CREATE = 1;
/** setxattr: fail if the attribute does not exist. */
export const XATTR_REPLACE = 2;
/** unshare: a private copy of the cwd, root and umask (per thread). */
export const CLONE_FS = 0x200;
/** setns: a mount namespace. */
export const CLONE_NEWNS = 0x20000;
/** mount: a bind mount. */
export const MS_BIND = 4096;
/** mount: with the mounts under it. */
export const MS_REC = 16384;
/** umount2: detach now, free when no longer busy. */
export const MNT_DETACH = 2;
/** access: the file exists. */
export const F_OK = 0;
/** access: may read. */
export const R_OK = 4;
/** access: may write. */
export const W_OK = 2;
/** access: may execute or search. */
export const X_OK = 1;
/** fallocate: do not change the file size. */
export const FALLOC_FL_KEEP_SIZE = 1;
/** fallocate: deallocate the range (with FALLOC_FL_KEEP_SIZE). */
export const FALLOC_FL_PUNCH_HOLE = 2;
/** fallocate: zero the range. */
export const FALLOC_FL_ZERO_RANGE = 0x10;
/** `d_type` of a directory entry: directory. */
export const DT_DIR = 4;
/** d_type: FIFO. */
export const DT_FIFO = 1;
/** d_type: character device. */
export const DT_CHR = 2;
/** d_type: block device. */
export const DT_BLK = 6;
/** d_type: socket. */
export const DT_SOCK = 12;
/** `d_type`: regular file. */
export const DT_REG = 8;
/** `d_type`: symbolic link. */
export const DT_LNK = 10;
