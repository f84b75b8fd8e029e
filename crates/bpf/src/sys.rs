//! Every raw system call of the crate: credentials, mounting tracefs, epoll on the ring buffer,
//! the reader thread's CPU affinity.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// The effective uid of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a filesystem of type `fstype` is mounted at `path` (from /proc/self/mounts).
pub(crate) fn is_mounted(path: &Path, fstype: &str) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let want = path.as_os_str().as_bytes();
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let _source = fields.next();
        let target = fields.next().unwrap_or_default();
        let kind = fields.next().unwrap_or_default();
        // Mount points in /proc/self/mounts escape spaces as \040; our paths have none.
        target.as_bytes() == want && kind == fstype
    }))
}

/// `mount -t tracefs tracefs <path>`.
pub(crate) fn mount_tracefs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is
    // NULL, which mount(2) accepts.
    let ret = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), in ascending order.
pub(crate) fn thread_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain bytes; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the number of CPUs a cpu_set_t holds.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Lets the calling thread run on `cpu` only (`sched_setaffinity`).
pub(crate) fn pin_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond what a CPU set holds"),
        ));
    }
    // SAFETY: cpu_set_t is plain bytes; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An epoll instance watching one fd for readability.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new(watch: BorrowedFd<'_>) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no pointer arguments; a non-negative result is a new fd.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both fds are open for the duration of the call and `ev` is a valid
        // epoll_event that the kernel only reads.
        let ret = unsafe {
            libc::epoll_ctl(
                fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                watch.as_raw_fd(),
                &mut ev,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    /// Waits until the watched fd is readable or `timeout` passes; true when readable.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is valid writable storage for exactly the one event we ask for.
        let ret = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), &mut ev, 1, ms) };
        match ret {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// Whether `path` is on a cgroup v2 filesystem (statfs magic CGROUP2_SUPER_MAGIC).
pub(crate) fn is_cgroup2(path: &Path) -> io::Result<bool> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value that the kernel overwrites.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` valid writable storage.
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// The page size (the ring buffer size must be a power-of-two multiple of it).
pub(crate) fn page_size() -> u32 {
    // SAFETY: sysconf has no memory preconditions; _SC_PAGESIZE is always supported.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u32
    } else {
        4096
    }
}

/// `recursion_misses` of a loaded BPF program (BPF_OBJ_GET_INFO_BY_FD): how many times the
/// kernel skipped it because a BPF program was already running on that CPU. Kernel >= 5.12.
pub(crate) fn prog_recursion_misses(prog: BorrowedFd<'_>) -> io::Result<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info is 232 bytes on 6.x with recursion_misses at offset 208 (UAPI,
    // only ever extended at the end). Older kernels fill less and leave the rest zero.
    const INFO_LEN: usize = 232;
    const RECURSION_MISSES: usize = 208;
    #[repr(C, align(8))]
    struct Info([u8; INFO_LEN]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info([0; INFO_LEN]);
    let mut attr = Attr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: INFO_LEN as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for this command, whose `info` points to
    // INFO_LEN writable bytes that outlive the call; the kernel writes at most info_len bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let b = &info.0[RECURSION_MISSES..RECURSION_MISSES + 8];
    Ok(u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}
