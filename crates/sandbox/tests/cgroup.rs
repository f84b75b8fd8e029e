//! Session cgroups on the real host (root only): limits, membership in every hierarchy,
//! freezing, OOM kills, pids and CPU limits, kill/remove and sweep. Without root or cgroupfs each
//! test prints a loud `SKIPPED:` line and returns.
//!
//! Every cgroup here is named `sttest-<pid>-<test>` under sandtrail's own `sandtrail/`
//! directories, and a [`Guard`] kills and removes it (and reaps its children) even when an
//! assertion fails.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sandtrail_sandbox::cgroup::mounts::{parse_mountinfo, Mounts};
use sandtrail_sandbox::cgroup::{self, CgroupDriver, CgroupError, SessionCgroup};
use sandtrail_sandbox::Limits;

/// The driver, or `None` after printing why the test is skipped.
fn driver(test: &str) -> Option<Box<dyn CgroupDriver>> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        skip(&format!(
            "cgroup test {test}: not running as root (cgroups need root)"
        ));
        return None;
    }
    match cgroup::detect() {
        Ok(d) => Some(d),
        Err(e) => {
            skip(&format!("cgroup test {test}: no usable cgroupfs: {e}"));
            None
        }
    }
}

/// Prints a loud SKIPPED line straight to the process's stderr (not through the test harness's
/// output capture, so it shows even when the test passes).
fn skip(why: &str) {
    let _ = std::io::stderr().write_all(format!("\n!!!!! SKIPPED: {why} !!!!!\n").as_bytes());
}

fn mounts() -> Mounts {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap())
}

fn test_name(test: &str) -> String {
    format!("sttest-{}-{test}", std::process::id())
}

/// Kills and removes the cgroup and reaps the children on drop, also when a test fails.
struct Guard {
    cg: Box<dyn SessionCgroup>,
    children: Vec<Child>,
}

impl Guard {
    fn new(cg: Box<dyn SessionCgroup>) -> Self {
        Guard {
            cg,
            children: Vec::new(),
        }
    }

    /// Spawns `sh -c SCRIPT` (waiting on stdin if the script starts with `read x`), moves it
    /// into the cgroup, and returns its pid.
    fn spawn_in(&mut self, script: &str) -> i32 {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        self.children.push(child);
        self.cg.add_pid(pid).expect("add_pid");
        pid
    }

    /// Releases a child blocked in `read x`.
    fn go(&mut self, i: usize) {
        let stdin = self.children[i].stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").expect("write to child");
        stdin.flush().unwrap();
    }

    /// Waits up to `timeout` for child `i` to exit.
    fn wait(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.children[i].try_wait().unwrap() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cg.kill_all();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.cg.remove() {
            eprintln!("cleanup of {} failed: {e}", self.cg.name());
        }
    }
}

/// Every directory a session `name` may have: v2 and each v1 controller hierarchy.
fn all_dirs(name: &str) -> Vec<PathBuf> {
    let m = mounts();
    let mut dirs = vec![m.v2.clone().unwrap().join("sandtrail").join(name)];
    dirs.extend(m.v1.iter().map(|(_, p)| p.join("sandtrail").join(name)));
    dirs
}

fn cpu_ns(cg: &dyn SessionCgroup) -> u64 {
    cg.usage().expect("usage").cpu_ns
}

/// Polls `f` until true or `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn create_applies_limits_exactly_and_remove_cleans_up() {
    let Some(d) = driver("limits") else { return };
    eprintln!("cgroup layout: {}", d.describe());
    let name = test_name("limits");
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        cpus: Some(0.2),
        pids: Some(8),
    };
    let g = Guard::new(d.create(&name, &limits).expect("create"));

    let u = g.cg.usage().unwrap();
    assert_eq!(u.memory_limit, Some(32 << 20));
    assert_eq!(u.cpu_quota, Some((20_000, 100_000)));
    assert_eq!(u.pids_limit, Some(8));
    assert_eq!(u.pids_current, 0);
    assert_eq!(u.oom_kills, 0);

    // On v1 swap must not hide the memory limit.
    if let Some(m) = mounts().v1("memory") {
        let memsw = m
            .join("sandtrail")
            .join(&name)
            .join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            assert_eq!(
                std::fs::read_to_string(memsw).unwrap().trim(),
                (32u64 << 20).to_string()
            );
        }
    }

    // The id is the v2 directory's inode, and the directory is under sandtrail/.
    assert_eq!(g.cg.name(), name);
    assert_eq!(g.cg.id(), std::fs::metadata(g.cg.v2_path()).unwrap().ino());
    assert!(g.cg.v2_path().ends_with(Path::new("sandtrail").join(&name)));

    // A second create of the same name fails and leaves the first alone; open finds it.
    let e = d
        .create(&name, &Limits::default())
        .err()
        .expect("duplicate create must fail");
    assert!(matches!(e, CgroupError::Exists { .. }), "{e}");
    let opened = d.open(&name).expect("open");
    assert_eq!(opened.id(), g.cg.id());
    assert_eq!(opened.usage().unwrap().pids_limit, Some(8));

    // Bad names and bad limits fail before anything is created.
    assert!(matches!(
        d.create("../x", &Limits::default()),
        Err(CgroupError::InvalidName { .. })
    ));
    let bad = test_name("badlimit");
    let e = d
        .create(
            &bad,
            &Limits {
                cpus: Some(0.0),
                ..Limits::default()
            },
        )
        .err()
        .unwrap();
    assert!(matches!(e, CgroupError::InvalidLimit { .. }), "{e}");
    assert!(all_dirs(&bad).iter().all(|p| !p.exists()));
    let e = d.open(&bad).err().unwrap();
    assert!(matches!(e, CgroupError::NotFound { .. }), "{e}");

    // No limits: everything unlimited.
    let free = Guard::new(
        d.create(&test_name("nolimits"), &Limits::default())
            .unwrap(),
    );
    let u = free.cg.usage().unwrap();
    assert_eq!(
        (u.memory_limit, u.cpu_quota, u.pids_limit),
        (None, None, None)
    );
    drop(free);

    let dirs = all_dirs(&name);
    assert!(dirs[0].exists());
    g.cg.remove().unwrap();
    for p in &dirs {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn add_pid_joins_every_hierarchy_and_kill_all_remove_leave_nothing() {
    let Some(d) = driver("procs") else { return };
    let name = test_name("procs");
    let mut g = Guard::new(
        d.create(
            &name,
            &Limits {
                pids: Some(16),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    let pid = g.spawn_in("exec sleep 60");

    assert_eq!(g.cg.procs().unwrap(), vec![pid]);
    assert!(eventually(Duration::from_secs(2), || g
        .cg
        .usage()
        .unwrap()
        .pids_current
        == 1));

    // /proc/PID/cgroup: the v2 line and the line of every v1 controller sandtrail uses.
    let m = mounts();
    let want = format!("/sandtrail/{name}");
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut checked = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctls, path) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if ctls.is_empty() {
            assert_eq!(path, want, "v2: {line}");
            checked.push("v2".to_string());
        }
        for c in ctls.split(',') {
            if cgroup::mounts::V1_CONTROLLERS.contains(&c) && m.v1(c).is_some() {
                let dir = m.v1(c).unwrap().join("sandtrail").join(&name);
                if dir.exists() {
                    assert_eq!(path, want, "{c}: {line}");
                    checked.push(c.to_string());
                }
            }
        }
    }
    eprintln!("pid {pid} is in {want} in: {}", checked.join(","));
    assert!(checked.contains(&"v2".to_string()));
    // On hybrid hosts every v1 controller sandtrail uses (as describe() lists them) must be there.
    let desc = d.describe();
    if let Some(v1) = desc.split(", v1 ").nth(1) {
        for c in v1.split(',') {
            assert!(checked.iter().any(|x| x == c), "{c} not joined: {text}");
        }
    }

    g.cg.kill_all().unwrap();
    let status = g.wait(0, Duration::from_secs(5)).expect("sleep killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(g.cg.procs().unwrap().is_empty());
    g.cg.remove().unwrap();
    for p in all_dirs(&name) {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn frozen_busy_loop_accumulates_no_cpu_time() {
    let Some(d) = driver("freeze") else { return };
    let name = test_name("freeze");
    let mut g = Guard::new(d.create(&name, &Limits::default()).unwrap());
    g.spawn_in("while :; do :; done");
    assert!(
        eventually(Duration::from_secs(3), || cpu_ns(&*g.cg) > 50_000_000),
        "busy loop never ran"
    );

    // Freeze through a second handle, as `sandtrail pause` from another process would.
    let other = d.open(&name).unwrap();
    assert!(!g.cg.is_frozen().unwrap());
    other.freeze().unwrap();
    assert!(g.cg.is_frozen().unwrap());
    let before = cpu_ns(&*g.cg);
    sleep(Duration::from_millis(700));
    let after = cpu_ns(&*g.cg);
    assert!(
        after - before < 1_000_000,
        "frozen loop used {} ns of CPU",
        after - before
    );

    other.thaw().unwrap();
    assert!(!g.cg.is_frozen().unwrap());
    assert!(
        eventually(Duration::from_secs(3), || cpu_ns(&*g.cg)
            > after + 50_000_000),
        "loop did not run again after thaw"
    );

    // kill_all works on a frozen cgroup too (it thaws first).
    g.cg.freeze().unwrap();
    g.cg.kill_all().unwrap();
    let status = g
        .wait(0, Duration::from_secs(5))
        .expect("frozen loop killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn kill_all_thaws_a_v1_frozen_cgroup() {
    let Some(d) = driver("v1freeze") else { return };
    let Some(freezer) = mounts().v1("freezer").map(Path::to_path_buf) else {
        skip("kill_all_thaws_a_v1_frozen_cgroup: no v1 freezer hierarchy");
        return;
    };
    let name = test_name("v1freeze");
    let mut g = Guard::new(d.create(&name, &Limits::default()).unwrap());
    g.spawn_in("while :; do :; done");
    let state = freezer.join("sandtrail").join(&name).join("freezer.state");
    std::fs::write(&state, "FROZEN").unwrap();
    assert!(eventually(
        Duration::from_secs(3),
        || std::fs::read_to_string(&state).unwrap().trim() == "FROZEN"
    ));
    g.cg.kill_all().unwrap();
    let status = g
        .wait(0, Duration::from_secs(5))
        .expect("v1-frozen loop killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn memory_hog_is_oom_killed() {
    let Some(d) = driver("oom") else { return };
    let name = test_name("oom");
    let limit = 32u64 << 20;
    let mut g = Guard::new(
        d.create(
            &name,
            &Limits {
                memory_bytes: Some(limit),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let script = match python {
        Some(py) => {
            format!("read x; exec {py} -c 'a = []\nwhile True: a.append(b\"x\" * (1 << 20))'")
        }
        // Without python: the shell's own memory grows with a doubling variable.
        None => "read x; x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done".to_string(),
    };
    g.spawn_in(&script);
    g.go(0);
    let status = g
        .wait(0, Duration::from_secs(30))
        .expect("memory hog was not killed within 30 s");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "hog ended with {status:?}"
    );
    let u = g.cg.usage().unwrap();
    assert!(u.oom_kills >= 1, "{u:?}");
    assert_eq!(u.memory_limit, Some(limit));
    assert!(
        u.memory_peak == 0 || u.memory_peak <= limit + (1 << 20),
        "{u:?}"
    );
}

#[test]
fn fork_loop_hits_the_pids_limit() {
    let Some(d) = driver("pids") else { return };
    let name = test_name("pids");
    let mut g = Guard::new(
        d.create(
            &name,
            &Limits {
                pids: Some(8),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    g.spawn_in("read x; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do sleep 30 & done; wait");
    g.go(0);
    assert!(
        eventually(Duration::from_secs(5), || g
            .cg
            .usage()
            .unwrap()
            .pids_max_events
            >= 1),
        "no pids.events max: {:?}",
        g.cg.usage().unwrap()
    );
    let u = g.cg.usage().unwrap();
    assert!(u.pids_current <= 8, "{u:?}");
    assert_eq!(u.pids_limit, Some(8));
}

#[test]
fn cpu_limit_throttles_a_busy_loop() {
    let Some(d) = driver("cpu") else { return };
    let name = test_name("cpu");
    let mut g = Guard::new(
        d.create(
            &name,
            &Limits {
                cpus: Some(0.2),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    g.spawn_in("while :; do :; done");
    let start = Instant::now();
    sleep(Duration::from_secs(2));
    let u = g.cg.usage().unwrap();
    let wall = start.elapsed().as_nanos() as u64;
    eprintln!("cpu 0.2 for {wall} ns: {u:?}");
    assert!(u.cpu_periods > 0, "{u:?}");
    assert!(u.cpu_throttled_periods > 0, "{u:?}");
    assert!(u.cpu_throttled_ns > 0, "{u:?}");
    // 20 % of the wall time, with room for one period of slack and accounting jitter.
    assert!(
        u.cpu_ns < wall / 5 + 150_000_000,
        "used {} ns in {wall} ns",
        u.cpu_ns
    );
}

#[test]
fn sweep_removes_only_rejected_leftovers() {
    let Some(d) = driver("sweep") else { return };
    let leftover = test_name("sweep-leftover");
    let kept = test_name("sweep-kept");
    let mut g = Guard::new(
        d.create(
            &leftover,
            &Limits {
                memory_bytes: Some(64 << 20),
                ..Limits::default()
            },
        )
        .unwrap(),
    );
    let _kept = Guard::new(d.create(&kept, &Limits::default()).unwrap());
    g.spawn_in("exec sleep 60");

    // As after a crash: the leftover still holds a process; sweep kills it and removes it.
    let removed = d.sweep(&|n| n != leftover).expect("sweep");
    assert_eq!(removed, vec![leftover.clone()]);
    let status = g
        .wait(0, Duration::from_secs(5))
        .expect("leftover's process killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for p in all_dirs(&leftover) {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(d.open(&kept).is_ok(), "kept cgroup was removed");
    assert!(matches!(
        d.open(&leftover),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn v2_only_driver_reports_missing_controllers_and_still_freezes() {
    let Some(_) = driver("v2only") else { return };
    // The host's v2 hierarchy alone, as on a pure-v2 host whose root enables no controllers.
    let only_v2 = Mounts {
        v2: mounts().v2,
        v1: Vec::new(),
    };
    let d = cgroup::Driver::from_mounts(only_v2).unwrap();
    let name = test_name("v2only");
    if !d.describe().contains("memory") {
        let e = d
            .create(
                &name,
                &Limits {
                    memory_bytes: Some(64 << 20),
                    ..Limits::default()
                },
            )
            .err()
            .expect("a memory limit without a memory controller must fail");
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                CgroupError::ControllerMissing {
                    controller: "memory",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("memory controller is not available"), "{msg}");
        assert!(
            all_dirs(&name).iter().all(|p| !p.exists()),
            "failed create left directories"
        );
    }
    let mut g = Guard::new(d.create(&name, &Limits::default()).unwrap());
    g.spawn_in("while :; do :; done");
    // CPU time comes from the v2 cpu.stat here.
    assert!(eventually(Duration::from_secs(3), || cpu_ns(&*g.cg) > 20_000_000));
    g.cg.freeze().unwrap();
    let before = cpu_ns(&*g.cg);
    sleep(Duration::from_millis(400));
    assert!(cpu_ns(&*g.cg) - before < 1_000_000);
    g.cg.kill_all().unwrap();
    let status = g.wait(0, Duration::from_secs(5)).expect("killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    g.cg.remove().unwrap();
    assert!(!g.cg.v2_path().exists());
}

#[test]
fn attach_to_a_foreign_cgroup_and_refuse_what_is_not_one() {
    let Some(d) = driver("attach_to_a_foreign_cgroup_and_refuse_what_is_not_one") else {
        return;
    };
    let v2 = mounts().v2.expect("detect() found a v2 mount");
    // A provider's cgroup, outside sandtrail's subtree.
    let dir = v2.join(format!("sttest-provider-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let rel = dir.strip_prefix(&v2).unwrap();
    // Absolute and relative paths name the same cgroup.
    let cg = d.attach(&dir).unwrap();
    assert_eq!(cg.id(), std::fs::metadata(&dir).unwrap().ino());
    assert_eq!(d.attach(rel).unwrap().id(), cg.id());
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cg.add_pid(child.id() as i32).unwrap();
    assert_eq!(cg.procs().unwrap(), [child.id() as i32]);
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    cg.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    // Not sandtrail's: remove leaves it in place.
    cg.remove().unwrap();
    assert!(dir.is_dir());

    let why = |p: &Path| match d.attach(p) {
        Err(CgroupError::NotAttachable { why, .. }) => why,
        other => panic!("{p:?}: {:?}", other.map(|c| c.id())),
    };
    assert!(why(&v2).starts_with("that is the root of the hierarchy"));
    assert!(why(&v2.join("sandtrail/x")).contains("holds sandtrail's own session cgroups"));
    assert_eq!(why(&dir.join("../x")), "the path may not contain `..`");
    assert!(why(Path::new("/tmp")).starts_with("it is not in the cgroup v2 hierarchy"));
    assert!(why(&v2.join("sttest-no-such-cgroup")).starts_with("no such cgroup v2 directory"));
}
