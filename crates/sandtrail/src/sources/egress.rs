//! A session's egress policy in the kernel: the `cgroup/connect*`/`sendmsg*` programs
//! ([`NetProbe`]) attached to its cgroup, loaded with the policy's mode and address rules, and
//! kept in step with its DNS answers: every address an allowed name resolves to is allowed
//! (on the name's ports) before the forwarder sends the answer, and removed again once its TTL
//! (plus grace) has passed and no allowed name points at it any more.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result};
use sandtrail_bpf::net::{AllowHandle, NetMode, NetOptions, NetProbe, Prefix};
use sandtrail_net::policy::{Mode, Policy};
use sandtrail_net::resolved::{ResolvedEntry, ResolvedIps};

/// The port of the session's DNS forwarder.
pub const DNS_PORT: u16 = 53;

/// The rule that lets IPv4 DNS queries to any resolver through the kernel: the session's nft
/// table redirects them to its forwarder.
pub const DNS_REDIRECT_RULE: &str = "allow:dns-redirect";

/// The dynamic (answer-derived) part of a session's kernel allow list.
pub struct EgressRules {
    handle: Mutex<AllowHandle>,
    policy: Arc<Policy>,
    /// Rule name → kernel entry id.
    ids: HashMap<String, u32>,
    /// Static allow entries: an answer never replaces (and so never removes) one of these.
    statics: Vec<(Prefix, Option<u16>)>,
    /// Entries allowed from answers, and when they lapse.
    dynamic: Mutex<HashMap<(IpAddr, Option<u16>), Instant>>,
}

/// A session's loaded egress programs and what goes with them.
pub struct Egress {
    /// The programs, attached to the session's cgroup.
    pub probe: NetProbe,
    /// Kernel entry rule names, by id.
    pub rule_names: Vec<String>,
    /// The answer-derived allow entries (shared with the DNS forwarder's listener).
    pub rules: Arc<EgressRules>,
}

fn prefix(net: &ipnet::IpNet) -> Prefix {
    Prefix::new(net.network(), net.prefix_len()).expect("an IpNet's length fits its family")
}

/// Loads the egress programs for `policy`, attaches them to the cgroup v2 directory
/// `cgroup_dir` (from then on, every connect and datagram of the session is decided) and lets
/// the DNS forwarder at `dns` through. Every destination the policy does not allow is denied
/// with EPERM from here on, until the forwarder's answers allow addresses.
pub fn setup(cgroup_dir: &Path, policy: Arc<Policy>, dns: Ipv4Addr) -> Result<Egress> {
    let mut probe =
        NetProbe::load(NetOptions::default()).context("loading the kernel egress programs")?;
    let mut rule_names: Vec<String> = Vec::new();
    let id_of = |name: &str, names: &mut Vec<String>| -> u32 {
        match names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                names.push(name.to_string());
                (names.len() - 1) as u32
            }
        }
    };
    let mut statics = Vec::new();
    for r in policy.kernel_rules() {
        let id = id_of(&r.rule, &mut rule_names);
        let p = prefix(&r.net);
        if r.allow {
            probe.allow(p, r.port, id)?;
            statics.push((p, r.port));
        } else {
            probe.deny(p, id)?;
        }
    }
    // Every query to port 53, whatever resolver it names, is redirected to the session's
    // forwarder by the session's nft table (on the host side, out of the sandbox's reach), which
    // logs it and applies the policy to the name: let it through here.
    let redirect = id_of(DNS_REDIRECT_RULE, &mut rule_names);
    probe.allow(
        Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("/0"),
        Some(DNS_PORT),
        redirect,
    )?;
    let mut ids = HashMap::new();
    for name in policy.answer_rules() {
        let id = id_of(&name, &mut rule_names);
        ids.insert(name, id);
    }
    probe.set_mode(match policy.mode {
        Mode::Allowlist => NetMode::Allowlist,
        Mode::Open => NetMode::Open,
        Mode::None => NetMode::None,
    })?;
    probe.set_dns_forwarder(Some(dns), None, DNS_PORT)?;
    attach(probe, cgroup_dir, rule_names, policy, ids, statics)
}

/// Attaches the configured `probe` to `cgroup_dir`: from now on it decides.
fn attach(
    mut probe: NetProbe,
    cgroup_dir: &Path,
    rule_names: Vec<String>,
    policy: Arc<Policy>,
    ids: HashMap<String, u32>,
    statics: Vec<(Prefix, Option<u16>)>,
) -> Result<Egress> {
    let handle = probe.allow_handle()?;
    probe.attach(cgroup_dir).with_context(|| {
        format!(
            "attaching the egress programs to {} (cgroup v2)",
            cgroup_dir.display()
        )
    })?;
    Ok(Egress {
        probe,
        rule_names,
        rules: Arc::new(EgressRules {
            handle: Mutex::new(handle),
            policy,
            ids,
            statics,
            dynamic: Mutex::new(HashMap::new()),
        }),
    })
}

/// Loads the egress programs in observe-only mode and attaches them to a cgroup sandtrail does
/// not own (daemon attach mode): every connect and datagram is let through and logged
/// (decision `log`, rule `default:open`), every socket's bytes counted; nothing is denied, not
/// even metadata addresses: the provider's policy is the provider's.
pub fn observe(cgroup_dir: &Path) -> Result<Egress> {
    let mut probe =
        NetProbe::load(NetOptions::default()).context("loading the kernel egress programs")?;
    probe.set_mode(NetMode::Open)?;
    let policy = Arc::new(Policy {
        mode: Mode::Open,
        ..Policy::default()
    });
    attach(
        probe,
        cgroup_dir,
        Vec::new(),
        policy,
        HashMap::new(),
        Vec::new(),
    )
}

impl EgressRules {
    /// Hands `resolved`'s allowed answers to the kernel from now on.
    pub fn listen(self: &Arc<Self>, resolved: &ResolvedIps) {
        let me = self.clone();
        resolved.set_listener(Box::new(move |ip, entry| me.answer(ip, entry)));
    }

    /// An allowed name resolved to `ip`: allow it on the name's ports until the entry lapses.
    fn answer(&self, ip: IpAddr, entry: &ResolvedEntry) {
        let Some(&id) = self.ids.get(&entry.rule) else {
            eprintln!(
                "sandtrail: DNS answer {ip} for {} carries rule {} unknown to the kernel rules; not allowed",
                entry.domain, entry.rule
            );
            return;
        };
        let mut handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dynamic = self.dynamic.lock().unwrap_or_else(PoisonError::into_inner);
        for port in self.policy.answer_ports(entry) {
            if self.statics.contains(&(Prefix::host(ip), port)) {
                continue;
            }
            let lapse = dynamic.entry((ip, port)).or_insert(entry.expires);
            *lapse = (*lapse).max(entry.expires);
            if let Err(e) = handle.allow(Prefix::host(ip), port, id) {
                eprintln!(
                    "sandtrail: allowing {ip} (resolved from {}) in the kernel: {e}",
                    entry.domain
                );
            }
        }
    }

    /// Removes the answer-derived entries whose time is up and that no allowed name still
    /// points at (`resolved` has the live answers); returns how many were removed.
    pub fn expire(&self, resolved: &ResolvedIps, now: Instant) -> usize {
        let mut handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dynamic = self.dynamic.lock().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0;
        dynamic.retain(|(ip, port), lapse| {
            if *lapse > now {
                return true;
            }
            if let Some(e) = resolved.allowed_ip(*ip, now) {
                *lapse = e.expires;
                return true;
            }
            if handle.remove_allow(Prefix::host(*ip), *port).is_ok() {
                removed += 1;
            }
            false
        });
        removed
    }
}
