//! Reading records back from segments: whole segments in seq order (reindexing), or the
//! chosen events of one session (queries).

use std::collections::BTreeMap;

use sandtrail_event::{decode_leaf, Event};

use crate::index::Index;
use crate::layout::Layout;
use crate::segment::frame::leaf_seq;
use crate::segment::raw::RawSegment;
use crate::segment::sealed::{BlockReader, SealedSegment, SegmentLeaves};
use crate::segment::{self, SegmentFiles};
use crate::StoreError;

/// The records of one segment, held in memory, iterated in seq order without copies.
pub enum SegmentData {
    /// A raw segment and (seq, start, end) of each leaf.
    Raw(RawSegment, Vec<(u64, usize, usize)>),
    /// A sealed segment's decompressed blocks.
    Sealed(SegmentLeaves),
}

impl SegmentData {
    /// (seq, leaf) in seq order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (u64, &[u8])> + '_> {
        match self {
            SegmentData::Raw(seg, idx) => {
                Box::new(idx.iter().map(|&(seq, a, b)| (seq, &seg.bytes[a..b])))
            }
            SegmentData::Sealed(leaves) => Box::new(leaves.iter()),
        }
    }
}

/// All leaves of one segment, ordered by seq; raw records are hash-checked.
pub fn segment_leaves(files: &SegmentFiles) -> Result<SegmentData, StoreError> {
    if let Some(raw) = &files.raw {
        match RawSegment::read(raw) {
            Ok(seg) => {
                let mut idx = Vec::new();
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
                    let start = at + crate::segment::frame::FRAME_HEADER;
                    idx.push((seq, start, start + frame.leaf.len()));
                }
                return Ok(SegmentData::Raw(seg, idx));
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
    Ok(SegmentData::Sealed(
        seg.leaves()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    ))
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
    let mut blocks = BlockReader::new().map_err(StoreError::io("starting zstd"))?;
    for (first, wanted) in per_segment {
        let files = &segments[&first];
        let mut leaves = Vec::with_capacity(wanted.len());
        match (&files.raw, &files.sealed) {
            (Some(_), _) => pick(segment_leaves(files)?.iter(), &wanted, &mut leaves)?,
            (None, Some(path)) => {
                // Only this session's blocks are read; the footer is not needed.
                let file = std::fs::File::open(path)
                    .map_err(StoreError::io(format!("opening {}", path.display())))?;
                let lo = wanted[0];
                let hi = *wanted.last().expect("non-empty");
                for b in index.blocks(sid, lo, hi)? {
                    if b.segment != first {
                        continue;
                    }
                    let block = blocks
                        .read(&file, path, b.offset, b.len)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    pick(block.leaves(), &wanted, &mut leaves)?;
                }
            }
            (None, None) => {}
        }
        out.extend(leaves);
    }
    out.sort_by_key(|e| e.seq);
    Ok(out)
}

/// Decode the leaves whose seq is in `wanted` (both ascending) into `out`.
fn pick<'a>(
    leaves: impl Iterator<Item = (u64, &'a [u8])>,
    wanted: &[u64],
    out: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let mut w = wanted.iter().peekable();
    for (seq, leaf) in leaves {
        while w.peek().is_some_and(|&&x| x < seq) {
            w.next();
        }
        if w.peek() == Some(&&seq) {
            out.push(decode_leaf(leaf)?);
            w.next();
        }
    }
    Ok(())
}

/// Visit every event of the store in seq order, starting at `from_seq`.
pub fn for_each_event(
    layout: &Layout,
    from_seq: u64,
    mut f: impl FnMut(Event) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let segments = segment::list(layout).map_err(StoreError::io("listing segments"))?;
    let starts: Vec<u64> = segments.keys().copied().collect();
    for (i, files) in segments.values().enumerate() {
        // Skip segments that end before `from_seq` (the next one starts at or before it).
        if starts.get(i + 1).is_some_and(|&next| next <= from_seq) {
            continue;
        }
        for (seq, leaf) in segment_leaves(files)?.iter() {
            if seq >= from_seq {
                f(decode_leaf(leaf)?)?;
            }
        }
    }
    Ok(())
}
