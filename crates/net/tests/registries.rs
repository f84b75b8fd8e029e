//! Registry discovery on this very machine. Prints counts and managers only, never a host
//! name: the registries are whatever this host is configured with.

use sandtrail_net::registries::{discover, Registry};

fn well_formed(r: &Registry) {
    assert!(!r.host.is_empty(), "{r:?}");
    assert!(r.port > 0, "{r:?}");
    assert!(
        r.url.starts_with("http://")
            || r.url.starts_with("https://")
            || r.url.starts_with("ftp://"),
        "{r:?}"
    );
    assert!(!r.found_in.is_empty(), "{r:?}");
}

#[test]
fn this_host_has_apt_sources() {
    let d = discover();
    for r in &d.registries {
        well_formed(r);
    }
    for m in ["apt", "pip", "npm", "cargo"] {
        eprintln!("{m}: {} registries", d.of(m).count());
    }
    for s in &d.skipped {
        eprintln!("skipped: {s}");
    }
    if !std::path::Path::new("/etc/apt").exists() {
        eprintln!("\n!!!!!!!! SKIPPED: no /etc/apt on this host: not Debian-like !!!!!!!!\n");
        return;
    }
    assert!(
        d.of("apt").count() >= 1,
        "no apt source found; skipped: {:?}",
        d.skipped
    );
    // Every apt registry came from a sources file.
    assert!(d.of("apt").all(|r| r.found_in.starts_with("/etc/apt/")));
    // When pip or npm is here, discovery asks it (configured or built-in index).
    let has = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("python3", &["-m", "pip", "--version"]) {
        assert!(
            d.of("pip").count() >= 1,
            "pip is installed but no index was found"
        );
    }
    if has("npm", &["--version"]) {
        assert!(
            d.of("npm").count() >= 1,
            "npm is installed but no registry was found"
        );
    }
}
