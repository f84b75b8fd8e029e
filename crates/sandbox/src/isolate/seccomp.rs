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

use super::IsolateError;
use crate::sys::SockFilter;

/// The policy, as data.
pub const POLICY_JSON: &str = include_str!("seccomp.json");

/// Filter names in [`POLICY_JSON`], in installation order.
const FILTERS: [&str; 2] = ["deny", "nosys"];

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
/// a deny list keyed on x86_64 numbers would not see them.
fn x32_guard() -> Vec<SockFilter> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x05 | 0x30;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
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
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        SockFilter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

/// Compiles the policy for this architecture: the BPF programs to install, in order.
pub fn compile() -> Result<Vec<Vec<SockFilter>>, IsolateError> {
    let arch = target_arch()?;
    let mut map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch).map_err(|e| {
        IsolateError::Seccomp(format!(
            "the built-in policy (isolate/seccomp.json) does not compile: {e}; this is a bug in sandtrail"
        ))
    })?;
    let mut programs = Vec::new();
    for name in FILTERS {
        let prog = map.remove(name).ok_or_else(|| {
            IsolateError::Seccomp(format!(
                "the built-in policy (isolate/seccomp.json) has no filter {name:?}; this is a bug in sandtrail"
            ))
        })?;
        programs.push(
            prog.iter()
                .map(|i| SockFilter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect(),
        );
    }
    if cfg!(target_arch = "x86_64") {
        programs.push(x32_guard());
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_for_both_architectures() {
        for arch in [
            seccompiler::TargetArch::x86_64,
            seccompiler::TargetArch::aarch64,
        ] {
            let map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch).unwrap();
            for name in FILTERS {
                assert!(!map[name].is_empty(), "{name} for {arch:?}");
            }
        }
        assert!(compile().unwrap().len() >= 2);
    }

    #[test]
    fn policy_lists_the_required_syscalls() {
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        let names: Vec<&str> = v["deny"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
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
            assert!(names.contains(&s), "{s} missing from the deny filter");
        }
    }
}
