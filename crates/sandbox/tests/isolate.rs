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
