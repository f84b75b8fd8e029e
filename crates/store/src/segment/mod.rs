//! Segment files: the append-only source of truth.
//!
//! Records are first appended to a raw segment ([`raw`]); a full raw segment is rewritten
//! as a compressed sealed segment ([`sealed`]). Both hold consecutive seqs starting at the
//! seq in their file name.

pub mod frame;
pub mod raw;
pub mod sealed;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::layout::Layout;

/// The files that exist for one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentFiles {
    /// Raw file, if present.
    pub raw: Option<PathBuf>,
    /// Sealed file, if present.
    pub sealed: Option<PathBuf>,
}

/// List segments by first seq.
pub fn list(layout: &Layout) -> io::Result<BTreeMap<u64, SegmentFiles>> {
    let mut out: BTreeMap<u64, SegmentFiles> = BTreeMap::new();
    let dir = layout.segments();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(first) = stem.parse::<u64>() else {
            continue;
        };
        match ext {
            "seg" => out.entry(first).or_default().raw = Some(path),
            "sealed" => out.entry(first).or_default().sealed = Some(path),
            _ => {}
        }
    }
    Ok(out)
}
