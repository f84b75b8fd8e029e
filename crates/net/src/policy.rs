//! The egress policy: which domains, addresses and ports a session may reach.
//!
//! A [`Policy`] comes from a TOML file ([`Policy::from_toml`], [`Policy::load`]) and/or from
//! `run`-style flags ([`Policy::from_run_flags`]). It decides two questions, each answer naming
//! the rule that decided ([`Verdict`]):
//!
//! - [`Policy::decide_domain`]: may the session resolve this name (asked by the DNS forwarder);
//! - [`Policy::decide_addr`]: may the session connect / send to this address and port (to be asked
//!   by the kernel enforcement, with the table of addresses that allowed names resolved to).
//!
//! Deny beats allow. Rule names: `mode:none`, `deny:metadata`, `deny:domain:PATTERN`,
//! `deny:cidr:CIDR`, `deny:port:PORT`, `allow:domain:PATTERN`, `allow:cidr:CIDR`,
//! `allow:registry:MANAGER`, `default:allowlist` (deny) and `default:open` (log).
//!
//! The file format (see `docs/network.md`):
//!
//! ```toml
//! mode = "allowlist"            # open | allowlist | none
//!
//! [allow]
//! domains = ["example.org", "*.example.org"]
//! cidrs = ["192.0.2.0/24", "2001:db8::/32"]
//! ports = [80, 443]             # empty or absent: any port
//! registries = true             # the host's package registries (default true)
//!
//! [deny]
//! domains = ["bad.example.org"]
//! cidrs = ["198.51.100.0/24"]
//! metadata = true               # cloud metadata addresses (default true)
//!
//! [[registry]]                  # more approved package sources
//! manager = "pip"
//! url = "https://mirror.example.org/simple/"
//!
//! [burst]                       # blocked attempts that raise a policy.violation
//! count = 10
//! window_secs = 10
//! ```

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sandtrail_event::Decision;
use serde::Deserialize;
use toml::Spanned;

use crate::registries::Registry;
use crate::resolved::{ResolvedEntry, ResolvedIps};

/// What the policy does with egress that no rule mentions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Log only: everything not denied by an explicit deny rule (or the metadata default) is let
    /// through, with decision `log` and rule `default:open`.
    Open,
    /// Only what an allow rule names may pass (the default); the rest is denied by
    /// `default:allowlist`.
    Allowlist,
    /// No egress at all, not even name resolution (`mode:none`).
    None,
}

impl Mode {
    /// The name used in the file and in rule names.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Allowlist => "allowlist",
            Mode::None => "none",
        }
    }

    /// Parses `open`, `allowlist` or `none`.
    pub fn from_name(s: &str) -> Option<Mode> {
        match s {
            "open" => Some(Mode::Open),
            "allowlist" => Some(Mode::Allowlist),
            "none" => Some(Mode::None),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy decision and the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// allow, deny, or log (let through but flagged: open mode).
    pub decision: Decision,
    /// The deciding rule, e.g. `deny:metadata`, `allow:domain:*.example.org`.
    pub rule: String,
    /// For [`Policy::decide_addr`]: the domain the address was resolved from, when the session's
    /// DNS answers say so.
    pub domain: Option<String>,
}

impl Verdict {
    fn new(decision: Decision, rule: impl Into<String>) -> Verdict {
        Verdict {
            decision,
            rule: rule.into(),
            domain: None,
        }
    }

    /// Whether the traffic may pass (allow or log).
    pub fn passes(&self) -> bool {
        self.decision != Decision::Deny
    }
}

/// A domain pattern: `example.org` (that name only) or `*.example.org` (every name below it,
/// not `example.org` itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    /// Lower case, no trailing dot, without the `*.` of a wildcard.
    base: String,
    wildcard: bool,
}

impl DomainPattern {
    /// Parses a pattern; the error says what is wrong and what to write instead.
    pub fn parse(s: &str) -> Result<DomainPattern, String> {
        let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, base) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, t.clone()),
        };
        if t == "*" || (wildcard && base.is_empty()) {
            return Err(format!(
                "{s:?} would match every name; to allow everything use mode = \"open\", otherwise write a domain like \"example.org\" or \"*.example.org\""
            ));
        }
        if base.is_empty() {
            return Err(
                "an empty domain matches nothing; write a domain like \"example.org\" or remove it"
                    .into(),
            );
        }
        if base.parse::<IpAddr>().is_ok() || base.parse::<IpNet>().is_ok() {
            return Err(format!(
                "{s:?} is an address, not a domain; put it in `cidrs` (as \"{base}\" or with a /prefix)"
            ));
        }
        if base.contains('*') {
            return Err(format!(
                "{s:?}: a wildcard is only allowed as the whole first label, as in \"*.example.org\""
            ));
        }
        if !base.is_ascii() {
            return Err(format!(
                "{s:?} is not ASCII; write an internationalized name in its xn-- (punycode) form"
            ));
        }
        if base.len() > 253 {
            return Err(format!(
                "{s:?} is longer than 253 characters, the limit of a DNS name"
            ));
        }
        for label in base.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!(
                    "{s:?} has an empty or over-long label (each part between dots must be 1 to 63 characters)"
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!(
                    "{s:?} contains {c:?}; a domain has only letters, digits, '-', '_' and dots"
                ));
            }
        }
        Ok(DomainPattern { base, wildcard })
    }

    /// Whether `name` (any case, trailing dot or not) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize_name(name);
        if self.wildcard {
            name.len() > self.base.len() + 1
                && name.ends_with(&self.base)
                && name.as_bytes()[name.len() - self.base.len() - 1] == b'.'
        } else {
            name == self.base
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.base)
        } else {
            f.write_str(&self.base)
        }
    }
}

/// `name` lower case without a trailing dot (the form used in events).
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a CIDR or a bare address (a /32 or /128); the error says what to write instead.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; write the network, \"{}\"",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not an address or CIDR; write one like \"192.0.2.0/24\", \"192.0.2.7\" or \"2001:db8::/32\" (a name belongs in `domains`)"
    ))
}

/// Cloud instance-metadata endpoints, denied unless `deny.metadata = false`.
///
/// - `169.254.169.254`: AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack and most others;
/// - `fd00:ec2::254`: AWS IMDS over IPv6;
/// - `169.254.170.2`: AWS ECS task metadata and credentials;
/// - `100.100.100.200`: Alibaba Cloud.
pub const METADATA_CIDRS: &[&str] = &[
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "169.254.170.2/32",
    "100.100.100.200/32",
];

/// Metadata host names (GCP's), denied at the resolver under `deny:metadata` too.
pub const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog"];

/// When enough blocked attempts make a `policy.violation`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BurstConfig {
    /// Blocked attempts (default 10) ...
    pub count: u32,
    /// ... within this window (default 10 s).
    pub window: Duration,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            count: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// The egress policy of one session. Build it with [`Policy::from_toml`], [`Policy::load`],
/// [`Policy::from_run_flags`] or `Policy::default()` (allowlist, metadata denied, registries
/// allowed, nothing else), then give it the discovered registries with
/// [`Policy::add_registries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// What happens to egress no rule names.
    pub mode: Mode,
    /// Allowed names.
    pub allow_domains: Vec<DomainPattern>,
    /// Allowed networks.
    pub allow_cidrs: Vec<IpNet>,
    /// Allowed destination ports for `allow_domains` and `allow_cidrs` (empty: any). Registries
    /// are allowed on the ports of their URLs.
    pub allow_ports: Vec<u16>,
    /// Whether package registries (discovered and from `[[registry]]`) are allowed.
    pub allow_registries: bool,
    /// Denied names.
    pub deny_domains: Vec<DomainPattern>,
    /// Denied networks.
    pub deny_cidrs: Vec<IpNet>,
    /// Whether [`METADATA_CIDRS`] and [`METADATA_NAMES`] are denied.
    pub deny_metadata: bool,
    /// Package registries: from the file's `[[registry]]` and from [`Policy::add_registries`].
    pub registries: Vec<Registry>,
    /// The `policy.violation` threshold.
    pub burst: BurstConfig,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Allowlist,
            allow_domains: Vec::new(),
            allow_cidrs: Vec::new(),
            allow_ports: Vec::new(),
            allow_registries: true,
            deny_domains: Vec::new(),
            deny_cidrs: Vec::new(),
            deny_metadata: true,
            registries: Vec::new(),
            burst: BurstConfig::default(),
        }
    }
}

/// Why a policy could not be built; each says where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is malformed.
    #[error("{}:{line}:{column}: {msg}", path.display())]
    File {
        /// The policy file (or `<policy>` for a string).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong and what to write instead.
        msg: String,
    },
    /// The file cannot be read.
    #[error("cannot read the policy file {}: {source}; give --policy an existing, readable TOML file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A command-line flag is wrong.
    #[error("{flag} {value:?}: {msg}")]
    Flag {
        /// The flag, e.g. `--allow-domain`.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what to write instead.
        msg: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    mode: Option<Spanned<String>>,
    allow: Option<AllowSection>,
    deny: Option<DenySection>,
    #[serde(default)]
    registry: Vec<Spanned<RegistrySection>>,
    burst: Option<BurstSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowSection {
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<i64>>,
    registries: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenySection {
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    metadata: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    manager: Spanned<String>,
    url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstSection {
    count: Option<Spanned<i64>>,
    window_secs: Option<Spanned<i64>>,
}

/// 1-based (line, column) of byte offset `at` in `src`.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let at = at.min(src.len());
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Adds the fix to toml's own messages where they do not say it.
fn explain_toml(msg: &str) -> String {
    let msg = msg.trim().trim_end_matches('.').to_string();
    if msg.contains("unknown field") {
        format!("{msg}; correct the key's spelling (the format is in docs/network.md)")
    } else if msg.contains("missing field") {
        format!("{msg}; add it (see docs/network.md)")
    } else if msg.contains("invalid type") {
        format!("{msg}; see docs/network.md for the type of each key")
    } else {
        format!("{msg}; see docs/network.md for the file format")
    }
}

impl Policy {
    /// Reads and parses a policy file; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let src = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_toml(&src, path)
    }

    /// Parses a policy from TOML text; `path` only names it in errors.
    pub fn from_toml(src: &str, path: &Path) -> Result<Policy, PolicyError> {
        let err = |span: Range<usize>, msg: String| {
            let (line, column) = line_col(src, span.start);
            PolicyError::File {
                path: path.to_path_buf(),
                line,
                column,
                msg,
            }
        };
        let doc: FileDoc = toml::from_str(src)
            .map_err(|e| err(e.span().unwrap_or(0..0), explain_toml(e.message())))?;
        let mut p = Policy::default();
        if let Some(m) = &doc.mode {
            p.mode = Mode::from_name(m.get_ref()).ok_or_else(|| {
                err(
                    m.span(),
                    format!(
                        "unknown mode {:?}; write mode = \"allowlist\" (only what is allowed), \"open\" (log only) or \"none\" (no egress)",
                        m.get_ref()
                    ),
                )
            })?;
        }
        let domains = |list: &[Spanned<String>]| -> Result<Vec<DomainPattern>, PolicyError> {
            list.iter()
                .map(|d| DomainPattern::parse(d.get_ref()).map_err(|m| err(d.span(), m)))
                .collect()
        };
        let cidrs = |list: &[Spanned<String>]| -> Result<Vec<IpNet>, PolicyError> {
            list.iter()
                .map(|c| parse_cidr(c.get_ref()).map_err(|m| err(c.span(), m)))
                .collect()
        };
        if let Some(a) = &doc.allow {
            p.allow_domains = domains(&a.domains)?;
            p.allow_cidrs = cidrs(&a.cidrs)?;
            for port in &a.ports {
                let v = *port.get_ref();
                if !(1..=65535).contains(&v) {
                    return Err(err(
                        port.span(),
                        format!("port {v} is out of range; write a port from 1 to 65535"),
                    ));
                }
                p.allow_ports.push(v as u16);
            }
            if let Some(r) = a.registries {
                p.allow_registries = r;
            }
            if p.mode == Mode::None
                && (!a.domains.is_empty() || !a.cidrs.is_empty() || !a.ports.is_empty())
            {
                let first = a
                    .domains
                    .first()
                    .or(a.cidrs.first())
                    .map(|s| s.span())
                    .or(a.ports.first().map(|s| s.span()))
                    .unwrap_or(0..0);
                return Err(err(
                    first,
                    "mode = \"none\" allows no egress at all, so [allow] entries would be ignored; remove them or write mode = \"allowlist\"".into(),
                ));
            }
        }
        if let Some(d) = &doc.deny {
            p.deny_domains = domains(&d.domains)?;
            p.deny_cidrs = cidrs(&d.cidrs)?;
            if let Some(m) = d.metadata {
                p.deny_metadata = m;
            }
        }
        for r in &doc.registry {
            let r = r.get_ref();
            let reg = Registry::from_url(r.manager.get_ref(), r.url.get_ref(), "policy file")
                .map_err(|m| err(r.url.span(), m))?;
            if r.manager.get_ref().trim().is_empty() {
                return Err(err(
                    r.manager.span(),
                    "manager must name the package manager, e.g. manager = \"pip\"".into(),
                ));
            }
            p.registries.push(reg);
        }
        if let Some(b) = &doc.burst {
            if let Some(c) = &b.count {
                let v = *c.get_ref();
                if !(1..=1_000_000).contains(&v) {
                    return Err(err(
                        c.span(),
                        format!("count = {v} is out of range; write a number of blocked attempts from 1 to 1000000"),
                    ));
                }
                p.burst.count = v as u32;
            }
            if let Some(w) = &b.window_secs {
                let v = *w.get_ref();
                if !(1..=86_400).contains(&v) {
                    return Err(err(
                        w.span(),
                        format!("window_secs = {v} is out of range; write seconds from 1 to 86400"),
                    ));
                }
                p.burst.window = Duration::from_secs(v as u64);
            }
        }
        Ok(p)
    }

    /// The policy of a `run`: the file given with `--policy` (or the default policy), plus
    /// `--allow-domain` patterns, and `--no-network` (mode none). Conflicting flags are errors.
    pub fn from_run_flags(
        policy_file: Option<&Path>,
        allow_domains: &[String],
        no_network: bool,
    ) -> Result<Policy, PolicyError> {
        let mut p = match policy_file {
            Some(f) => Policy::load(f)?,
            None => Policy::default(),
        };
        if no_network {
            if let Some(d) = allow_domains.first() {
                return Err(PolicyError::Flag {
                    flag: "--allow-domain",
                    value: d.clone(),
                    msg: "--no-network allows no egress at all; drop one of the two flags".into(),
                });
            }
            p.mode = Mode::None;
        }
        for d in allow_domains {
            if p.mode == Mode::None {
                return Err(PolicyError::Flag {
                    flag: "--allow-domain",
                    value: d.clone(),
                    msg: "the policy file says mode = \"none\" (no egress); change its mode to \"allowlist\" or drop the flag".into(),
                });
            }
            let pat = DomainPattern::parse(d).map_err(|msg| PolicyError::Flag {
                flag: "--allow-domain",
                value: d.clone(),
                msg,
            })?;
            if !p.allow_domains.contains(&pat) {
                p.allow_domains.push(pat);
            }
        }
        Ok(p)
    }

    /// Adds package registries (usually [`crate::registries::discover`]'s); duplicates of a
    /// manager and host already present are skipped.
    pub fn add_registries(&mut self, regs: impl IntoIterator<Item = Registry>) {
        for r in regs {
            if !self
                .registries
                .iter()
                .any(|x| x.manager == r.manager && x.host == r.host && x.port == r.port)
            {
                self.registries.push(r);
            }
        }
    }

    fn registry_for(&self, name: &str) -> Option<&Registry> {
        if !self.allow_registries {
            return None;
        }
        self.registries
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(name))
    }

    fn no_rule(&self) -> Verdict {
        match self.mode {
            Mode::Open => Verdict::new(Decision::Log, "default:open"),
            Mode::Allowlist => Verdict::new(Decision::Deny, "default:allowlist"),
            Mode::None => Verdict::new(Decision::Deny, "mode:none"),
        }
    }

    /// May the session resolve `name`? (The DNS forwarder asks before forwarding.)
    pub fn decide_domain(&self, name: &str) -> Verdict {
        let name = normalize_name(name);
        if self.mode == Mode::None {
            return Verdict::new(Decision::Deny, "mode:none");
        }
        if self.deny_metadata && METADATA_NAMES.contains(&name.as_str()) {
            return Verdict::new(Decision::Deny, "deny:metadata");
        }
        if let Some(d) = self.deny_domains.iter().find(|d| d.matches(&name)) {
            return Verdict::new(Decision::Deny, format!("deny:domain:{d}"));
        }
        if let Some(d) = self.allow_domains.iter().find(|d| d.matches(&name)) {
            return Verdict::new(Decision::Allow, format!("allow:domain:{d}"));
        }
        if let Some(r) = self.registry_for(&name) {
            return Verdict::new(Decision::Allow, format!("allow:registry:{}", r.manager));
        }
        self.no_rule()
    }

    /// May the session send to `ip`:`port` (port `None` where the protocol has none)? An
    /// address is allowed by a static CIDR rule, or because an allowed name resolved to it
    /// (looked up in `resolved` at `now`, TTL-aware); deny rules come first.
    pub fn decide_addr(
        &self,
        ip: IpAddr,
        port: Option<u16>,
        resolved: &ResolvedIps,
        now: Instant,
    ) -> Verdict {
        let ip = canonical_ip(ip);
        if self.mode == Mode::None {
            return Verdict::new(Decision::Deny, "mode:none");
        }
        let domain = resolved.domain_of(ip, now).map(|e| e.domain);
        let with_domain = |mut v: Verdict| {
            v.domain = domain.clone();
            v
        };
        if self.deny_metadata
            && METADATA_CIDRS
                .iter()
                .any(|c| c.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)))
        {
            return with_domain(Verdict::new(Decision::Deny, "deny:metadata"));
        }
        if let Some(n) = self.deny_cidrs.iter().find(|n| n.contains(&ip)) {
            return with_domain(Verdict::new(Decision::Deny, format!("deny:cidr:{n}")));
        }
        if let Some(d) = &domain {
            // The name may have been denied since (a deny rule for it); deny wins.
            let v = self.decide_domain(d);
            if v.decision == Decision::Deny && v.rule != "default:allowlist" {
                return with_domain(v);
            }
        }
        let port_ok = |p: Option<u16>| {
            self.allow_ports.is_empty() || p.is_none_or(|p| self.allow_ports.contains(&p))
        };
        let port_rule = |p: Option<u16>| {
            Verdict::new(
                Decision::Deny,
                format!("deny:port:{}", p.unwrap_or_default()),
            )
        };
        if let Some(n) = self.allow_cidrs.iter().find(|n| n.contains(&ip)) {
            if !port_ok(port) {
                return with_domain(port_rule(port));
            }
            return with_domain(Verdict::new(Decision::Allow, format!("allow:cidr:{n}")));
        }
        if let Some(entry) = resolved.allowed_ip(ip, now) {
            let is_registry = entry.rule.starts_with("allow:registry:");
            let ok = if is_registry {
                // Registries are allowed on the ports of their URLs.
                self.registries.iter().any(|r| {
                    r.host.eq_ignore_ascii_case(&entry.domain) && port.is_none_or(|p| p == r.port)
                })
            } else {
                port_ok(port)
            };
            if !ok {
                return with_domain(port_rule(port));
            }
            return with_domain(Verdict::new(Decision::Allow, entry.rule));
        }
        with_domain(self.no_rule())
    }
}

/// One static rule of a policy as the kernel enforces it at connect/sendmsg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRule {
    /// The network.
    pub net: IpNet,
    /// Allowed on this port only (`None`: every port). Deny rules cover every port.
    pub port: Option<u16>,
    /// Allow (true) or deny.
    pub allow: bool,
    /// The rule's name, as [`Policy::decide_addr`] reports it.
    pub rule: String,
}

impl Policy {
    /// The policy's address rules for the kernel: metadata denies (unless turned off), deny
    /// CIDRs, and allow CIDRs on each allowed port. Names are enforced through their answers
    /// ([`Policy::answer_ports`]).
    pub fn kernel_rules(&self) -> Vec<KernelRule> {
        let mut out = Vec::new();
        if self.deny_metadata {
            for c in METADATA_CIDRS {
                let net: IpNet = c.parse().expect("valid built-in CIDR");
                out.push(KernelRule {
                    net,
                    port: None,
                    allow: false,
                    rule: "deny:metadata".into(),
                });
            }
        }
        for n in &self.deny_cidrs {
            out.push(KernelRule {
                net: *n,
                port: None,
                allow: false,
                rule: format!("deny:cidr:{n}"),
            });
        }
        for n in &self.allow_cidrs {
            for port in self.ports() {
                out.push(KernelRule {
                    net: *n,
                    port,
                    allow: true,
                    rule: format!("allow:cidr:{n}"),
                });
            }
        }
        out
    }

    /// `allow_ports` as kernel entries: every port (`None`) when empty.
    fn ports(&self) -> Vec<Option<u16>> {
        if self.allow_ports.is_empty() {
            vec![None]
        } else {
            self.allow_ports.iter().map(|p| Some(*p)).collect()
        }
    }

    /// Every rule name an allowed DNS answer can carry (`allow:domain:…`, `allow:registry:…`).
    pub fn answer_rules(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .allow_domains
            .iter()
            .map(|d| format!("allow:domain:{d}"))
            .collect();
        for r in &self.registries {
            let rule = format!("allow:registry:{}", r.manager);
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
        out
    }

    /// The ports on which an address an allowed name resolved to may be reached (`None`: every
    /// port), as [`Policy::decide_addr`] decides: a registry's on the ports of its URLs, other
    /// names on `allow_ports`.
    pub fn answer_ports(&self, entry: &ResolvedEntry) -> Vec<Option<u16>> {
        if entry.rule.starts_with("allow:registry:") {
            let mut ports: Vec<Option<u16>> = self
                .registries
                .iter()
                .filter(|r| r.host.eq_ignore_ascii_case(&entry.domain))
                .map(|r| Some(r.port))
                .collect();
            ports.dedup();
            ports
        } else {
            self.ports()
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for; others unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(src, Path::new("test.toml"))
    }

    fn err(src: &str) -> (usize, usize, String) {
        match parse(src).unwrap_err() {
            PolicyError::File {
                line, column, msg, ..
            } => (line, column, msg),
            other => panic!("unexpected {other}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reg(manager: &str, url: &str) -> Registry {
        Registry::from_url(manager, url, "test").unwrap()
    }

    const FULL: &str = r#"
mode = "allowlist"

[allow]
domains = ["api.example.org", "*.foo.test"]
cidrs = ["192.0.2.0/24", "2001:db8::/32", "203.0.113.9"]
ports = [80, 443]

[deny]
domains = ["bad.foo.test"]
cidrs = ["192.0.2.128/25"]

[[registry]]
manager = "pip"
url = "https://mirror.test/simple/"

[burst]
count = 3
window_secs = 5
"#;

    #[test]
    fn domain_patterns() {
        let w = DomainPattern::parse("*.Foo.test.").unwrap();
        assert_eq!(w.to_string(), "*.foo.test");
        assert!(w.matches("a.foo.test"));
        assert!(w.matches("A.B.FOO.TEST."));
        assert!(!w.matches("foo.test"), "a wildcard does not match the apex");
        assert!(!w.matches("xfoo.test"));
        assert!(!w.matches("foo.test.evil"));
        let e = DomainPattern::parse("foo.test").unwrap();
        assert!(e.matches("foo.test") && e.matches("FOO.test."));
        assert!(!e.matches("a.foo.test"));
        for bad in [
            "*",
            "*.",
            "",
            "a.*.test",
            "foo*.test",
            "192.0.2.1",
            "10.0.0.0/8",
            "a..test",
            "a b.test",
            "bücher.test",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("192.0.2.7").unwrap(),
            "192.0.2.7/32".parse().unwrap()
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap(),
            "2001:db8::1/128".parse().unwrap()
        );
        assert!(parse_cidr("192.0.2.1/24")
            .unwrap_err()
            .contains("192.0.2.0/24"));
        assert!(parse_cidr("example.org").unwrap_err().contains("domains"));
        assert!(parse_cidr("192.0.2.0/33").is_err());
    }

    #[test]
    fn full_file_parses() {
        let p = parse(FULL).unwrap();
        assert_eq!(p.mode, Mode::Allowlist);
        assert_eq!(p.allow_domains.len(), 2);
        assert_eq!(p.allow_cidrs.len(), 3);
        assert_eq!(p.allow_ports, vec![80, 443]);
        assert!(p.allow_registries && p.deny_metadata);
        assert_eq!(p.registries.len(), 1);
        assert_eq!(p.registries[0].host, "mirror.test");
        assert_eq!(p.registries[0].port, 443);
        assert_eq!(
            p.burst,
            BurstConfig {
                count: 3,
                window: Duration::from_secs(5)
            }
        );
        assert_eq!(parse("").unwrap(), Policy::default());
    }

    #[test]
    fn domain_decisions_name_the_rule() {
        let mut p = parse(FULL).unwrap();
        p.add_registries([reg("npm", "https://npm.mirror.test/")]);
        let d = |n: &str| {
            let v = p.decide_domain(n);
            (v.decision, v.rule)
        };
        assert_eq!(
            d("api.example.org"),
            (Decision::Allow, "allow:domain:api.example.org".into())
        );
        assert_eq!(
            d("x.foo.test"),
            (Decision::Allow, "allow:domain:*.foo.test".into())
        );
        assert_eq!(
            d("bad.foo.test"),
            (Decision::Deny, "deny:domain:bad.foo.test".into()),
            "deny beats allow"
        );
        assert_eq!(
            d("foo.test"),
            (Decision::Deny, "default:allowlist".into()),
            "the apex is not under *.foo.test"
        );
        assert_eq!(
            d("MIRROR.test."),
            (Decision::Allow, "allow:registry:pip".into())
        );
        assert_eq!(
            d("npm.mirror.test"),
            (Decision::Allow, "allow:registry:npm".into())
        );
        assert_eq!(
            d("metadata.google.internal"),
            (Decision::Deny, "deny:metadata".into())
        );
        assert_eq!(
            d("blocked.invalid"),
            (Decision::Deny, "default:allowlist".into())
        );
        p.allow_registries = false;
        assert_eq!(p.decide_domain("mirror.test").rule, "default:allowlist");
    }

    #[test]
    fn modes() {
        let open = parse("mode = \"open\"\n[deny]\ndomains = [\"bad.test\"]\n").unwrap();
        let r = ResolvedIps::default();
        let now = Instant::now();
        assert_eq!(
            open.decide_domain("anything.test"),
            Verdict::new(Decision::Log, "default:open")
        );
        assert_eq!(
            open.decide_domain("bad.test"),
            Verdict::new(Decision::Deny, "deny:domain:bad.test")
        );
        assert_eq!(
            open.decide_addr(ip("198.51.100.1"), Some(443), &r, now),
            Verdict::new(Decision::Log, "default:open")
        );
        assert_eq!(
            open.decide_addr(ip("169.254.169.254"), Some(80), &r, now),
            Verdict::new(Decision::Deny, "deny:metadata"),
            "metadata stays denied in open mode"
        );
        let mut none = parse("mode = \"none\"").unwrap();
        none.add_registries([reg("pip", "https://mirror.test/")]);
        assert_eq!(
            none.decide_domain("mirror.test"),
            Verdict::new(Decision::Deny, "mode:none")
        );
        assert_eq!(
            none.decide_addr(ip("192.0.2.1"), Some(443), &r, now),
            Verdict::new(Decision::Deny, "mode:none")
        );
        let no_meta = parse("mode = \"open\"\n[deny]\nmetadata = false\n").unwrap();
        assert_eq!(
            no_meta.decide_addr(ip("169.254.169.254"), Some(80), &r, now),
            Verdict::new(Decision::Log, "default:open")
        );
    }

    #[test]
    fn addr_decisions_name_the_rule() {
        let mut p = parse(FULL).unwrap();
        p.add_registries([reg("cargo", "sparse+https://crates.mirror.test/index/")]);
        let r = ResolvedIps::default();
        let now = Instant::now();
        let a = |s: &str, port: u16| {
            let v = p.decide_addr(ip(s), Some(port), &r, now);
            (v.decision, v.rule, v.domain)
        };
        assert_eq!(
            a("192.0.2.5", 443),
            (Decision::Allow, "allow:cidr:192.0.2.0/24".into(), None)
        );
        assert_eq!(
            a("192.0.2.200", 443),
            (Decision::Deny, "deny:cidr:192.0.2.128/25".into(), None),
            "deny beats allow"
        );
        assert_eq!(
            a("192.0.2.5", 22),
            (Decision::Deny, "deny:port:22".into(), None)
        );
        assert_eq!(
            a("2001:db8::5", 80),
            (Decision::Allow, "allow:cidr:2001:db8::/32".into(), None)
        );
        assert_eq!(
            a("::ffff:203.0.113.9", 80),
            (Decision::Allow, "allow:cidr:203.0.113.9/32".into(), None),
            "IPv4-mapped IPv6 counts as IPv4"
        );
        assert_eq!(
            a("169.254.169.254", 80),
            (Decision::Deny, "deny:metadata".into(), None)
        );
        assert_eq!(
            a("fd00:ec2::254", 80),
            (Decision::Deny, "deny:metadata".into(), None)
        );
        assert_eq!(
            a("100.100.100.200", 80),
            (Decision::Deny, "deny:metadata".into(), None)
        );
        assert_eq!(
            a("198.51.100.7", 443),
            (Decision::Deny, "default:allowlist".into(), None)
        );

        // Addresses allowed names resolved to, until their TTL runs out.
        r.insert(
            ip("198.51.100.7"),
            "x.foo.test",
            &p.decide_domain("x.foo.test"),
            60,
            now,
        );
        r.insert(
            ip("198.51.100.8"),
            "crates.mirror.test",
            &p.decide_domain("crates.mirror.test"),
            60,
            now,
        );
        r.insert(
            ip("169.254.169.254"),
            "x.foo.test",
            &p.decide_domain("x.foo.test"),
            60,
            now,
        );
        assert_eq!(
            a("198.51.100.7", 443),
            (
                Decision::Allow,
                "allow:domain:*.foo.test".into(),
                Some("x.foo.test".into())
            )
        );
        assert_eq!(
            a("198.51.100.7", 8080),
            (
                Decision::Deny,
                "deny:port:8080".into(),
                Some("x.foo.test".into())
            )
        );
        assert_eq!(
            a("198.51.100.8", 443),
            (
                Decision::Allow,
                "allow:registry:cargo".into(),
                Some("crates.mirror.test".into())
            )
        );
        assert_eq!(
            a("198.51.100.8", 80).1,
            "deny:port:80",
            "a registry only on its URL's port"
        );
        assert_eq!(
            a("169.254.169.254", 80).1,
            "deny:metadata",
            "a name resolving to the metadata address does not open it"
        );
        let later =
            now + Duration::from_secs(60) + crate::resolved::TTL_GRACE + Duration::from_secs(1);
        assert_eq!(
            p.decide_addr(ip("198.51.100.7"), Some(443), &r, later).rule,
            "default:allowlist",
            "expired"
        );
    }

    #[test]
    fn malformed_files_name_line_column_and_fix() {
        let (l, c, m) = err("mode = \"allowlsit\"\n");
        assert_eq!((l, c), (1, 8));
        assert!(m.contains("\"allowlist\"") && m.contains("\"open\""), "{m}");

        let (l, c, m) = err("mode = \"open\"\n[allow]\ndomains = [\"ok.test\", \"a.*.test\"]\n");
        assert_eq!((l, c), (3, 23));
        assert!(m.contains("*.example.org"), "{m}");

        let (l, c, m) = err("[deny]\ncidrs = [\"10.0.0.1/8\"]\n");
        assert_eq!((l, c), (2, 10));
        assert!(m.contains("10.0.0.0/8"), "{m}");

        let (l, _, m) = err("[allow]\nports = [443, 70000]\n");
        assert_eq!(l, 2);
        assert!(m.contains("1 to 65535"), "{m}");

        let (l, c, m) = err("[allow]\ndomain = [\"x.test\"]\n");
        assert_eq!((l, c), (2, 1));
        assert!(m.contains("unknown field") && m.contains("domains"), "{m}");

        let (l, _, m) = err("[alow]\n");
        assert_eq!(l, 1);
        assert!(m.contains("`allow`") && m.contains("spelling"), "{m}");

        let (l, _, m) = err("mode = open\n");
        assert_eq!(l, 1);
        assert!(m.contains("docs/network.md"), "{m}");

        let (l, _, m) = err("mode = \"none\"\n[allow]\ndomains = [\"x.test\"]\n");
        assert_eq!(l, 3);
        assert!(m.contains("\"allowlist\""), "{m}");

        let (l, _, m) = err("[[registry]]\nmanager = \"pip\"\nurl = \"not a url\"\n");
        assert_eq!(l, 3);
        assert!(m.contains("https://"), "{m}");

        let (l, _, m) = err("[[registry]]\nmanager = \"pip\"\n");
        assert_eq!(l, 1);
        assert!(m.contains("url"), "{m}");

        let (l, _, m) = err("[burst]\ncount = 0\n");
        assert_eq!(l, 2);
        assert!(m.contains("from 1"), "{m}");

        let shown = parse("mode = \"x\"").unwrap_err().to_string();
        assert!(shown.starts_with("test.toml:1:8: unknown mode"), "{shown}");
    }

    #[test]
    fn run_flags() {
        let p =
            Policy::from_run_flags(None, &["*.foo.test".into(), "bar.test".into()], false).unwrap();
        assert_eq!(p.mode, Mode::Allowlist);
        assert_eq!(
            p.decide_domain("a.foo.test").rule,
            "allow:domain:*.foo.test"
        );
        assert_eq!(p.decide_domain("bar.test").rule, "allow:domain:bar.test");
        let p = Policy::from_run_flags(None, &[], true).unwrap();
        assert_eq!(p.mode, Mode::None);
        let e = Policy::from_run_flags(None, &["x.test".into()], true).unwrap_err();
        assert!(e.to_string().contains("--no-network"), "{e}");
        let e = Policy::from_run_flags(None, &["*".into()], false).unwrap_err();
        assert!(e.to_string().starts_with("--allow-domain \"*\""), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "mode = \"open\"\n").unwrap();
        let p = Policy::from_run_flags(Some(&f), &["x.test".into()], false).unwrap();
        assert_eq!(p.mode, Mode::Open);
        assert_eq!(p.decide_domain("x.test").rule, "allow:domain:x.test");
        let e =
            Policy::from_run_flags(Some(&dir.path().join("missing.toml")), &[], false).unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
        std::fs::write(&f, "mode = \"none\"\n").unwrap();
        let e = Policy::from_run_flags(Some(&f), &["x.test".into()], false).unwrap_err();
        assert!(e.to_string().contains("mode = \"none\""), "{e}");
    }

    #[test]
    fn kernel_rules_deny_metadata_and_cidrs_and_allow_cidrs_per_port() {
        let p = parse(FULL).unwrap();
        let rules: Vec<(String, Option<u16>, bool, String)> = p
            .kernel_rules()
            .into_iter()
            .map(|r| (r.net.to_string(), r.port, r.allow, r.rule))
            .collect();
        let deny = |n: &str, rule: &str| (n.to_string(), None, false, rule.to_string());
        let allow =
            |n: &str, port: u16| (n.to_string(), Some(port), true, format!("allow:cidr:{n}"));
        assert_eq!(
            rules,
            vec![
                deny("169.254.169.254/32", "deny:metadata"),
                deny("fd00:ec2::254/128", "deny:metadata"),
                deny("169.254.170.2/32", "deny:metadata"),
                deny("100.100.100.200/32", "deny:metadata"),
                deny("192.0.2.128/25", "deny:cidr:192.0.2.128/25"),
                allow("192.0.2.0/24", 80),
                allow("192.0.2.0/24", 443),
                allow("2001:db8::/32", 80),
                allow("2001:db8::/32", 443),
                allow("203.0.113.9/32", 80),
                allow("203.0.113.9/32", 443),
            ]
        );
    }

    #[test]
    fn answers_are_allowed_on_the_ports_their_rule_allows() {
        let mut p = parse(FULL).unwrap();
        p.add_registries([reg("pip", "https://pkgs.example.net/simple/")]);
        assert_eq!(
            p.answer_rules(),
            vec![
                "allow:domain:api.example.org".to_string(),
                "allow:domain:*.foo.test".to_string(),
                "allow:registry:pip".to_string(),
            ]
        );
        let entry = |domain: &str, rule: &str| ResolvedEntry {
            domain: domain.into(),
            decision: Decision::Allow,
            rule: rule.into(),
            expires: Instant::now(),
        };
        assert_eq!(
            p.answer_ports(&entry("pkgs.example.net", "allow:registry:pip")),
            vec![Some(443)]
        );
        assert_eq!(
            p.answer_ports(&entry("x.foo.test", "allow:domain:*.foo.test")),
            vec![Some(80), Some(443)]
        );
        p.allow_ports.clear();
        assert_eq!(
            p.answer_ports(&entry("x.foo.test", "allow:domain:*.foo.test")),
            vec![None]
        );
    }
}
