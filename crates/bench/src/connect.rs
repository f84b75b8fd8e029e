//! Per-connection overhead of the kernel egress programs: TCP connects from a process in a
//! cgroup of its own, unaudited and with sandtrail's egress programs attached to that cgroup
//! (policy entries loaded, a reader thread consuming every record as a session does), rounds
//! interleaved.
//!
//! The destination is ours: 10.213.9.1/32 on a veth pair `stbench0`/`stbench1` that this
//! benchmark creates and removes (this kernel has no dummy interfaces), a listener of the benchmark on it (outside the cgroup) accepting and
//! closing. The address is allowed by a CIDR entry, so each connect goes through the deny and
//! allow lookups as a real allowed connection does (loopback would take the programs' shortcut).
//! Each connection sends one byte (the first-payload capture runs) and is closed (the closed-flow
//! record is sent).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandtrail_bpf::net::{NetMode, NetOptions, NetProbe, Prefix};

use crate::overhead::BenchCgroup;
use crate::util::print_header;

const IF_NAME: &str = "stbench0";
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 9, 1);

/// The veth pair (`stbench0`/`stbench1`) holding the benchmark's address; removed on drop.
struct Dummy;

fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

impl Dummy {
    fn create() -> Result<Dummy> {
        let _ = ip(&["link", "del", IF_NAME]);
        ip(&[
            "link", "add", IF_NAME, "type", "veth", "peer", "name", "stbench1",
        ])?;
        let d = Dummy;
        ip(&["addr", "add", &format!("{ADDR}/32"), "dev", IF_NAME])?;
        ip(&["link", "set", IF_NAME, "up"])?;
        Ok(d)
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", IF_NAME]);
    }
}

/// Connect latencies of one round, ns, sorted.
fn client_round(cgroup: &Path, dst: SocketAddr, count: u32) -> Result<Vec<u64>> {
    let exe = std::env::current_exe()?;
    let o = Command::new(exe)
        .args([
            "connect-client",
            "--cgroup",
            &cgroup.display().to_string(),
            "--addr",
            &dst.to_string(),
            "--count",
            &count.to_string(),
        ])
        .output()?;
    if !o.status.success() {
        bail!("client: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let mut v: Vec<u64> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|x| x.parse().context("client output"))
        .collect::<Result<_>>()?;
    v.sort_unstable();
    Ok(v)
}

/// The client: moves itself into `cgroup`, connects `count` times, prints each connect's ns.
pub fn client(cgroup: &Path, dst: SocketAddr, count: u32) -> Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .context("moving into the benchmark cgroup")?;
    let mut out = String::with_capacity(count as usize * 8);
    for _ in 0..count {
        let t = Instant::now();
        let mut s = TcpStream::connect(dst)?;
        let took = t.elapsed();
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        // The server closes after reading: wait for it, so the socket's whole life is counted.
        let _ = s.read(&mut b);
        out.push_str(&took.as_nanos().to_string());
        out.push(' ');
    }
    println!("{out}");
    Ok(())
}

/// The programs, with a policy of a few entries, attached to `cgroup`; a thread reads every
/// record, flow and payload until dropped.
struct Audited {
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<Result<(u64, u64)>>>,
}

impl Audited {
    fn start(cgroup: &Path) -> Result<Audited> {
        let mut probe = NetProbe::load(NetOptions::default())?;
        probe.set_mode(NetMode::Allowlist)?;
        for (i, m) in [
            "169.254.169.254/32",
            "169.254.170.2/32",
            "100.100.100.200/32",
        ]
        .iter()
        .enumerate()
        {
            probe.deny(m.parse()?, i as u32)?;
        }
        probe.allow(Prefix::new(ADDR.into(), 30)?, None, 10)?;
        probe.attach(cgroup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let reader = std::thread::spawn(move || {
            let (mut records, mut flows) = (0u64, 0u64);
            while !s.load(Ordering::Relaxed) {
                while probe.next_record(Duration::from_millis(5))?.is_some() {
                    records += 1;
                }
                while probe.next_flow(Duration::ZERO)?.is_some() {
                    flows += 1;
                }
                while probe.next_payload(Duration::ZERO)?.is_some() {}
            }
            Ok((records, flows))
        });
        Ok(Audited {
            stop,
            reader: Some(reader),
        })
    }

    fn stop(mut self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.reader
            .take()
            .expect("running")
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?
    }
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn pct(v: &[u64], p: f64) -> u64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the benchmark and prints its figures.
pub fn connect(rounds: u32, count: u32) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the connect benchmark needs root (a dummy interface, a cgroup, BPF)");
    }
    print_header(
        "connect latency: unaudited vs sandtrail's egress programs",
        &[
            ("rounds", rounds.to_string()),
            ("connects per round", count.to_string()),
            (
                "destination",
                format!("{ADDR} on {IF_NAME} (a veth of ours)"),
            ),
        ],
    );
    let _dummy = Dummy::create()?;
    let listener = TcpListener::bind((ADDR, 0))?;
    let dst = listener.local_addr()?;
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut s = s;
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    });
    let cg = BenchCgroup::new()?;
    // Warm up (page cache, listener).
    client_round(&cg.0, dst, count / 10 + 1)?;
    let mut plain_med = Vec::new();
    let mut audited_med = Vec::new();
    let mut plain_all = Vec::new();
    let mut audited_all = Vec::new();
    println!("round  unaudited p50 / p99        sandtrail p50 / p99        records/flows");
    for r in 1..=rounds {
        let p = client_round(&cg.0, dst, count)?;
        let a = Audited::start(&cg.0)?;
        let q = client_round(&cg.0, dst, count);
        // Flows close after the client exits; give the reader a moment.
        std::thread::sleep(Duration::from_millis(100));
        let (records, flows) = a.stop()?;
        let q = q?;
        println!(
            "{r:>5}  {:>10} / {:>10}    {:>10} / {:>10}    {records}/{flows}",
            us(pct(&p, 0.5)),
            us(pct(&p, 0.99)),
            us(pct(&q, 0.5)),
            us(pct(&q, 0.99)),
        );
        plain_med.push(pct(&p, 0.5));
        audited_med.push(pct(&q, 0.5));
        plain_all.extend(p);
        audited_all.extend(q);
    }
    plain_med.sort_unstable();
    audited_med.sort_unstable();
    plain_all.sort_unstable();
    audited_all.sort_unstable();
    let (pm, am) = (pct(&plain_med, 0.5), pct(&audited_med, 0.5));
    println!();
    println!(
        "median of round medians: unaudited {}, sandtrail {}: +{} per connect ({:+.1} %)",
        us(pm),
        us(am),
        us(am.saturating_sub(pm)),
        (am as f64 / pm as f64 - 1.0) * 100.0
    );
    println!(
        "all connects: p99 unaudited {}, sandtrail {}; p999 {} / {}",
        us(pct(&plain_all, 0.99)),
        us(pct(&audited_all, 0.99)),
        us(pct(&plain_all, 0.999)),
        us(pct(&audited_all, 0.999)),
    );
    Ok(())
}
