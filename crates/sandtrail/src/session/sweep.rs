//! Sweeping what a `sandtrail run` that died (e.g. `kill -9`) left behind: its cgroups (and the
//! processes still in them), its veth and nft table, its mounts, and the missing end of its
//! story in the log.

use std::path::Path;

use anyhow::{Context, Result};
use sandtrail_event::{FsState, TerminateReason, Usage};
use sandtrail_sandbox::cgroup::CgroupDriver;
use sandtrail_sandbox::{isolate, net};

use super::events::{Identity, Lifecycle};
use super::liveness;
use super::EventLog;

/// Remove leftovers of dead sessions. Sessions of this store (a directory in
/// `STATE/sessions/`) also get their `session.terminate` (reason `internal_error`, killed by
/// SIGKILL) and `session.cleanup` (their change set is preserved) logged, so their story ends.
pub fn sweep(
    state_dir: &Path,
    driver: &dyn CgroupDriver,
    network: bool,
    log: &dyn EventLog,
    sweeper: &str,
    own: &str,
) -> Result<()> {
    // `own` holds its liveness lock already: a crashed session with the same id is a leftover.
    let alive = |name: &str| name != own && liveness::is_alive(name);
    for name in driver.sweep(&alive).context("sweeping leftover cgroups")? {
        eprintln!(
            "sandtrail: removed the cgroup of session {name}, left behind by a sandtrail that died"
        );
    }
    if network {
        for what in net::sweep(&alive).context("sweeping leftover session networks")? {
            eprintln!("sandtrail: removed {what}, left behind by a sandtrail that died");
        }
    }
    let sessions = state_dir.join("sessions");
    let Ok(entries) = std::fs::read_dir(&sessions) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_dir() || id.ends_with(".swept") || alive(&id) {
            continue;
        }
        // Keep the change set: it is evidence of what the session did.
        isolate::cleanup(&e.path(), true)
            .with_context(|| format!("unmounting what session {id} left behind"))?;
        let lc = Lifecycle {
            id: Identity {
                session_id: id.clone(),
                ..Default::default()
            },
            host_id: sandtrail_store::recovery::default_host_id(),
        };
        log.log(lc.terminate(
            TerminateReason::InternalError,
            None,
            Some(9),
            Some(sweeper),
            Usage::default(),
        ))?;
        log.log(lc.cleanup(FsState::Preserved, None))?;
        // Marked as swept so a later run does not log it again.
        let swept = sessions.join(format!("{id}.swept"));
        std::fs::rename(e.path(), &swept)
            .with_context(|| format!("moving {} aside", e.path().display()))?;
        eprintln!(
            "sandtrail: session {id} was left behind by a sandtrail that died: logged as terminated (internal_error); its changes are in {}",
            swept.join("upper").display()
        );
    }
    Ok(())
}
