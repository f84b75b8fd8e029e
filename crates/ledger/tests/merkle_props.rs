//! Exhaustive checks for small trees: MemTree roots and proofs against the Frontier and
//! against a direct transcription of the RFC 9162 recursive definitions; every proof verifies,
//! and any single flipped bit, wrong index, wrong size or wrong length makes it fail.

use sandtrail_ledger::merkle::{verify_consistency, verify_inclusion, ProofError};
use sandtrail_ledger::{leaf_hash, node_hash, Frontier, Hash, MemTree, EMPTY_ROOT};

const MAX: u64 = 70;

/// Largest power of two strictly below n (n >= 2).
fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 9162 §2.1.1 MTH.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

struct Fixture {
    leaves: Vec<Hash>,
    tree: MemTree,
    /// roots[n] = Frontier root after n appends.
    roots: Vec<Hash>,
}

fn fixture() -> Fixture {
    let leaves: Vec<Hash> = (0..MAX).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let tree = MemTree::from_leaves(leaves.iter().copied());
    let mut f = Frontier::new();
    let mut roots = vec![f.root()];
    for l in &leaves {
        f.append(*l);
        roots.push(f.root());
    }
    Fixture {
        leaves,
        tree,
        roots,
    }
}

/// For small proofs flip every bit; otherwise one bit per hash, varying the position.
fn bits_to_flip(n: u64, salt: usize, j: usize) -> Vec<usize> {
    if n <= 8 {
        (0..256).collect()
    } else {
        vec![(salt * 31 + j * 97 + 5) % 256]
    }
}

#[test]
fn roots_agree() {
    let fx = fixture();
    for n in 0..=MAX {
        let want = mth(&fx.leaves[..n as usize]);
        assert_eq!(fx.roots[n as usize], want, "Frontier root, size {n}");
        assert_eq!(fx.tree.root_at(n).unwrap(), want, "MemTree root, size {n}");
    }
    assert_eq!(
        fx.tree.root_at(MAX + 1),
        Err(ProofError::SizeOutOfRange {
            size: MAX + 1,
            available: MAX
        })
    );
}

#[test]
fn inclusion_all_sizes_all_indices() {
    let fx = fixture();
    let mut checked = 0;
    for n in 1..=MAX {
        let root = fx.roots[n as usize];
        for i in 0..n {
            let leaf = fx.leaves[i as usize];
            let proof = fx.tree.inclusion_proof(i, n).unwrap();
            assert_eq!(
                proof,
                path(i as usize, &fx.leaves[..n as usize]),
                "PATH({i}, {n})"
            );
            verify_inclusion(i, n, &leaf, &proof, &root)
                .unwrap_or_else(|e| panic!("index {i} size {n}: {e}"));
            checked += 1;

            for (j, h) in proof.iter().enumerate() {
                for bit in bits_to_flip(n, i as usize, j) {
                    let mut bad = proof.clone();
                    bad[j] = flip(h, bit);
                    assert!(
                        verify_inclusion(i, n, &leaf, &bad, &root).is_err(),
                        "flipped bit {bit} of proof[{j}] accepted (index {i}, size {n})"
                    );
                }
            }
            assert!(verify_inclusion(i, n, &flip(&leaf, 0), &proof, &root).is_err());
            assert!(verify_inclusion(i, n, &leaf, &proof, &flip(&root, 255)).is_err());
            if i + 1 < n {
                assert!(verify_inclusion(i + 1, n, &leaf, &proof, &root).is_err());
            }
            // (A different claimed size is not always detectable from the root alone: the root
            // does not commit to the size, e.g. leaf 0 of sizes 3 and 4 hash identically.)
            assert!(verify_inclusion(n, n, &leaf, &proof, &root).is_err());
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(i, n, &leaf, &longer, &root).is_err());
            if !proof.is_empty() {
                assert!(verify_inclusion(i, n, &leaf, &proof[1..], &root).is_err());
                assert!(verify_inclusion(i, n, &leaf, &proof[..proof.len() - 1], &root).is_err());
            }
        }
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
}

#[test]
fn consistency_all_pairs() {
    let fx = fixture();
    let mut checked = 0;
    for n in 0..=MAX {
        let root2 = fx.roots[n as usize];
        // From the empty tree there is nothing to prove: rejected, both ways.
        if n > 0 {
            assert_eq!(
                fx.tree.consistency_proof(0, n),
                Err(ProofError::ConsistencyFromEmpty { size2: n })
            );
            assert!(verify_consistency(0, n, &EMPTY_ROOT, &root2, &[]).is_err());
        } else {
            verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
            assert!(verify_consistency(0, 0, &fx.leaves[0], &fx.leaves[0], &[]).is_err());
        }
        for m in 1..=n {
            let root1 = fx.roots[m as usize];
            let proof = fx.tree.consistency_proof(m, n).unwrap();
            let want = if m == n {
                vec![]
            } else {
                subproof(m as usize, &fx.leaves[..n as usize], true)
            };
            assert_eq!(proof, want, "PROOF({m}, D[{n}])");
            verify_consistency(m, n, &root1, &root2, &proof)
                .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
            checked += 1;

            for (j, h) in proof.iter().enumerate() {
                for bit in bits_to_flip(n, m as usize, j) {
                    let mut bad = proof.clone();
                    bad[j] = flip(h, bit);
                    assert!(
                        verify_consistency(m, n, &root1, &root2, &bad).is_err(),
                        "flipped bit {bit} of proof[{j}] accepted ({m} -> {n})"
                    );
                }
            }
            assert!(verify_consistency(m, n, &flip(&root1, 7), &root2, &proof).is_err());
            assert!(verify_consistency(m, n, &root1, &flip(&root2, 7), &proof).is_err());
            assert!(verify_consistency(n, m, &root2, &root1, &proof).is_err() || m == n);
            if m < n {
                assert!(verify_consistency(m, n, &root2, &root1, &proof).is_err());
                assert!(verify_consistency(m, n, &root1, &root2, &proof[1..]).is_err());
                let mut longer = proof.clone();
                longer.push(root1);
                assert!(verify_consistency(m, n, &root1, &root2, &longer).is_err());
                if m + 1 < n {
                    assert!(verify_consistency(m + 1, n, &root1, &root2, &proof).is_err());
                }
            } else {
                assert!(verify_consistency(m, n, &root1, &root2, &[root1]).is_err());
            }
        }
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
}

/// Proofs from a MemTree that grew past the requested size equal proofs from a tree of exactly
/// that size, and a frontier decoded mid-way keeps producing the right roots.
#[test]
fn history_is_stable() {
    let fx = fixture();
    for n in [1u64, 2, 3, 7, 8, 9, 33, 64, 65, 70] {
        let small = MemTree::from_leaves(fx.leaves[..n as usize].iter().copied());
        for i in 0..n {
            assert_eq!(
                small.inclusion_proof(i, n).unwrap(),
                fx.tree.inclusion_proof(i, n).unwrap()
            );
        }
        let mut f = Frontier::new();
        for l in &fx.leaves[..n as usize] {
            f.append(*l);
        }
        let mut g = Frontier::from_bytes(&f.to_bytes()).unwrap();
        for (k, l) in fx.leaves[n as usize..].iter().enumerate() {
            g.append(*l);
            assert_eq!(g.root(), fx.roots[n as usize + k + 1]);
        }
    }
}
