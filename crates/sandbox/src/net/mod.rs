//! Per-session networking: a veth pair between the host and the sandbox's network namespace,
//! with NAT, so that the session can reach an allowed destination. Policy (which destinations
//! are allowed) and DNS come on top of this plumbing.
//!
//! For each session:
//!
//! - a /30 out of `10.200.0.0/16` ([`NetConfig::index`] is where the search for a free one
//!   starts): `.1` on the host end, `.2` inside;
//! - a veth pair: the host end `st-<hash8 of the session>` (its `ifalias` is
//!   `sandtrail:<session>`, so a leftover can be traced back to its session), the peer created
//!   directly in the sandbox's network namespace as `eth0`, with the default route via the host
//!   end;
//! - an nft table `inet sandtrail_<session>` with a masquerade rule for the /30 and forward
//!   accept rules for the veth;
//! - `net.ipv4.ip_forward` set to 1 if it was 0 (reported by [`SessionNet::enabled_ip_forward`]);
//!   the last session's teardown (or the next sweep after a crash) sets it back to 0 (the marker
//!   `/run/sandtrail/ip_forward.enabled-by-sandtrail` records that sandtrail changed it);
//! - with [`NetConfig::rate_bps`], a rate limit on each direction, all of it on the host side
//!   (see [`rate`]): a `tbf` qdisc at the root of the host end shapes downloads; the host end's
//!   `ingress` qdisc redirects uploads to an IFB device `st-<hash8>-ifb` (same alias) whose
//!   `tbf` shapes them. Excess traffic is delayed, and dropped when the shaper's queue is full;
//!   [`SessionNet::rate_stats`] reads how much of each happened.
//!
//! Everything is done with the `ip`, `tc` (iproute2) and `nft` (nftables) commands.
//! [`SessionNet`] holds the sandbox's network namespace open until [`SessionNet::teardown`], so
//! the byte and rate counters stay readable after the sandbox's last process has exited. If
//! sandtrail dies, the namespace and with it the veth (and its qdiscs) vanish; the nft table
//! and the IFB stay until [`sweep`] removes them.
//!
//! Needs root, Linux 5.2+ (nat in `inet` tables), iproute2 and nftables; the rate limit also
//! needs the kernel's tbf, ingress, u32, mirred and IFB support.

use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod rate;

pub use rate::{
    ifb_name, validate_rate, RateStats, ShaperStats, IFB_SUFFIX, MAX_RATE_BPS, MIN_RATE_BPS,
};

/// Prefix of the nft tables sandtrail creates (the session id follows).
pub const TABLE_PREFIX: &str = "sandtrail_";
/// Prefix of the host ends of the veth pairs.
pub const IF_PREFIX: &str = "st-";
/// Prefix of the host end's `ifalias` (the session id follows).
pub const ALIAS_PREFIX: &str = "sandtrail:";
/// Name of the sandbox's end.
pub const SANDBOX_IF: &str = "eth0";
/// Prefix length of each session's block.
pub const PREFIX_LEN: u8 = 30;
/// Number of /30 blocks in `10.200.0.0/16`.
pub const SLOTS: u16 = 16384;

/// Serializes the choice of a free /30 between concurrent sessions on this host.
const LOCK_FILE: &str = "/run/sandtrail/net.lock";

/// Errors of this module; each says what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot be used.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// A command could not be started or failed.
    #[error("`{cmd}` failed: {detail}; {hint}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr (or why it could not start).
        detail: String,
        /// How to fix it.
        hint: String,
    },
    /// A file operation failed.
    #[error("{what} ({}): {source}; {hint}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// tc printed something this module does not understand.
    #[error("unexpected output of `{cmd}`: {detail}; check that the session network is set up, and report this with the output of `tc -V`")]
    TcOutput {
        /// The command line.
        cmd: String,
        /// What was wrong with the output.
        detail: String,
    },
    /// Every /30 in 10.200.0.0/16 is taken.
    #[error("no free /30 left in 10.200.0.0/16 for a session network: end some sessions, or run with --no-network")]
    Exhausted,
}

/// Which session, where to start looking for its /30, and its rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The session id (`[A-Za-z0-9_-]+`, at most 200 characters).
    pub session: String,
    /// First candidate block: `10.200.(index/64).(index%64*4)/30` (taken modulo [`SLOTS`]).
    pub index: u16,
    /// Rate limit in bits per second, applied to each direction separately (see [`rate`]);
    /// `None`: unlimited. Between [`MIN_RATE_BPS`] and [`MAX_RATE_BPS`].
    pub rate_bps: Option<u64>,
    /// Redirect every DNS query of the sandbox (UDP and TCP port 53, to any address) to port 53
    /// of the host end, where the session's DNS forwarder listens, and refuse DNS over TLS
    /// (TCP/UDP port 853) with a reset/ICMP error, so queries cannot bypass the forwarder by
    /// naming another resolver.
    pub dns_redirect: bool,
}

impl NetConfig {
    /// A config whose first candidate block is derived from a hash of the session id, so that
    /// concurrent sessions usually start their search at different blocks.
    pub fn for_session(session: &str) -> NetConfig {
        NetConfig {
            session: session.to_string(),
            index: (fnv1a(session) % SLOTS as u32) as u16,
            rate_bps: None,
            dns_redirect: false,
        }
    }
}

/// Checks that `session` can name a veth alias and an nft table.
pub fn validate_session(session: &str) -> Result<(), NetError> {
    if session.is_empty()
        || session.len() > 200
        || !session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NetError::InvalidConfig(format!(
            "session id {session:?} must be 1 to 200 characters of A-Z, a-z, 0-9, '_' and '-' to name its network; choose another session id"
        )));
    }
    Ok(())
}

fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Host end's name for a session.
pub fn host_if_name(session: &str) -> String {
    format!("{IF_PREFIX}{:08x}", fnv1a(session))
}

/// nft table name for a session.
pub fn table_name(session: &str) -> String {
    format!("{TABLE_PREFIX}{session}")
}

/// (host, sandbox) addresses of block `index`.
pub fn block(index: u16) -> (Ipv4Addr, Ipv4Addr) {
    let i = index % SLOTS;
    let base = u32::from(Ipv4Addr::new(10, 200, (i / 64) as u8, (i % 64 * 4) as u8));
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// A session's network, set up; [`SessionNet::teardown`] removes it.
#[derive(Debug)]
pub struct SessionNet {
    session: String,
    host_if: String,
    host_ip: Ipv4Addr,
    sandbox_ip: Ipv4Addr,
    table: String,
    enabled_ip_forward: bool,
    /// The rate limit, bits/s.
    rate_bps: Option<u64>,
    /// The IFB that shapes uploads (when there is a rate limit).
    ifb: Option<String>,
    /// Keeps the sandbox's network namespace (and so the veth) alive until teardown.
    netns: Option<File>,
}

fn hint_for(program: &str) -> &'static str {
    match program {
        "nft" => "sandtrail must run as root on a kernel with nf_tables and its nat support (modprobe nf_tables nft_chain_nat nft_masq)",
        _ => "sandtrail must run as root on a kernel with veth support (modprobe veth)",
    }
}

/// Runs `program args...` (in the network namespace `netns` if given, with `stdin` fed to it);
/// returns its stdout.
fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    netns: Option<&File>,
) -> Result<String, NetError> {
    run_with_hint(program, args, stdin, netns, hint_for(program))
}

/// [`run`], with `hint` saying how to fix a failure (unless the program is missing).
fn run_with_hint(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    netns: Option<&File>,
    hint: &str,
) -> Result<String, NetError> {
    let cmd_line = || {
        let mut s = program.to_string();
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        if netns.is_some() {
            s.push_str(" (in the sandbox's network namespace)");
        }
        s
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns, an
        // async-signal-safe system call, on `fd`, which stays open (it is not close-on-exec
        // until exec, and `ns` outlives the spawn).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| NetError::Command {
        cmd: cmd_line(),
        detail: e.to_string(),
        hint: if e.kind() == io::ErrorKind::NotFound {
            match program {
                "nft" => "nft not found: apt-get install nftables".into(),
                _ => format!("{program} not found: apt-get install iproute2"),
            }
        } else {
            hint.into()
        },
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError::Command {
        cmd: cmd_line(),
        detail: e.to_string(),
        hint: "this is unexpected: report it".into(),
    })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: cmd_line(),
            detail: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
            hint: hint.into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn if_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn has_alias(name: &str, alias: &str) -> bool {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifalias"))
        .is_ok_and(|a| a.trim() == alias)
}

/// IPv4 addresses configured on any interface of the host's network namespace.
fn host_addresses() -> Result<Vec<Ipv4Addr>, NetError> {
    let out = run("ip", &["-o", "-4", "addr", "show"], None, None)?;
    Ok(parse_addresses(&out))
}

fn parse_addresses(out: &str) -> Vec<Ipv4Addr> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|&t| t == "inet")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The nft tables sandtrail owns: (family, table name, session).
fn our_tables() -> Result<Vec<(String, String, String)>, NetError> {
    let out = run("nft", &["list", "tables"], None, None)?;
    Ok(parse_tables(&out))
}

fn parse_tables(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "table" {
                return None;
            }
            let family = w.next()?;
            let name = w.next()?;
            let session = name.strip_prefix(TABLE_PREFIX)?;
            Some((family.to_string(), name.to_string(), session.to_string()))
        })
        .collect()
}

fn delete_table(family: &str, table: &str) -> Result<(), NetError> {
    match run("nft", &["delete", "table", family, table], None, None) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Already gone is fine.
            if our_tables()?
                .iter()
                .any(|(f, t, _)| f == family && t == table)
            {
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

fn delete_link(name: &str) -> Result<(), NetError> {
    match run("ip", &["link", "del", "dev", name], None, None) {
        Ok(_) => Ok(()),
        Err(_) if !if_exists(name) => Ok(()),
        Err(e) => Err(e),
    }
}

fn lock_allocation() -> Result<File, NetError> {
    let io = |what, source| NetError::Io {
        what,
        path: LOCK_FILE.into(),
        source,
        hint: "sandtrail must run as root with a writable /run",
    };
    std::fs::create_dir_all("/run/sandtrail").map_err(|e| io("create the lock directory", e))?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| io("open the network lock", e))?;
    f.lock().map_err(|e| io("lock the network lock", e))?;
    Ok(f)
}

fn nft_script(table: &str, host_if: &str, host_ip: Ipv4Addr, dns_redirect: bool) -> String {
    let net = Ipv4Addr::from(u32::from(host_ip) - 1);
    let (dnat, no_dot) = if dns_redirect {
        (
            format!(
                "\tchain prerouting {{\n\
                 \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
                 \t\tiifname \"{host_if}\" udp dport 53 dnat ip to {host_ip}:53\n\
                 \t\tiifname \"{host_if}\" tcp dport 53 dnat ip to {host_ip}:53\n\
                 \t}}\n"
            ),
            format!(
                "\t\tiifname \"{host_if}\" tcp dport 853 reject with tcp reset\n\
                 \t\tiifname \"{host_if}\" udp dport 853 reject\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "table inet {table} {{\n\
         {dnat}\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {net}/{PREFIX_LEN} oifname != \"{host_if}\" masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         {no_dot}\
         \t\tiifname \"{host_if}\" accept\n\
         \t\toifname \"{host_if}\" ct state established,related accept\n\
         \t}}\n\
         }}\n"
    )
}

impl SessionNet {
    /// Connects the network namespace of `child_pid` (the sandbox's init, before it runs the
    /// command) to the host. On failure, whatever was created is removed again.
    pub fn setup(cfg: &NetConfig, child_pid: i32) -> Result<SessionNet, NetError> {
        validate_session(&cfg.session)?;
        if let Some(bps) = cfg.rate_bps {
            validate_rate(bps)?;
        }
        let host_if = host_if_name(&cfg.session);
        let table = table_name(&cfg.session);
        let ifb = cfg.rate_bps.map(|_| ifb_name(&host_if));
        for name in std::iter::once(&host_if).chain(&ifb) {
            if if_exists(name) {
                return Err(NetError::InvalidConfig(format!(
                    "interface {name} (of session {}'s network) exists already: another run of this session is active, or `ip link del {name}` removes a leftover",
                    cfg.session
                )));
            }
        }
        let ns_path = PathBuf::from(format!("/proc/{child_pid}/ns/net"));
        let netns = File::open(&ns_path).map_err(|source| NetError::Io {
            what: "open the sandbox's network namespace",
            path: ns_path.clone(),
            source,
            hint: "the sandbox must be running and sandtrail must be root",
        })?;
        let mut net = SessionNet {
            session: cfg.session.clone(),
            host_if: host_if.clone(),
            host_ip: Ipv4Addr::UNSPECIFIED,
            sandbox_ip: Ipv4Addr::UNSPECIFIED,
            table,
            enabled_ip_forward: false,
            rate_bps: cfg.rate_bps,
            ifb: None,
            netns: None,
        };
        // From here on, a failure removes what exists (the guard holds the netns open).
        let pid = child_pid.to_string();
        let result = (|| {
            {
                let _lock = lock_allocation()?;
                let used = host_addresses()?;
                let index = (0..SLOTS)
                    .map(|i| ((cfg.index as u32 + i as u32) % SLOTS as u32) as u16)
                    .find(|&i| {
                        let (h, s) = block(i);
                        let base = u32::from(h) - 1;
                        !used
                            .iter()
                            .any(|a| (base..base + 4).contains(&u32::from(*a)))
                            && !used.contains(&s)
                    })
                    .ok_or(NetError::Exhausted)?;
                (net.host_ip, net.sandbox_ip) = block(index);
                run(
                    "ip",
                    &[
                        "link", "add", "name", &host_if, "type", "veth", "peer", "name",
                        SANDBOX_IF, "netns", &pid,
                    ],
                    None,
                    None,
                )?;
                net.netns = Some(netns);
                let host_cidr = format!("{}/{PREFIX_LEN}", net.host_ip);
                run(
                    "ip",
                    &["addr", "add", &host_cidr, "dev", &host_if],
                    None,
                    None,
                )?;
            }
            let alias = format!("{ALIAS_PREFIX}{}", cfg.session);
            // Shaped before the link comes up, so nothing passes unshaped.
            if let (Some(bps), Some(ifb)) = (cfg.rate_bps, &ifb) {
                let created = rate::create_ifb(ifb, &alias);
                // Ours to remove only if it carries our alias (not, say, another session's
                // whose id hashes alike and that was created in between).
                if has_alias(ifb, &alias) {
                    net.ifb = Some(ifb.clone());
                }
                created?;
                rate::shape(&host_if, ifb, bps)?;
            }
            run(
                "ip",
                &["link", "set", "dev", &host_if, "alias", &alias, "up"],
                None,
                None,
            )?;
            let ns = net.netns.as_ref();
            let sandbox_cidr = format!("{}/{PREFIX_LEN}", net.sandbox_ip);
            run(
                "ip",
                &["addr", "add", &sandbox_cidr, "dev", SANDBOX_IF],
                None,
                ns,
            )?;
            run("ip", &["link", "set", "dev", "lo", "up"], None, ns)?;
            run("ip", &["link", "set", "dev", SANDBOX_IF, "up"], None, ns)?;
            let via = net.host_ip.to_string();
            run(
                "ip",
                &["route", "add", "default", "via", &via, "dev", SANDBOX_IF],
                None,
                ns,
            )?;
            net.enabled_ip_forward = enable_ip_forward()?;
            run(
                "nft",
                &["-f", "-"],
                Some(&nft_script(
                    &net.table,
                    &host_if,
                    net.host_ip,
                    cfg.dns_redirect,
                )),
                None,
            )?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(net),
            Err(e) => {
                if net.netns.is_some() {
                    let _ = net.remove();
                }
                Err(e)
            }
        }
    }

    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The host end's address (the sandbox's default gateway).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The sandbox's address on `eth0`.
    pub fn sandbox_ip(&self) -> Ipv4Addr {
        self.sandbox_ip
    }

    /// The host end's interface name.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The sandbox end's interface name (`eth0`).
    pub fn sandbox_if(&self) -> &str {
        SANDBOX_IF
    }

    /// Prefix length of the session's block (30).
    pub fn prefix(&self) -> u8 {
        PREFIX_LEN
    }

    /// The nft table (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether setup switched `net.ipv4.ip_forward` from 0 to 1 (the last session switches it
    /// back off).
    pub fn enabled_ip_forward(&self) -> bool {
        self.enabled_ip_forward
    }

    /// The rate limit in bits/s (each direction), if there is one.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate_bps
    }

    /// The IFB device that shapes uploads, if there is a rate limit.
    pub fn ifb(&self) -> Option<&str> {
        self.ifb.as_deref()
    }

    /// The rate limit's counters, read from the kernel (`tc -s -j qdisc show` of the host end
    /// and of the IFB: two `tc` runs, so read them once per reporting window rather than at
    /// every poll). Readable until teardown, also after the sandbox's processes have ended.
    /// An error if the session has no rate limit.
    pub fn rate_stats(&self) -> Result<RateStats, NetError> {
        let Some(ifb) = &self.ifb else {
            return Err(NetError::InvalidConfig(format!(
                "session {} has no network rate limit, so there are no rate counters: set NetConfig::rate_bps to get them",
                self.session
            )));
        };
        rate::read_stats(&self.host_if, ifb)
    }

    /// (bytes out of the sandbox, bytes into the sandbox): the host end's rx and tx bytes.
    /// Readable until teardown, also after the sandbox's processes have ended.
    pub fn counters(&self) -> Result<(u64, u64), NetError> {
        let read = |name: &str| -> Result<u64, NetError> {
            let p = Path::new("/sys/class/net")
                .join(&self.host_if)
                .join("statistics")
                .join(name);
            let io = |source| NetError::Io {
                what: "read the veth's byte counter",
                path: p.clone(),
                source,
                hint: "sysfs must be mounted at /sys and the session network set up",
            };
            let s = std::fs::read_to_string(&p).map_err(io)?;
            s.trim().parse().map_err(|_| {
                io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a number: {s:?}"),
                ))
            })
        };
        Ok((read("rx_bytes")?, read("tx_bytes")?))
    }

    /// Removes the nft table, the veth pair (with its qdiscs and filter) and the IFB.
    /// Idempotent: what is already gone is fine.
    pub fn teardown(mut self) -> Result<(), NetError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), NetError> {
        let table = delete_table("inet", &self.table);
        let link = delete_link(&self.host_if);
        let ifb = self.ifb.as_deref().map_or(Ok(()), delete_link);
        self.netns = None;
        let forward = lock_allocation().and_then(|_lock| restore_ip_forward_if_unused());
        table.and(link).and(ifb).and(forward)
    }
}

/// Remembers that sandtrail switched `ip_forward` on, so the last session can switch it off.
const FORWARD_MARKER: &str = "/run/sandtrail/ip_forward.enabled-by-sandtrail";

/// True while any sandtrail veth (ours by its alias) exists on the host.
fn any_session_link() -> bool {
    std::fs::read_dir("/sys/class/net").is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(IF_PREFIX)
                && std::fs::read_to_string(e.path().join("ifalias"))
                    .is_ok_and(|a| a.trim().starts_with(ALIAS_PREFIX))
        })
    })
}

/// If sandtrail switched `net.ipv4.ip_forward` on and no session network is left, switch it
/// back off: the host ends as it was before the first session. Call with the allocation lock.
fn restore_ip_forward_if_unused() -> Result<(), NetError> {
    if !Path::new(FORWARD_MARKER).exists() || any_session_link() {
        return Ok(());
    }
    let p = Path::new("/proc/sys/net/ipv4/ip_forward");
    std::fs::write(p, b"0").map_err(|source| NetError::Io {
        what: "restore ip_forward",
        path: p.to_path_buf(),
        source,
        hint: "sandtrail must run as root with a writable /proc/sys",
    })?;
    let _ = std::fs::remove_file(FORWARD_MARKER);
    Ok(())
}

/// Sets `net.ipv4.ip_forward` to 1; true if it was 0.
fn enable_ip_forward() -> Result<bool, NetError> {
    let p = Path::new("/proc/sys/net/ipv4/ip_forward");
    let io = |what, source| {
        NetError::Io {
        what,
        path: p.to_path_buf(),
        source,
        hint: "sandtrail must run as root with a writable /proc/sys (not in a container that mounts it read-only)",
    }
    };
    let cur = std::fs::read_to_string(p).map_err(|e| io("read ip_forward", e))?;
    if cur.trim() == "1" {
        return Ok(false);
    }
    // The marker first: if we die right after, the next teardown or sweep restores it.
    std::fs::write(FORWARD_MARKER, b"0\n").map_err(|e| io("record the ip_forward change", e))?;
    std::fs::write(p, b"1").map_err(|e| io("enable ip_forward", e))?;
    Ok(true)
}

/// Removes leftover sandtrail nft tables, host-end veths and IFBs whose session `keep` rejects
/// (a device is recognized by its `st-` name and `sandtrail:` alias; nothing else is touched).
/// Returns what was removed, one description each.
pub fn sweep(keep: &dyn Fn(&str) -> bool) -> Result<Vec<String>, NetError> {
    let mut removed = Vec::new();
    for (family, table, session) in our_tables()? {
        if !keep(&session) {
            delete_table(&family, &table)?;
            removed.push(format!("nft table {family} {table} of session {session}"));
        }
    }
    let entries = match std::fs::read_dir("/sys/class/net") {
        Ok(e) => e,
        Err(source) => {
            return Err(NetError::Io {
                what: "list network interfaces",
                path: "/sys/class/net".into(),
                source,
                hint: "sysfs must be mounted at /sys",
            })
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(IF_PREFIX) {
            continue;
        }
        let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
        let Some(session) = alias.trim().strip_prefix(ALIAS_PREFIX) else {
            continue;
        };
        if !keep(session) {
            delete_link(&name)?;
            let kind = if name.ends_with(IFB_SUFFIX) {
                "ifb"
            } else {
                "veth"
            };
            removed.push(format!("{kind} {name} of session {session}"));
        }
    }
    {
        let _lock = lock_allocation()?;
        if Path::new(FORWARD_MARKER).exists() && !any_session_link() {
            restore_ip_forward_if_unused()?;
            removed.push("net.ipv4.ip_forward switched back to 0".into());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks() {
        assert_eq!(
            block(0),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            block(65),
            (Ipv4Addr::new(10, 200, 1, 5), Ipv4Addr::new(10, 200, 1, 6))
        );
        assert_eq!(
            block(SLOTS - 1),
            (
                Ipv4Addr::new(10, 200, 255, 253),
                Ipv4Addr::new(10, 200, 255, 254)
            )
        );
    }

    #[test]
    fn names() {
        assert_eq!(host_if_name("ses_1").len(), 11);
        assert!(host_if_name("ses_1").starts_with("st-"));
        assert_eq!(table_name("ses_1"), "sandtrail_ses_1");
        assert!(validate_session("ses_a-B9").is_ok());
        assert!(validate_session("").is_err());
        assert!(validate_session("a b").is_err());
        assert!(validate_session("a;b").is_err());
        assert!(NetConfig::for_session("x").index < SLOTS);
    }

    #[test]
    fn parsers() {
        let a = parse_addresses(
            "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n4: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\n",
        );
        assert_eq!(
            a,
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 5)]
        );
        let t =
            parse_tables("table inet filter\ntable inet sandtrail_ses_1\ntable ip sandtrail_x-y\n");
        assert_eq!(
            t,
            vec![
                ("inet".into(), "sandtrail_ses_1".into(), "ses_1".into()),
                ("ip".into(), "sandtrail_x-y".into(), "x-y".into())
            ]
        );
    }
}
