//! The termination signals (SIGTERM, SIGINT, SIGHUP) of `run` and `daemon`: blocked in every
//! thread and taken by one waiting thread, so that a signal ends sessions cleanly (logged,
//! cleaned up) instead of killing sandtrail halfway.

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it starts later, so that
/// only [`wait`] sees them. Call before starting any thread.
pub fn block() -> libc::sigset_t {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; sigaddset and
    // pthread_sigmask only read and write it and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals; returns its number.
pub fn wait(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set and `sig` a writable int, as sigwait
    // requires.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
