//! Egress enforcement in the kernel: `cgroup/connect4|6` and `cgroup/sendmsg4|6` programs
//! (`src/bpf/net.bpf.c`) attached to a session's cgroup v2 directory decide every `connect()`
//! and every unconnected `sendmsg()`/`sendto()` of its tasks against an allow list, a deny list
//! and a mode, make a denied call fail at once with `EPERM`, and report every attempt, allowed
//! or denied, as a [`NetRecord`]. `cgroup_skb` egress/ingress and `cgroup/sock_release`
//! programs count the bytes and packets of each socket and report them as a [`FlowRecord`]
//! when it is closed (`net.flow`). The egress program also copies the first up to 512 payload
//! bytes of each socket's first data packet, once per socket, as a [`PayloadRecord`], so that
//! user space can identify the application protocol (TLS SNI, HTTP host, SSH, DNS).
//! `cgroup/post_bind4|6` and `sockops` programs record inbound sockets as [`InboundRecord`]s:
//! each `bind()` with its task and assigned port, each `listen()`, and each accepted TCP
//! connection (no task there: attribute it by its local port's bind).
//!
//! One [`NetProbe`] is one policy: its maps belong to its own loaded object, so two sessions
//! each load their own probe and attach it to their own cgroup.
//!
//! Minimum kernel: 5.9 (`cgroup/sock_release`; the BPF ring buffer is 5.8, `bpf_link` cgroup
//! attachment 5.7, LPM tries and sock_addr programs older). The `bpf_get_current_*` helpers in
//! sock_addr and sock programs are available on current kernels; the programs were verified and
//! tested on 6.18 only. They read nothing but their own context, so they load under lockdown
//! `confidentiality`. See `docs/network.md` ("Kernel egress programs") for exactly what is and
//! is not enforced.
//!
//! ```no_run
//! use std::time::Duration;
//! use sandtrail_bpf::net::{NetMode, NetOptions, NetProbe, Prefix};
//!
//! let mut probe = NetProbe::load(NetOptions::default())?;
//! probe.set_mode(NetMode::Allowlist)?;
//! probe.deny(Prefix::host("169.254.169.254".parse()?), 1)?;
//! probe.allow("10.254.0.0/16".parse()?, Some(443), 2)?;
//! probe.attach("/sys/fs/cgroup/unified/my-session")?;
//! while let Some(record) = probe.next_record(Duration::from_millis(500))? {
//!     println!("{record:?}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, CgroupSkbAttachType, Program, ProgramError};
use aya::{Ebpf, EbpfLoader};

use crate::{sys, Task};

/// The compiled egress programs (rebuilt by `crates/bpf/build.sh`).
static NET_OBJ: &[u8] = aya::include_bytes_aligned!("bpf/net.bpf.o");

/// The programs, in the object and as attached: four deciding (sock_addr), three counting
/// (cgroup_skb egress and ingress, sock_release), three recording inbound sockets (post_bind4,
/// post_bind6, sockops).
const PROGRAMS: &[&str] = &[
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "flow_egress",
    "flow_ingress",
    "flow_release",
    // inbound (net.listen, net.accept): post_bind4/6 and sockops
    "inbound_bind4",
    "inbound_bind6",
    "inbound_sockops",
];

/// Rule ids from this value up are the programs' own ([`Rule`]); entries use lower ids.
pub const RULE_BUILTIN: u32 = 0xffff_ff00;
const RULE_LOOPBACK: u32 = 0xffff_ff01;
const RULE_DNS: u32 = 0xffff_ff02;
const RULE_MODE_NONE: u32 = 0xffff_ff03;
const RULE_DEFAULT_ALLOWLIST: u32 = 0xffff_ff04;
const RULE_DEFAULT_OPEN: u32 = 0xffff_ff05;

const CFG_DNS4: u32 = 1;
const CFG_DNS6: u32 = 2;

/// Size of one record of the ring buffer (`struct net_rec`).
const REC_LEN: usize = 88;
/// Size of one flow (`struct flow`), in the map and in the closed-flow ring buffer.
const FLOW_LEN: usize = 120;

/// Errors of the egress probe.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Loading BPF programs needs root.
    #[error("loading the BPF egress programs needs root; this process runs as uid {0}")]
    NotRoot(u32),
    /// The BPF object could not be parsed or its maps created.
    #[error("loading the BPF egress object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The embedded object lacks a program the loader expects.
    #[error("BPF program {0} is missing from the embedded egress object")]
    MissingProgram(&'static str),
    /// The kernel refused a program (verifier, lockdown, missing helper).
    #[error(
        "the kernel refused BPF program {program}: {source}\nverifier log (tail):\n{log_tail}"
    )]
    ProgramRefused {
        /// Program name.
        program: &'static str,
        /// The error of the BPF_PROG_LOAD call.
        #[source]
        source: io::Error,
        /// The last lines of the verifier log.
        log_tail: String,
    },
    /// A program could not be loaded or attached for another reason.
    #[error("BPF program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map is missing or an operation on it failed (a full map included).
    #[error("BPF map {name}: {detail}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The ring buffer size is not a power-of-two multiple of the page size.
    #[error("ring buffer size {0} is not a power-of-two multiple of the page size")]
    RingSize(u32),
    /// A cgroup path could not be opened.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path is not a directory of a cgroup v2 hierarchy.
    #[error("{0} is not a cgroup v2 directory")]
    NotCgroup2(PathBuf),
    /// A rule id in the range the programs keep for themselves.
    #[error("rule id {0:#x} is reserved (ids from {RULE_BUILTIN:#x} up are built in)")]
    ReservedRule(u32),
    /// Waiting on the ring buffer failed.
    #[error("waiting on the ring buffer: {0}")]
    Poll(#[source] io::Error),
    /// A record from the kernel did not have the expected layout.
    #[error("malformed egress record: {0}")]
    Decode(String),
}

/// An address prefix (CIDR): an address and how many leading bits of it match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix that could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad address prefix {0:?}")]
pub struct PrefixError(pub String);

impl Prefix {
    /// `addr/len`, host bits cleared. An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/96+n`) becomes
    /// the IPv4 prefix it stands for, since the programs decide mapped destinations by the IPv4
    /// rules.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError(format!("{addr}/{len}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if let (Some(v4), true) = (a.to_ipv4_mapped(), len >= 96) {
                    return Prefix::new(IpAddr::V4(v4), len - 96);
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Prefix { addr, len })
    }

    /// One address (a /32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix::new(addr, len).expect("full-length prefix")
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the zero-length prefix (every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let bad = || PrefixError(s.to_owned());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let len: u8 = l.parse().map_err(|_| bad())?;
                Prefix::new(addr, len).map_err(|_| bad())
            }
            None => Ok(Prefix::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

impl From<IpAddr> for Prefix {
    fn from(addr: IpAddr) -> Prefix {
        Prefix::host(addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the programs do with a destination that neither the deny nor the allow list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetMode {
    /// Deny it (the default, and what a loaded but never configured probe does).
    #[default]
    Allowlist,
    /// Let it through, reported with [`Decision::Log`]; deny entries still deny.
    Open,
    /// Deny everything but loopback, the DNS forwarder included.
    None,
}

impl NetMode {
    fn raw(self) -> u32 {
        match self {
            NetMode::Allowlist => 0,
            NetMode::Open => 1,
            NetMode::None => 2,
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by a rule.
    Allow,
    /// Denied: the call failed with `EPERM`.
    Deny,
    /// Let through by [`NetMode::Open`] with no rule allowing it.
    Log,
}

/// The rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// An allow or deny entry, by the id given to [`NetProbe::allow`] / [`NetProbe::deny`].
    Entry(u32),
    /// A loopback destination, or the unspecified address (which means this host): always
    /// allowed.
    Loopback,
    /// The session's DNS forwarder ([`NetProbe::set_dns_forwarder`]).
    DnsForwarder,
    /// [`NetMode::None`].
    ModeNone,
    /// No entry matched in [`NetMode::Allowlist`].
    DefaultAllowlist,
    /// No entry matched in [`NetMode::Open`].
    DefaultOpen,
    /// A built-in id this loader does not know (object and loader out of step).
    Unknown(u32),
}

impl Rule {
    fn from_raw(raw: u32) -> Rule {
        match raw {
            RULE_LOOPBACK => Rule::Loopback,
            RULE_DNS => Rule::DnsForwarder,
            RULE_MODE_NONE => Rule::ModeNone,
            RULE_DEFAULT_ALLOWLIST => Rule::DefaultAllowlist,
            RULE_DEFAULT_OPEN => Rule::DefaultOpen,
            r if r < RULE_BUILTIN => Rule::Entry(r),
            r => Rule::Unknown(r),
        }
    }
}

/// The system call that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `connect()` (TCP, connected UDP, TCP fast open's `sendto`).
    Connect,
    /// `sendmsg()`/`sendto()` with a destination address on an unconnected UDP socket.
    Sendmsg,
}

/// The socket's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `SOCK_STREAM` / `IPPROTO_TCP`.
    Tcp,
    /// `SOCK_DGRAM` / `IPPROTO_UDP`.
    Udp,
    /// Anything else (e.g. `IPPROTO_ICMP` datagram sockets), as the raw socket type and protocol.
    Other {
        /// `SOCK_*`.
        sock_type: u16,
        /// `IPPROTO_*`.
        protocol: u16,
    },
}

/// One connect or sendmsg attempt of a task of the attached cgroup, and its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRecord {
    /// Who. `ppid` is 0: the programs do not know it (a reader with a process table has it;
    /// reading `/proc` per record would put a file read on every connect and datagram).
    pub task: Task,
    /// connect or sendmsg.
    pub hook: Hook,
    /// The destination as the task gave it (an IPv4-mapped IPv6 address stays IPv6 here; it was
    /// decided by the IPv4 rules).
    pub dst: SocketAddr,
    /// TCP, UDP or other.
    pub proto: Proto,
    /// Allowed, denied or let through.
    pub decision: Decision,
    /// The rule that decided.
    pub rule: Rule,
    /// The kernel's socket cookie (unique per socket while the system runs), to join with
    /// later per-socket records.
    pub socket_cookie: u64,
}

/// Options of [`NetProbe::load`].
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Ring buffer size in bytes: a power of two, multiple of the page size. Default 1 MiB
    /// (about 12,000 records).
    pub ring_buffer_bytes: u32,
    /// Longest [`NetProbe::next_record`] sleeps between looks at the ring buffer. Default 20 ms.
    pub max_latency: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            ring_buffer_bytes: 1 << 20,
            max_latency: Duration::from_millis(20),
        }
    }
}

/// Records the programs could not deliver, summed over CPUs. The decision was enforced all
/// the same. (cgroup programs have no `recursion_misses`: the kernel never skips them.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetLosses {
    /// Attempt records dropped because their ring buffer was full.
    pub ring_buffer_full: u64,
    /// Closed-flow records dropped because their ring buffer was full (the flow's counters stay
    /// in [`NetProbe::flows`] until evicted).
    pub flow_ring_buffer_full: u64,
    /// First-payload records ([`PayloadRecord`]) dropped because their ring buffer was full
    /// (the socket's payload is not captured again).
    pub payload_ring_buffer_full: u64,
    /// Bind, listen and accept records ([`InboundRecord`]) dropped because their ring buffer
    /// was full (it fills up when [`NetProbe::next_inbound`] is never called).
    pub inbound_ring_buffer_full: u64,
}

/// Bytes and packets of one socket of the attached cgroup, counted by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// The socket cookie, as in the [`NetRecord`] of the socket's connect or sendmsg.
    pub socket_cookie: u64,
    /// Local address and port as the socket had them at its latest packet.
    pub src: SocketAddr,
    /// Remote address and port of a connected socket; unspecified (`0.0.0.0:0`, `[::]:0`) for
    /// an unconnected UDP socket, whose datagrams may go anywhere (their destinations are in
    /// the sendmsg [`NetRecord`]s).
    pub dst: SocketAddr,
    /// TCP, UDP or other.
    pub proto: Proto,
    /// Sent: IP packet lengths, headers included.
    pub bytes_out: u64,
    /// Received: IP packet lengths, headers included.
    pub bytes_in: u64,
    /// Packets sent (a GSO/TSO super-packet counts once).
    pub packets_out: u64,
    /// Packets received (a GRO-merged packet counts once).
    pub packets_in: u64,
    /// `CLOCK_MONOTONIC` of the first packet counted.
    pub first_ktime_ns: u64,
    /// `CLOCK_MONOTONIC` of the latest packet counted.
    pub last_ktime_ns: u64,
    /// For a closed flow ([`NetProbe::next_flow`]): the process that closed the socket last
    /// (pid, uid, cgroup id); `None` in a snapshot of live flows ([`NetProbe::flows`]).
    pub closed_by: Option<(u32, u32, u64)>,
}

/// `struct config` of net.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Config {
    mode: u32,
    flags: u32,
    dns4: u32,
    dns6: [u32; 4],
    dns_port: u32,
}

// SAFETY: Config is repr(C), made of u32s only (no padding, no pointers): every bit pattern is
// a valid value and it can be copied to and from the kernel as plain bytes.
unsafe impl aya::Pod for Config {}

/// The loaded egress programs, attached to zero or more cgroups, and their maps.
///
/// Dropping it detaches the programs from every cgroup they were attached to.
pub struct NetProbe {
    ring: RingBuf<MapData>,
    flow_ring: RingBuf<MapData>,
    flow_map: HashMap<MapData, u64, [u8; FLOW_LEN]>,
    flow_epoll: sys::Epoll,
    payload_ring: RingBuf<MapData>,
    payload_epoll: sys::Epoll,
    inbound_ring: RingBuf<MapData>,
    inbound_epoll: sys::Epoll,
    config: Array<MapData, Config>,
    allow4: LpmTrie<MapData, [u8; 8], u32>,
    allow6: LpmTrie<MapData, [u8; 20], u32>,
    deny4: LpmTrie<MapData, [u8; 4], u32>,
    deny6: LpmTrie<MapData, [u8; 16], u32>,
    losses: PerCpuArray<MapData, u64>,
    cfg: Config,
    epoll: sys::Epoll,
    max_latency: Duration,
    ebpf: Ebpf,
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> NetError {
    move |e| NetError::Map {
        name,
        detail: e.to_string(),
    }
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, NetError> {
    let map = ebpf.take_map(name).ok_or(NetError::Map {
        name,
        detail: "missing from the object".into(),
    })?;
    f(map).map_err(map_err(name))
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The result of removing a map entry: true when there was one.
fn removed(r: Result<(), MapError>, name: &'static str) -> Result<bool, NetError> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        // aya reports a missing key of a map delete as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(map_err(name)(e)),
    }
}

fn check_rule(rule: u32) -> Result<(), NetError> {
    if rule >= RULE_BUILTIN {
        Err(NetError::ReservedRule(rule))
    } else {
        Ok(())
    }
}

/// Allow-trie data: the port (network order, 0 = any) then the address, then padding.
fn allow_key4(a: Ipv4Addr, len: u8, port: Option<u16>) -> Key<[u8; 8]> {
    let mut d = [0u8; 8];
    d[..2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
    d[2..6].copy_from_slice(&a.octets());
    Key::new(16 + u32::from(len), d)
}

fn allow_key6(a: Ipv6Addr, len: u8, port: Option<u16>) -> Key<[u8; 20]> {
    let mut d = [0u8; 20];
    d[..2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
    d[2..18].copy_from_slice(&a.octets());
    Key::new(16 + u32::from(len), d)
}

impl NetProbe {
    /// Loads the programs (not attached yet) with an empty policy in [`NetMode::Allowlist`]:
    /// once attached, only loopback passes until entries are added.
    pub fn load(opts: NetOptions) -> Result<NetProbe, NetError> {
        let uid = sys::geteuid();
        if uid != 0 {
            return Err(NetError::NotRoot(uid));
        }
        let page = sys::page_size();
        if !opts.ring_buffer_bytes.is_power_of_two() || opts.ring_buffer_bytes < page {
            return Err(NetError::RingSize(opts.ring_buffer_bytes));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("net_events", opts.ring_buffer_bytes)
            .map_max_entries("flow_events", opts.ring_buffer_bytes)
            .map_max_entries("payload_events", opts.ring_buffer_bytes)
            .map_max_entries("inbound_events", opts.ring_buffer_bytes)
            .load(NET_OBJ)
            .map_err(|e| NetError::Object(Box::new(e)))?;
        for &name in PROGRAMS {
            let program = ebpf
                .program_mut(name)
                .ok_or(NetError::MissingProgram(name))?;
            let loaded = match program {
                Program::CgroupSockAddr(p) => p.load(),
                Program::CgroupSkb(p) => p.load(),
                Program::CgroupSock(p) => p.load(),
                Program::SockOps(p) => p.load(),
                _ => Err(ProgramError::UnexpectedProgramType),
            };
            match loaded {
                Ok(()) => {}
                Err(ProgramError::LoadError {
                    io_error,
                    verifier_log,
                }) => {
                    return Err(NetError::ProgramRefused {
                        program: name,
                        source: io_error,
                        log_tail: tail(&verifier_log.to_string(), 20),
                    })
                }
                Err(e) => {
                    return Err(NetError::Program {
                        program: name,
                        source: Box::new(e),
                    })
                }
            }
        }
        let ring = take(&mut ebpf, "net_events", RingBuf::try_from)?;
        let config = take(&mut ebpf, "net_config", Array::try_from)?;
        let allow4 = take(&mut ebpf, "allow4", LpmTrie::try_from)?;
        let allow6 = take(&mut ebpf, "allow6", LpmTrie::try_from)?;
        let deny4 = take(&mut ebpf, "deny4", LpmTrie::try_from)?;
        let deny6 = take(&mut ebpf, "deny6", LpmTrie::try_from)?;
        let losses = take(&mut ebpf, "net_losses", PerCpuArray::try_from)?;
        let epoll = sys::Epoll::new(ring.as_fd()).map_err(NetError::Poll)?;
        let flow_ring = take(&mut ebpf, "flow_events", RingBuf::try_from)?;
        let flow_map = take(&mut ebpf, "flows", HashMap::try_from)?;
        let flow_epoll = sys::Epoll::new(flow_ring.as_fd()).map_err(NetError::Poll)?;
        let payload_ring = take(&mut ebpf, "payload_events", RingBuf::try_from)?;
        let payload_epoll = sys::Epoll::new(payload_ring.as_fd()).map_err(NetError::Poll)?;
        let inbound_ring = take(&mut ebpf, "inbound_events", RingBuf::try_from)?;
        let inbound_epoll = sys::Epoll::new(inbound_ring.as_fd()).map_err(NetError::Poll)?;
        Ok(NetProbe {
            ring,
            flow_ring,
            flow_map,
            flow_epoll,
            payload_ring,
            payload_epoll,
            inbound_ring,
            inbound_epoll,
            config,
            allow4,
            allow6,
            deny4,
            deny6,
            losses,
            cfg: Config::default(),
            epoll,
            max_latency: opts.max_latency.max(Duration::from_millis(1)),
            ebpf,
        })
    }

    /// Attaches the four programs to a cgroup v2 directory: from now on every connect and
    /// unconnected sendmsg of its tasks and of its descendants' tasks is decided. Attached as
    /// `bpf_link`s (kernel >= 5.7), which the kernel keeps in multi mode: programs attached to
    /// ancestor cgroups still run, and any of them denying denies. The counting programs
    /// (`cgroup_skb` egress/ingress, `cgroup/sock_release`) and the inbound ones
    /// (`cgroup/post_bind4|6`, `sockops`) are attached too.
    pub fn attach(&mut self, cgroup_dir: impl AsRef<Path>) -> Result<(), NetError> {
        let path = cgroup_dir.as_ref();
        let cgroup_err = |source| NetError::Cgroup {
            path: path.to_owned(),
            source,
        };
        if !sys::is_cgroup2(path).map_err(cgroup_err)? || !path.is_dir() {
            return Err(NetError::NotCgroup2(path.to_owned()));
        }
        let dir = File::open(path).map_err(cgroup_err)?;
        // On kernels >= 5.7 aya attaches through bpf_links, which the kernel always attaches
        // in multi mode and whose flags must be 0: "Single" passes 0.
        let mode = CgroupAttachMode::Single;
        for &name in PROGRAMS {
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or(NetError::MissingProgram(name))?;
            let attached = match program {
                Program::CgroupSockAddr(p) => p.attach(&dir, mode).map(drop),
                Program::CgroupSkb(p) => {
                    let kind = if name == "flow_egress" {
                        CgroupSkbAttachType::Egress
                    } else {
                        CgroupSkbAttachType::Ingress
                    };
                    p.attach(&dir, kind, mode).map(drop)
                }
                Program::CgroupSock(p) => p.attach(&dir, mode).map(drop),
                Program::SockOps(p) => p.attach(&dir, mode).map(drop),
                _ => Err(ProgramError::UnexpectedProgramType),
            };
            attached.map_err(|e| NetError::Program {
                program: name,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    fn write_config(&mut self) -> Result<(), NetError> {
        self.config
            .set(0, self.cfg, 0)
            .map_err(map_err("net_config"))
    }

    /// Sets what happens to destinations no entry names. Takes effect at once.
    pub fn set_mode(&mut self, mode: NetMode) -> Result<(), NetError> {
        self.cfg.mode = mode.raw();
        self.write_config()
    }

    /// The session's DNS forwarder: its addresses (IPv4, IPv6, or both) on `port` are always
    /// allowed (except in [`NetMode::None`]) with [`Rule::DnsForwarder`]. `None` for both removes it.
    pub fn set_dns_forwarder(
        &mut self,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
        port: u16,
    ) -> Result<(), NetError> {
        self.cfg.flags &= !(CFG_DNS4 | CFG_DNS6);
        self.cfg.dns4 = 0;
        self.cfg.dns6 = [0; 4];
        if let Some(a) = v4 {
            self.cfg.flags |= CFG_DNS4;
            // The kernel compares the bytes as they are in memory (network order).
            self.cfg.dns4 = u32::from_ne_bytes(a.octets());
        }
        if let Some(a) = v6 {
            self.cfg.flags |= CFG_DNS6;
            let o = a.octets();
            for (i, w) in self.cfg.dns6.iter_mut().enumerate() {
                *w = u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            }
        }
        self.cfg.dns_port = u32::from(u16::from_ne_bytes(port.to_be_bytes()));
        self.write_config()
    }

    /// Allows a prefix, on one port or (`None`) on every port, reported as
    /// [`Rule::Entry`]`(rule)`. Entries for the same prefix on different ports coexist; one for
    /// the same prefix and port replaces the earlier one. Deny entries win over it. Takes effect
    /// for the next connect.
    pub fn allow(&mut self, prefix: Prefix, port: Option<u16>, rule: u32) -> Result<(), NetError> {
        insert_allow(&mut self.allow4, &mut self.allow6, prefix, port, rule)
    }

    /// Removes an allow entry; true when there was one.
    pub fn remove_allow(&mut self, prefix: Prefix, port: Option<u16>) -> Result<bool, NetError> {
        delete_allow(&mut self.allow4, &mut self.allow6, prefix, port)
    }

    /// A second handle on the allow lists, to change them from another thread while this
    /// probe is read (the session's DNS forwarder allows each answer's addresses before it
    /// sends the answer, so the client's connect that follows finds them allowed).
    pub fn allow_handle(&self) -> Result<AllowHandle, NetError> {
        Ok(AllowHandle {
            allow4: reopen(aya::maps::IterableMap::map(&self.allow4), "allow4")?,
            allow6: reopen(aya::maps::IterableMap::map(&self.allow6), "allow6")?,
        })
    }

    /// Denies a prefix on every port, reported as [`Rule::Entry`]`(rule)`; deny entries win
    /// over allow entries and over [`NetMode::Open`], not over loopback or the DNS forwarder.
    pub fn deny(&mut self, prefix: Prefix, rule: u32) -> Result<(), NetError> {
        check_rule(rule)?;
        match prefix.addr {
            IpAddr::V4(a) => self
                .deny4
                .insert(&Key::new(u32::from(prefix.len), a.octets()), rule, 0)
                .map_err(map_err("deny4")),
            IpAddr::V6(a) => self
                .deny6
                .insert(&Key::new(u32::from(prefix.len), a.octets()), rule, 0)
                .map_err(map_err("deny6")),
        }
    }

    /// Removes a deny entry; true when there was one.
    pub fn remove_deny(&mut self, prefix: Prefix) -> Result<bool, NetError> {
        let r = match prefix.addr {
            IpAddr::V4(a) => self
                .deny4
                .remove(&Key::new(u32::from(prefix.len), a.octets())),
            IpAddr::V6(a) => self
                .deny6
                .remove(&Key::new(u32::from(prefix.len), a.octets())),
        };
        removed(r, "deny")
    }

    /// The next record, waiting up to `timeout` for one; `None` on timeout.
    pub fn next_record(&mut self, timeout: Duration) -> Result<Option<NetRecord>, NetError> {
        next_from(
            &mut self.ring,
            &self.epoll,
            self.max_latency,
            timeout,
            decode,
        )
    }

    /// The next closed flow (a socket of the cgroup was released), waiting up to `timeout`;
    /// `None` on timeout.
    pub fn next_flow(&mut self, timeout: Duration) -> Result<Option<FlowRecord>, NetError> {
        next_from(
            &mut self.flow_ring,
            &self.flow_epoll,
            self.max_latency,
            timeout,
            |b| decode_flow(b, true),
        )
    }

    /// The counters of the sockets not closed yet (a snapshot; also sockets closed while their
    /// closed-flow record was lost, until the map evicts them: it keeps the 65,536 most recent).
    pub fn flows(&self) -> Result<Vec<FlowRecord>, NetError> {
        let mut out = Vec::new();
        for item in self.flow_map.iter() {
            let (_, v) = item.map_err(map_err("flows"))?;
            out.push(decode_flow(&v, false)?);
        }
        Ok(out)
    }

    /// Records lost since the probe was loaded, summed over CPUs.
    pub fn losses(&self) -> Result<NetLosses, NetError> {
        let slot = |i: u32| -> Result<u64, NetError> {
            Ok(self
                .losses
                .get(&i, 0)
                .map_err(map_err("net_losses"))?
                .iter()
                .sum())
        };
        let ring_buffer_full = slot(0)?;
        let flow_ring_buffer_full = slot(1)?;
        let payload_ring_buffer_full = slot(2)?;
        let inbound_ring_buffer_full = slot(3)?;
        Ok(NetLosses {
            ring_buffer_full,
            flow_ring_buffer_full,
            payload_ring_buffer_full,
            inbound_ring_buffer_full,
        })
    }
}

/// The allow lists of a [`NetProbe`], opened a second time ([`NetProbe::allow_handle`]): the
/// same kernel maps, usable from another thread. It keeps the maps (not the programs) alive.
pub struct AllowHandle {
    allow4: LpmTrie<MapData, [u8; 8], u32>,
    allow6: LpmTrie<MapData, [u8; 20], u32>,
}

impl AllowHandle {
    /// As [`NetProbe::allow`].
    pub fn allow(&mut self, prefix: Prefix, port: Option<u16>, rule: u32) -> Result<(), NetError> {
        insert_allow(&mut self.allow4, &mut self.allow6, prefix, port, rule)
    }

    /// As [`NetProbe::remove_allow`].
    pub fn remove_allow(&mut self, prefix: Prefix, port: Option<u16>) -> Result<bool, NetError> {
        delete_allow(&mut self.allow4, &mut self.allow6, prefix, port)
    }
}

impl fmt::Debug for AllowHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AllowHandle")
    }
}

/// An LPM trie opened again through a duplicate of its descriptor.
fn reopen<K: aya::Pod>(
    map: &MapData,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, u32>, NetError> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| NetError::Map {
            name,
            detail: format!("duplicating its descriptor: {e}"),
        })?;
    let data = MapData::from_fd(fd).map_err(map_err(name))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err(name))?;
    LpmTrie::try_from(map).map_err(map_err(name))
}

fn insert_allow(
    allow4: &mut LpmTrie<MapData, [u8; 8], u32>,
    allow6: &mut LpmTrie<MapData, [u8; 20], u32>,
    prefix: Prefix,
    port: Option<u16>,
    rule: u32,
) -> Result<(), NetError> {
    check_rule(rule)?;
    match prefix.addr {
        IpAddr::V4(a) => allow4
            .insert(&allow_key4(a, prefix.len, port), rule, 0)
            .map_err(map_err("allow4")),
        IpAddr::V6(a) => allow6
            .insert(&allow_key6(a, prefix.len, port), rule, 0)
            .map_err(map_err("allow6")),
    }
}

fn delete_allow(
    allow4: &mut LpmTrie<MapData, [u8; 8], u32>,
    allow6: &mut LpmTrie<MapData, [u8; 20], u32>,
    prefix: Prefix,
    port: Option<u16>,
) -> Result<bool, NetError> {
    let r = match prefix.addr {
        IpAddr::V4(a) => allow4.remove(&allow_key4(a, prefix.len, port)),
        IpAddr::V6(a) => allow6.remove(&allow_key6(a, prefix.len, port)),
    };
    removed(r, "allow")
}

/// The next record of `ring`, decoded, waiting up to `timeout` (polling every `max_latency`:
/// the programs submit without waking the reader); `None` on timeout.
fn next_from<T>(
    ring: &mut RingBuf<MapData>,
    epoll: &sys::Epoll,
    max_latency: Duration,
    timeout: Duration,
    decode: impl Fn(&[u8]) -> Result<T, NetError>,
) -> Result<Option<T>, NetError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(item) = ring.next() {
            return decode(&item).map(Some);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        epoll
            .wait((deadline - now).min(max_latency))
            .map_err(NetError::Poll)?;
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn proto_of(sock_type: u16, protocol: u16) -> Proto {
    match (sock_type as i32, protocol as i32) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Proto::Tcp,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Proto::Udp,
        _ => Proto::Other {
            sock_type,
            protocol,
        },
    }
}

fn addr_of(family: u8, b: &[u8]) -> Result<IpAddr, NetError> {
    match family {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        6 => {
            let o: [u8; 16] = b[..16].try_into().expect("16 bytes");
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        f => Err(NetError::Decode(format!("family {f}"))),
    }
}

/// Decodes one `struct flow` (see net.bpf.c for the offsets).
fn decode_flow(b: &[u8], closed: bool) -> Result<FlowRecord, NetError> {
    if b.len() < FLOW_LEN {
        return Err(NetError::Decode(format!(
            "flow of {} bytes, want {FLOW_LEN}",
            b.len()
        )));
    }
    let family = b[92];
    Ok(FlowRecord {
        socket_cookie: u64_at(b, 16),
        src: SocketAddr::new(addr_of(family, &b[56..72])?, u16_at(b, 88)),
        dst: SocketAddr::new(addr_of(family, &b[72..88])?, u16_at(b, 90)),
        proto: proto_of(u16_at(b, 94), u16::from(b[93])),
        bytes_out: u64_at(b, 24),
        bytes_in: u64_at(b, 32),
        packets_out: u64_at(b, 40),
        packets_in: u64_at(b, 48),
        first_ktime_ns: u64_at(b, 0),
        last_ktime_ns: u64_at(b, 8),
        closed_by: closed.then(|| (u32_at(b, 96), u32_at(b, 100), u64_at(b, 104))),
    })
}

/// Decodes one `struct net_rec` (see net.bpf.c for the offsets).
fn decode(b: &[u8]) -> Result<NetRecord, NetError> {
    if b.len() < REC_LEN {
        return Err(NetError::Decode(format!(
            "{} bytes, want {REC_LEN}",
            b.len()
        )));
    }
    let port = u16_at(b, 44);
    let hook = match b[46] {
        1 | 2 => Hook::Connect,
        3 | 4 => Hook::Sendmsg,
        h => return Err(NetError::Decode(format!("hook {h}"))),
    };
    let decision = match b[47] {
        1 => Decision::Allow,
        2 => Decision::Deny,
        3 => Decision::Log,
        d => return Err(NetError::Decode(format!("decision {d}"))),
    };
    let sock_type = u16_at(b, 48);
    let protocol = u16_at(b, 50);
    let proto = proto_of(sock_type, protocol);
    let ip = addr_of(b[52], &b[56..72])?;
    let comm = &b[72..88];
    let comm = &comm[..comm.iter().position(|&c| c == 0).unwrap_or(comm.len())];
    Ok(NetRecord {
        task: Task {
            tid: u32_at(b, 28),
            pid: u32_at(b, 24),
            ppid: 0,
            uid: u32_at(b, 32),
            gid: u32_at(b, 36),
            cgroup_id: u64_at(b, 8),
            ktime_ns: u64_at(b, 0),
            comm: String::from_utf8_lossy(comm).into_owned(),
        },
        hook,
        dst: SocketAddr::new(ip, port),
        proto,
        decision,
        rule: Rule::from_raw(u32_at(b, 40)),
        socket_cookie: u64_at(b, 16),
    })
}

// ------------------------------------------------------------------ first payload (L7)

/// Size of one first-payload record (`struct payload_rec`).
const PAYLOAD_REC_LEN: usize = 576;
/// Most payload bytes a [`PayloadRecord`] carries.
pub const PAYLOAD_MAX: usize = 512;

/// The first payload bytes a socket of the attached cgroup sent: the start of its first egress
/// packet with TCP or UDP payload, copied in the kernel once per socket, for identifying the
/// application protocol. Addresses and ports are those of the packet's IP and L4 headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRecord {
    /// The socket cookie, as in the socket's [`NetRecord`] and [`FlowRecord`].
    pub socket_cookie: u64,
    /// `CLOCK_MONOTONIC` of the packet.
    pub ktime_ns: u64,
    /// [`Proto::Tcp`] or [`Proto::Udp`] (from the IP header's protocol).
    pub proto: Proto,
    /// The packet's source address and port.
    pub src: SocketAddr,
    /// The packet's destination address and port.
    pub dst: SocketAddr,
    /// The packet's L4 payload length (of a GSO packet: all of its payload), of which `bytes`
    /// is the start.
    pub payload_len: u32,
    /// The first `min(payload_len, PAYLOAD_MAX)` payload bytes.
    pub bytes: Vec<u8>,
}

impl NetProbe {
    /// The next first-payload record, waiting up to `timeout` for one; `None` on timeout.
    pub fn next_payload(&mut self, timeout: Duration) -> Result<Option<PayloadRecord>, NetError> {
        next_from(
            &mut self.payload_ring,
            &self.payload_epoll,
            self.max_latency,
            timeout,
            decode_payload,
        )
    }
}

/// Decodes one `struct payload_rec` (see net.bpf.c for the offsets).
fn decode_payload(b: &[u8]) -> Result<PayloadRecord, NetError> {
    if b.len() < PAYLOAD_REC_LEN {
        return Err(NetError::Decode(format!(
            "payload record of {} bytes, want {PAYLOAD_REC_LEN}",
            b.len()
        )));
    }
    let family = b[52];
    let proto = match i32::from(b[53]) {
        libc::IPPROTO_TCP => Proto::Tcp,
        libc::IPPROTO_UDP => Proto::Udp,
        p => return Err(NetError::Decode(format!("payload protocol {p}"))),
    };
    let cap = usize::from(u16_at(b, 54));
    if cap == 0 || cap > PAYLOAD_MAX {
        return Err(NetError::Decode(format!("payload length {cap}")));
    }
    Ok(PayloadRecord {
        socket_cookie: u64_at(b, 8),
        ktime_ns: u64_at(b, 0),
        proto,
        src: SocketAddr::new(addr_of(family, &b[16..32])?, u16_at(b, 48)),
        dst: SocketAddr::new(addr_of(family, &b[32..48])?, u16_at(b, 50)),
        payload_len: u32_at(b, 56),
        bytes: b[64..64 + cap].to_vec(),
    })
}

// ------------------------------------------------------------------ inbound (listen, accept)

/// Size of one inbound record (`struct inbound_rec`).
const INBOUND_REC_LEN: usize = 104;

/// A socket of the attached cgroup bound, listening, or accepting a connection
/// (`net.listen` / `net.accept`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundRecord {
    /// `bind()` of an `AF_INET`/`AF_INET6` socket (TCP, UDP, other), from `cgroup/post_bind4|6`
    /// in the binding task, after the kernel gave it its address and port. Explicit binds only
    /// (not the automatic bind of a `connect()` or a first `sendto()`). A UDP socket that
    /// receives has nothing but this: its "listen" is its bind.
    Bind {
        /// Who bound (`ppid` 0: not known to the programs, as in [`NetRecord`]).
        task: Task,
        /// The kernel's socket cookie: the same socket's [`InboundRecord::Listen`],
        /// [`FlowRecord`] and [`PayloadRecord`] have it.
        socket_cookie: u64,
        /// TCP, UDP or other.
        proto: Proto,
        /// The bound address and the port the kernel actually assigned (a bind to port 0 gets
        /// an ephemeral one). A dual-stack socket bound to `::` shows `[::]:port`.
        local: SocketAddr,
    },
    /// `listen()` made a TCP socket a listener (sockops `TCP_LISTEN_CB`). No process context:
    /// the task is the one of the [`InboundRecord::Bind`] with the same `socket_cookie`
    /// (a socket listening without an explicit bind has no bind record).
    Listen {
        /// The listening socket's cookie.
        socket_cookie: u64,
        /// The address and port it listens on.
        local: SocketAddr,
        /// `CLOCK_MONOTONIC` of the call.
        ktime_ns: u64,
    },
    /// A `connect()` of the cgroup completed its TCP handshake (sockops
    /// `ACTIVE_ESTABLISHED_CB`): the connection is up, from `local` (its source address and
    /// port) to `remote`. The socket's attempt record ([`NetRecord`]) has the same cookie; a
    /// connect that never gets here was refused, timed out or failed.
    Connected {
        /// The connecting socket's cookie.
        socket_cookie: u64,
        /// The source address and port the kernel gave the connection.
        local: SocketAddr,
        /// The peer's address and port.
        remote: SocketAddr,
        /// `CLOCK_MONOTONIC` of the handshake's end.
        ktime_ns: u64,
    },
    /// An incoming TCP connection completed its handshake on a listener of the cgroup (sockops
    /// `PASSIVE_ESTABLISHED_CB`), whether or not `accept()` has taken it yet. No process
    /// context (it runs as the final ACK arrives): attribute it by the listener's bind record
    /// for `local`'s port.
    Accept {
        /// The new (accepted) socket's cookie, as in its closed [`FlowRecord`].
        socket_cookie: u64,
        /// The local address and port of the connection (the listener's port; the address the
        /// peer connected to when the listener is bound to a wildcard address).
        local: SocketAddr,
        /// The peer's address and port.
        remote: SocketAddr,
        /// `CLOCK_MONOTONIC` of the handshake's end.
        ktime_ns: u64,
    },
}

impl InboundRecord {
    /// The socket cookie of any kind of record.
    pub fn socket_cookie(&self) -> u64 {
        match self {
            InboundRecord::Bind { socket_cookie, .. }
            | InboundRecord::Listen { socket_cookie, .. }
            | InboundRecord::Accept { socket_cookie, .. }
            | InboundRecord::Connected { socket_cookie, .. } => *socket_cookie,
        }
    }
}

impl NetProbe {
    /// The next bind, listen or accept record, waiting up to `timeout` for one; `None` on
    /// timeout.
    pub fn next_inbound(&mut self, timeout: Duration) -> Result<Option<InboundRecord>, NetError> {
        next_from(
            &mut self.inbound_ring,
            &self.inbound_epoll,
            self.max_latency,
            timeout,
            decode_inbound,
        )
    }
}

/// Decodes one `struct inbound_rec` (see net.bpf.c for the offsets).
fn decode_inbound(b: &[u8]) -> Result<InboundRecord, NetError> {
    if b.len() < INBOUND_REC_LEN {
        return Err(NetError::Decode(format!(
            "inbound record of {} bytes, want {INBOUND_REC_LEN}",
            b.len()
        )));
    }
    let family = b[41];
    let socket_cookie = u64_at(b, 16);
    let ktime_ns = u64_at(b, 0);
    let local = SocketAddr::new(addr_of(family, &b[56..72])?, u16_at(b, 46));
    match b[40] {
        1 => {
            let comm = &b[88..104];
            let comm = &comm[..comm.iter().position(|&c| c == 0).unwrap_or(comm.len())];
            Ok(InboundRecord::Bind {
                task: Task {
                    tid: u32_at(b, 28),
                    pid: u32_at(b, 24),
                    ppid: 0,
                    uid: u32_at(b, 32),
                    gid: u32_at(b, 36),
                    cgroup_id: u64_at(b, 8),
                    ktime_ns,
                    comm: String::from_utf8_lossy(comm).into_owned(),
                },
                socket_cookie,
                proto: proto_of(u16_at(b, 42), u16_at(b, 44)),
                local,
            })
        }
        2 => Ok(InboundRecord::Listen {
            socket_cookie,
            local,
            ktime_ns,
        }),
        3 => Ok(InboundRecord::Accept {
            socket_cookie,
            local,
            remote: SocketAddr::new(addr_of(family, &b[72..88])?, u16_at(b, 48)),
            ktime_ns,
        }),
        4 => Ok(InboundRecord::Connected {
            socket_cookie,
            local,
            remote: SocketAddr::new(addr_of(family, &b[72..88])?, u16_at(b, 48)),
            ktime_ns,
        }),
        k => Err(NetError::Decode(format!("inbound kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_clear_host_bits() {
        let p: Prefix = "10.254.3.7/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.254.0.0/16");
        let p: Prefix = "10.254.3.7".parse().unwrap();
        assert_eq!(p.to_string(), "10.254.3.7/32");
        let p: Prefix = "fd00::1:2/64".parse().unwrap();
        assert_eq!(p.to_string(), "fd00::/64");
        let p: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(p.is_empty());
        let p: Prefix = "::ffff:169.254.169.254/128".parse().unwrap();
        assert_eq!(p.to_string(), "169.254.169.254/32");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("::/129".parse::<Prefix>().is_err());
        assert!("nonsense/8".parse::<Prefix>().is_err());
    }

    #[test]
    fn rules_round_trip() {
        assert_eq!(Rule::from_raw(7), Rule::Entry(7));
        assert_eq!(Rule::from_raw(RULE_LOOPBACK), Rule::Loopback);
        assert_eq!(
            Rule::from_raw(RULE_DEFAULT_ALLOWLIST),
            Rule::DefaultAllowlist
        );
        assert_eq!(Rule::from_raw(0xffff_fff0), Rule::Unknown(0xffff_fff0));
        assert!(check_rule(RULE_BUILTIN).is_err());
        assert!(check_rule(RULE_BUILTIN - 1).is_ok());
    }

    #[test]
    fn allow_keys_put_the_port_first() {
        let k = allow_key4(Ipv4Addr::new(10, 254, 1, 2), 32, Some(8080));
        assert_eq!(k.prefix_len(), 48);
        assert_eq!(k.data(), [0x1f, 0x90, 10, 254, 1, 2, 0, 0]);
        let k = allow_key4(Ipv4Addr::new(10, 0, 0, 0), 8, None);
        assert_eq!(k.prefix_len(), 24);
        assert_eq!(k.data()[..3], [0, 0, 10]);
    }

    #[test]
    fn decodes_a_flow() {
        let mut b = [0u8; FLOW_LEN];
        b[16..24].copy_from_slice(&42u64.to_ne_bytes());
        b[24..32].copy_from_slice(&1500u64.to_ne_bytes());
        b[48..56].copy_from_slice(&3u64.to_ne_bytes());
        b[56..60].copy_from_slice(&[10, 254, 0, 1]);
        b[72..76].copy_from_slice(&[10, 254, 0, 2]);
        b[88..90].copy_from_slice(&40000u16.to_ne_bytes());
        b[90..92].copy_from_slice(&443u16.to_ne_bytes());
        b[92] = 4;
        b[93] = libc::IPPROTO_TCP as u8;
        b[94..96].copy_from_slice(&(libc::SOCK_STREAM as u16).to_ne_bytes());
        b[96..100].copy_from_slice(&100u32.to_ne_bytes());
        b[104..112].copy_from_slice(&77u64.to_ne_bytes());
        let f = decode_flow(&b, true).unwrap();
        assert_eq!(f.socket_cookie, 42);
        assert_eq!(f.src, "10.254.0.1:40000".parse().unwrap());
        assert_eq!(f.dst, "10.254.0.2:443".parse().unwrap());
        assert_eq!((f.bytes_out, f.packets_in), (1500, 3));
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.closed_by, Some((100, 0, 77)));
        assert_eq!(decode_flow(&b, false).unwrap().closed_by, None);
        b[92] = 5;
        assert!(decode_flow(&b, true).is_err());
    }

    #[test]
    fn decodes_a_record() {
        let mut b = [0u8; REC_LEN];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&77u64.to_ne_bytes());
        b[16..24].copy_from_slice(&9u64.to_ne_bytes());
        b[24..28].copy_from_slice(&100u32.to_ne_bytes());
        b[28..32].copy_from_slice(&101u32.to_ne_bytes());
        b[32..36].copy_from_slice(&1000u32.to_ne_bytes());
        b[40..44].copy_from_slice(&RULE_DEFAULT_ALLOWLIST.to_ne_bytes());
        b[44..46].copy_from_slice(&443u16.to_ne_bytes());
        b[46] = 1;
        b[47] = 2;
        b[48..50].copy_from_slice(&(libc::SOCK_STREAM as u16).to_ne_bytes());
        b[50..52].copy_from_slice(&(libc::IPPROTO_TCP as u16).to_ne_bytes());
        b[52] = 4;
        b[56..60].copy_from_slice(&[10, 254, 0, 2]);
        b[72..76].copy_from_slice(b"curl");
        let r = decode(&b).unwrap();
        assert_eq!(r.dst, "10.254.0.2:443".parse().unwrap());
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.rule, Rule::DefaultAllowlist);
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.hook, Hook::Connect);
        assert_eq!(r.task.pid, 100);
        assert_eq!(r.task.tid, 101);
        assert_eq!(r.task.cgroup_id, 77);
        assert_eq!(r.task.comm, "curl");
        assert_eq!(r.socket_cookie, 9);
        assert!(decode(&b[..40]).is_err());
    }

    #[test]
    fn decodes_a_payload() {
        let mut b = [0u8; PAYLOAD_REC_LEN];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&42u64.to_ne_bytes());
        b[16..20].copy_from_slice(&[127, 0, 0, 1]);
        b[32..36].copy_from_slice(&[127, 0, 0, 2]);
        b[48..50].copy_from_slice(&40000u16.to_ne_bytes());
        b[50..52].copy_from_slice(&443u16.to_ne_bytes());
        b[52] = 4;
        b[53] = libc::IPPROTO_TCP as u8;
        b[54..56].copy_from_slice(&3u16.to_ne_bytes());
        b[56..60].copy_from_slice(&1000u32.to_ne_bytes());
        b[64..68].copy_from_slice(&[0x16, 3, 1, 0xff]);
        let p = decode_payload(&b).unwrap();
        assert_eq!(p.socket_cookie, 42);
        assert_eq!(p.ktime_ns, 5);
        assert_eq!(p.proto, Proto::Tcp);
        assert_eq!(p.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(p.dst, "127.0.0.2:443".parse().unwrap());
        assert_eq!(p.payload_len, 1000);
        assert_eq!(p.bytes, [0x16, 3, 1]);
        b[54..56].copy_from_slice(&513u16.to_ne_bytes());
        assert!(decode_payload(&b).is_err());
        b[54..56].copy_from_slice(&3u16.to_ne_bytes());
        b[53] = 1;
        assert!(decode_payload(&b).is_err());
        assert!(decode_payload(&b[..100]).is_err());
    }

    #[test]
    fn decodes_inbound_records() {
        let mut b = [0u8; INBOUND_REC_LEN];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&77u64.to_ne_bytes());
        b[16..24].copy_from_slice(&42u64.to_ne_bytes());
        b[24..28].copy_from_slice(&100u32.to_ne_bytes());
        b[28..32].copy_from_slice(&101u32.to_ne_bytes());
        b[32..36].copy_from_slice(&1000u32.to_ne_bytes());
        b[40] = 1;
        b[41] = 4;
        b[42..44].copy_from_slice(&(libc::SOCK_STREAM as u16).to_ne_bytes());
        b[44..46].copy_from_slice(&(libc::IPPROTO_TCP as u16).to_ne_bytes());
        b[46..48].copy_from_slice(&8080u16.to_ne_bytes());
        b[56..60].copy_from_slice(&[127, 0, 0, 1]);
        b[88..95].copy_from_slice(b"python3");
        let InboundRecord::Bind {
            task,
            socket_cookie,
            proto,
            local,
        } = decode_inbound(&b).unwrap()
        else {
            panic!("not a bind");
        };
        assert_eq!((task.pid, task.tid, task.uid), (100, 101, 1000));
        assert_eq!((task.cgroup_id, task.ktime_ns), (77, 5));
        assert_eq!(task.comm, "python3");
        assert_eq!((socket_cookie, proto), (42, Proto::Tcp));
        assert_eq!(local, "127.0.0.1:8080".parse().unwrap());

        b[40] = 3;
        b[41] = 6;
        b[48..50].copy_from_slice(&40000u16.to_ne_bytes());
        b[56..72].copy_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        b[72..88].copy_from_slice(&"fd54::2".parse::<Ipv6Addr>().unwrap().octets());
        let r = decode_inbound(&b).unwrap();
        assert_eq!(
            r,
            InboundRecord::Accept {
                socket_cookie: 42,
                local: "[::1]:8080".parse().unwrap(),
                remote: "[fd54::2]:40000".parse().unwrap(),
                ktime_ns: 5,
            }
        );
        assert_eq!(r.socket_cookie(), 42);
        b[40] = 2;
        assert!(matches!(
            decode_inbound(&b).unwrap(),
            InboundRecord::Listen {
                socket_cookie: 42,
                ..
            }
        ));
        b[40] = 9;
        assert!(decode_inbound(&b).is_err());
        b[40] = 1;
        b[41] = 5;
        assert!(decode_inbound(&b).is_err());
        assert!(decode_inbound(&b[..100]).is_err());
    }
}
