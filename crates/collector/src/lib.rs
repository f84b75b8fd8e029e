//! The collector: raw records of the kernel programs ([`sandtrail_bpf::RawRecord`]) in, typed
//! `sandtrail.event/1` events out, each addressed to its session.
//!
//! It keeps the process table of every watched session: who forked whom (so each exec names
//! its parent and its ancestors up to the session's first process), which image each process
//! runs (its `exec_id`, stable across that image's events and unique across pid reuse), its
//! effective ids as `set*id` calls change them, and when it started (for the exit's duration).
//! Kernel times (`CLOCK_MONOTONIC`) become wall-clock times with an offset measured when the
//! collector is made.
//!
//! File records become `file.*` events with absolute paths: each process's cwd (tracked through
//! `chdir`/`fchdir`, inherited at fork) and the paths of the fds its opens returned resolve
//! relative and `*at` paths. Reads are logged one by one under sensitive paths
//! ([`FilePolicy`]) and summarized with a count elsewhere.
//!
//! Egress records (the kernel's connect/sendmsg decisions and socket counters, the DNS
//! forwarder's queries) become `net.connect`, `net.flow` and `dns.query` events in
//! [`NetCollector`], joined by socket cookie and local port.
//!
//! Nothing here touches the kernel: it is fed records, so all of it is unit-tested without root.

mod errno;
mod file;
mod net;
mod process;

pub use errno::errno_name;
pub use file::FilePolicy;
pub use net::NetCollector;
pub use process::{Adopted, Collector, Scope};
