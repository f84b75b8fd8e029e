//! Loads the probe, watches the cgroup given as argument and prints records for a few seconds.
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cg = std::env::args()
        .nth(1)
        .unwrap_or("/sys/fs/cgroup/unified".into());
    let mut probe = sandtrail_bpf::Probe::load(Default::default())?;
    eprintln!("loaded (mounted tracefs: {})", probe.mounted_tracefs());
    probe.watch_cgroup(cg.as_str())?;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Some(r) = probe.next_record(Duration::from_millis(200))? {
            println!("{r:?}");
        }
    }
    eprintln!("losses: {:?}", probe.losses()?);
    Ok(())
}
