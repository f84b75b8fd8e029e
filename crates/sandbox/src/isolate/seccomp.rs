//! The sandbox's seccomp policy: data in `seccomp.json` (seccompiler's JSON format), compiled to
//! classic BPF for the running architecture at spawn time.
//!
//! The policy is a deny list on top of "allow": the syscalls that reach kernel subsystems the
//! audit depends on or that bypass syscall tracing (bpf, perf_event_open, io_uring_*), that change
//! the kernel (kexec_*, module loading), that undo the isolation (mount family, pivot_root,
//! unshare, setns, clone with a CLONE_NEW* flag), or that escape a pivot_root through file handles
//! (open_by_handle_at) or reach the host-wide key ring (keyctl, add_key, request_key) fail with
//! `EPERM`. `clone3` fails with `ENOSYS` so that libc falls back to `clone`, whose flags are
//! checked. Foreign architectures (i386 `int 0x80` on x86_64, arm32 on aarch64) are killed by the
//! architecture check, and x32 syscall numbers are refused, so no number escapes the list.
//!
//! # Denials are reported
//!
//! The "deny" filter does not return `EPERM` itself: its deny action is rewritten to
//! `SECCOMP_RET_USER_NOTIF` (`notify_instead_of_eperm` says why and how), and it is installed with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`. Each denied call then waits in the kernel until
//! sandtrail's listener has answered it with `EPERM` and reported it as a [`super::Denial`], so
//! the caller sees exactly the error it saw before, and sandtrail sees every attempt. On x86_64
//! the x32 guard is the first three instructions of the same program (the kernel refuses a second
//! listener in one process's filter chain), so x32 numbers are reported too. The "nosys" filter
//! (`clone3`) keeps its plain `ENOSYS`: that is how glibc's `pthread_create` and `posix_spawn`
//! are made to fall back to `clone`, routine and not a policy violation.
//!
//! The two programs must match disjoint syscalls: when several filters match, the kernel applies
//! the highest-precedence action, and `ERRNO` outranks `USER_NOTIF`, so a syscall matched by both
//! would fail without being reported (a unit test checks they are disjoint).

use super::notify::Arch;
use super::IsolateError;
use crate::sys::SockFilter;

/// The policy, as data.
pub const POLICY_JSON: &str = include_str!("seccomp.json");

/// The filter in [`POLICY_JSON`] whose matches are reported.
const NOTIFY_FILTER: &str = "deny";
/// The filters in [`POLICY_JSON`] that keep their own return action.
const PLAIN_FILTERS: [&str; 1] = ["nosys"];

/// `BPF_RET | BPF_K`: return the constant `k`.
const BPF_RET_K: u16 = 0x06;

/// The deny action of [`NOTIFY_FILTER`] in the JSON (`"errno": 1`), as a BPF return value.
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// The compiled policy, ready to install in this order.
pub(crate) struct Programs {
    /// The deny filter (with the x32 guard in front on x86_64), whose matches return
    /// `SECCOMP_RET_USER_NOTIF`: install with `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
    pub notify: Vec<SockFilter>,
    /// The other filters, installed as they are.
    pub plain: Vec<Vec<SockFilter>>,
}

fn target_arch() -> Result<seccompiler::TargetArch, IsolateError> {
    if cfg!(target_arch = "x86_64") {
        Ok(seccompiler::TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(seccompiler::TargetArch::aarch64)
    } else {
        Err(IsolateError::Seccomp(format!(
            "architecture {} is not supported (x86_64 and aarch64 are); build sandtrail for one of them",
            std::env::consts::ARCH
        )))
    }
}

/// Refuses x32 ABI syscall numbers (bit 30 set) on x86_64: they share the x86_64 audit arch, so
/// a deny list keyed on x86_64 numbers would not see them. Three instructions meant to run in
/// front of a program: x32 numbers return `EPERM` (rewritten to a notification with the rest),
/// every other number falls through to the instruction after them. Placed before the program's
/// architecture check, so a foreign-architecture call with bit 30 set is refused instead of
/// killing the process; either way it does not run.
fn x32_guard() -> [SockFilter; 3] {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x05 | 0x30;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    [
        SockFilter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        SockFilter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        SockFilter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: RET_EPERM,
        },
    ]
}

/// Rewrites every `RET ERRNO|EPERM` instruction of `prog` to `RET USER_NOTIF`; returns how many
/// it rewrote.
///
/// Why a rewrite: seccompiler (0.5) has no user-notification action, and its JSON format rejects
/// unknown ones, so the policy stays in its format with `EPERM` as the deny action and the
/// compiled program is patched. Only return instructions (`BPF_RET | BPF_K`) whose constant is
/// exactly `SECCOMP_RET_ERRNO | EPERM` change: a comparison with the same constant (an argument
/// check) or another errno keeps its meaning, and no jump offset moves, so which calls match is
/// unchanged; only what happens to a match does. The listener answers each notification with
/// `EPERM`, so the caller's result is the same as before the rewrite.
pub(crate) fn notify_instead_of_eperm(prog: &mut [SockFilter]) -> usize {
    let mut n = 0;
    for i in prog.iter_mut() {
        if i.code == BPF_RET_K && i.k == RET_EPERM {
            i.k = libc::SECCOMP_RET_USER_NOTIF;
            n += 1;
        }
    }
    n
}

fn convert(prog: &[seccompiler::sock_filter]) -> Vec<SockFilter> {
    prog.iter()
        .map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// Compiles the policy for this architecture.
pub(crate) fn compile() -> Result<Programs, IsolateError> {
    let arch = target_arch()?;
    let mut map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch).map_err(|e| {
        IsolateError::Seccomp(format!(
            "the built-in policy (isolate/seccomp.json) does not compile: {e}; this is a bug in sandtrail"
        ))
    })?;
    let mut take = |name: &str| {
        map.remove(name).ok_or_else(|| {
            IsolateError::Seccomp(format!(
                "the built-in policy (isolate/seccomp.json) has no filter {name:?}; this is a bug in sandtrail"
            ))
        })
    };
    let mut notify = Vec::new();
    if cfg!(target_arch = "x86_64") {
        notify.extend(x32_guard());
    }
    notify.extend(convert(&take(NOTIFY_FILTER)?));
    if notify_instead_of_eperm(&mut notify) == 0 {
        return Err(IsolateError::Seccomp(format!(
            "the built-in policy's filter {NOTIFY_FILTER:?} has no EPERM action to report; this is a bug in sandtrail"
        )));
    }
    let plain = PLAIN_FILTERS
        .iter()
        .map(|name| take(name).map(|p| convert(&p)))
        .collect::<Result<_, _>>()?;
    Ok(Programs { notify, plain })
}

/// The syscalls the deny filter names, with their numbers on x86_64 and aarch64 (a unit test
/// checks this table against the policy and against seccompiler's own tables).
const DENIED: [(&str, i32, i32); 27] = [
    ("bpf", 321, 280),
    ("perf_event_open", 298, 241),
    ("io_uring_setup", 425, 425),
    ("io_uring_enter", 426, 426),
    ("io_uring_register", 427, 427),
    ("kexec_load", 246, 104),
    ("kexec_file_load", 320, 294),
    ("init_module", 175, 105),
    ("finit_module", 313, 273),
    ("delete_module", 176, 106),
    ("mount", 165, 40),
    ("umount2", 166, 39),
    ("pivot_root", 155, 41),
    ("unshare", 272, 97),
    ("setns", 308, 268),
    ("open_tree", 428, 428),
    ("move_mount", 429, 429),
    ("fsopen", 430, 430),
    ("fsmount", 432, 432),
    ("fsconfig", 431, 431),
    ("fspick", 433, 433),
    ("mount_setattr", 442, 442),
    ("open_by_handle_at", 304, 265),
    ("keyctl", 250, 219),
    ("add_key", 248, 217),
    ("request_key", 249, 218),
    ("clone", 56, 220),
];

/// The name of a syscall the deny filter reports, `None` for any other number (on x86_64 that
/// includes x32 numbers, which are refused wholesale).
pub(crate) fn denied_name(arch: Arch, nr: i32) -> Option<&'static str> {
    DENIED.iter().find_map(|&(name, x86_64, aarch64)| {
        let n = match arch {
            Arch::X86_64 => x86_64,
            Arch::Aarch64 => aarch64,
            Arch::Other(_) => return None,
        };
        (n == nr).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

    fn native_audit_arch() -> u32 {
        if cfg!(target_arch = "x86_64") {
            AUDIT_ARCH_X86_64
        } else {
            AUDIT_ARCH_AARCH64
        }
    }

    /// Runs a seccomp classic-BPF program on `seccomp_data { nr, arch, args }` (little-endian,
    /// like both supported architectures) and returns its action. Knows exactly the
    /// instructions seccompiler and [`x32_guard`] emit; anything else fails the test.
    fn run(prog: &[SockFilter], nr: i32, arch: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr as u32,
                4 => arch,
                8 | 12 => 0, // instruction pointer
                16..=63 if off.is_multiple_of(4) => {
                    let a = args[(off as usize - 16) / 8];
                    if off.is_multiple_of(8) {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                _ => panic!("load from offset {off}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            let jump = |cond: bool| pc + 1 + usize::from(if cond { i.jt } else { i.jf });
            pc = match i.code {
                0x20 => {
                    acc = word(i.k);
                    pc + 1
                } // LD W ABS
                0x54 => {
                    acc &= i.k;
                    pc + 1
                } // ALU AND K
                0x05 => pc + 1 + i.k as usize, // JA
                0x15 => jump(acc == i.k),      // JEQ K
                0x25 => jump(acc > i.k),       // JGT K
                0x35 => jump(acc >= i.k),      // JGE K
                0x45 => jump(acc & i.k != 0),  // JSET K
                0x06 => return i.k,            // RET K
                c => panic!("unexpected opcode {c:#x} at {}", pc),
            };
        }
    }

    fn names(filter: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        v[filter]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap().to_string())
            .collect()
    }

    fn native(name: &str) -> i32 {
        let &(_, x86_64, aarch64) = DENIED.iter().find(|d| d.0 == name).unwrap();
        if cfg!(target_arch = "x86_64") {
            x86_64
        } else {
            aarch64
        }
    }

    #[test]
    fn policy_compiles_for_both_architectures() {
        for arch in [
            seccompiler::TargetArch::x86_64,
            seccompiler::TargetArch::aarch64,
        ] {
            let map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch).unwrap();
            for name in std::iter::once(NOTIFY_FILTER).chain(PLAIN_FILTERS) {
                assert!(!map[name].is_empty(), "{name} for {arch:?}");
            }
            assert_eq!(
                map.len(),
                1 + PLAIN_FILTERS.len(),
                "a filter is not installed"
            );
        }
        let p = compile().unwrap();
        assert!(!p.notify.is_empty());
        assert_eq!(p.plain.len(), PLAIN_FILTERS.len());
    }

    #[test]
    fn policy_lists_the_required_syscalls() {
        let names = names("deny");
        for s in [
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsmount",
        ] {
            assert!(
                names.iter().any(|n| n == s),
                "{s} missing from the deny filter"
            );
        }
    }

    #[test]
    fn rewriting_touches_only_eperm_returns() {
        let ins = |code: u16, k: u32| SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let mut prog = vec![
            ins(0x20, 16),                                                 // LD args[0]
            ins(0x15, RET_EPERM),      // JEQ with the same constant
            ins(BPF_RET_K, RET_EPERM), // deny
            ins(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::EACCES as u32), // another errno
            ins(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
            ins(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
            ins(BPF_RET_K, RET_EPERM),
        ];
        let before = prog.clone();
        assert_eq!(notify_instead_of_eperm(&mut prog), 2);
        for (i, (a, b)) in before.iter().zip(&prog).enumerate() {
            if i == 2 || i == 6 {
                assert_eq!(b.k, libc::SECCOMP_RET_USER_NOTIF, "instruction {i}");
                assert_eq!((a.code, a.jt, a.jf), (b.code, b.jt, b.jf));
            } else {
                assert_eq!(a, b, "instruction {i} changed");
            }
        }
        // Idempotent: nothing left to rewrite.
        assert_eq!(notify_instead_of_eperm(&mut prog), 0);
    }

    #[test]
    fn compiled_policy_notifies_for_every_deny_and_nothing_else() {
        let arch = native_audit_arch();
        let p = compile().unwrap();
        assert!(
            !p.notify
                .iter()
                .any(|i| i.code == BPF_RET_K && i.k == RET_EPERM),
            "an EPERM return was not rewritten"
        );
        let notif = libc::SECCOMP_RET_USER_NOTIF;
        let allow = libc::SECCOMP_RET_ALLOW;
        let nosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let plain = |nr: i32, args: [u64; 6]| -> Vec<u32> {
            p.plain.iter().map(|f| run(f, nr, arch, args)).collect()
        };
        // Every listed syscall (without arguments: clone is listed per flag) is reported, and
        // no plain filter matches it (ERRNO would win over USER_NOTIF and hide the report).
        for name in names("deny") {
            let nr = native(&name);
            let args = if name == "clone" {
                [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]
            } else {
                [0; 6]
            };
            assert_eq!(run(&p.notify, nr, arch, args), notif, "{name}");
            assert!(plain(nr, args).iter().all(|&a| a == allow), "{name}");
        }
        // clone: each namespace flag is reported, a plain fork is not.
        let clone = native("clone");
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let flags = (flag | libc::SIGCHLD) as u64;
            assert_eq!(run(&p.notify, clone, arch, [flags, 0, 0, 0, 0, 0]), notif);
        }
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(run(&p.notify, clone, arch, [fork, 0, 0, 0, 0, 0]), allow);
        // Everyday calls pass; clone3 is the plain filter's ENOSYS, not a report.
        for nr in [
            libc::SYS_getpid,
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_execve,
        ] {
            assert_eq!(run(&p.notify, nr as i32, arch, [0; 6]), allow, "{nr}");
        }
        let clone3 = libc::SYS_clone3 as i32;
        assert_eq!(run(&p.notify, clone3, arch, [0; 6]), allow);
        assert_eq!(plain(clone3, [0; 6]), vec![nosys]);
        // A foreign architecture is killed.
        let foreign = if arch == AUDIT_ARCH_X86_64 {
            AUDIT_ARCH_I386
        } else {
            0x4000_0028 // AUDIT_ARCH_ARM
        };
        assert_eq!(
            run(&p.notify, 20, foreign, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        if cfg!(target_arch = "x86_64") {
            // x32 numbers (bit 30) are reported, whatever the syscall.
            for nr in [0x4000_0000 | 39, 0x4000_0000 | 321, 0x4000_0000 | 512] {
                assert_eq!(run(&p.notify, nr, arch, [0; 6]), notif, "{nr:#x}");
                assert_eq!(denied_name(Arch::X86_64, nr), None);
            }
        }
    }

    /// The syscall numbers of the deny filter's `JEQ`s, as seccompiler compiles a one-syscall
    /// filter for `arch`.
    fn seccompiler_number(name: &str, arch: seccompiler::TargetArch, audit: u32) -> u32 {
        let json = format!(
            r#"{{"f": {{"mismatch_action": "allow", "match_action": "log", "filter": [{{"syscall": "{name}"}}]}}}}"#
        );
        let map = seccompiler::compile_from_json(json.as_bytes(), arch).unwrap();
        let consts: Vec<u32> = map["f"]
            .iter()
            .filter(|i| i.code == 0x15 && i.k != audit)
            .map(|i| i.k)
            .collect();
        assert_eq!(consts.len(), 1, "{name}: {consts:?}");
        consts[0]
    }

    #[test]
    fn name_table_matches_the_policy_and_seccompiler() {
        let listed = names("deny");
        for name in &listed {
            assert!(
                DENIED.iter().any(|d| d.0 == name),
                "{name} is denied but has no entry in DENIED"
            );
        }
        for &(name, x86_64, aarch64) in &DENIED {
            assert!(listed.iter().any(|n| n == name), "{name} is not denied");
            let x = seccompiler_number(name, seccompiler::TargetArch::x86_64, AUDIT_ARCH_X86_64);
            let a = seccompiler_number(name, seccompiler::TargetArch::aarch64, AUDIT_ARCH_AARCH64);
            assert_eq!(x, x86_64 as u32, "{name} on x86_64");
            assert_eq!(a, aarch64 as u32, "{name} on aarch64");
            assert_eq!(denied_name(Arch::X86_64, x86_64), Some(name));
            assert_eq!(denied_name(Arch::Aarch64, aarch64), Some(name));
        }
        assert_eq!(denied_name(Arch::X86_64, 39), None); // getpid
        assert_eq!(denied_name(Arch::Aarch64, 172), None); // getpid
        assert_eq!(denied_name(Arch::Other(AUDIT_ARCH_I386), 321), None);
        // And the native numbers agree with libc's.
        assert_eq!(native("bpf"), libc::SYS_bpf as i32);
        assert_eq!(native("init_module"), libc::SYS_init_module as i32);
        assert_eq!(native("perf_event_open"), libc::SYS_perf_event_open as i32);
        assert_eq!(native("io_uring_setup"), libc::SYS_io_uring_setup as i32);
        assert_eq!(native("clone"), libc::SYS_clone as i32);
    }
}
