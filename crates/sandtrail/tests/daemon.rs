//! `sandtrail daemon` for real (root, CI): many sessions at once through the HTTP API, attach
//! mode on a cgroup the test creates (as a sandbox provider would), tokens on TCP, shutdown.
//! Without root the tests say loudly that they were skipped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!(
            "\n*** SKIPPED: sandtrail daemon tests need root (namespaces, mounts, cgroups) ***\n"
        );
    }
    root
}

/// One HTTP exchange; returns status and JSON body.
fn exchange(
    mut conn: impl Read + Write,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: sandtrail\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let json = resp.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn api(sock: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    exchange(UnixStream::connect(sock).unwrap(), method, path, None, body)
}

/// A running daemon; killed (SIGKILL) if a test fails before stopping it.
struct DaemonProc {
    child: Option<Child>,
    log: PathBuf,
}

impl DaemonProc {
    fn start(state: &Path, extra: &[&str]) -> DaemonProc {
        let log = state.with_extension("daemon.log");
        let child = bin()
            .arg("--state-dir")
            .arg(state)
            .arg("daemon")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let sock = state.join("run/api.sock");
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DaemonProc {
            child: Some(child),
            log,
        }
    }

    /// SIGTERM, then its exit status and log.
    fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our live child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        (st.code(), std::fs::read_to_string(&self.log).unwrap())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cgroup v2 directory made by the test, as a sandbox provider would; removed on drop.
struct ProviderCgroup {
    dir: PathBuf,
    procs: Vec<Child>,
}

impl ProviderCgroup {
    fn new(name: &str) -> ProviderCgroup {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mounts
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .map(|l| l.split(' ').nth(4).unwrap().to_string())
            .expect("a cgroup v2 mount");
        let dir = Path::new(&root).join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        ProviderCgroup {
            dir,
            procs: Vec::new(),
        }
    }

    /// Starts `sh -c SCRIPT` inside the cgroup (it moves itself in before running SCRIPT).
    fn spawn(&mut self, script: &str) -> u32 {
        let procs = self.dir.join("cgroup.procs");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {} && {script}", procs.display()))
            .spawn()
            .unwrap();
        let pid = child.id();
        self.procs.push(child);
        let t = Instant::now();
        while !std::fs::read_to_string(&procs)
            .unwrap()
            .lines()
            .any(|l| l == pid.to_string())
        {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }
}

impl Drop for ProviderCgroup {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn wait_state(sock: &Path, id: &str, state: &str) -> Value {
    let t = Instant::now();
    loop {
        let (st, v) = api(sock, "GET", &format!("/v1/sessions/{id}"), None);
        assert_eq!(st, 200, "{v}");
        if v["state"] == state {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "session {id} never became {state}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn many_sessions_at_once_attach_mode_and_shutdown() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let daemon = DaemonProc::start(&state, &[]);
    let sock = state.join("run/api.sock");
    assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);

    let (st, v) = api(&sock, "GET", "/v1/health", None);
    assert_eq!((st, &v["status"]), (200, &json!("ok")), "{v}");

    // Three sandboxes at once; the one with a bad workspace fails alone.
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(
            json!({"session_id": "d_exit5", "command": ["sh", "-c", "sleep 1; exit 5"], "network": false}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["session_id"], "d_exit5");
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"session_id": "d_long", "command": ["sleep", "60"], "network": false})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"session_id": "d_bad", "command": ["true"], "workspace": "/nonexistent/ws"})),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"], "workspace /nonexistent/ws does not exist or is not a directory: create it or pass another --workspace");
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"session_id": "d_long", "command": ["true"]})),
    );
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "session d_long already exists: choose another id")
    );
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"comand": ["true"]})),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `comand`"),
        "{v}"
    );

    // Attach to a provider's cgroup with a process already in it.
    let mut cg = ProviderCgroup::new("sandtrail-test-provider");
    let pid = cg.spawn("exec sleep 60");
    // Already running its final image when the session begins.
    let t = Instant::now();
    while !std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .starts_with(b"sleep\0")
    {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"session_id": "d_attach", "cgroup": cg.dir})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["cgroup_id"], std::fs::metadata(&cg.dir).unwrap().ino());
    let (st, v) = api(
        &sock,
        "POST",
        "/v1/sessions",
        Some(json!({"cgroup": "/sys/fs/cgroup/unified", "session_id": "d_root"})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("that is the root of the hierarchy"),
        "{v}"
    );

    // Pause/resume through the API; the provider's process is frozen meanwhile.
    let (st, v) = api(&sock, "POST", "/v1/sessions/d_attach/pause", None);
    assert_eq!((st, &v["state"]), (200, &json!("paused")), "{v}");
    let events = std::fs::read_to_string(cg.dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    let (st, v) = api(&sock, "POST", "/v1/sessions/d_attach/resume", None);
    assert_eq!((st, &v["state"]), (200, &json!("running")), "{v}");
    // The provider's agent connects somewhere (a listener of this test on loopback): observed
    // by the kernel programs on its cgroup, not enforced.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = cg.spawn(&format!(
        "exec /usr/bin/python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {port})); s.sendall(b'y' * 1000); s.close()\""
    ));
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 1000);
    // The provider ends its agent: the session ends with it.
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let v = wait_state(&sock, "d_attach", "ended");
    assert_eq!(v["reason"], "exit", "{v}");
    assert!(
        cg.dir.is_dir(),
        "the provider's cgroup is not sandtrail's to remove"
    );

    // Pause from the CLI (control socket) while the daemon runs it, resume through the API.
    let o = run(&state, &["pause", "d_long"], "");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(wait_state(&sock, "d_long", "paused")["mode"], "sandbox");
    let (st, _) = api(&sock, "POST", "/v1/sessions/d_long/resume", None);
    assert_eq!(st, 200);

    let v = wait_state(&sock, "d_exit5", "ended");
    assert_eq!(
        (&v["reason"], &v["exit_code"]),
        (&json!("exit"), &json!(5)),
        "{v}"
    );
    let (st, v) = api(&sock, "POST", "/v1/sessions/d_exit5/pause", None);
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (409, "session d_exit5 is ended")
    );
    let (st, _) = api(&sock, "POST", "/v1/sessions/nope/stop", None);
    assert_eq!(st, 404);
    let (st, _) = api(&sock, "DELETE", "/v1/sessions/d_long", None);
    assert_eq!(st, 405);
    let (st, v) = api(&sock, "GET", "/v1/sessions", None);
    assert_eq!(st, 200);
    let listed: Vec<(&str, &str)> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("d_attach", "ended"),
            ("d_exit5", "ended"),
            ("d_long", "running")
        ]
    );

    // Shutdown stops what still runs, and says so in the log.
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!sock.exists());

    let exit5 = session_events(events_of(&state, "d_exit5"));
    assert_eq!(kinds(&exit5), LIFECYCLE);
    assert_eq!(exit5[2]["session"]["exit_code"], 5);
    assert!(
        events_of(&state, "d_bad").is_empty(),
        "a refused session logs nothing"
    );
    let long = session_events(events_of(&state, "d_long"));
    assert_eq!(kinds(&long), PAUSED_LIFECYCLE);
    assert_eq!(long[2]["session"]["actor"], "root");
    assert_eq!(long[3]["session"]["actor"], "root");
    assert_eq!(long[4]["session"]["reason"], "api");
    assert_eq!(
        long[4]["session"]["actor"],
        "sandtrail daemon (shutdown on SIGTERM)"
    );
    // The provider's process, there before the session began, is taken up from /proc; its
    // end is seen by the kernel programs.
    let all = events_of(&state, "d_attach");
    // In the order the ledger sealed them (seq): session.create, session.start, then what the
    // session's processes did (the process taken up from /proc included).
    let mut by_seq: Vec<&Value> = all.iter().collect();
    by_seq.sort_by_key(|e| e["seq"].as_u64().unwrap());
    assert_eq!(
        [&by_seq[0]["kind"], &by_seq[1]["kind"]],
        ["session.create", "session.start"],
        "{by_seq:#?}"
    );
    let execs: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "process.exec" && e["source"] == "sandbox")
        .collect();
    assert_eq!(execs.len(), 1, "{execs:#?}");
    assert_eq!(execs[0]["source"], "sandbox");
    assert_eq!(execs[0]["exec"]["argv"], json!(["sleep", "60"]));
    assert_eq!(execs[0]["process"]["pid"], pid);
    let exits: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "process.exit" && e["process"]["pid"] == pid)
        .collect();
    assert_eq!(exits.len(), 1, "{all:#?}");
    // Its status is not known: the kernel programs did not track it from its start, and its
    // parent (this test) is outside the session, so no wait of the session reports it.
    assert_eq!(exits[0]["exit"].get("signal"), None);
    assert_eq!(
        exits[0]["process"]["exec_id"],
        execs[0]["process"]["exec_id"]
    );
    let connects: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "net.connect" && e["net"]["dst"]["port"] == port)
        .collect();
    assert_eq!(connects.len(), 1, "{all:#?}");
    assert_eq!(connects[0]["process"]["pid"], client);
    assert_eq!(connects[0]["net"]["dst"]["ip"], "127.0.0.1");
    assert_eq!(connects[0]["policy"]["rule"], "allow:loopback");
    let flow: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "net.flow" && e["net"]["dst"]["port"] == port)
        .collect();
    assert_eq!(flow.len(), 1, "{all:#?}");
    assert_eq!(flow[0]["process"]["pid"], client);
    let out_bytes = flow[0]["net"]["bytes_out"].as_u64().unwrap();
    assert!((1000..1000 + 80 * 8).contains(&out_bytes), "{}", flow[0]);
    let att = session_events(all);
    assert_eq!(kinds(&att), PAUSED_LIFECYCLE);
    assert_eq!(att[2]["session"]["reason"], "api");
    assert_eq!(att[4]["session"]["reason"], "exit");
    assert_eq!(att[4]["session"].get("exit_code"), None);
    assert_eq!(att[5]["session"]["fs_state"], "preserved");
    let o = run(&state, &["verify"], "");
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
}

#[test]
fn tcp_needs_a_token_and_logs_its_name() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let tokens = d.path().join("tokens");
    std::fs::write(
        &tokens,
        "# test\norchestrator 0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let tok = tokens.to_str().unwrap();

    // Refused before anything starts: TCP without tokens, a token file others can read.
    let o = run(&state, &["daemon", "--listen", &addr], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("--listen (TCP) needs --token-file"),
        "{}",
        err(&o)
    );
    let o = run(
        &state,
        &["daemon", "--listen", &addr, "--token-file", tok],
        "",
    );
    assert!(err(&o).contains("(mode 644): `chmod 600"), "{}", err(&o));
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();

    let daemon = DaemonProc::start(&state, &["--listen", &addr, "--token-file", tok]);
    let tcp = |method: &str, path: &str, token: Option<&str>, body: Option<Value>| {
        exchange(
            TcpStream::connect(&addr).unwrap(),
            method,
            path,
            token,
            body,
        )
    };
    let good = Some("0123456789abcdef0123456789abcdef");
    assert_eq!(tcp("GET", "/v1/health", None, None).0, 401);
    assert_eq!(
        tcp(
            "GET",
            "/v1/health",
            Some("0123456789abcdef0123456789abcdeX"),
            None
        )
        .0,
        401
    );
    assert_eq!(tcp("GET", "/v1/health", good, None).0, 200);
    // The Unix socket needs the token too once tokens are configured.
    assert_eq!(
        api(&state.join("run/api.sock"), "GET", "/v1/health", None).0,
        401
    );

    let (st, v) = tcp(
        "POST",
        "/v1/sessions",
        good,
        Some(json!({"session_id": "t1", "command": ["sleep", "30"], "network": false})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = tcp("POST", "/v1/sessions/t1/stop", good, None);
    assert_eq!(st, 200, "{v}");
    let (code, log) = daemon.stop();
    assert_eq!(code, Some(0), "{log}");
    let evs = events_of(&state, "t1");
    assert_eq!(evs[0]["session"]["user"], "orchestrator");
    let term = evs
        .iter()
        .find(|e| e["kind"] == "session.terminate")
        .unwrap();
    assert_eq!(
        (&term["session"]["reason"], &term["session"]["actor"]),
        (&json!("api"), &json!("orchestrator"))
    );
}
