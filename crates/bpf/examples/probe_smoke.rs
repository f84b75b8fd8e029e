//! Loads the probe, watches the cgroup given as first argument and prints the records for the
//! number of seconds given as second argument (default 3); `-q` as third argument only counts.
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cg = std::env::args()
        .nth(1)
        .unwrap_or("/sys/fs/cgroup/unified".into());
    let mut probe = sandtrail_bpf::Probe::load(Default::default())?;
    eprintln!("loaded (mounted tracefs: {})", probe.mounted_tracefs());
    eprintln!("calls at exit: {:?}", probe.calls_at_exit());
    probe.watch_cgroup(cg.as_str())?;
    let secs: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let quiet = std::env::args().nth(3).as_deref() == Some("-q");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        if let Some(r) = probe.next_record(Duration::from_millis(200))? {
            n += 1;
            if !quiet {
                println!("{r:?}");
            }
        }
    }
    eprintln!("records: {n}");
    eprintln!("losses: {:?}", probe.losses()?);
    Ok(())
}
