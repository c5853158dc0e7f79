/**
 * Linux constants (x86-64) for the calls the wrappers make, under their C names.
 *
 * @module
 */

/** Address family for UNIX sockets. */
export const AF_UNIX = 1;
/** Stream socket type. */
export const SOCK_STREAM = 1;
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
/** msg_flags: the control data was truncated (fds were dropped). */
export const MSG_CTRUNC = 0x8;
/** msg_flags: the datagram was truncated. */
export const MSG_TRUNC = 0x20;
/** Shut down both directions. */
export const SHUT_RDWR = 2;

/** Pages may be read. */
export const PROT_READ = 1;
/** Pages may be written. */
export const PROT_WRITE = 2;
/** Share the mapping with other mappers of the file. */
export const MAP_SHARED = 1;
/** Private copy-on-write mapping. */
export const MAP_PRIVATE = 2;
/** Anonymous mapping. */
export const MAP_ANONYMOUS = 0x20;
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
/** fd flag: close-on-exec. */
export const FD_CLOEXEC = 1;
/** File status flag: non-blocking. */
export const O_NONBLOCK = 0o4000;
/** Resource: number of open files. */
export const RLIMIT_NOFILE = 7;

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
