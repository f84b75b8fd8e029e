//! Snapshots of a session's filesystem changes at cleanup: the overlay's upper directory as a
//! zstd-compressed tar, with its size and SHA-256 for the cleanup event.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Write `dir` as `out` (tar + zstd, 0600); returns (size, sha256 hex).
pub fn write(dir: &Path, out: &Path) -> Result<(u64, String)> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = out.with_extension("partial");
    {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let enc = zstd::Encoder::new(BufWriter::new(f), 3)?;
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", dir)
            .with_context(|| format!("archiving {}", dir.display()))?;
        let enc = tar.into_inner()?;
        let w = enc.finish()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    let mut f = File::open(out)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// Where a session's snapshot goes.
pub fn path(state_dir: &Path, session: &str) -> PathBuf {
    state_dir
        .join("snapshots")
        .join(format!("{session}.tar.zst"))
}
