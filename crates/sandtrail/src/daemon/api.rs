//! The HTTP API of the daemon (JSON in and out; errors are `{"error": "..."}` with a status
//! that says whose fault it was):
//!
//! | request | what it does |
//! |---|---|
//! | `GET /v1/health` | `{"status":"ok","sessions_running":N,"state_dir":...}` |
//! | `GET /v1/sessions` | every session this daemon has run, with its state |
//! | `POST /v1/sessions` | start a session: `{"command":[...], ...}` in a sandbox the daemon creates, or `{"cgroup":"/sys/fs/cgroup/..."}` to attach to a provider's cgroup; `201` with the session once it has started |
//! | `GET /v1/sessions/{id}` | one session: state, cgroup id, and once ended its reason, exit and usage |
//! | `POST /v1/sessions/{id}/pause` \| `resume` \| `stop` | lifecycle control; the actor logged is the caller |
//!
//! The actor is the token's name when a token is used, else the Unix socket peer's user name.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandtrail_sandbox::Limits;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{read_request, write_response, Request, Response};
use super::{Daemon, Entry};
use crate::cli::run::{parse_duration, parse_rate, parse_size};
use crate::session::control::Command;
use crate::session::events::Identity;
use crate::session::{self, AttachOptions, Keep, OnTimeout, RunOptions};

/// A size as a number of bytes or a string like `64M`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, field: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t).map_err(|e| format!("{field}: {e}")),
        }
    }
}

/// A rate as bits per second or a string like `10mbit`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Rate {
    Bps(u64),
    Text(String),
}

impl Rate {
    fn bps(&self) -> Result<u64, String> {
        match self {
            Rate::Bps(b) => Ok(*b),
            Rate::Text(t) => parse_rate(t).map_err(|e| format!("net_rate: {e}")),
        }
    }
}

/// A duration as seconds or a string like `30s`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Dur {
    Secs(f64),
    Text(String),
}

impl Dur {
    fn duration(&self, field: &str) -> Result<Duration, String> {
        match self {
            Dur::Secs(s) if s.is_finite() && *s > 0.0 => Ok(Duration::from_secs_f64(*s)),
            Dur::Secs(s) => Err(format!("{field}: {s} must be a positive number of seconds")),
            Dur::Text(t) => parse_duration(t).map_err(|e| format!("{field}: {e}")),
        }
    }
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    session_id: Option<String>,
    tenant: Option<String>,
    user: Option<String>,
    template: Option<String>,
    /// Attach mode: the provider's cgroup v2 directory.
    cgroup: Option<PathBuf>,
    /// Sandbox mode: the command.
    command: Option<Vec<String>>,
    memory: Option<Size>,
    cpus: Option<f64>,
    pids: Option<u64>,
    disk: Option<Size>,
    /// Bits per second, or a string like `10mbit`.
    net_rate: Option<Rate>,
    timeout: Option<Dur>,
    /// `kill` (default) or `pause`.
    on_timeout: Option<String>,
    /// Pause after this long without CPU use.
    idle_pause: Option<Dur>,
    workspace: Option<PathBuf>,
    #[serde(default)]
    as_root: bool,
    network: Option<bool>,
    /// Egress policy file (TOML) on the daemon's host.
    policy: Option<PathBuf>,
    /// Domains to allow on top of the policy.
    #[serde(default)]
    allow_domains: Vec<String>,
    /// `delete` (default), `preserve` or `snapshot`.
    keep: Option<String>,
    /// Paths whose reads are logged one by one, added to the defaults (as `run
    /// --sensitive-path`).
    #[serde(default)]
    sensitive_paths: Vec<String>,
}

/// Answers one request on `conn`. `unix_actor`: the peer's user name on the Unix socket.
pub fn serve<C: Read + Write>(d: &Arc<Daemon>, mut conn: C, unix_actor: Option<&str>) {
    let resp = match read_request(&mut conn) {
        Ok(req) => match authenticate(d, &req, unix_actor) {
            Ok(actor) => route(d, &req, &actor),
            Err(r) => r,
        },
        Err(r) => r,
    };
    let _ = write_response(&mut conn, &resp);
}

/// The actor, or the 401 to answer.
fn authenticate(d: &Daemon, req: &Request, unix_actor: Option<&str>) -> Result<String, Response> {
    match (&d.tokens, unix_actor) {
        (None, Some(user)) => Ok(user.to_string()),
        (None, None) => Err(Response::error(401, "no tokens configured")),
        (Some(tokens), _) => match req.bearer.as_deref().and_then(|t| tokens.check(t)) {
            Some(name) => Ok(name.to_string()),
            None => Err(Response::error(
                401,
                "missing or unknown bearer token: send `Authorization: Bearer TOKEN` with a token from the daemon's --token-file",
            )),
        },
    }
}

fn route(d: &Arc<Daemon>, req: &Request, actor: &str) -> Response {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "health"]) => health(d),
        ("GET", ["v1", "sessions"]) => {
            let s = d.sessions();
            let list: Vec<Value> = s.iter().map(|(id, e)| describe(id, e)).collect();
            Response::json(200, json!({ "sessions": list }))
        }
        ("POST", ["v1", "sessions"]) => create(d, &req.body, actor),
        ("GET", ["v1", "sessions", id]) => match d.sessions().get(*id) {
            Some(e) => Response::json(200, describe(id, e)),
            None => Response::error(404, format!("no session {id} in this daemon")),
        },
        ("POST", ["v1", "sessions", id, verb]) => {
            let Some(cmd) = Command::parse(verb) else {
                return Response::error(
                    404,
                    format!("unknown action {verb:?}: use pause, resume or stop"),
                );
            };
            match d.control(id, cmd, actor) {
                Ok(()) => match d.sessions().get(*id) {
                    Some(e) => Response::json(200, describe(id, e)),
                    None => Response::json(200, json!({ "session_id": id })),
                },
                Err((status, msg)) => Response::error(status, msg),
            }
        }
        (
            _,
            ["v1", "health"]
            | ["v1", "sessions"]
            | ["v1", "sessions", _]
            | ["v1", "sessions", _, _],
        ) => Response::error(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        ),
        _ => Response::error(
            404,
            format!(
                "no such endpoint {}: see `sandtrail daemon --help`",
                req.path
            ),
        ),
    }
}

fn health(d: &Daemon) -> Response {
    let running = d.sessions().values().filter(|e| e.end.is_none()).count();
    Response::json(
        200,
        json!({
            "status": "ok",
            "sessions_running": running,
            "state_dir": d.layout.root().display().to_string(),
        }),
    )
}

/// The JSON of one session.
fn describe(id: &str, e: &Entry) -> Value {
    let mut v = json!({
        "session_id": id,
        "mode": e.mode,
        "state": e.state(),
        "created": sandtrail_event::format_ts(e.created_ns),
    });
    if let Some(s) = &e.started {
        v["cgroup_id"] = json!(s.cgroup_id);
    }
    match &e.end {
        Some(Ok(o)) => {
            v["reason"] = json!(o.reason.as_str());
            match o.exit {
                Some(sandtrail_sandbox::isolate::Exit::Code(c)) => v["exit_code"] = json!(c),
                Some(sandtrail_sandbox::isolate::Exit::Signal { signal, .. }) => {
                    v["signal"] = json!(signal)
                }
                None => {}
            }
            v["usage"] = serde_json::to_value(&o.usage).unwrap_or(Value::Null);
            v["limit_hits"] = json!(o.limit_hits);
            v["policy_violations"] = json!(o.violations);
            if let Some(snap) = &o.snapshot {
                v["snapshot"] = serde_json::to_value(snap).unwrap_or(Value::Null);
            }
        }
        Some(Err(msg)) => v["error"] = json!(msg),
        None => {}
    }
    v
}

fn create(d: &Arc<Daemon>, body: &[u8], actor: &str) -> Response {
    let mut de = serde_json::Deserializer::from_slice(body);
    let c: CreateSession = match serde_path_to_error::deserialize(&mut de) {
        Ok(c) => c,
        Err(e) => {
            let path = e.path().to_string();
            return Response::error(
                400,
                if path == "." {
                    format!("request body: {}", e.inner())
                } else {
                    format!("request body, field {path}: {}", e.inner())
                },
            );
        }
    };
    match plan(c, actor) {
        Ok(Plan::Sandbox(opts)) => {
            let id = opts.identity.session_id.clone();
            finish(d.start_session(id, "sandbox", move |layout, log, tx| {
                session::run(
                    layout,
                    log,
                    RunOptions {
                        on_start: Some(tx),
                        ..opts
                    },
                )
            }))
        }
        Ok(Plan::Attach(opts)) => {
            let id = opts.identity.session_id.clone();
            finish(d.start_session(id, "attach", move |layout, log, tx| {
                session::attach(
                    layout,
                    log,
                    AttachOptions {
                        on_start: Some(tx),
                        ..opts
                    },
                )
            }))
        }
        Err(msg) => Response::error(400, msg),
    }
}

fn finish(r: Result<session::Started, String>) -> Response {
    match r {
        Ok(s) => Response::json(
            201,
            json!({ "session_id": s.session_id, "state": "running", "cgroup_id": s.cgroup_id }),
        ),
        Err(msg) => Response::error(400, msg),
    }
}

enum Plan {
    Sandbox(RunOptions),
    Attach(AttachOptions),
}

/// Turns a request body into session options, or says what is wrong with it.
fn plan(c: CreateSession, actor: &str) -> Result<Plan, String> {
    let identity = Identity {
        session_id: c.session_id.unwrap_or_else(session::new_session_id),
        tenant: c.tenant,
        user: c.user.or_else(|| Some(actor.to_string())),
        template: c.template,
    };
    session::validate_id(&identity.session_id).map_err(|e| format!("session_id: {e}"))?;
    let timeout = c.timeout.map(|t| t.duration("timeout")).transpose()?;
    let idle_pause = c.idle_pause.map(|t| t.duration("idle_pause")).transpose()?;
    let on_timeout = match c.on_timeout.as_deref() {
        None | Some("kill") => OnTimeout::Kill,
        Some("pause") => OnTimeout::Pause,
        Some(other) => return Err(format!("on_timeout: {other:?} is not one of kill, pause")),
    };
    let files = sandtrail_collector::FilePolicy::with_extra(&c.sensitive_paths)
        .map_err(|e| format!("sensitive_paths: {e}"))?;
    match (c.cgroup, c.command) {
        (Some(_), Some(_)) => Err(
            "give either `command` (a sandbox the daemon creates) or `cgroup` (attach to a provider's cgroup), not both".into(),
        ),
        (None, None) => Err(
            "give `command` (an argv list to run in a new sandbox) or `cgroup` (a cgroup v2 directory to attach to)".into(),
        ),
        (Some(cgroup), None) => {
            let sandbox_only = [
                ("memory", c.memory.is_some()),
                ("cpus", c.cpus.is_some()),
                ("pids", c.pids.is_some()),
                ("disk", c.disk.is_some()),
                ("net_rate", c.net_rate.is_some()),
                ("workspace", c.workspace.is_some()),
                ("as_root", c.as_root),
                ("network", c.network.is_some()),
                ("policy", c.policy.is_some()),
                ("allow_domains", !c.allow_domains.is_empty()),
                ("keep", c.keep.is_some()),
            ];
            if let Some((f, _)) = sandbox_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`{f}` applies to sandboxes the daemon creates; an attached cgroup keeps the provider's limits and filesystem (set them on the cgroup)"
                ));
            }
            Ok(Plan::Attach(AttachOptions {
                identity,
                cgroup,
                timeout,
                on_timeout,
                idle_pause,
                files,
                on_start: None,
            }))
        }
        (None, Some(argv)) => {
            if argv.is_empty() {
                return Err("command: give at least the program, e.g. [\"sh\", \"-c\", \"...\"]".into());
            }
            let keep = match c.keep.as_deref() {
                None | Some("delete") => Keep::Delete,
                Some("preserve") => Keep::Preserve,
                Some("snapshot") => Keep::Snapshot,
                Some(other) => {
                    return Err(format!(
                        "keep: {other:?} is not one of delete, preserve, snapshot"
                    ))
                }
            };
            if let Some(cpus) = c.cpus {
                if !(cpus.is_finite() && cpus > 0.0) {
                    return Err(format!("cpus: {cpus} must be a positive number of CPUs"));
                }
            }
            let network = c.network.unwrap_or(true);
            Ok(Plan::Sandbox(RunOptions {
                identity,
                argv,
                limits: Limits {
                    memory_bytes: c.memory.map(|m| m.bytes("memory")).transpose()?,
                    cpus: c.cpus,
                    pids: c.pids,
                },
                timeout,
                on_timeout,
                idle_pause,
                workspace: c.workspace,
                as_root: c.as_root,
                network,
                disk_bytes: c.disk.map(|m| m.bytes("disk")).transpose()?,
                net_rate_bps: c.net_rate.map(|r| r.bps()).transpose()?,
                policy: crate::cli::run::session_policy(
                    c.policy.as_deref(),
                    &c.allow_domains,
                    !c.network.unwrap_or(true),
                )
                .map_err(|e| format!("{e:#}"))?,
                files,
                keep,
                on_start: None,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Plan, String> {
        let c: CreateSession = serde_json::from_str(body).map_err(|e| e.to_string())?;
        plan(c, "alice")
    }

    #[test]
    fn sandbox_requests_become_run_options() {
        let Ok(Plan::Sandbox(o)) = parse(
            r#"{"session_id":"s1","command":["sh","-c","exit 3"],"memory":"64M","pids":32,"timeout":2.5,"keep":"snapshot"}"#,
        ) else {
            panic!("not a sandbox plan")
        };
        assert_eq!(o.identity.session_id, "s1");
        assert_eq!(o.identity.user.as_deref(), Some("alice"));
        assert_eq!(o.argv, ["sh", "-c", "exit 3"]);
        assert_eq!(o.limits.memory_bytes, Some(64 << 20));
        assert_eq!(o.limits.pids, Some(32));
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.keep, Keep::Snapshot);
        assert!(o.network);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = |b: &str| parse(b).err().unwrap();
        assert_eq!(
            e(r#"{"cgroup":"/x","memory":"1G"}"#),
            "`memory` applies to sandboxes the daemon creates; an attached cgroup keeps the provider's limits and filesystem (set them on the cgroup)"
        );
        assert!(e(r#"{}"#).starts_with("give `command`"));
        assert!(e(r#"{"cgroup":"/x","command":["true"]}"#).starts_with("give either"));
        assert_eq!(
            e(r#"{"command":["true"],"memory":"12Q"}"#),
            "memory: unknown size unit in \"12Q\": use K, M, G or T"
        );
        assert_eq!(
            e(r#"{"command":["true"],"keep":"forever"}"#),
            "keep: \"forever\" is not one of delete, preserve, snapshot"
        );
        assert!(e(r#"{"command":["true"],"session_id":"../x"}"#).starts_with("session_id: "));
        assert!(e(r#"{"comand":["true"]}"#).contains("unknown field `comand`"));
    }
}
