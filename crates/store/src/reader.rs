//! Reading records back from segments: whole segments in seq order (reindexing), or the
//! chosen events of one session (queries).

use std::collections::BTreeMap;

use sandtrail_event::{decode_leaf, Event};

use crate::index::Index;
use crate::layout::Layout;
use crate::segment::frame::leaf_seq;
use crate::segment::raw::RawSegment;
use crate::segment::sealed::{BlockMeta, SealedSegment};
use crate::segment::{self, SegmentFiles};
use crate::StoreError;

/// All leaves of one segment, ordered by seq; raw records are hash-checked.
pub fn segment_leaves(files: &SegmentFiles) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    if let Some(raw) = &files.raw {
        match RawSegment::read(raw) {
            Ok(seg) => {
                let mut out = Vec::new();
                for item in seg.frames(true) {
                    let (at, frame) = item.map_err(|(at, fault)| {
                        StoreError::Corrupt(format!("{} at byte {at}: {fault}", raw.display()))
                    })?;
                    let seq = leaf_seq(frame.leaf).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{} at byte {at}: record is not a canonical event",
                            raw.display()
                        ))
                    })?;
                    out.push((seq, frame.leaf.to_vec()));
                }
                return Ok(out);
            }
            // Sealed and removed between listing and reading: fall through to the sealed copy.
            Err(crate::segment::raw::RawError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && files.sealed.is_some() => {}
            Err(e) => return Err(StoreError::Corrupt(e.to_string())),
        }
    }
    let path = files
        .sealed
        .as_ref()
        .ok_or_else(|| StoreError::Corrupt("segment has neither raw nor sealed file".into()))?;
    let seg = SealedSegment::open(path).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(seg.footer.count as usize);
    for b in &seg.footer.blocks {
        out.extend(
            seg.read_block(b)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Fetch the events with the given seqs (sorted ascending) of the session with index id `sid`.
pub fn fetch_session(
    layout: &Layout,
    index: &Index,
    sid: i64,
    seqs: &[u64],
) -> Result<Vec<Event>, StoreError> {
    let segments = segment::list(layout).map_err(StoreError::io("listing segments"))?;
    let mut out = Vec::with_capacity(seqs.len());
    // Split the wanted seqs by the segment that holds them.
    let mut per_segment: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &seq in seqs {
        if let Some((&first, _)) = segments.range(..=seq).next_back() {
            per_segment.entry(first).or_default().push(seq);
        }
    }
    for (first, wanted) in per_segment {
        let files = &segments[&first];
        let leaves = match (&files.raw, &files.sealed) {
            (Some(_), _) => pick(segment_leaves(files)?, &wanted),
            (None, Some(path)) => {
                let seg =
                    SealedSegment::open(path).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let lo = wanted[0];
                let hi = *wanted.last().expect("non-empty");
                let mut got = Vec::new();
                for b in index.blocks(sid, lo, hi)? {
                    if b.segment != first {
                        continue;
                    }
                    let meta = BlockMeta {
                        session: None,
                        offset: b.offset,
                        len: b.len,
                        first_seq: b.first_seq,
                        last_seq: b.last_seq,
                        min_ts: 0,
                        max_ts: 0,
                        count: b.count,
                    };
                    got.extend(
                        seg.read_block(&meta)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    );
                }
                got.sort_by_key(|(s, _)| *s);
                pick(got, &wanted)
            }
            (None, None) => Vec::new(),
        };
        for leaf in leaves {
            out.push(decode_leaf(&leaf)?);
        }
    }
    Ok(out)
}

/// Keep the leaves whose seq is in `wanted` (both sorted).
fn pick(leaves: Vec<(u64, Vec<u8>)>, wanted: &[u64]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut w = wanted.iter().peekable();
    for (seq, leaf) in leaves {
        while w.peek().is_some_and(|&&x| x < seq) {
            w.next();
        }
        if w.peek() == Some(&&seq) {
            out.push(leaf);
            w.next();
        }
    }
    out
}

/// Visit every event of the store in seq order, starting at `from_seq`.
pub fn for_each_event(
    layout: &Layout,
    from_seq: u64,
    mut f: impl FnMut(Event) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let segments = segment::list(layout).map_err(StoreError::io("listing segments"))?;
    let starts: Vec<u64> = segments.keys().copied().collect();
    for (i, (&first, files)) in segments.iter().enumerate() {
        if starts.get(i + 1).is_some_and(|&next| next <= from_seq) {
            continue;
        }
        let _ = first;
        for (seq, leaf) in segment_leaves(files)? {
            if seq >= from_seq {
                f(decode_leaf(&leaf)?)?;
            }
        }
    }
    Ok(())
}
