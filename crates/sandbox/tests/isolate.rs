//! Isolation tests: real sandboxes, so they need root (CI runs them as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandtrail_sandbox::isolate::{self, default_env, Exit, IsolateError, SandboxSpec};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("\n!!!!!!!! SKIPPED: not root — isolation tests need root !!!!!!!!\n");
    }
    root
}

/// A session: its dir (outside /tmp, which the sandbox replaces) and a workspace anyone may
/// write. Cleans up on drop, also when the test fails.
struct Session {
    _base: tempfile::TempDir,
    dir: PathBuf,
    ws: PathBuf,
}

impl Session {
    fn new() -> Session {
        let base = tempfile::Builder::new()
            .prefix("sandtrail-isolate-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = base.path().join("session");
        let ws = base.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).unwrap();
        Session {
            dir,
            ws,
            _base: base,
        }
    }

    fn spec(&self, as_root: bool, script: &str) -> SandboxSpec {
        SandboxSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: default_env(as_root),
            session_dir: self.dir.clone(),
            workspace: Some(self.ws.clone()),
            hidden: vec![],
            hostname: "sandtrail-test".into(),
            as_root,
            network: false,
            tmp_bytes: None,
            disk_bytes: None,
        }
    }

    fn run(&self, spec: &SandboxSpec) -> Exit {
        let mut sb = isolate::spawn(spec, &mut |_| Ok(())).unwrap();
        sb.wait().unwrap()
    }

    /// Runs `script` and returns (exit, what it wrote to /workspace/out).
    fn output(&self, as_root: bool, script: &str) -> (Exit, String) {
        let _ = std::fs::remove_file(self.ws.join("out"));
        let e = self.run(&self.spec(as_root, &format!("exec >/workspace/out 2>&1; {script}")));
        (
            e,
            std::fs::read_to_string(self.ws.join("out")).unwrap_or_default(),
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = isolate::cleanup(&self.dir, false);
    }
}

fn mounted_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

#[test]
fn exit_code_and_signal_are_the_commands() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    assert_eq!(s.run(&s.spec(false, "exit 3")), Exit::Code(3));
    let e = s.run(&s.spec(false, "kill -9 $$"));
    assert!(matches!(e, Exit::Signal { signal: 9, .. }), "{e:?}");
    assert_eq!(s.run(&s.spec(true, "true")), Exit::Code(0));
}

#[test]
fn uid_pid_namespace_and_hostname() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let (e, out) = s.output(
        false,
        "id -u; id -g; echo $$; cat /proc/1/comm; ls /proc | grep -E '^[0-9]+$' | wc -l; hostname",
    );
    assert_eq!(e, Exit::Code(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534", "{out}");
    assert_eq!(lines[1], "65534", "{out}");
    assert_eq!(lines[2], "2", "the command is pid 2 under init: {out}");
    assert_eq!(lines[3], "sandtrail-init", "{out}");
    let procs: usize = lines[4].trim().parse().unwrap();
    assert!(
        procs <= 5,
        "only the sandbox's processes are visible: {out}"
    );
    assert_eq!(lines[5], "sandtrail-test", "{out}");

    let (_, out) = s.output(true, "id -u");
    assert_eq!(out.trim(), "0");
}

#[test]
fn writes_land_in_the_upper_dir_not_on_the_host() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let name = format!("sandtrail-isolate-{}", std::process::id());
    let script =
        format!("echo hi > /{name} && echo there > /usr/{name} && echo ws > /workspace/ws-file");
    let mut sb = isolate::spawn(&s.spec(true, &script), &mut |_| Ok(())).unwrap();
    let upper = sb.root_dir().to_path_buf();
    assert_eq!(sb.wait().unwrap(), Exit::Code(0));
    assert_eq!(std::fs::read_to_string(upper.join(&name)).unwrap(), "hi\n");
    assert_eq!(
        std::fs::read_to_string(upper.join("usr").join(&name)).unwrap(),
        "there\n"
    );
    assert!(
        !Path::new("/").join(&name).exists(),
        "the host's / was written"
    );
    assert!(
        !Path::new("/usr").join(&name).exists(),
        "the host's /usr was written"
    );
    assert_eq!(
        std::fs::read_to_string(s.ws.join("ws-file")).unwrap(),
        "ws\n"
    );
    assert!(
        mounted_under(&s.dir).is_empty(),
        "the overlay is not mounted on the host"
    );
}

#[test]
fn hidden_paths_tmp_and_network() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let secret = tempfile::Builder::new()
        .prefix("sandtrail-secret")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(secret.path().join("key"), "SECRET").unwrap();
    let secret_file = secret.path().join("key");
    // Also a hidden single file, next to a visible one.
    let other = tempfile::Builder::new()
        .prefix("sandtrail-other")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(other.path().join("key"), "SECRET2").unwrap();
    std::fs::write(other.path().join("visible"), "VISIBLE").unwrap();
    std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = s.spec(
        true,
        &format!(
            "exec >/workspace/out 2>&1; cat {} ; ls -A {}; echo ---; cat {}/key; cat {}/visible; echo; echo ---; ls -A /tmp | wc -l; cat /proc/net/dev; echo ---; ls -A {}",
            secret_file.display(),
            secret.path().display(),
            other.path().display(),
            other.path().display(),
            s.dir.display()
        ),
    );
    spec.hidden = vec![secret.path().to_path_buf(), other.path().join("key")];
    // A file in the host's /tmp: the sandbox's /tmp is its own.
    let host_tmp = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(s.run(&spec), Exit::Code(0));
    let out = std::fs::read_to_string(s.ws.join("out")).unwrap();
    assert!(!out.contains("SECRET"), "hidden content visible: {out}");
    assert!(out.contains("VISIBLE"), "{out}");
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(
        parts[2].lines().next().unwrap().trim(),
        "0",
        "/tmp is empty: {out}"
    );
    let ifaces: Vec<&str> = parts[2]
        .lines()
        .skip(3)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    assert!(
        parts[3].trim().is_empty(),
        "the session dir is hidden: {out}"
    );
    drop(host_tmp);

    // network: loopback up or down.
    let (_, out) = s.output(
        true,
        "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    );
    let flags = out.lines().nth(1).unwrap_or("0x0");
    assert_eq!(
        u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap() & 1,
        0,
        "lo down without network: {out}"
    );
    let mut spec = s.spec(
        true,
        "exec >/workspace/out 2>&1; cat /sys/class/net/lo/flags",
    );
    spec.network = true;
    let _ = std::fs::remove_file(s.ws.join("out"));
    assert_eq!(s.run(&spec), Exit::Code(0));
    let out = std::fs::read_to_string(s.ws.join("out")).unwrap();
    assert_eq!(
        u32::from_str_radix(out.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1,
        "lo up with network: {out}"
    );
}

#[test]
fn as_root_is_still_confined() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let bpf = if cfg!(target_arch = "x86_64") {
        321
    } else {
        280
    };
    let script = format!(
        "python3 -c 'import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfor name, nr in ((\"bpf\", {bpf}), (\"io_uring_setup\", 425), (\"perf_event_open\", {perf}), (\"unshare\", {unshare})):\n    r = libc.syscall(nr, 0, 0, 0, 0, 0)\n    print(name, r, ctypes.get_errno())\n'; \
         mount -t tmpfs x /mnt; echo mount=$?; grep -E '^(NoNewPrivs|CapEff|CapBnd|Seccomp):' /proc/self/status; \
         cat /proc/1/environ >/dev/null 2>&1; echo environ=$?; echo 1 > /proc/sys/kernel/core_pattern; echo sysctl=$?",
        perf = if cfg!(target_arch = "x86_64") { 298 } else { 241 },
        unshare = if cfg!(target_arch = "x86_64") { 272 } else { 97 },
    );
    let (e, out) = s.output(true, &script);
    assert_eq!(e, Exit::Code(0), "{out}");
    for name in ["bpf", "io_uring_setup", "perf_event_open", "unshare"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(line, format!("{name} -1 {}", libc::EPERM), "{out}");
    }
    assert!(out.contains("mount=") && !out.contains("mount=0"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let cap_eff = out.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let caps = u64::from_str_radix(cap_eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(caps, isolate::ROOT_CAPS, "{out}");
    for cap in [16, 21, 19, 39, 38] {
        assert_eq!(caps & (1 << cap), 0, "capability {cap} kept: {out}");
    }
    assert!(
        !out.contains("environ=0"),
        "init's memory/environment is readable: {out}"
    );
    assert!(
        !out.contains("sysctl=0"),
        "host sysctls are writable: {out}"
    );

    // Unprivileged: nothing at all.
    let (_, out) = s.output(
        false,
        "grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd):' /proc/self/status",
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
}

#[test]
fn signals_are_forwarded_to_the_command() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let mut sb = isolate::spawn(
        &s.spec(false, "echo up > /workspace/up; exec sleep 30"),
        &mut |_| Ok(()),
    )
    .unwrap();
    for _ in 0..200 {
        if s.ws.join("up").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(sb.try_wait().unwrap(), None);
    sb.signal(libc::SIGTERM).unwrap();
    let e = sb.wait().unwrap();
    assert_eq!(
        e,
        Exit::Signal {
            signal: libc::SIGTERM,
            core_dumped: false
        }
    );
}

#[test]
fn setup_failure_kills_the_child() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let mut seen = 0;
    let err = isolate::spawn(&s.spec(false, "echo ran > /workspace/ran"), &mut |pid| {
        seen = pid;
        Err("cgroup placement failed".into())
    })
    .unwrap_err();
    assert!(matches!(err, IsolateError::Setup(_)), "{err}");
    assert!(err.to_string().contains("cgroup placement failed"));
    assert!(seen > 0);
    // The child is gone (reaped), and never ran the command.
    assert!(
        !Path::new(&format!("/proc/{seen}")).exists()
            || std::fs::read_to_string(format!("/proc/{seen}/stat"))
                .map(|s| !s.contains("sandtrail-init"))
                .unwrap_or(true)
    );
    assert!(!s.ws.join("ran").exists());
}

#[test]
fn errors_inside_the_sandbox_reach_the_caller() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let mut spec = s.spec(false, "true");
    spec.argv = vec!["no-such-command-sandtrail".into()];
    let err = isolate::spawn(&spec, &mut |_| Ok(())).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IsolateError::InSandbox { .. }), "{msg}");
    assert!(
        msg.contains("no-such-command-sandtrail") && msg.contains("PATH"),
        "{msg}"
    );

    let mut spec = s.spec(false, "true");
    spec.workspace = Some("/nonexistent/sandtrail-ws".into());
    let err = isolate::spawn(&spec, &mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, IsolateError::WorkspaceMissing(_)), "{err}");
}

#[test]
fn cleanup_removes_everything_and_is_idempotent() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    assert_eq!(
        s.run(&s.spec(true, "echo x > /file-in-upper")),
        Exit::Code(0)
    );
    assert!(s.dir.join("upper/file-in-upper").exists());
    isolate::cleanup(&s.dir, true).unwrap();
    assert!(
        s.dir.join("upper/file-in-upper").exists(),
        "keep keeps the change set"
    );
    isolate::cleanup(&s.dir, false).unwrap();
    assert!(!s.dir.exists());
    assert!(mounted_under(&s.dir).is_empty());
    isolate::cleanup(&s.dir, false).unwrap();
}

#[test]
fn disk_quota_limits_the_writable_layer() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    let name = format!("sandtrail-quota-{}", std::process::id());
    let mut spec = s.spec(
        true,
        &format!(
            "exec >/workspace/out 2>&1; dd if=/dev/zero of=/{name} bs=1M count=20; echo dd=$?; \
             rm /etc/hostname; \
             test -e /etc/hostname; echo hostname=$?"
        ),
    );
    spec.disk_bytes = Some(8 << 20);
    let mut sb = isolate::spawn(&spec, &mut |_| Ok(())).unwrap();
    let upper = sb.root_dir().to_path_buf();
    assert_eq!(upper, isolate::upper_dir(&s.dir));
    assert!(
        upper.starts_with(s.dir.join("layer")),
        "{}",
        upper.display()
    );
    assert_eq!(sb.wait().unwrap(), Exit::Code(0));
    let out = std::fs::read_to_string(s.ws.join("out")).unwrap();
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("dd=1"), "{out}");
    assert!(
        out.contains("hostname=1"),
        "a whiteout hides a lower file: {out}"
    );
    // The layer is mounted on the host until cleanup, full.
    let (used, limit) = isolate::disk_usage(&s.dir).expect("a quota layer");
    assert_eq!(limit, 8 << 20);
    assert!(used >= 7 << 20, "used {used}");
    let written = std::fs::metadata(upper.join(&name)).unwrap().len();
    assert!(written <= 8 << 20, "{written} bytes written past the quota");
    assert!(
        !Path::new("/").join(&name).exists(),
        "the host's / was written"
    );
    // Keep copies the change set out of the layer, then unmounts it.
    isolate::cleanup(&s.dir, true).unwrap();
    assert!(mounted_under(&s.dir).is_empty());
    assert!(isolate::disk_usage(&s.dir).is_none());
    assert_eq!(isolate::upper_dir(&s.dir), s.dir.join("upper"));
    assert_eq!(
        std::fs::metadata(s.dir.join("upper").join(&name))
            .unwrap()
            .len(),
        written
    );
    isolate::cleanup(&s.dir, false).unwrap();
    assert!(!s.dir.exists());
}

#[test]
fn no_disk_quota_no_layer() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    assert_eq!(s.run(&s.spec(true, "echo x > /f")), Exit::Code(0));
    assert!(isolate::disk_usage(&s.dir).is_none());
    assert_eq!(isolate::upper_dir(&s.dir), s.dir.join("upper"));
    assert!(!s.dir.join("layer").exists());
}

/// Calls the syscalls named on its command line (`name:nr:base`, each with the six arguments
/// base..base+5) and writes `name result errno` lines to /workspace/out, after a `pid` line
/// with its pid inside the sandbox. Then sleeps until killed.
const CALLS_PY: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
out = open('/workspace/out', 'w')
out.write('pid %d\n' % os.getpid())
out.flush()
for spec in sys.argv[1:]:
    name, nr, base = spec.split(':')
    nr, base = int(nr), int(base, 16)
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(base + i) for i in range(6)])
    out.write('%s %d %d\n' % (name, r, ctypes.get_errno()))
    out.flush()
out.write('done\n')
out.close()
time.sleep(3600)
"#;

/// Long enough for anything on a loaded CI machine: only guards against hanging forever.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until the file contains `marker`; returns its content. Panics after [`PATIENCE`].
fn wait_for_output(path: &Path, marker: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let out = std::fs::read_to_string(path).unwrap_or_default();
        if out.contains(marker) {
            return out;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{} never contained {marker:?}: {out}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Host pids of the direct children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// The value of a `Key:` line of /proc/PID/status.
fn status_field(pid: i32, key: &str) -> String {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status: {st}"))
        .trim()
        .to_string()
}

/// The descriptors of `pid` that are seccomp listeners.
fn listener_fds(pid: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let link = std::fs::read_link(e.path()).ok()?;
        (link.to_string_lossy() == "anon_inode:seccomp notify")
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
    .collect()
}

#[test]
fn denials_are_reported_with_name_pid_and_arguments() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    std::fs::write(s.ws.join("calls.py"), CALLS_PY).unwrap();
    // (name in the denial, name in the output, number, first argument)
    let mut denied: Vec<(Option<&str>, &str, i64, u64)> = vec![
        (Some("bpf"), "bpf", libc::SYS_bpf, 0x5a10),
        (
            Some("io_uring_setup"),
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            0x5a20,
        ),
        (
            Some("perf_event_open"),
            "perf_event_open",
            libc::SYS_perf_event_open,
            0x5a30,
        ),
        (
            Some("init_module"),
            "init_module",
            libc::SYS_init_module,
            0x5a40,
        ),
    ];
    if cfg!(target_arch = "x86_64") {
        // getpid with the x32 bit: refused (and reported) whatever the number means.
        denied.push((None, "x32_getpid", 0x4000_0000 | 39, 0x5a50));
    }
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        // python3 is a child of the command (sh), not the command itself.
        "python3 /workspace/calls.py \"$@\"; exit 3".into(),
        "sh".into(),
    ];
    for (i, (_, out_name, nr, base)) in denied.iter().enumerate() {
        argv.push(format!("{out_name}:{nr}:{base:x}"));
        // An allowed call between the denied ones: it must not be reported.
        argv.push(format!("getppid{i}:{}:0", libc::SYS_getppid));
    }
    let mut spec = s.spec(true, "");
    spec.argv = argv;

    let t0 = std::time::SystemTime::now();
    let mut sb = isolate::spawn(&spec, &mut |_| Ok(())).unwrap();
    let rx = sb.take_denials().expect("the receiver, the first time");
    assert!(sb.take_denials().is_none(), "the receiver is given once");

    let mut got = Vec::new();
    for (name, ..) in &denied {
        let d = rx.recv_timeout(PATIENCE).unwrap_or_else(|e| {
            panic!(
                "no denial for {name:?} ({e}); output: {:?}",
                std::fs::read_to_string(s.ws.join("out"))
            )
        });
        got.push(d);
    }
    // A denial arrives before the call returns: wait until python3 has written every result
    // and sleeps, then check whose pid the denials carry.
    let out = wait_for_output(&s.ws.join("out"), "done\n");
    let inner_pid = out
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .unwrap_or_else(|| panic!("{out}"));
    let command = children(sb.pid());
    assert_eq!(
        command.len(),
        1,
        "init has one child, the command: {command:?}"
    );
    let py = got[0].pid;
    assert!(py > 0 && py != command[0] && py != sb.pid(), "{got:?}");
    assert_eq!(status_field(py, "PPid"), command[0].to_string());
    assert_eq!(
        status_field(py, "NSpid"),
        format!("{py}\t{inner_pid}"),
        "the denial's pid is the host pid of the python3 process"
    );

    sb.signal(libc::SIGTERM).unwrap();
    assert_eq!(
        sb.wait().unwrap(),
        Exit::Signal {
            signal: libc::SIGTERM,
            core_dumped: false
        }
    );
    // Once the sandbox is reaped the channel ends, with nothing more in it: the allowed
    // calls (getppid, and everything sh and python3 do) were not reported.
    match rx.recv_timeout(PATIENCE) {
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        Ok(d) => panic!("unexpected denial {d:?}"),
        Err(e) => panic!("the denial channel did not end after the sandbox was reaped: {e}"),
    }
    assert_eq!(sb.denials_lost(), 0);

    let arch = if cfg!(target_arch = "x86_64") {
        isolate::Arch::X86_64
    } else {
        isolate::Arch::Aarch64
    };
    for ((name, out_name, nr, base), d) in denied.iter().zip(&got) {
        assert!(
            out.lines()
                .any(|l| l == format!("{out_name} -1 {}", libc::EPERM)),
            "{out_name} did not fail with EPERM: {out}"
        );
        assert_eq!(d.name, *name, "{d:?}");
        assert_eq!(i64::from(d.nr), *nr, "{d:?}");
        assert_eq!(d.arch, arch);
        assert_eq!(d.pid, py, "{d:?}");
        let args: Vec<u64> = (0..6).map(|i| base + i).collect();
        assert_eq!(d.args.to_vec(), args, "{d:?}");
        assert!(
            d.time >= t0 && d.time <= std::time::SystemTime::now(),
            "{d:?}"
        );
        assert_eq!(d.comm.as_deref(), Some("python3"), "{d:?}");
        let exe = d.exe.as_ref().unwrap_or_else(|| panic!("{d:?}"));
        assert!(
            exe.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3"),
            "{d:?}"
        );
    }
    for i in 0..denied.len() {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("getppid{i} ")))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(!line.starts_with(&format!("getppid{i} -1")), "{out}");
    }
}

/// `flood.py N`: calls bpf N times (forever if N is 0) and prints how many calls failed with
/// EPERM and how many did anything else.
const FLOOD_PY: &str = r#"
import ctypes, itertools, sys
libc = ctypes.CDLL(None, use_errno=True)
n = int(sys.argv[1])
eperm = other = 0
for _ in (itertools.count() if n == 0 else range(n)):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(BPF), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if r == -1 and ctypes.get_errno() == 1:
        eperm += 1
    else:
        other += 1
print(eperm, other)
"#;

fn flood_py() -> String {
    FLOOD_PY.replace("BPF", &libc::SYS_bpf.to_string())
}

/// Drains `rx` until the listener ends it; panics if it does not end.
fn drain(rx: &std::sync::mpsc::Receiver<isolate::Denial>) -> Vec<isolate::Denial> {
    let mut all = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(d) => all.push(d),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return all,
            Err(e) => panic!("the denial channel did not end after the sandbox was reaped: {e}"),
        }
    }
}

#[test]
fn a_full_queue_never_blocks_the_sandbox_and_counts_what_it_drops() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    std::fs::write(s.ws.join("flood.py"), flood_py()).unwrap();
    // 4 x 3000 denied calls while nobody reads the channel: they all return EPERM at once.
    let (procs, calls) = (4, 3000);
    let mut sb = isolate::spawn(
        &s.spec(
            true,
            &format!(
                "for i in $(seq {procs}); do python3 /workspace/flood.py {calls} > /workspace/flood$i & done; wait"
            ),
        ),
        &mut |_| Ok(()),
    )
    .unwrap();
    let rx = sb.take_denials().unwrap();
    assert_eq!(sb.wait().unwrap(), Exit::Code(0));
    for i in 1..=procs {
        let out = std::fs::read_to_string(s.ws.join(format!("flood{i}"))).unwrap();
        assert_eq!(out.trim(), format!("{calls} 0"), "flood{i}");
    }
    let got = drain(&rx);
    let total = (procs * calls) as u64;
    assert!(total > isolate::DENIAL_QUEUE as u64);
    assert_eq!(
        got.len(),
        isolate::DENIAL_QUEUE,
        "the queue holds exactly its capacity"
    );
    assert_eq!(sb.denials_lost(), total - isolate::DENIAL_QUEUE as u64);
    assert!(got.iter().all(|d| d.name == Some("bpf")));
}

#[test]
fn processes_killed_while_denied_do_not_stop_the_listener() {
    if !is_root() {
        return;
    }
    let s = Session::new();
    std::fs::write(s.ws.join("flood.py"), flood_py()).unwrap();
    // Endless bpf loops killed with SIGKILL (some calls are waiting for their answer, or were
    // received but not answered yet), then one more denied call, which must still get EPERM.
    let script = "pids=; for i in 1 2 3 4; do python3 /workspace/flood.py 0 >/dev/null & pids=\"$pids $!\"; done; \
                  sleep 1; kill -9 $pids; wait; python3 /workspace/flood.py 1 > /workspace/out";
    let mut sb = isolate::spawn(&s.spec(true, script), &mut |_| Ok(())).unwrap();
    let rx = sb.take_denials().unwrap();
    assert_eq!(sb.wait().unwrap(), Exit::Code(0));
    let out = std::fs::read_to_string(s.ws.join("out")).unwrap();
    assert_eq!(
        out.trim(),
        "1 0",
        "the last call was not answered with EPERM"
    );
    let got = drain(&rx);
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|d| d.name == Some("bpf")),
        "{:?}",
        got.last()
    );
}

#[test]
fn listeners_live_only_in_sandtrail_close_on_exec_until_the_end() {
    if !is_root() {
        return;
    }
    const NAME: &str = "listeners_live_only_in_sandtrail_close_on_exec_until_the_end";
    const ALONE: &str = "SANDTRAIL_ISOLATE_TEST_ALONE";
    if std::env::var_os(ALONE).is_none() {
        // This test counts its own process's descriptors, so it must be alone in its process
        // (other tests' sandboxes have listeners too): it runs itself in a child process.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    assert_eq!(listener_fds("self"), Vec::<String>::new());
    let s = Session::new();
    let mut sb = isolate::spawn(&s.spec(false, "exec sleep 3600"), &mut |_| Ok(())).unwrap();
    let rx = sb.take_denials().unwrap();
    let ours = listener_fds("self");
    assert_eq!(
        ours.len(),
        2,
        "one listener each for init and the command: {ours:?}"
    );
    for fd in &ours {
        let fd: i32 = fd.parse().unwrap();
        // SAFETY: F_GETFD on a descriptor number only reads its flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(
            flags >= 0 && flags & libc::FD_CLOEXEC != 0,
            "listener {fd} is inherited by exec"
        );
    }
    let init = sb.pid();
    let command = children(init);
    assert_eq!(command.len(), 1, "{command:?}");
    for pid in [init, command[0]] {
        assert!(
            Path::new(&format!("/proc/{pid}/fd")).is_dir(),
            "cannot inspect pid {pid}"
        );
        assert_eq!(
            listener_fds(&pid.to_string()),
            Vec::<String>::new(),
            "sandboxed pid {pid} holds a seccomp listener"
        );
    }
    sb.signal(libc::SIGTERM).unwrap();
    sb.wait().unwrap();
    assert_eq!(drain(&rx).len(), 0);
    assert_eq!(
        listener_fds("self"),
        Vec::<String>::new(),
        "the listeners are closed once the channel has ended"
    );
}
