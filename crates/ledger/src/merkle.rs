//! RFC 9162 (RFC 6962) Merkle tree hashing, compact frontier, in-memory tree and proofs.
//!
//! - leaf hash = SHA-256(0x00 ‖ data)
//! - node hash = SHA-256(0x01 ‖ left ‖ right)
//! - root of the empty tree = SHA-256("")
//!
//! The tree over `n` leaves splits at `k`, the largest power of two strictly below `n`:
//! `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))`.

use sha2::{Digest, Sha256};

use crate::Hash;

/// Root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Hashes one leaf: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Hashes an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Converts a byte slice into a [`crate::Hash`], rejecting any length other than 32.
pub fn hash_from_slice(b: &[u8]) -> Result<Hash, ProofError> {
    b.try_into()
        .map_err(|_| ProofError::BadHashLength { len: b.len() })
}

/// Everything that can go wrong building or checking a tree, a proof or a frontier.
#[derive(thiserror::Error, Debug, PartialEq, Eq, Clone)]
pub enum ProofError {
    /// A hash was not exactly 32 bytes long.
    #[error("hash must be 32 bytes, got {len}")]
    BadHashLength {
        /// Length of the rejected input.
        len: usize,
    },
    /// A leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A requested tree size is larger than the tree that is available.
    #[error("tree size {size} exceeds the {available} leaves available")]
    SizeOutOfRange {
        /// The requested size.
        size: u64,
        /// The number of leaves actually held.
        available: u64,
    },
    /// An inclusion proof has the wrong number of hashes for its index and tree size.
    #[error(
        "inclusion proof for leaf {index} in tree size {size} must have {expected} hashes, got {got}"
    )]
    InclusionProofLength {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
        /// Number of hashes the proof must have.
        expected: usize,
        /// Number of hashes the proof has.
        got: usize,
    },
    /// The root recomputed from an inclusion proof differs from the expected root.
    #[error(
        "inclusion proof for leaf {index} in tree size {size} yields root {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    InclusionRootMismatch {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
        /// Root recomputed from the leaf and the proof.
        computed: Hash,
        /// Root the caller expected.
        expected: Hash,
    },
    /// A consistency check was asked to go backwards.
    #[error("consistency: old size {size1} is larger than new size {size2}")]
    ConsistencySizesReversed {
        /// Old tree size.
        size1: u64,
        /// New tree size.
        size2: u64,
    },
    /// Consistency from the empty tree is not defined by RFC 9162 (`0 < m < n`).
    #[error(
        "consistency from the empty tree (size 0) to size {size2} is not a proof: check the old root equals EMPTY_ROOT instead"
    )]
    ConsistencyFromEmpty {
        /// New tree size.
        size2: u64,
    },
    /// Two trees of the same size must have the same root and an empty proof.
    #[error("consistency between equal sizes {size} needs an empty proof, got {got} hashes")]
    ConsistencyEqualSizesNonEmptyProof {
        /// The tree size.
        size: u64,
        /// Number of hashes supplied.
        got: usize,
    },
    /// Two trees of the same size have different roots.
    #[error(
        "trees of equal size {size} have different roots {} and {}",
        hex::encode(root1),
        hex::encode(root2)
    )]
    ConsistencyEqualSizesRootsDiffer {
        /// The tree size.
        size: u64,
        /// Root of the first tree.
        root1: Hash,
        /// Root of the second tree.
        root2: Hash,
    },
    /// The root given for an empty tree is not [`EMPTY_ROOT`].
    #[error(
        "root of the empty tree must be {}, got {}",
        hex::encode(EMPTY_ROOT),
        hex::encode(root)
    )]
    EmptyTreeRoot {
        /// The root that was given.
        root: Hash,
    },
    /// A consistency proof has the wrong number of hashes for its sizes.
    #[error(
        "consistency proof from size {size1} to size {size2} must have {expected} hashes, got {got}"
    )]
    ConsistencyProofLength {
        /// Old tree size.
        size1: u64,
        /// New tree size.
        size2: u64,
        /// Number of hashes the proof must have.
        expected: usize,
        /// Number of hashes the proof has.
        got: usize,
    },
    /// The old root recomputed from a consistency proof differs from the expected old root.
    #[error(
        "consistency proof from size {size1} to size {size2} yields old root {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    ConsistencyRoot1Mismatch {
        /// Old tree size.
        size1: u64,
        /// New tree size.
        size2: u64,
        /// Old root recomputed from the proof.
        computed: Hash,
        /// Old root the caller expected.
        expected: Hash,
    },
    /// The new root recomputed from a consistency proof differs from the expected new root.
    #[error(
        "consistency proof from size {size1} to size {size2} yields new root {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    ConsistencyRoot2Mismatch {
        /// Old tree size.
        size1: u64,
        /// New tree size.
        size2: u64,
        /// New root recomputed from the proof.
        computed: Hash,
        /// New root the caller expected.
        expected: Hash,
    },
    /// Persisted frontier bytes have the wrong length for the size they declare.
    #[error("frontier encoding: {got} bytes, but size {size} needs {expected}")]
    FrontierLength {
        /// Tree size read from the first 8 bytes (0 if fewer than 8 bytes were given).
        size: u64,
        /// Expected total length.
        expected: usize,
        /// Actual total length.
        got: usize,
    },
}

/// Largest power of two strictly below `n` (`n >= 2`).
#[inline]
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The compact range `[0, size)`: the roots of the perfect subtrees that make up the tree,
/// largest (leftmost) first. There is one per set bit of `size`, so at most 64.
///
/// This is what the single writer keeps in memory to compute the current root without storing
/// the tree. [`Frontier::append`] does O(1) amortised hashing (at most 64) and never rehashes
/// history; it does not allocate once the frontier has held as many subtrees as it needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Subtree roots, largest first; `hashes.len() == size.count_ones()`.
    hashes: Vec<Hash>,
}

impl Clone for Frontier {
    /// Clones keep the full 64-hash capacity, so they never allocate on append either.
    fn clone(&self) -> Self {
        let mut hashes = Vec::with_capacity(64);
        hashes.extend_from_slice(&self.hashes);
        Frontier {
            size: self.size,
            hashes,
        }
    }
}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    /// The frontier of the empty tree. Reserves room for all 64 possible subtree roots so that
    /// [`Frontier::append`] never allocates.
    pub fn new() -> Self {
        Frontier {
            size: 0,
            hashes: Vec::with_capacity(64),
        }
    }

    /// Appends one leaf hash (already hashed with [`leaf_hash`]).
    ///
    /// # Panics
    /// If the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a subtree of equal height to merge with.
        while s & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("frontier holds one hash per set bit of size");
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.hashes.push(h);
        self.size = self.size.checked_add(1).expect("tree size overflow");
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The Merkle tree hash of all leaves so far; [`EMPTY_ROOT`] for the empty tree.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Persistable encoding: tree size as u64 little-endian, then the subtree roots largest
    /// first (32 bytes each, `size.count_ones()` of them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.hashes.len());
        out.extend_from_slice(&self.size.to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// Decodes [`Frontier::to_bytes`] output, checking the length matches the declared size.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ProofError> {
        let Some((size_bytes, rest)) = b.split_first_chunk::<8>() else {
            return Err(ProofError::FrontierLength {
                size: 0,
                expected: 8,
                got: b.len(),
            });
        };
        let size = u64::from_le_bytes(*size_bytes);
        let n = size.count_ones() as usize;
        if rest.len() != 32 * n {
            return Err(ProofError::FrontierLength {
                size,
                expected: 8 + 32 * n,
                got: b.len(),
            });
        }
        let mut hashes = Vec::with_capacity(64);
        hashes.extend(
            rest.chunks_exact(32)
                .map(|c| <Hash>::try_from(c).expect("chunks are 32 bytes")),
        );
        Ok(Frontier { size, hashes })
    }
}

/// An append-only in-memory tree that keeps every perfect-subtree hash, level by level:
/// `levels[k][i]` is the root of leaves `[i·2^k, (i+1)·2^k)`. About 2n hashes for n leaves.
///
/// Any historical root or proof can be computed from it with O(log² n) hashing and no leaf
/// rehashing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemTree {
    levels: Vec<Vec<Hash>>,
}

impl MemTree {
    /// An empty tree.
    pub fn new() -> Self {
        MemTree { levels: Vec::new() }
    }

    /// Builds a tree from leaf hashes (already hashed with [`leaf_hash`]).
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = MemTree::new();
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        loop {
            let len = self.levels[level].len();
            if len % 2 == 1 {
                break;
            }
            let h = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(h);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at index `i`.
    ///
    /// # Panics
    /// If `i >= self.size()`.
    pub fn leaf(&self, i: u64) -> Hash {
        assert!(
            i < self.size(),
            "leaf index {i} out of range for tree size {}",
            self.size()
        );
        self.levels[0][i as usize]
    }

    /// The root of the whole tree ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Hash {
        self.root_at(self.size())
            .expect("the current size is always in range")
    }

    /// The root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(EMPTY_ROOT);
        }
        Ok(self.range_hash(0, size))
    }

    /// Inclusion proof (RFC 9162 §2.1.3) of leaf `index` in the tree of the first `size` leaves,
    /// deepest sibling first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::with_capacity(64);
        let (mut start, mut end) = (0u64, size);
        while end - start > 1 {
            let k = split_point(end - start);
            if index < start + k {
                proof.push(self.range_hash(start + k, end));
                end = start + k;
            } else {
                proof.push(self.range_hash(start, start + k));
                start += k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// Consistency proof (RFC 9162 §2.1.4) between the trees of the first `size1` and `size2`
    /// leaves. Empty when `size1 == size2`; an error when `size1 == 0` (undefined, and rejected by
    /// [`verify_consistency`]) or `size1 > size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(ProofError::ConsistencySizesReversed { size1, size2 });
        }
        if size1 == 0 {
            return Err(ProofError::ConsistencyFromEmpty { size2 });
        }
        let mut proof = Vec::with_capacity(64);
        if size1 == size2 {
            return Ok(proof);
        }
        // SUBPROOF(m, D[start:end], b), unrolled; siblings are collected top-down.
        let (mut start, mut end, mut m, mut whole) = (0u64, size2, size1, true);
        loop {
            let len = end - start;
            if m == len {
                if !whole {
                    proof.push(self.range_hash(start, end));
                }
                break;
            }
            let k = split_point(len);
            if m <= k {
                proof.push(self.range_hash(start + k, end));
                end = start + k;
            } else {
                proof.push(self.range_hash(start, start + k));
                start += k;
                m -= k;
                whole = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: self.size(),
            });
        }
        Ok(())
    }

    /// Hash of a perfect subtree of `2^level` leaves starting at `start` (aligned).
    #[inline]
    fn perfect(&self, start: u64, level: u32) -> Hash {
        self.levels[level as usize][(start >> level) as usize]
    }

    /// MTH of leaves `[start, end)`, where `start` is a multiple of the smallest power of two
    /// not below `end - start` (true of every subtree in the RFC's recursive definitions).
    fn range_hash(&self, mut start: u64, end: u64) -> Hash {
        debug_assert!(start < end && end <= self.size());
        let mut lefts = [[0u8; 32]; 64];
        let mut n_lefts = 0;
        let mut acc = loop {
            let n = end - start;
            if n.is_power_of_two() {
                break self.perfect(start, n.trailing_zeros());
            }
            let k = split_point(n);
            lefts[n_lefts] = self.perfect(start, k.trailing_zeros());
            n_lefts += 1;
            start += k;
        };
        for left in lefts[..n_lefts].iter().rev() {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// `(inner, border)`: how many proof hashes of leaf `index` in a tree of `size` leaves lie
/// below the point where the leaf's path leaves the right border, and how many on it.
fn decomp_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves with root
/// `root`, given an RFC 9162 inclusion proof (deepest sibling first).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decomp_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::InclusionProofLength {
            index,
            size,
            expected: inner + border,
            got: proof.len(),
        });
    }
    let computed = chain_border_right(chain_inner(*leaf, &proof[..inner], index), &proof[inner..]);
    if computed != *root {
        return Err(ProofError::InclusionRootMismatch {
            index,
            size,
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1`, given an RFC 9162 consistency proof.
///
/// Rules: `size1 > size2` fails; equal sizes need an empty proof and equal roots (and
/// [`EMPTY_ROOT`] for size 0); `size1 == 0 < size2` fails ([`ProofError::ConsistencyFromEmpty`]:
/// every tree extends the empty one, so there is nothing to prove; compare the old root with
/// [`EMPTY_ROOT`] instead).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::ConsistencySizesReversed { size1, size2 });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::ConsistencyEqualSizesNonEmptyProof {
                size: size1,
                got: proof.len(),
            });
        }
        if root1 != root2 {
            return Err(ProofError::ConsistencyEqualSizesRootsDiffer {
                size: size1,
                root1: *root1,
                root2: *root2,
            });
        }
        if size1 == 0 && *root1 != EMPTY_ROOT {
            return Err(ProofError::EmptyTreeRoot { root: *root1 });
        }
        return Ok(());
    }
    if size1 == 0 {
        return Err(ProofError::ConsistencyFromEmpty { size2 });
    }

    // The old tree's path: leaf `size1 - 1`, ignoring the levels where the old tree is a
    // perfect left subtree (its root is then the seed or the first proof hash).
    let (inner, border) = decomp_inclusion(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift;
    let (seed, rest) = if size1 == 1u64 << shift {
        (*root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => {
                return Err(ProofError::ConsistencyProofLength {
                    size1,
                    size2,
                    expected: 1 + inner + border,
                    got: 0,
                })
            }
        }
    };
    if rest.len() != inner + border {
        let start = proof.len() - rest.len();
        return Err(ProofError::ConsistencyProofLength {
            size1,
            size2,
            expected: start + inner + border,
            got: proof.len(),
        });
    }
    let mask = (size1 - 1) >> shift;
    let (inner_p, border_p) = rest.split_at(inner);

    let computed1 = chain_border_right(chain_inner_right(seed, inner_p, mask), border_p);
    if computed1 != *root1 {
        return Err(ProofError::ConsistencyRoot1Mismatch {
            size1,
            size2,
            computed: computed1,
            expected: *root1,
        });
    }
    let computed2 = chain_border_right(chain_inner(seed, inner_p, mask), border_p);
    if computed2 != *root2 {
        return Err(ProofError::ConsistencyRoot2Mismatch {
            size1,
            size2,
            computed: computed2,
            expected: *root2,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let h: Hash = Sha256::digest(b"").into();
        assert_eq!(h, EMPTY_ROOT);
        assert_eq!(Frontier::new().root(), EMPTY_ROOT);
        assert_eq!(MemTree::new().root(), EMPTY_ROOT);
    }

    #[test]
    fn hash_from_slice_checks_length() {
        assert_eq!(
            hash_from_slice(&[0; 31]),
            Err(ProofError::BadHashLength { len: 31 })
        );
        assert_eq!(
            hash_from_slice(&[0; 33]),
            Err(ProofError::BadHashLength { len: 33 })
        );
        assert_eq!(hash_from_slice(&[7; 32]), Ok([7; 32]));
    }

    #[test]
    fn frontier_roundtrip_and_bad_lengths() {
        let mut f = Frontier::new();
        for i in 0u32..300 {
            f.append(leaf_hash(&i.to_le_bytes()));
            let g = Frontier::from_bytes(&f.to_bytes()).unwrap();
            assert_eq!(g, f);
            assert_eq!(g.root(), f.root());
            assert_eq!(f.hashes().len(), f.size().count_ones() as usize);
        }
        let b = f.to_bytes();
        assert!(matches!(
            Frontier::from_bytes(&b[..b.len() - 1]),
            Err(ProofError::FrontierLength { size: 300, .. })
        ));
        assert!(Frontier::from_bytes(&b[..7]).is_err());
        let mut longer = b.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(Frontier::from_bytes(&longer).is_err());
        // A decoded frontier keeps working.
        let mut g = Frontier::from_bytes(&b).unwrap();
        g.append(leaf_hash(b"x"));
        f.append(leaf_hash(b"x"));
        assert_eq!(g.root(), f.root());
    }

    #[test]
    fn frontier_append_does_not_reallocate() {
        let mut f = Frontier::new();
        let cap = f.hashes.capacity();
        let ptr = f.hashes.as_ptr();
        for i in 0u32..5000 {
            f.append(leaf_hash(&i.to_le_bytes()));
        }
        assert_eq!(f.hashes.capacity(), cap);
        assert_eq!(f.hashes.as_ptr(), ptr);
    }

    #[test]
    fn memtree_errors() {
        let t = MemTree::from_leaves((0u8..5).map(|i| leaf_hash(&[i])));
        assert_eq!(
            t.root_at(6),
            Err(ProofError::SizeOutOfRange {
                size: 6,
                available: 5
            })
        );
        assert_eq!(
            t.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            t.consistency_proof(0, 3),
            Err(ProofError::ConsistencyFromEmpty { size2: 3 })
        );
        assert_eq!(
            t.consistency_proof(4, 3),
            Err(ProofError::ConsistencySizesReversed { size1: 4, size2: 3 })
        );
        assert_eq!(t.consistency_proof(3, 3), Ok(vec![]));
    }

    #[test]
    fn error_messages_name_the_failed_check() {
        let t = MemTree::from_leaves((0u8..5).map(|i| leaf_hash(&[i])));
        let p = t.inclusion_proof(2, 5).unwrap();
        let e = verify_inclusion(2, 5, &t.leaf(2), &p[1..], &t.root()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "inclusion proof for leaf 2 in tree size 5 must have {} hashes, got {}",
                p.len(),
                p.len() - 1
            )
        );
        let e = verify_inclusion(2, 5, &t.leaf(3), &p, &t.root()).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("inclusion proof for leaf 2 in tree size 5 yields root"));
        let c = t.consistency_proof(3, 5).unwrap();
        let e = verify_consistency(3, 5, &t.root_at(3).unwrap(), &t.root_at(4).unwrap(), &c)
            .unwrap_err();
        assert!(matches!(
            e,
            ProofError::ConsistencyRoot2Mismatch {
                size1: 3,
                size2: 5,
                ..
            }
        ));
    }
}
