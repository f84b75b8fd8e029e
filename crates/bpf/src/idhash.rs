//! A fast hasher for tables keyed by small integers the kernel hands out (tids, pids, fds,
//! cgroup ids): the probe's joins of entry and exit records, the collector's process table.
//! Seeded per table from the standard library's random keys.
//!
//! The standard `HashMap` hashes with SipHash, whose cost showed in the reader's profile (a
//! few hash lookups per kernel record). Integer keys need less: one multiply, folded. The
//! keys are chosen by the kernel (pids, cgroup ids) or bounded by the process's fd limit (fd
//! numbers an agent can pick with `dup2`), and the random seed keeps an agent from predicting
//! which of them collide. Maps keyed by strings an agent writes (paths) keep SipHash.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` with integer keys hashed by a seeded folded multiply (see the module docs).
pub type IdMap<K, V> = HashMap<K, V, IdBuild>;

/// Makes [`IdHasher`]s with one random seed.
#[derive(Clone, Debug)]
pub struct IdBuild(u64);

impl Default for IdBuild {
    fn default() -> Self {
        IdBuild(RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl BuildHasher for IdBuild {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// Folded multiply (the high and low halves of a 128-bit product XORed) of the key with a
/// constant, after mixing in the seed.
#[derive(Clone, Debug)]
pub struct IdHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdHasher {
    fn mix(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * u128::from(K);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; correct for any key all the same.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_i32(&mut self, n: i32) {
        self.mix(n as u32 as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_keys_spread_over_buckets_and_seeds_differ() {
        // Fixed seeds (the defaults are random: a distribution check on them could fail once
        // in a few hundred runs by chance). For each, the low 7 bits (hashbrown's bucket index
        // of a 128-slot table) and the top 7 bits (its control byte) of 10,000 consecutive pids
        // fill all 128 values about evenly (78 each on average).
        for seed in [1u64, 0x5eed, 0xdead_beef_0bad_f00d, u64::MAX] {
            let b = IdBuild(seed | 1);
            let mut low = [0u32; 128];
            let mut top = [0u32; 128];
            for pid in 1000u32..11000 {
                let h = b.hash_one(pid);
                low[(h & 127) as usize] += 1;
                top[(h >> 57) as usize] += 1;
            }
            assert!(
                low.iter().all(|&n| (40..=120).contains(&n)),
                "{seed:#x}: {low:?}"
            );
            assert!(
                top.iter().all(|&n| (40..=120).contains(&n)),
                "{seed:#x}: {top:?}"
            );
        }
        // Two tables get different seeds (equal with probability 2^-63).
        assert_ne!(
            IdBuild::default().hash_one(7u32),
            IdBuild::default().hash_one(7u32)
        );
        let mut m: IdMap<i32, &str> = IdMap::default();
        m.insert(-100, "cwd");
        m.insert(3, "fd");
        assert_eq!((m[&-100], m[&3], m.get(&4)), ("cwd", "fd", None));
    }
}
