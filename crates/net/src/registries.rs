//! The host's package registries, discovered at run time from its package managers'
//! configuration (never written into sandtrail): pip, npm, apt and cargo.
//!
//! A manager that is not installed or not configured is skipped (and said so in
//! [`Discovery::skipped`]), never an error.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One approved package source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry {
    /// "pip", "npm", "apt", "cargo" (or what a policy file names).
    pub manager: String,
    /// The URL as configured (without cargo's `sparse+` / `registry+` prefix).
    pub url: String,
    /// Its host name (lower case), or address.
    pub host: String,
    /// Its port (the scheme's default when the URL has none).
    pub port: u16,
    /// Where it was found: a file path, a command, or "policy file".
    pub found_in: String,
}

impl Registry {
    /// A registry from a URL; the error says what to write instead.
    pub fn from_url(manager: &str, url: &str, found_in: &str) -> Result<Registry, String> {
        let raw = url.trim();
        let stripped = raw
            .strip_prefix("sparse+")
            .or_else(|| raw.strip_prefix("registry+"))
            .or_else(|| raw.strip_prefix("git+"))
            .unwrap_or(raw);
        let parsed = url::Url::parse(stripped).map_err(|e| {
            format!("{raw:?} is not a URL ({e}); write the registry's URL, like \"https://mirror.example.org/simple/\"")
        })?;
        if !matches!(parsed.scheme(), "http" | "https" | "ftp") {
            return Err(format!(
                "{raw:?} is not reached over the network (scheme {:?}); write an http:// or https:// URL",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                format!("{raw:?} has no host; write a URL like \"https://mirror.example.org/\"")
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("{raw:?} has no port and its scheme has no default; add one"))?;
        Ok(Registry {
            manager: manager.trim().to_string(),
            url: stripped.to_string(),
            host,
            port,
            found_in: found_in.to_string(),
        })
    }
}

/// What discovery found, and what it skipped and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The registries, deduplicated by (manager, host, port).
    pub registries: Vec<Registry>,
    /// One line for each manager or source that was skipped ("npm: not installed").
    pub skipped: Vec<String>,
}

impl Discovery {
    fn add(&mut self, r: Registry) {
        if !self
            .registries
            .iter()
            .any(|x| x.manager == r.manager && x.host == r.host && x.port == r.port)
        {
            self.registries.push(r);
        }
    }

    fn add_url(&mut self, manager: &str, url: &str, found_in: &str) {
        match Registry::from_url(manager, url, found_in) {
            Ok(r) => self.add(r),
            Err(e) => self.skipped.push(format!("{manager}: {found_in}: {e}")),
        }
    }

    /// The registries of one manager.
    pub fn of(&self, manager: &str) -> impl Iterator<Item = &Registry> {
        let manager = manager.to_string();
        self.registries.iter().filter(move |r| r.manager == manager)
    }
}

/// Where to look: the real host ([`HostConfig::from_env`]) or a fixture tree for tests.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Prefix for system files (`/` on the host): `etc/apt/...`, `etc/pip.conf`.
    pub root: PathBuf,
    /// The user's home (pip's user config), if known.
    pub home: Option<PathBuf>,
    /// `$CARGO_HOME` (default `~/.cargo`), if known.
    pub cargo_home: Option<PathBuf>,
    /// pip's environment variables (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, `PIP_FIND_LINKS`).
    pub pip_env: Vec<(String, String)>,
    /// Whether to ask the tools themselves (`python3 -m pip`, `npm`). Tests on fixtures don't.
    pub run_tools: bool,
}

impl HostConfig {
    /// This host, as the current user sees it.
    pub fn from_env() -> HostConfig {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let cargo_home = std::env::var_os("CARGO_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".cargo")));
        let pip_env = ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        HostConfig {
            root: PathBuf::from("/"),
            home,
            cargo_home,
            pip_env,
            run_tools: true,
        }
    }
}

/// Discovers this host's registries.
pub fn discover() -> Discovery {
    discover_with(&HostConfig::from_env())
}

/// Discovers the registries `cfg` describes: pip, npm, apt, cargo, in that order.
pub fn discover_with(cfg: &HostConfig) -> Discovery {
    let mut d = Discovery::default();
    pip(cfg, &mut d);
    npm(cfg, &mut d);
    apt(&cfg.root, &mut d);
    cargo(cfg.cargo_home.as_deref(), &mut d);
    d
}

/// Runs a tool with a deadline; its trimmed stdout if it ran and succeeded.
fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("LC_ALL", "C")
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().ok()?;
    status
        .filter(|s| s.success())
        .map(|_| text.trim().to_string())
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

/// Values of `index-url` / `extra-index-url` / `find-links` (http(s) only) in
/// `pip config list` output (`scope.key='value'` lines).
pub fn parse_pip_config_list(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let name = key.rsplit('.').next().unwrap_or("").replace('_', "-");
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        push_pip_values(&mut out, &name, &value.replace("\\n", " "));
    }
    out
}

fn push_pip_values(out: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !matches!(name, "index-url" | "extra-index-url" | "find-links") {
        return;
    }
    for v in value.split_whitespace() {
        if name == "find-links" && !(v.starts_with("http://") || v.starts_with("https://")) {
            continue;
        }
        out.push((name.to_string(), v.to_string()));
    }
}

/// The same keys in a pip.conf (INI; values may continue on indented lines).
pub fn parse_pip_conf(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    let flush = |cur: &mut Option<(String, String)>, out: &mut Vec<(String, String)>| {
        if let Some((k, v)) = cur.take() {
            push_pip_values(out, &k, &v);
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) && !t.is_empty() {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(t);
            }
            continue;
        }
        flush(&mut current, &mut out);
        if t.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = t.split_once('=').or_else(|| t.split_once(':')) {
            current = Some((
                k.trim().replace('_', "-").to_ascii_lowercase(),
                v.trim().to_string(),
            ));
        }
    }
    flush(&mut current, &mut out);
    out
}

fn pip(cfg: &HostConfig, d: &mut Discovery) {
    let mut found: Vec<(String, String, String)> = Vec::new();
    let mut files = vec![
        cfg.root.join("etc/pip.conf"),
        cfg.root.join("etc/xdg/pip/pip.conf"),
    ];
    if let Some(h) = &cfg.home {
        files.push(h.join(".config/pip/pip.conf"));
        files.push(h.join(".pip/pip.conf"));
    }
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f) {
            for (k, v) in parse_pip_conf(&text) {
                found.push((k, v, f.display().to_string()));
            }
        }
    }
    for (k, v) in &cfg.pip_env {
        let name = k
            .trim_start_matches("PIP_")
            .to_ascii_lowercase()
            .replace('_', "-");
        let mut vals = Vec::new();
        push_pip_values(&mut vals, &name, v);
        for (k2, v2) in vals {
            found.push((k2, v2, format!("${k}")));
        }
    }
    let mut pip_runs = false;
    if cfg.run_tools {
        if let Some(out) = run_tool("python3", &["-m", "pip", "config", "list"], TOOL_TIMEOUT) {
            pip_runs = true;
            for (k, v) in parse_pip_config_list(&out) {
                found.push((k, v, "python3 -m pip config list".into()));
            }
        }
    }
    let has_index = found.iter().any(|(k, _, _)| k == "index-url");
    for (_, url, src) in &found {
        d.add_url("pip", url, src);
    }
    if has_index {
        return;
    }
    if !pip_runs {
        d.skipped.push(
            "pip: no index-url configured and pip is not installed (python3 -m pip failed)".into(),
        );
        return;
    }
    // pip's built-in index, and the host its files are served from, as pip itself knows them.
    let code = "from pip._internal.models.index import PyPI; print(PyPI.url); print(PyPI.file_storage_domain)";
    match run_tool("python3", &["-c", code], TOOL_TIMEOUT) {
        Some(out) => {
            let mut lines = out.lines();
            if let Some(url) = lines.next() {
                d.add_url("pip", url.trim(), "pip's built-in index");
            }
            if let Some(files) = lines.next().map(str::trim).filter(|s| !s.is_empty()) {
                d.add_url(
                    "pip",
                    &format!("https://{files}/"),
                    "pip's built-in file host",
                );
            }
        }
        None => d
            .skipped
            .push("pip: could not ask pip for its built-in index (pip internals changed?)".into()),
    }
}

fn npm(cfg: &HostConfig, d: &mut Discovery) {
    if !cfg.run_tools {
        return;
    }
    match run_tool("npm", &["config", "get", "registry"], TOOL_TIMEOUT) {
        Some(url) if !url.is_empty() && url != "undefined" => {
            d.add_url("npm", &url, "npm config get registry")
        }
        _ => d
            .skipped
            .push("npm: not installed or `npm config get registry` failed".into()),
    }
}

/// URIs of the one-line `sources.list` format (`deb [opts] URI suite comps`).
pub fn parse_sources_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("deb") | Some("deb-src") => {}
            _ => continue,
        }
        let mut next = words.next();
        if next.is_some_and(|w| w.starts_with('[')) {
            // Options: skip to the word that closes them.
            while let Some(w) = next {
                next = words.next();
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let Some(uri) = next {
            out.push(uri.to_string());
        }
    }
    out
}

/// URIs of the deb822 `.sources` format (paragraphs with `URIs:`; `Enabled: no` skipped).
pub fn parse_deb822(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut uris: Vec<String> = Vec::new();
    let mut enabled = true;
    let mut in_uris = false;
    let mut end = |uris: &mut Vec<String>, enabled: &mut bool| {
        if *enabled {
            out.append(uris);
        }
        uris.clear();
        *enabled = true;
    };
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            end(&mut uris, &mut enabled);
            in_uris = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if in_uris {
                uris.extend(line.split_whitespace().map(String::from));
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        in_uris = k.trim().eq_ignore_ascii_case("URIs");
        if in_uris {
            uris.extend(v.split_whitespace().map(String::from));
        } else if k.trim().eq_ignore_ascii_case("Enabled") {
            enabled = !v.trim().eq_ignore_ascii_case("no");
        }
    }
    end(&mut uris, &mut enabled);
    out
}

fn apt(root: &Path, d: &mut Discovery) {
    let mut files: Vec<PathBuf> = vec![root.join("etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut any = false;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        any = true;
        let uris = if f.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_sources_list(&text)
        };
        for uri in uris {
            if uri.starts_with("cdrom:") || uri.starts_with("file:") || uri.starts_with("copy:") {
                continue;
            }
            d.add_url("apt", &uri, &f.display().to_string());
        }
    }
    if !any {
        d.skipped
            .push("apt: no sources.list or sources.list.d".into());
    }
}

/// Hosts cargo has used: its index directories are named `<host>-<16 hex digits>`.
pub fn cargo_index_host(dir_name: &str) -> Option<&str> {
    let (host, hash) = dir_name.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !host.is_empty())
        .then_some(host)
}

fn cargo(cargo_home: Option<&Path>, d: &mut Discovery) {
    let Some(home) = cargo_home else {
        d.skipped.push("cargo: no CARGO_HOME and no HOME".into());
        return;
    };
    let before = d.registries.len();
    for name in ["config.toml", "config"] {
        let f = home.join(name);
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found_in = f.display().to_string();
        match text.parse::<toml::Table>() {
            Ok(t) => {
                for (section, key) in [("source", "registry"), ("registries", "index")] {
                    let Some(tbl) = t.get(section).and_then(|v| v.as_table()) else {
                        continue;
                    };
                    for (_, v) in tbl {
                        if let Some(url) = v.get(key).and_then(|u| u.as_str()) {
                            d.add_url("cargo", url, &found_in);
                        }
                    }
                }
            }
            Err(e) => d.skipped.push(format!(
                "cargo: {found_in} is not valid TOML ({}); its registries are not allowed",
                e.message()
            )),
        }
        break;
    }
    if d.registries.len() > before {
        return;
    }
    // No configuration: the registries cargo has used, from its index cache, and where their
    // crates are downloaded from (a sparse index's cached config.json).
    let index = home.join("registry/index");
    let Ok(rd) = std::fs::read_dir(&index) else {
        d.skipped.push(format!(
            "cargo: no source replacement in {} and no index cache in {}",
            home.join("config.toml").display(),
            index.display()
        ));
        return;
    };
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for e in rd.flatten() {
        dirs.insert(e.path());
    }
    for dir in dirs {
        let Some(host) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(cargo_index_host)
        else {
            continue;
        };
        let found_in = dir.display().to_string();
        d.add_url("cargo", &format!("https://{host}/"), &found_in);
        if let Ok(text) = std::fs::read_to_string(dir.join("config.json")) {
            for url in json_string_values(&text, &["dl", "api"]) {
                d.add_url(
                    "cargo",
                    &url,
                    &dir.join("config.json").display().to_string(),
                );
            }
        }
    }
}

/// The string values of `keys` in a flat JSON object (a sparse index's config.json).
fn json_string_values(text: &str, keys: &[&str]) -> Vec<String> {
    // config.json is tiny and flat: `{"dl": "...", "api": "..."}`. Avoid a JSON dependency:
    // find each `"key"` followed by `:` and a string.
    let mut out = Vec::new();
    for k in keys {
        let pat = format!("\"{k}\"");
        let Some(i) = text.find(&pat) else { continue };
        let rest = text[i + pat.len()..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('"') else {
            continue;
        };
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].replace("\\/", "/"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls() {
        let r =
            Registry::from_url("cargo", "sparse+https://Crates.Mirror.test/index/", "x").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.url.as_str()),
            (
                "crates.mirror.test",
                443,
                "https://Crates.Mirror.test/index/"
            )
        );
        let r = Registry::from_url("apt", "http://mirror.test:8080/debian", "x").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("mirror.test", 8080));
        let r = Registry::from_url("pip", "http://[2001:db8::1]/simple", "x").unwrap();
        assert_eq!(r.host, "2001:db8::1");
        assert!(Registry::from_url("pip", "mirror.test/simple", "x").is_err());
        assert!(Registry::from_url("pip", "file:///srv/wheels", "x")
            .unwrap_err()
            .contains("https://"));
    }

    #[test]
    fn sources_list_formats() {
        let one = "# comment\n\
                   deb http://deb.mirror.test/debian bookworm main\n\
                   deb [arch=amd64 signed-by=/k.gpg] https://sec.mirror.test/debian-security bookworm-security main\n\
                   deb [ trusted=yes ] http://plain.mirror.test/ ./\n\
                   deb-src http://src.mirror.test/debian bookworm main # trailing\n\
                   #deb http://commented.mirror.test/ x y\n";
        assert_eq!(
            parse_sources_list(one),
            vec![
                "http://deb.mirror.test/debian",
                "https://sec.mirror.test/debian-security",
                "http://plain.mirror.test/",
                "http://src.mirror.test/debian"
            ]
        );
        let deb822 = "Types: deb\n\
                      # http://comment.mirror.test/debian\n\
                      URIs: http://a.mirror.test/debian\n\
                      \x20 http://b.mirror.test/debian\n\
                      Suites: bookworm\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      URIs: https://off.mirror.test/debian\n\
                      Enabled: no\n\
                      \n\
                      Types: deb deb-src\n\
                      URIs: https://c.mirror.test/x https://d.mirror.test/y\n\
                      Suites: stable\n";
        assert_eq!(
            parse_deb822(deb822),
            vec![
                "http://a.mirror.test/debian",
                "http://b.mirror.test/debian",
                "https://c.mirror.test/x",
                "https://d.mirror.test/y"
            ]
        );
    }

    #[test]
    fn pip_config_formats() {
        let list = "global.index-url='https://pypi.mirror.test/simple/'\n\
                    :env:.extra-index-url='https://x.mirror.test/simple https://y.mirror.test/simple'\n\
                    :env:.find-links='/opt/wheels'\n\
                    global.cert='/etc/ssl/certs/ca-certificates.crt'\n";
        assert_eq!(
            parse_pip_config_list(list),
            vec![
                (
                    "index-url".into(),
                    "https://pypi.mirror.test/simple/".into()
                ),
                (
                    "extra-index-url".into(),
                    "https://x.mirror.test/simple".into()
                ),
                (
                    "extra-index-url".into(),
                    "https://y.mirror.test/simple".into()
                ),
            ]
        );
        let conf = "[global]\n\
                    index_url = https://pypi.mirror.test/simple\n\
                    extra-index-url =\n\
                    \x20   https://x.mirror.test/simple\n\
                    \x20   https://y.mirror.test/simple\n\
                    timeout = 60\n\
                    [install]\n\
                    find-links = https://wheels.mirror.test/\n";
        assert_eq!(
            parse_pip_conf(conf),
            vec![
                ("index-url".into(), "https://pypi.mirror.test/simple".into()),
                (
                    "extra-index-url".into(),
                    "https://x.mirror.test/simple".into()
                ),
                (
                    "extra-index-url".into(),
                    "https://y.mirror.test/simple".into()
                ),
                ("find-links".into(), "https://wheels.mirror.test/".into()),
            ]
        );
    }

    #[test]
    fn cargo_index_dirs() {
        assert_eq!(
            cargo_index_host("crates.mirror.test-00aa11bb22cc33dd"),
            Some("crates.mirror.test")
        );
        assert_eq!(
            cargo_index_host("my-host.test-0123456789abcdef"),
            Some("my-host.test")
        );
        assert_eq!(cargo_index_host("crates.mirror.test-xyz"), None);
        assert_eq!(cargo_index_host(".cache"), None);
    }

    fn fixture() -> (tempfile::TempDir, HostConfig) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let home = t.path().join("home");
        let cargo_home = home.join(".cargo");
        std::fs::create_dir_all(root.join("etc/apt/sources.list.d")).unwrap();
        std::fs::create_dir_all(home.join(".config/pip")).unwrap();
        std::fs::create_dir_all(&cargo_home).unwrap();
        let cfg = HostConfig {
            root,
            home: Some(home),
            cargo_home: Some(cargo_home),
            pip_env: Vec::new(),
            run_tools: false,
        };
        (t, cfg)
    }

    #[test]
    fn discovers_a_fixture_host() {
        let (_t, mut cfg) = fixture();
        let w = |p: PathBuf, s: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            cfg.root.join("etc/apt/sources.list"),
            "deb http://deb.mirror.test/debian bookworm main\n",
        );
        w(
            cfg.root.join("etc/apt/sources.list.d/extra.sources"),
            "Types: deb\nURIs: https://sec.mirror.test/debian-security\nSuites: x\n",
        );
        w(
            cfg.root.join("etc/apt/sources.list.d/off.list.disabled"),
            "deb http://disabled.mirror.test/ x y\n",
        );
        w(
            cfg.root.join("etc/pip.conf"),
            "[global]\nindex-url = https://pypi.mirror.test/simple/\n",
        );
        cfg.pip_env.push((
            "PIP_EXTRA_INDEX_URL".into(),
            "https://extra.mirror.test/simple".into(),
        ));
        let cargo_home = cfg.cargo_home.clone().unwrap();
        w(
            cargo_home.join("registry/index/crates.mirror.test-0123456789abcdef/config.json"),
            r#"{"dl": "https://dl.mirror.test/crates", "api": "https://crates.mirror.test"}"#,
        );
        let d = discover_with(&cfg);
        let hosts = |m: &str| d.of(m).map(|r| r.host.clone()).collect::<Vec<_>>();
        assert_eq!(hosts("apt"), vec!["deb.mirror.test", "sec.mirror.test"]);
        assert_eq!(hosts("pip"), vec!["pypi.mirror.test", "extra.mirror.test"]);
        assert_eq!(hosts("cargo"), vec!["crates.mirror.test", "dl.mirror.test"]);
        assert_eq!(
            hosts("npm"),
            Vec::<String>::new(),
            "tools not run on fixtures"
        );
        let apt0 = d.of("apt").next().unwrap();
        assert_eq!(apt0.url, "http://deb.mirror.test/debian");
        assert_eq!(apt0.port, 80);
        assert!(
            apt0.found_in.ends_with("etc/apt/sources.list"),
            "{}",
            apt0.found_in
        );
        assert_eq!(d.of("pip").nth(1).unwrap().found_in, "$PIP_EXTRA_INDEX_URL");

        // Source replacement in the cargo config wins over the cache.
        w(
            cargo_home.join("config.toml"),
            "[source.crates-io]\nreplace-with = \"m\"\n[source.m]\nregistry = \"sparse+https://repl.mirror.test/index/\"\n[registries.own]\nindex = \"https://own.mirror.test/git/index\"\n",
        );
        let d = discover_with(&cfg);
        let hosts: Vec<_> = d.of("cargo").map(|r| r.host.clone()).collect();
        assert_eq!(hosts, vec!["repl.mirror.test", "own.mirror.test"]);
    }

    #[test]
    fn empty_host_skips_without_errors() {
        let (_t, cfg) = fixture();
        let d = discover_with(&cfg);
        assert!(d.registries.is_empty(), "{:?}", d.registries);
        assert!(
            d.skipped.iter().any(|s| s.starts_with("apt:")),
            "{:?}",
            d.skipped
        );
        assert!(
            d.skipped.iter().any(|s| s.starts_with("pip:")),
            "{:?}",
            d.skipped
        );
        assert!(
            d.skipped.iter().any(|s| s.starts_with("cargo:")),
            "{:?}",
            d.skipped
        );
    }
}
