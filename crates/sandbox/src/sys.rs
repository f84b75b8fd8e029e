//! Raw system calls, in one place.
//!
//! Every wrapper here is a thin, allocation-free call into the kernel that returns the `errno` on
//! failure. Being allocation-free matters: [`clone_process`] is a raw `clone(2)` that bypasses
//! glibc's `fork` bookkeeping, so the child of a multi-threaded parent must not touch the allocator
//! (another thread may have held its lock at the time of the clone). The isolation code in
//! [`crate::isolate`] only calls functions from this module between the clone and `execve`.

use std::ffi::CStr;
use std::fmt;

/// An `errno` value from a failed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The `errno` of the last failed call on this thread.
    pub fn last() -> Errno {
        // SAFETY: __errno_location returns a valid pointer to this thread's errno.
        Errno(unsafe { *libc::__errno_location() })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// Result of a raw system call.
pub type SysResult<T> = Result<T, Errno>;

fn check(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `clone(flags | SIGCHLD)` with fork semantics (child continues on a copy of the caller's
/// stack). Returns 0 in the child and the child's pid in the parent.
///
/// The child may only call async-signal-safe, allocation-free code (this module), and must end
/// with [`exit_now`] or `execve`.
pub fn clone_process(flags: libc::c_int) -> SysResult<libc::pid_t> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a clone without CLONE_VM/CLONE_SETTLS and a null stack behaves like fork(): the
    // child gets a private copy of the address space. The argument order differs between
    // architectures only for the tls/child_tid pointers, which are unused (0) here.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    check(ret).map(|p| p as libc::pid_t)
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: unshare takes no pointers.
    check_int(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(2)`.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    };
    check_int(ret).map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: target is a valid NUL-terminated string.
    check_int(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `statvfs(3)` of the filesystem holding `path`: (total, free) bytes, in fragment units.
pub fn statvfs(path: &CStr) -> SysResult<(u64, u64)> {
    // SAFETY: an all-zero `statvfs` is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid NUL-terminated string and st a valid, writable statvfs buffer.
    check_int(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bfree as u64 * frsize))
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    // SAFETY: both arguments are valid NUL-terminated strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(ret).map(drop)
}

/// Whether `path` exists (`access(2)` with `F_OK`; no allocation, safe between fork and exec).
pub fn exists(path: &CStr) -> bool {
    // SAFETY: path is a valid NUL-terminated string.
    unsafe { libc::access(path.as_ptr(), libc::F_OK) == 0 }
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: path is a valid NUL-terminated string.
    check_int(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `mkdir(2)`; an existing entry is not an error.
pub fn mkdir_exist_ok(path: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: path is a valid NUL-terminated string.
    match check_int(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Ok(_) => Ok(()),
        Err(Errno(libc::EEXIST)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates an empty regular file (a bind-mount target) if nothing exists at `path`.
pub fn touch(path: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: path is a valid NUL-terminated string; the returned fd is closed below.
    let fd = check_int(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    close(fd);
    Ok(())
}

/// `symlink(2)`.
pub fn symlink(target: &CStr, link: &CStr) -> SysResult<()> {
    // SAFETY: both arguments are valid NUL-terminated strings.
    check_int(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

/// What kind of filesystem object is at `path` (without following a final symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// Anything else.
    Other,
}

/// `lstat(2)`, reduced to the kind of object.
pub fn file_kind(path: &CStr) -> SysResult<FileKind> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid string and st a valid, writable stat buffer.
    check_int(unsafe { libc::lstat(path.as_ptr(), &mut st) })?;
    Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        FileKind::Dir
    } else {
        FileKind::Other
    })
}

/// `sethostname(2)`.
pub fn sethostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: the pointer/length pair describes a valid byte slice.
    check_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Brings the loopback interface of the current network namespace up (`SIOCSIFFLAGS` on "lo").
pub fn loopback_up() -> SysResult<()> {
    // SAFETY: socket takes no pointers.
    let fd = check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is an open socket and req a valid ifreq for SIOCGIFFLAGS to fill.
    let res = check_int(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) }).and_then(|_| {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union; reading and updating it
        // is the documented use.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: fd is an open socket and req a valid ifreq naming "lo".
        check_int(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) })
    });
    close(fd);
    res.map(drop)
}

fn prctl(option: libc::c_int, a2: libc::c_ulong, a3: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: the options used in this module take integer arguments or a pointer to a valid
    // NUL-terminated string (PR_SET_NAME), never anything the kernel writes to.
    check_int(unsafe { libc::prctl(option, a2, a3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// `PR_SET_NO_NEW_PRIVS`: execve can no longer grant privileges (setuid bits, file capabilities).
pub fn set_no_new_privs() -> SysResult<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map(drop)
}

/// `PR_SET_DUMPABLE 0`: no core dumps, and `/proc/PID` and ptrace need `CAP_SYS_PTRACE`.
pub fn set_not_dumpable() -> SysResult<()> {
    prctl(libc::PR_SET_DUMPABLE, 0, 0).map(drop)
}

/// `PR_SET_NAME` (the `comm` shown in `/proc/PID/comm` and `ps`).
pub fn set_name(name: &CStr) -> SysResult<()> {
    prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0).map(drop)
}

/// `PR_CAPBSET_DROP` for one capability. `EINVAL` (capability unknown to this kernel) is ignored.
pub fn capbset_drop(cap: u32) -> SysResult<()> {
    match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
        Err(Errno(libc::EINVAL)) => Ok(()),
        r => r.map(drop),
    }
}

/// Clears the ambient capability set.
pub fn ambient_clear_all() -> SysResult<()> {
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    ) {
        // Kernels before 4.3 have no ambient set: nothing to clear.
        Err(Errno(libc::EINVAL)) => Ok(()),
        r => r.map(drop),
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset(2)` on the calling thread; each set is a bit mask indexed by capability number.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: hdr and data match the kernel's v3 __user_cap_header_struct and two
    // __user_cap_data_struct entries, and outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    check(ret).map(drop)
}

// The id-changing calls below are made with `syscall(2)`, never through glibc's wrappers:
// glibc's setgroups/setresgid/setresuid broadcast the change to every thread it believes the
// process has and wait for each to acknowledge. The sandbox child comes from a raw clone of a
// multi-threaded parent, so glibc still lists threads that do not exist in the child, and the
// wrapper waits forever (seen as sessions hanging before exec under load). The raw syscalls
// change the calling thread only, which is all the single-threaded child has.

/// `setgroups(2)` (raw syscall; see above).
pub fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: the pointer/length pair describes a valid slice of gids that outlives the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

/// `setresgid(2)` with all three ids equal (raw syscall; see above).
pub fn setresgid(gid: libc::gid_t) -> SysResult<()> {
    // SAFETY: no pointers; plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// `setresuid(2)` with all three ids equal (raw syscall; see above).
pub fn setresuid(uid: libc::uid_t) -> SysResult<()> {
    // SAFETY: no pointers; plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`. Needs no_new_privs (or `CAP_SYS_ADMIN`).
///
/// Returns the call's result: the listener descriptor (created close-on-exec by the kernel)
/// with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0.
pub fn seccomp_set_filter(prog: &[SockFilter], flags: libc::c_ulong) -> SysResult<libc::c_int> {
    if prog.is_empty() || prog.len() > u16::MAX as usize {
        return Err(Errno(libc::EINVAL));
    }
    let fprog = SockFprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr(),
    };
    // SAFETY: fprog points to `len` valid instructions that outlive the call; the kernel copies
    // the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &fprog,
        )
    };
    check(ret).map(|fd| fd as libc::c_int)
}

/// `pipe2(O_CLOEXEC)`: `(read end, write end)`.
pub fn pipe_cloexec() -> SysResult<(libc::c_int, libc::c_int)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: two connected ends that keep message
/// boundaries, so each descriptor sent with [`send_fd`] arrives in a message of its own.
pub fn socketpair_seqpacket() -> SysResult<(libc::c_int, libc::c_int)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    check_int(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok((fds[0], fds[1]))
}

/// Room for a control message carrying one descriptor, aligned like `struct cmsghdr`
/// (`CMSG_SPACE(sizeof(int))` is 24 bytes on 64-bit Linux).
#[repr(C, align(8))]
struct OneFdCmsg([u8; 32]);

/// The control-buffer length for one descriptor, checked against [`OneFdCmsg`].
fn one_fd_cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of::<OneFdCmsg>());
    space
}

/// Sends `fd` over the unix socket `sock` as `SCM_RIGHTS`, with a one-byte payload. Allocation-
/// free (usable in the sandbox child). Once this returns, the message holds its own reference to
/// the open file: the caller may close `fd` right away.
pub fn send_fd(sock: libc::c_int, fd: libc::c_int) -> SysResult<()> {
    let mut byte = [b'f'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut cbuf = OneFdCmsg([0; 32]);
    let space = one_fd_cmsg_space();
    // SAFETY: an all-zero msghdr is valid (no name, no buffers); the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` zeroed, writable bytes aligned for cmsghdr, which is
    // room for one header and one int, so CMSG_FIRSTHDR returns a valid, non-null header pointer
    // into `cbuf` and CMSG_DATA a pointer to the int after it (written unaligned to be safe).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        debug_assert!(!c.is_null());
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
    }
    loop {
        // SAFETY: msg and everything it points to (iov, byte, cbuf) are valid for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// Receives one descriptor sent with [`send_fd`], close-on-exec (`MSG_CMSG_CLOEXEC`), blocking
/// until a message arrives. `Ok(None)`: every sending end is closed and nothing is left.
/// A message without a descriptor is `EBADMSG`; extra descriptors in a message are closed.
pub fn recv_fd(sock: libc::c_int) -> SysResult<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut cbuf = OneFdCmsg([0; 32]);
    // SAFETY: an all-zero msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = one_fd_cmsg_space() as _;
    let n = loop {
        // SAFETY: msg points to valid, writable buffers (byte, cbuf) of the sizes it states.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    };
    let mut got: Option<std::os::fd::OwnedFd> = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/CMSG_NXTHDR walk
    // only within that buffer and return null at its end. Each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors that now belong to this process,
    // read unaligned; each is either kept (once) or closed.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if got.is_none() {
                        got = Some(std::os::fd::OwnedFd::from_raw_fd(fd));
                    } else {
                        close(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    match (n, got) {
        (_, Some(fd)) => Ok(Some(fd)),
        (0, None) => Ok(None),
        (_, None) => Err(Errno(libc::EBADMSG)),
    }
}

/// `poll(2)` without a timeout, retried on `EINTR`; returns the number of ready entries.
pub fn poll(fds: &mut [libc::pollfd]) -> SysResult<usize> {
    loop {
        // SAFETY: fds is a valid, writable array of fds.len() pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// `seccomp(SECCOMP_GET_NOTIF_SIZES)`: the kernel's sizes of the user-notification structures.
pub fn seccomp_notif_sizes() -> SysResult<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: sizes is a valid, writable seccomp_notif_sizes for the kernel to fill.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES as libc::c_ulong,
            0 as libc::c_ulong,
            &mut sizes,
        )
    };
    check(ret).map(|_| sizes)
}

/// Whether a `[u64]` buffer can hold a `T` at its start (alignment holds: `T` is made of
/// integers of at most 8 bytes).
fn fits<T>(buf: &[u64]) -> bool {
    std::mem::size_of_val(buf) >= std::mem::size_of::<T>() && std::mem::align_of::<T>() <= 8
}

/// `SECCOMP_IOCTL_NOTIF_RECV` on a seccomp listener. `buf` must be at least as large as both the
/// kernel's `struct seccomp_notif` ([`seccomp_notif_sizes`]) and libc's (else `EINVAL`); it is
/// zeroed first, as the kernel requires. Blocks until a notification is pending unless the
/// caller polled for `POLLIN`; `ENOENT`: the notifying task went away before it was received.
pub fn seccomp_notif_recv(fd: libc::c_int, buf: &mut [u64]) -> SysResult<libc::seccomp_notif> {
    if !fits::<libc::seccomp_notif>(buf) {
        return Err(Errno(libc::EINVAL));
    }
    buf.fill(0);
    // SAFETY: buf is a writable, 8-byte aligned buffer at least as large as the kernel's
    // struct seccomp_notif, which is what the ioctl writes.
    check_int(unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, buf.as_mut_ptr()) })?;
    // SAFETY: buf is aligned and large enough for a seccomp_notif (checked above), whose
    // fields are plain integers: any bit pattern the kernel wrote is a valid value.
    Ok(unsafe { std::ptr::read(buf.as_ptr().cast::<libc::seccomp_notif>()) })
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: `Ok` while the notifying task is still waiting for the answer
/// to notification `id` (so its pid has not been reused), `ENOENT` otherwise.
pub fn seccomp_notif_id_valid(fd: libc::c_int, id: u64) -> SysResult<()> {
    // SAFETY: the ioctl reads one u64 from the valid pointer.
    check_int(unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) }).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answers notification `resp.id`. `buf` is scratch space at least
/// as large as both the kernel's `struct seccomp_notif_resp` and libc's (else `EINVAL`), zeroed
/// and filled with `resp` first. `ENOENT`: the task is gone or no longer waiting.
pub fn seccomp_notif_send(
    fd: libc::c_int,
    buf: &mut [u64],
    resp: &libc::seccomp_notif_resp,
) -> SysResult<()> {
    if !fits::<libc::seccomp_notif_resp>(buf) {
        return Err(Errno(libc::EINVAL));
    }
    buf.fill(0);
    // SAFETY: buf is aligned and large enough for a seccomp_notif_resp (checked above).
    unsafe { std::ptr::write(buf.as_mut_ptr().cast::<libc::seccomp_notif_resp>(), *resp) };
    // SAFETY: buf is a valid buffer at least as large as the kernel's struct
    // seccomp_notif_resp, which is what the ioctl reads (and, for _IOWR, may write back).
    check_int(unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, buf.as_mut_ptr()) })
        .map(drop)
}

/// `read(2)`, retried on `EINTR`.
pub fn read(fd: libc::c_int, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// Writes all of `buf` (retrying on `EINTR` and short writes).
pub fn write_all(fd: libc::c_int, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable buffer of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `close(2)`; errors are ignored (the descriptor is gone either way).
pub fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor this code owns; a wrong fd only yields EBADF.
    unsafe {
        libc::close(fd);
    }
}

/// `close_range(first, last, flags)`.
pub fn close_range(first: u32, last: u32, flags: u32) -> SysResult<()> {
    // SAFETY: no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_ulong,
            last as libc::c_ulong,
            flags as libc::c_ulong,
        )
    };
    check(ret).map(drop)
}

/// Closes every descriptor from 3 up except those in `keep`.
pub fn close_fds_except(keep: &[libc::c_int]) -> SysResult<()> {
    let mut next: u32 = 3;
    loop {
        // The smallest kept fd >= next, found without sorting (no allocation).
        let hole = keep
            .iter()
            .filter(|&&k| k >= 0 && k as u32 >= next)
            .map(|&k| k as u32)
            .min();
        match hole {
            Some(h) => {
                if h > next {
                    close_range(next, h - 1, 0)?;
                }
                next = h + 1;
            }
            None => return close_range(next, u32::MAX, 0),
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_from(first: u32) -> SysResult<()> {
    close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC)
}

/// Options for [`waitpid`].
pub const WNOHANG: libc::c_int = libc::WNOHANG;

/// `waitpid(2)`, retried on `EINTR` unless `interruptible`. Returns `(pid, raw status)`;
/// pid 0 with `WNOHANG` means "still running".
pub fn waitpid(
    pid: libc::pid_t,
    options: libc::c_int,
    interruptible: bool,
) -> SysResult<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: status is a valid int for the kernel to fill.
        let r = unsafe { libc::waitpid(pid, &mut status, options) };
        if r >= 0 {
            return Ok((r, status));
        }
        let e = Errno::last();
        if e.0 != libc::EINTR || interruptible {
            return Err(e);
        }
    }
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> SysResult<()> {
    // SAFETY: no pointers.
    check_int(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Installs `handler` for `sig` without `SA_RESTART` (so a blocking `waitpid` returns `EINTR`).
pub fn set_signal_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> SysResult<()> {
    // SAFETY: an all-zero sigaction is valid; the fields are set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as *const () as libc::sighandler_t;
    sa.sa_flags = 0;
    // SAFETY: sa.sa_mask is a valid sigset_t; sa is fully initialised; the old action is not
    // requested. The handler only calls async-signal-safe functions.
    check_int(unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    })
    .map(drop)
}

/// Resets `sig` to its default action.
pub fn set_signal_default(sig: libc::c_int) -> SysResult<()> {
    // SAFETY: SIG_DFL is a valid disposition for any catchable signal.
    if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(Errno::last());
    }
    Ok(())
}

/// Unblocks every signal of the calling thread.
pub fn unblock_all_signals() -> SysResult<()> {
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset initialises it properly.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the old mask is not requested.
    check_int(unsafe {
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    })
    .map(drop)
}

/// `execve(2)`; returns only on failure.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: path is a valid string; argv and envp are NULL-terminated arrays of pointers to
    // valid NUL-terminated strings that the caller keeps alive.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

/// `_exit(2)`: ends the process without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// The calling process's pid.
pub fn getpid() -> libc::pid_t {
    // SAFETY: no pointers; always succeeds.
    unsafe { libc::getpid() }
}
