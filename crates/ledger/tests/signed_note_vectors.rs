//! C2SP signed-note vectors from `shared/testdata/signed-note/vectors.json`.

mod common;

use sandtrail_ledger::checkpoint::{open_checkpoint, Checkpoint};
use sandtrail_ledger::note::{open, sign, NoteError, Signer, Verifier};
use serde_json::Value;

fn vectors() -> Value {
    common::read_json(&common::testdata("signed-note").join("vectors.json"))
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    let l = v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} missing"));
    assert!(!l.is_empty(), "{field} is empty");
    l
}

#[test]
fn known_answer_sign() {
    let v = vectors();
    let ka = &v["known_answer_sign"];
    let signer = Signer::from_skey(s(ka, "signer_key")).unwrap();
    assert_eq!(signer.to_skey(), s(ka, "signer_key"));
    assert_eq!(signer.verifier().to_vkey(), s(ka, "verifier_key"));
    assert_eq!(
        Verifier::from_vkey(s(ka, "verifier_key")).unwrap(),
        signer.verifier()
    );
    let signed = sign(s(ka, "text"), &signer).unwrap();
    assert_eq!(signed, s(ka, "signed_note"));
    let n = open(&signed, &[signer.verifier()]).unwrap();
    assert_eq!(n.text, s(ka, "text"));
    assert_eq!(n.verified_by, vec![signer.verifier()]);
}

#[test]
fn verify_ok() {
    let v = vectors();
    for (i, c) in list(&v, "verify_ok").iter().enumerate() {
        let vk = Verifier::from_vkey(s(c, "verifier_key"))
            .unwrap_or_else(|e| panic!("verify_ok[{i}]: {e}"));
        let n = open(s(c, "signed_note"), std::slice::from_ref(&vk))
            .unwrap_or_else(|e| panic!("verify_ok[{i}]: {e}"));
        assert_eq!(n.verified_by, vec![vk], "verify_ok[{i}]");
        assert!(s(c, "signed_note").starts_with(&n.text));
    }
}

#[test]
fn verify_fail() {
    let v = vectors();
    for (i, c) in list(&v, "verify_fail").iter().enumerate() {
        let vk = Verifier::from_vkey(s(c, "verifier_key")).unwrap();
        let r = open(s(c, "signed_note"), &[vk]);
        assert!(
            r.is_err(),
            "verify_fail[{i}] ({}) was accepted",
            c["why"].as_str().unwrap_or("")
        );
    }
}

#[test]
fn bad_verifier_keys() {
    let v = vectors();
    for (i, k) in list(&v, "bad_verifier_keys").iter().enumerate() {
        let k = k.as_str().unwrap();
        assert!(
            Verifier::from_vkey(k).is_err(),
            "bad_verifier_keys[{i}] accepted: {k}"
        );
    }
}

/// A known key ID with a bad signature is an error that names the key.
#[test]
fn bad_signature_names_the_key() {
    let v = vectors();
    let ka = &v["known_answer_sign"];
    let signed = s(ka, "signed_note").replace("your problem,\n", "your problem;\n");
    let vk = Verifier::from_vkey(s(ka, "verifier_key")).unwrap();
    assert_eq!(
        open(&signed, &[vk]),
        Err(NoteError::InvalidSignature {
            key: "PeterNeumann+c74f20a3".into()
        })
    );
}

/// The C2SP tlog-checkpoint example (signed by a key we do not have) parses but does not open.
#[test]
fn checkpoint_with_unknown_key_is_rejected() {
    let ka = vectors();
    let vk = Verifier::from_vkey(s(&ka["known_answer_sign"], "verifier_key")).unwrap();
    let signed = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
    assert!(open_checkpoint(signed, &[vk]).is_err());
    let body = &signed[..signed.find("\n\n").unwrap() + 1];
    assert_eq!(Checkpoint::parse(body).unwrap().size, 20852163);
}
