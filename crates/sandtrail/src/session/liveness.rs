//! Which sessions are alive: each `sandtrail run` holds an `flock` on
//! `/run/sandtrail/sessions/ID.lock` for as long as it runs. The kernel drops the lock when the
//! process dies (also on `kill -9`), so a later run can tell a crashed session's leftovers
//! (cgroups, mounts) from a live session's and sweep only the former.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Directory of the liveness locks (hidden inside every sandbox).
pub fn dir() -> PathBuf {
    PathBuf::from("/run/sandtrail/sessions")
}

fn path(session: &str) -> PathBuf {
    dir().join(format!("{session}.lock"))
}

/// Take the lock of `session` for the life of the returned file.
pub fn hold(session: &str) -> Result<File> {
    std::fs::create_dir_all(dir()).with_context(|| format!("creating {}", dir().display()))?;
    let p = path(session);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("session {session} is already running on this host; choose another --session-id")
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).context(format!("locking {}", p.display())),
    }
}

/// True while some process holds the lock of `session`.
pub fn is_alive(session: &str) -> bool {
    let Ok(f) = OpenOptions::new().write(true).open(path(session)) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        // Cannot tell: keep it.
        Err(std::fs::TryLockError::Error(_)) => true,
    }
}
