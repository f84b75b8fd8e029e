//! The control socket of a running session: `sandtrail pause|resume|stop SESSION` from another
//! terminal. One socket per session in `STATE/run/` (0700, root), outside the sandbox.
//! Protocol: one line in (`pause`, `resume`, `stop`), one line out (`ok` or `error: ...`). The
//! actor recorded in the events is the connecting user, from the kernel's peer credentials.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};

/// A request to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Freeze every process of the session.
    Pause,
    /// Thaw it.
    Resume,
    /// Kill it (terminate reason `api`).
    Stop,
}

impl Command {
    /// `pause`, `resume` or `stop`.
    pub fn parse(s: &str) -> Option<Command> {
        match s.trim() {
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "stop" => Some(Command::Stop),
            _ => None,
        }
    }
    /// The request's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Stop => "stop",
        }
    }
}

/// A request with who sent it and where to answer.
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Who asked (user name, or `uid N`).
    pub actor: String,
    /// Where the outcome goes.
    pub reply: Sender<Result<(), String>>,
}

/// Directory of control sockets and liveness locks.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// Control socket path of a session.
pub fn socket_path(state_dir: &Path, session: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{session}.sock"))
}

/// The listening control socket of a session; dropping it stops listening and removes the
/// socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept; the thread sees the flag and ends.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on the session's socket; requests go to `tx` until the returned server is dropped.
pub fn serve(state_dir: &Path, session: &str, tx: Sender<Request>) -> Result<ControlServer> {
    let dir = run_dir(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = socket_path(state_dir, session);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("sandtrail-control".into())
        .spawn(move || {
            // A client error only ends that connection.
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = handle(conn, &tx);
                }
            }
        })?;
    Ok(ControlServer {
        path,
        stop,
        thread: Some(thread),
    })
}

fn handle(conn: UnixStream, tx: &Sender<Request>) -> Result<()> {
    let actor = peer_actor(&conn);
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut out = &conn;
    let Some(command) = Command::parse(&line) else {
        writeln!(
            out,
            "error: unknown request {:?}; use pause, resume or stop",
            line.trim()
        )?;
        return Ok(());
    };
    let (rtx, rrx) = mpsc::channel();
    tx.send(Request {
        command,
        actor,
        reply: rtx,
    })
    .map_err(|_| anyhow!("session ended"))?;
    match rrx.recv() {
        Ok(Ok(())) => writeln!(out, "ok")?,
        Ok(Err(e)) => writeln!(out, "error: {e}")?,
        Err(_) => writeln!(out, "error: the session ended")?,
    }
    Ok(())
}

/// The connecting user's name (from SO_PEERCRED and /etc/passwd), or `uid N`.
pub fn peer_actor(conn: &UnixStream) -> String {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a properly sized, writable ucred and `len` holds its size, as
    // getsockopt(SO_PEERCRED) requires; the fd is a live Unix socket owned by `conn`.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return "unknown".into();
    }
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?;
            (uid.parse::<u32>().ok()? == cred.uid).then(|| name.to_string())
        })
    });
    name.unwrap_or_else(|| format!("uid {}", cred.uid))
}

/// Send a command to a running session and wait for its answer.
pub fn request(state_dir: &Path, session: &str, command: Command) -> Result<()> {
    let path = socket_path(state_dir, session);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "no running session {session:?} here ({}: {e}); `sandtrail sessions` lists sessions, and --state-dir must match the one `run` used",
            path.display()
        )
    })?;
    writeln!(conn, "{}", command.as_str())?;
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(anyhow!(
            "session {session} refused {}: {}",
            command.as_str(),
            other.strip_prefix("error: ").unwrap_or(other)
        )),
    }
}
