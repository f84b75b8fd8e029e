//! An agent cannot blind collection from inside (root, CI): a statically linked program that
//! makes its calls with raw `syscall()` (no libc wrappers, no dynamic loader to interpose on) is
//! recorded exactly like any other, because the programs sit on the kernel's syscall
//! tracepoints. (Killing sandtrail, bpf(), io_uring, moving cgroups and mounting are refused:
//! `run.rs`, `the_agent_cannot_reach_the_audit`.)

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const AGENT_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    long fd = syscall(SYS_openat, AT_FDCWD, "made-by-static", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd < 0) return 10;
    if (syscall(SYS_write, fd, "x", 1) != 1) return 11;
    syscall(SYS_close, fd);
    if (syscall(SYS_renameat2, AT_FDCWD, "made-by-static", AT_FDCWD, "renamed-by-static", 0) != 0)
        return 12;
    if (syscall(SYS_unlinkat, AT_FDCWD, "renamed-by-static", 0) != 0) return 13;
    char *argv[] = {"true", "from-static", 0};
    char *envp[] = {0};
    syscall(SYS_execve, "/usr/bin/true", argv, envp);
    return 14;
}
"#;

fn the(evs: &[Value], kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let found: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == kind && pred(e))
        .collect();
    assert_eq!(found.len(), 1, "one {kind}: {found:#?}");
    found[0].clone()
}

#[test]
fn a_static_binary_making_raw_syscalls_is_recorded() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = ws.path().join("agent.c");
    std::fs::write(&src, AGENT_C).unwrap();
    let bin = ws.path().join("static-agent");
    let cc = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    let cc = match cc {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("cc -static failed: {}", err(&o)),
        Err(e) => {
            eprintln!("\n*** SKIPPED: no C compiler to build the static test program ({e}) ***\n");
            return;
        }
    };
    drop(cc);
    // Static indeed: no PT_INTERP program header (no dynamic loader runs it).
    let elf = std::fs::read(&bin).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    });
    assert!(!interp, "the program is dynamically linked");
    let o = sandtrail_run(
        d.path(),
        "ses_static",
        &[
            "--as-root",
            "--no-network",
            "--workspace",
            ws.path().to_str().unwrap(),
        ],
        &["sh", "-c", "cd /workspace && ./static-agent"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let evs = events_of(d.path(), "ses_static");
    // `sh` was found through PATH without a failed execve per PATH entry before it.
    let execs: Vec<(&Value, &Value)> = evs
        .iter()
        .filter(|e| e["kind"] == "process.exec")
        .map(|e| (&e["process"]["exe"], &e["exec"]["result"]))
        .collect();
    assert_eq!(
        execs,
        [
            (&Value::from("/usr/bin/sh"), &Value::from("ok")),
            (&Value::from("/workspace/static-agent"), &Value::from("ok")),
            (&Value::from("/usr/bin/true"), &Value::from("ok")),
        ],
        "{evs:#?}"
    );
    let agent = the(&evs, "process.exec", |e| {
        e["process"]["exe"] == "/workspace/static-agent"
    });
    assert_eq!(agent["exec"]["argv"], serde_json::json!(["./static-agent"]));
    assert_eq!(agent["exec"]["cwd"], "/workspace");
    let id = agent["process"]["exec_id"].as_str().unwrap().to_string();
    let pid = agent["process"]["pid"].clone();
    let by_agent = |e: &Value| e["process"]["exec_id"] == id.as_str();
    let open = the(&evs, "file.open", |e| {
        by_agent(e) && e["file"]["path"] == "/workspace/made-by-static"
    });
    assert_eq!(open["file"]["access"], "write");
    assert_eq!(open["file"]["created"], true);
    assert_eq!(open["file"]["result"], "ok");
    let rename = the(&evs, "file.rename", by_agent);
    assert_eq!(rename["file"]["path"], "/workspace/made-by-static");
    assert_eq!(rename["file"]["new_path"], "/workspace/renamed-by-static");
    let delete = the(&evs, "file.delete", by_agent);
    assert_eq!(delete["file"]["path"], "/workspace/renamed-by-static");
    // Its raw execve: the same process, a new image.
    let next = the(&evs, "process.exec", |e| {
        e["exec"]["argv"] == serde_json::json!(["true", "from-static"])
    });
    assert_eq!(next["process"]["pid"], pid);
    assert_eq!(next["process"]["exe"], "/usr/bin/true");
    assert_eq!(next["exec"]["result"], "ok");
    // The summary counts the images the session executed.
    let usage = &one(&evs, "session.terminate")["session"]["usage"];
    assert_eq!(usage["processes"], 3, "{usage}");
    verify_ok(d.path());
}
