//! Epoch key chain and on-disk key store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sandtrail_ledger::checkpoint::Checkpoint;
use sandtrail_ledger::keys::{split_notes, KeyChain, KeyError, KeyStore, Rotation};
use sandtrail_ledger::note::{Signer, Verifier};
use sandtrail_ledger::{leaf_hash, Frontier};

const ORIGIN: &str = "sandtrail.local/host-abc";

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file in the store, with its content.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn check_permissions(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "directory mode");
    for (name, _) in snapshot(dir) {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name} mode");
    }
}

#[test]
fn create_rotate_three_times_and_verify_from_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let mut store = KeyStore::open_or_create(&dir, ORIGIN).unwrap();
    assert_eq!(store.epoch(), 0);
    assert_eq!(store.origin(), ORIGIN);
    assert_eq!(store.signer().verifier(), *store.anchor());
    check_permissions(&dir);
    let names: Vec<String> = snapshot(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["anchor.vkey", "epoch", "lock", "rotations", "signer.skey"]
    );

    // All a verifier gets: the anchor's verifier key string.
    let anchor_vkey = fs::read_to_string(dir.join("anchor.vkey")).unwrap();
    let anchor = Verifier::from_vkey(anchor_vkey.trim_end()).unwrap();

    let mut frontier = Frontier::new();
    let mut checkpoints = Vec::new();
    let mut notes = Vec::new();
    for epoch in 1..=3u64 {
        for i in 0..5u64 {
            frontier.append(leaf_hash(&(epoch * 100 + i).to_le_bytes()));
        }
        // A checkpoint at the rotation size, signed by the outgoing key.
        let cp = Checkpoint::new(ORIGIN, frontier.size(), frontier.root(), epoch);
        checkpoints.push((cp.sign(store.signer()).unwrap(), epoch - 1));

        let old_skey = fs::read(dir.join("signer.skey")).unwrap();
        let old_seed = String::from_utf8(old_skey.clone())
            .unwrap()
            .trim_end()
            .splitn(5, '+')
            .nth(4)
            .unwrap()
            .to_string();
        let signed = store.rotate(frontier.size(), 1_000 * epoch).unwrap();
        notes.push(signed);
        assert_eq!(store.epoch(), epoch);

        // The old private key is gone from every file in the store.
        let new_skey = fs::read(dir.join("signer.skey")).unwrap();
        assert_ne!(new_skey, old_skey);
        for (name, content) in snapshot(&dir) {
            assert!(
                !contains(&content, old_seed.as_bytes()),
                "old private key still in {name}"
            );
            assert!(
                !contains(&content, &old_skey),
                "old signer.skey still in {name}"
            );
        }
        assert!(!dir.join("signer.skey.old").exists());
        assert!(!dir.join("signer.skey.next").exists());
        check_permissions(&dir);
        assert_eq!(
            fs::read_to_string(dir.join("epoch")).unwrap(),
            format!("{epoch}\n")
        );
    }
    let cp = Checkpoint::new(ORIGIN, frontier.size(), frontier.root(), 99);
    checkpoints.push((cp.sign(store.signer()).unwrap(), 3));

    // Chain from the anchor alone plus the rotation notes.
    let mut chain = KeyChain::new(anchor.clone());
    for n in &notes {
        chain.push_rotation(n).unwrap();
    }
    assert_eq!(chain.epoch(), 3);
    assert_eq!(chain.keys().len(), 4);
    assert_eq!(*chain.current(), store.signer().verifier());
    assert_eq!(chain.rotations()[2].0.tree_size, 15);
    assert_eq!(chain.rotations()[1].1, notes[1]);

    // The same chain from the rotations file on disk.
    let file = fs::read_to_string(dir.join("rotations")).unwrap();
    assert_eq!(split_notes(&file).unwrap(), notes);
    let from_file = KeyChain::from_rotations(anchor, &file).unwrap();
    assert_eq!(from_file.keys(), chain.keys());
    assert_eq!(store.chain().unwrap().keys(), chain.keys());

    // Every checkpoint verifies under the epoch key valid at its size.
    for (signed, epoch) in &checkpoints {
        let (_, e) = chain.verify_checkpoint(signed).unwrap();
        assert_eq!(e, *epoch);
    }
    // The current key cannot sign history covered by earlier keys.
    let back = Checkpoint::new(ORIGIN, 5, frontier.root(), 0)
        .sign(store.signer())
        .unwrap();
    assert!(matches!(
        chain.verify_checkpoint(&back),
        Err(KeyError::KeyNotValidForSize {
            size: 5,
            epoch: 3,
            from: 15,
            to: None
        })
    ));

    // Reopening finds the same state, read-only and for writing.
    let ro = KeyStore::open(&dir).unwrap();
    assert_eq!(ro.epoch(), 3);
    assert_eq!(ro.signer().verifier(), store.signer().verifier());
    drop(store);
    let rw = KeyStore::open_or_create(&dir, ORIGIN).unwrap();
    assert_eq!(rw.epoch(), 3);
    assert!(matches!(
        KeyStore::open_or_create(&dir, "sandtrail.local/other"),
        Err(KeyError::OriginMismatch { .. })
    ));
}

#[test]
fn rotation_not_signed_by_previous_key_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = KeyStore::open_or_create(tmp.path(), ORIGIN).unwrap();
    let first = store.rotate(10, 1).unwrap();
    let mut chain = KeyChain::new(store.anchor().clone());
    chain.push_rotation(&first).unwrap();

    // An attacker's key with the right name signs a well-formed epoch-2 record.
    let attacker = Signer::generate(ORIGIN).unwrap();
    let forged = Rotation {
        origin: ORIGIN.into(),
        epoch: 2,
        next: attacker.verifier(),
        tree_size: 20,
        time_ns: 2,
    }
    .sign(&attacker)
    .unwrap();
    match chain.push_rotation(&forged) {
        Err(KeyError::RotationNotSignedByPrevious {
            epoch: 2, previous, ..
        }) => assert_eq!(previous, chain.current().label()),
        other => panic!("expected RotationNotSignedByPrevious, got {other:?}"),
    }
    // The previous record replayed is signed by the anchor, not by the epoch-1 key.
    assert!(matches!(
        chain.push_rotation(&first),
        Err(KeyError::RotationNotSignedByPrevious { epoch: 2, .. })
    ));
    // A record whose signature was tampered with.
    let second = store.rotate(20, 2).unwrap();
    let tampered = second.replacen("size 20", "size 21", 1);
    assert!(matches!(
        chain.push_rotation(&tampered),
        Err(KeyError::RotationNotSignedByPrevious { epoch: 2, .. })
    ));
    assert_eq!(chain.epoch(), 1, "failed pushes leave the chain unchanged");
    chain.push_rotation(&second).unwrap();

    // A rotations file with a forged record fails to load.
    let file = format!("{first}\n{forged}\n");
    assert!(matches!(
        KeyChain::from_rotations(store.anchor().clone(), &file),
        Err(KeyError::RotationNotSignedByPrevious { epoch: 2, .. })
    ));
}

#[test]
fn rotate_refuses_a_smaller_tree_size_and_stale_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = KeyStore::open_or_create(tmp.path(), ORIGIN).unwrap();
    a.rotate(10, 1).unwrap();
    assert!(matches!(
        a.rotate(9, 2),
        Err(KeyError::TreeSizeDecreased {
            previous: 10,
            got: 9,
            ..
        })
    ));
    a.rotate(10, 2).unwrap(); // equal size: allowed
    let mut b = KeyStore::open_or_create(tmp.path(), ORIGIN).unwrap();
    b.rotate(11, 3).unwrap();
    assert!(matches!(
        a.rotate(12, 4),
        Err(KeyError::StaleKeyStore {
            expected: 2,
            found: 3
        })
    ));
    assert_eq!(b.chain().unwrap().epoch(), 3);
}

#[test]
fn open_fails_clearly_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let e = KeyStore::open(&missing).unwrap_err();
    assert!(matches!(e, KeyError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(!missing.exists(), "open must not create anything");

    fs::create_dir(&missing).unwrap();
    fs::set_permissions(&missing, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(
        KeyStore::open(&missing),
        Err(KeyError::Missing { .. })
    ));

    for bad in ["", "a b", "a+b", "a\nb"] {
        assert!(matches!(
            KeyStore::open_or_create(&tmp.path().join("x"), bad),
            Err(KeyError::InvalidOrigin { .. })
        ));
    }

    let dir = tmp.path().join("k");
    KeyStore::open_or_create(&dir, ORIGIN).unwrap();
    fs::set_permissions(dir.join("signer.skey"), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        KeyStore::open(&dir),
        Err(KeyError::InsecurePermissions { .. })
    ));
    fs::set_permissions(dir.join("signer.skey"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        KeyStore::open(&dir),
        Err(KeyError::InsecurePermissions { .. })
    ));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    KeyStore::open(&dir).unwrap();

    // A corrupt key file is reported without echoing its content.
    fs::write(dir.join("signer.skey"), "PRIVATE+KEY+x+00000000+c2VjcmV0\n").unwrap();
    let e = KeyStore::open(&dir).unwrap_err();
    assert!(matches!(e, KeyError::Corrupt { .. }), "{e}");
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
}

#[test]
fn existing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty directory (e.g. made by a package) is taken over and restricted.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    KeyStore::open_or_create(&empty, ORIGIN).unwrap();
    check_permissions(&empty);
    // A directory with someone else's files is not chmod-ed behind their back.
    let shared = tmp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("README"), "hello").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        KeyStore::open_or_create(&shared, ORIGIN),
        Err(KeyError::InsecurePermissions { .. })
    ));
    assert_eq!(mode(&shared), 0o755);
    assert!(!shared.join("signer.skey").exists());
}

fn write_private(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for (name, content) in snapshot(from) {
        write_private(&to.join(&name), &content);
    }
}

/// Crash states a rotation can leave behind are finished or undone by open_or_create.
#[test]
fn interrupted_rotations_are_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let before = tmp.path().join("before");
    let mut store = KeyStore::open_or_create(&live, ORIGIN).unwrap();
    copy_dir(&live, &before); // epoch 0, key k0
    store.rotate(7, 1).unwrap();
    let k1 = fs::read(live.join("signer.skey")).unwrap();
    let rotations = fs::read(live.join("rotations")).unwrap();

    // 1. Crash after the rotation record was written, before the new key was installed.
    let crash = tmp.path().join("crash1");
    copy_dir(&before, &crash);
    write_private(&crash.join("signer.skey.next"), &k1);
    fs::write(crash.join("rotations"), &rotations).unwrap();
    assert!(matches!(
        KeyStore::open(&crash),
        Err(KeyError::Inconsistent { .. })
    ));
    let s = KeyStore::open_or_create(&crash, ORIGIN).unwrap();
    assert_eq!(s.epoch(), 1);
    assert_eq!(fs::read(crash.join("signer.skey")).unwrap(), k1);
    assert!(!crash.join("signer.skey.next").exists());
    assert!(!crash.join("signer.skey.old").exists());
    assert_eq!(fs::read_to_string(crash.join("epoch")).unwrap(), "1\n");

    // 2. Crash before the rotation record was written: the new key is discarded.
    let crash = tmp.path().join("crash2");
    copy_dir(&before, &crash);
    write_private(&crash.join("signer.skey.next"), &k1);
    let k0 = fs::read(crash.join("signer.skey")).unwrap();
    let s = KeyStore::open_or_create(&crash, ORIGIN).unwrap();
    assert_eq!(s.epoch(), 0);
    assert_eq!(fs::read(crash.join("signer.skey")).unwrap(), k0);
    assert!(!crash.join("signer.skey.next").exists());

    // 3. Crash after the new key was installed, before the old one was erased and the epoch
    //    file updated.
    let crash = tmp.path().join("crash3");
    copy_dir(&before, &crash);
    fs::rename(crash.join("signer.skey"), crash.join("signer.skey.old")).unwrap();
    write_private(&crash.join("signer.skey"), &k1);
    fs::write(crash.join("rotations"), &rotations).unwrap();
    let s = KeyStore::open_or_create(&crash, ORIGIN).unwrap();
    assert_eq!(s.epoch(), 1);
    assert!(!crash.join("signer.skey.old").exists());
    for (name, content) in snapshot(&crash) {
        assert!(!contains(&content, &k0), "old key still in {name}");
    }

    // 4. Crash right after the old key got its second name (same file): nothing is erased.
    let crash = tmp.path().join("crash4");
    copy_dir(&before, &crash);
    fs::hard_link(crash.join("signer.skey"), crash.join("signer.skey.old")).unwrap();
    let s = KeyStore::open_or_create(&crash, ORIGIN).unwrap();
    assert_eq!(s.epoch(), 0);
    assert_eq!(fs::read(crash.join("signer.skey")).unwrap(), k0);
    assert!(!crash.join("signer.skey.old").exists());
}
