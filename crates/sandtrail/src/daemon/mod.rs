//! `sandtrail daemon`: one long-lived process that owns the store and runs many sessions at
//! once, driven by the HTTP API ([`api`]) on a Unix socket (default `STATE/run/api.sock`, root
//! only, inside the state directory that no sandbox can see) and optionally on TCP with bearer
//! tokens ([`auth`]).
//!
//! Each session runs on its own thread through the same code as `sandtrail run`
//! ([`crate::session::run`], or [`crate::session::attach`] for a cgroup a provider created), so
//! both paths log the same lifecycle events. A session that fails (bad options, a missing
//! workspace, a cgroup that cannot be created) is answered with an error and leaves the others
//! running. SIGTERM or SIGINT stops every running session (terminate reason `api`, actor
//! `sandtrail daemon (shutdown)`: nothing keeps running unaudited), closes the store with a final
//! signed checkpoint and exits.

pub mod api;
pub mod auth;
pub mod http;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use sandtrail_event::Event;
use sandtrail_store::{Layout, StoreError, Writer};

use crate::session::control::{self, Command, Request};
use crate::session::{EventLog, Outcome, StartReport, Started};

/// Where and how the daemon listens.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unix socket of the API.
    pub socket: PathBuf,
    /// TCP address of the API (needs tokens).
    pub tcp: Option<SocketAddr>,
    /// Accepted bearer tokens (required on TCP; on the Unix socket too when given).
    pub tokens: Option<auth::Tokens>,
}

/// The default API socket of a state directory.
pub fn default_socket(layout: &Layout) -> PathBuf {
    control::run_dir(layout.root()).join("api.sock")
}

/// The store's writer, shared by every session; `None` once the daemon has closed it.
struct SharedWriter(Mutex<Option<Writer>>);

impl SharedWriter {
    /// Runs `append` on the writer, or fails when the daemon has closed it.
    fn with(&self, append: impl FnOnce(&mut Writer) -> Result<(), StoreError>) -> Result<()> {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match w.as_mut() {
            Some(w) => Ok(append(w).context("writing to the store")?),
            None => bail!("the store is closed: the daemon is shutting down"),
        }
    }
}

impl EventLog for SharedWriter {
    fn log(&self, ev: Event) -> Result<()> {
        self.with(|w| w.append(ev))
    }

    fn log_all(&self, evs: &mut dyn Iterator<Item = Event>) -> Result<()> {
        self.with(|w| w.append_all(evs))
    }
}

/// What the daemon knows about one session.
pub struct Entry {
    /// `sandbox` (the daemon created it) or `attach` (a provider's cgroup).
    pub mode: &'static str,
    /// When it was requested (ns since the epoch).
    pub created_ns: u64,
    /// Set once started.
    pub started: Option<Started>,
    /// Set once ended: its outcome, or why it failed.
    pub end: Option<Result<Outcome, String>>,
}

impl Entry {
    /// `starting`, `running`, `paused`, `ended` or `failed`.
    pub fn state(&self) -> &'static str {
        match (&self.end, &self.started) {
            (Some(Ok(_)), _) => "ended",
            (Some(Err(_)), _) => "failed",
            (None, None) => "starting",
            (None, Some(s)) if s.paused.load(Ordering::SeqCst) => "paused",
            (None, Some(_)) => "running",
        }
    }
}

/// The running daemon.
pub struct Daemon {
    layout: Layout,
    log: SharedWriter,
    /// Sessions by id, in id order; ended ones stay listed until the daemon exits.
    sessions: Mutex<BTreeMap<String, Entry>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tokens: Option<auth::Tokens>,
    shutting_down: AtomicBool,
}

impl Daemon {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session thread running `body` (which must report on `on_start`); waits until
    /// the session has started or failed to.
    fn start_session(
        self: &Arc<Self>,
        id: String,
        mode: &'static str,
        body: impl FnOnce(&Layout, &dyn EventLog, Sender<StartReport>) -> Result<Outcome>
            + Send
            + 'static,
    ) -> Result<Started, String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("the daemon is shutting down".into());
        }
        {
            let mut s = self.sessions();
            if s.contains_key(&id) {
                return Err(format!("session {id} already exists: choose another id"));
            }
            s.insert(
                id.clone(),
                Entry {
                    mode,
                    created_ns: sandtrail_store::now_ns(),
                    started: None,
                    end: None,
                },
            );
        }
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        let sid = id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("session-{id}"))
            .spawn(move || {
                let fail = tx.clone();
                let r = body(&me.layout, &me.log, tx).map_err(|e| format!("{e:#}"));
                if let Err(e) = &r {
                    let _ = fail.send(Err(e.clone()));
                    eprintln!("sandtrail daemon: session {sid} failed: {e}");
                }
                if let Some(entry) = me.sessions().get_mut(&sid) {
                    entry.end = Some(r);
                }
            })
            .map_err(|e| format!("cannot start a thread for the session: {e}"))?;
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread);
        // The first report wins: started, or the error that kept it from starting.
        let report = rx
            .recv()
            .unwrap_or_else(|_| Err("the session ended before it started".into()));
        let mut sessions = self.sessions();
        match &report {
            Ok(started) => {
                if let Some(e) = sessions.get_mut(&id) {
                    e.started = Some(started.clone());
                }
            }
            // Never started, nothing logged: the id is free again.
            Err(_) => {
                sessions.remove(&id);
            }
        }
        report
    }

    /// Sends a pause/resume/stop to a running session and waits for its answer.
    fn control(&self, id: &str, command: Command, actor: &str) -> Result<(), (u16, String)> {
        let control = {
            let s = self.sessions();
            let e = s
                .get(id)
                .ok_or_else(|| (404, format!("no session {id} in this daemon")))?;
            match (&e.end, &e.started) {
                (None, Some(st)) => st.control.clone(),
                _ => return Err((409, format!("session {id} is {}", e.state()))),
            }
        };
        let (rtx, rrx) = mpsc::channel();
        control
            .send(Request {
                command,
                actor: actor.to_string(),
                reply: rtx,
            })
            .map_err(|_| (409, format!("session {id} has ended")))?;
        match rrx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((
                409,
                format!("session {id} refused {}: {e}", command.as_str()),
            )),
            Err(_) => Err((409, format!("session {id} has ended"))),
        }
    }

    /// Stops every running session, waits for them to end, closes the store.
    fn shutdown(&self, why: &str) -> Result<()> {
        self.shutting_down.store(true, Ordering::SeqCst);
        let running: Vec<String> = self
            .sessions()
            .iter()
            .filter(|(_, e)| e.end.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &running {
            eprintln!("sandtrail daemon: stopping session {id} ({why})");
            let _ = self.control(id, Command::Stop, &format!("sandtrail daemon ({why})"));
        }
        let threads: Vec<_> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
        let writer = self
            .log
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let c = w.close()?;
            eprintln!("sandtrail daemon: store closed at size {} (signed)", c.size);
        }
        Ok(())
    }
}

/// Runs the daemon until SIGTERM/SIGINT/SIGHUP.
pub fn run(layout: Layout, cfg: Config) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("sandtrail daemon needs root (its sessions create namespaces, mounts and cgroups): run it with sudo or as a system service");
    }
    if cfg.tcp.is_some() && cfg.tokens.is_none() {
        bail!("--listen (TCP) needs --token-file: the API must not be open to every local user and process");
    }
    let signals = crate::signals::block();
    let writer = crate::cli::open_session_writer(&layout)?;
    let dir = control::run_dir(layout.root());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(parent) = cfg.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let unix = UnixListener::bind(&cfg.socket)
        .with_context(|| format!("listening on {}", cfg.socket.display()))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))?;
    let tcp = match cfg.tcp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .with_context(|| format!("listening on {addr}: is another daemon using it?"))?,
        ),
        None => None,
    };
    let daemon = Arc::new(Daemon {
        layout,
        log: SharedWriter(Mutex::new(Some(writer))),
        sessions: Mutex::new(BTreeMap::new()),
        threads: Mutex::new(Vec::new()),
        tokens: cfg.tokens,
        shutting_down: AtomicBool::new(false),
    });
    let d = daemon.clone();
    std::thread::Builder::new()
        .name("api-unix".into())
        .spawn(move || {
            for conn in unix.incoming().flatten() {
                let d = d.clone();
                let _ = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn(move || {
                        let actor = control::peer_actor(&conn);
                        api::serve(&d, &conn, Some(&actor));
                    });
            }
        })?;
    if let Some(tcp) = tcp {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("api-tcp".into())
            .spawn(move || {
                for conn in tcp.incoming().flatten() {
                    let d = d.clone();
                    let _ = std::thread::Builder::new()
                        .name("api-conn".into())
                        .spawn(move || api::serve(&d, &conn, None));
                }
            })?;
    }
    eprintln!(
        "sandtrail daemon: API on {}{}; store {}",
        cfg.socket.display(),
        cfg.tcp.map(|a| format!(" and tcp {a}")).unwrap_or_default(),
        daemon.layout.root().display()
    );
    let sig = crate::signals::wait(&signals);
    let why = format!(
        "shutdown on {}",
        sandtrail_event::signal_name(sig).unwrap_or("a signal")
    );
    eprintln!("sandtrail daemon: {why}");
    let r = daemon.shutdown(&why);
    let _ = std::fs::remove_file(&cfg.socket);
    crate::sources::kernel::detach_in_background();
    r.map_err(|e| anyhow!("closing the store: {e:#}"))
}
