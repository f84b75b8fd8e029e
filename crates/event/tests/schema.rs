//! The committed JSON Schema matches the types, and agrees with `Event::validate`.
//!
//! A small JSON Schema evaluator (just the keywords `schema_json` emits) checks every generated
//! event against the committed schema, and checks that what `validate` rejects the schema
//! rejects too.

use serde_json::Value;

use sandtrail_event::generate::Generator;
use sandtrail_event::*;

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/schema/event.schema.json"
);
const T0: u64 = 1_782_727_440_000_000_000;

#[test]
fn committed_schema_is_current() {
    let fresh = schema_json();
    if std::env::var_os("SANDTRAIL_UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(std::path::Path::new(COMMITTED).parent().unwrap()).unwrap();
        std::fs::write(COMMITTED, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/schema/event.schema.json is stale (it must equal schema_json()); regenerate it with \
         `SANDTRAIL_UPDATE_SCHEMA=1 cargo test -p sandtrail-event` and commit the result"
    );
}

fn schema() -> Value {
    serde_json::from_str(&schema_json()).unwrap()
}

// ---------------------------------------------------------------- a minimal evaluator

struct Checker<'a> {
    root: &'a Value,
}

fn pattern_matches(pattern: &str, s: &str) -> bool {
    match pattern {
        "^/" => s.starts_with('/'),
        "^(ok|E[A-Z0-9]+)$" => {
            s == "ok"
                || (s.len() > 1
                    && s.starts_with('E')
                    && s[1..]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        }
        "^[^A-Z]*[^A-Z.]$" => {
            !s.is_empty() && !s.chars().any(|c| c.is_ascii_uppercase()) && !s.ends_with('.')
        }
        "^[0-9a-f]{64}$" => {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        other => panic!("test evaluator does not know pattern {other:?}; add it"),
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown type {other}"),
    }
}

impl Checker<'_> {
    fn valid(&self, schema: &Value, v: &Value) -> bool {
        self.errors(schema, v, "$").is_empty()
    }

    /// Returns the list of violations (empty when `v` is valid).
    fn errors(&self, schema: &Value, v: &Value, at: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let obj = match schema {
            Value::Bool(true) => return errs,
            Value::Bool(false) => return vec![format!("{at}: false schema")],
            Value::Object(o) => o,
            other => panic!("bad schema {other}"),
        };
        for (kw, arg) in obj {
            match kw.as_str() {
                "$schema" | "$id" | "title" | "description" | "default" | "format" | "$defs"
                | "examples" => {}
                "$ref" => {
                    let name = arg
                        .as_str()
                        .unwrap()
                        .strip_prefix("#/$defs/")
                        .expect("local ref");
                    errs.extend(self.errors(&self.root["$defs"][name], v, at));
                }
                "type" => {
                    let ok = match arg {
                        Value::String(t) => type_ok(t, v),
                        Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
                        _ => panic!("bad type"),
                    };
                    if !ok {
                        errs.push(format!("{at}: not of type {arg}"));
                    }
                }
                "enum" => {
                    if !arg.as_array().unwrap().contains(v) {
                        errs.push(format!("{at}: {v} not in enum {arg}"));
                    }
                }
                "const" => {
                    if arg != v {
                        errs.push(format!("{at}: {v} != const {arg}"));
                    }
                }
                "properties" => {
                    if let Some(o) = v.as_object() {
                        for (k, s) in arg.as_object().unwrap() {
                            if let Some(x) = o.get(k) {
                                errs.extend(self.errors(s, x, &format!("{at}.{k}")));
                            }
                        }
                    }
                }
                "required" => {
                    if let Some(o) = v.as_object() {
                        for k in arg.as_array().unwrap() {
                            if !o.contains_key(k.as_str().unwrap()) {
                                errs.push(format!("{at}: missing required {k}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(o) = v.as_object() {
                        let known = obj.get("properties").and_then(Value::as_object);
                        for (k, x) in o {
                            if known.is_none_or(|p| !p.contains_key(k)) {
                                errs.extend(self.errors(arg, x, &format!("{at}.{k}")));
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(a) = v.as_array() {
                        for (i, x) in a.iter().enumerate() {
                            errs.extend(self.errors(arg, x, &format!("{at}[{i}]")));
                        }
                    }
                }
                "allOf" => {
                    for s in arg.as_array().unwrap() {
                        errs.extend(self.errors(s, v, at));
                    }
                }
                "anyOf" => {
                    if !arg.as_array().unwrap().iter().any(|s| self.valid(s, v)) {
                        errs.push(format!("{at}: matches none of anyOf"));
                    }
                }
                "oneOf" => {
                    let n = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| self.valid(s, v))
                        .count();
                    if n != 1 {
                        errs.push(format!("{at}: matches {n} of oneOf"));
                    }
                }
                "not" => {
                    if self.valid(arg, v) {
                        errs.push(format!("{at}: matches not {arg}"));
                    }
                }
                "if" => {
                    let branch = if self.valid(arg, v) {
                        obj.get("then")
                    } else {
                        obj.get("else")
                    };
                    if let Some(s) = branch {
                        errs.extend(self.errors(s, v, at));
                    }
                }
                "then" | "else" => {}
                "minimum" => {
                    if v.as_f64().is_some_and(|x| x < arg.as_f64().unwrap()) {
                        errs.push(format!("{at}: {v} < minimum {arg}"));
                    }
                }
                "maximum" => {
                    if v.as_f64().is_some_and(|x| x > arg.as_f64().unwrap()) {
                        errs.push(format!("{at}: {v} > maximum {arg}"));
                    }
                }
                "minLength" => {
                    if v.as_str()
                        .is_some_and(|s| (s.chars().count() as u64) < arg.as_u64().unwrap())
                    {
                        errs.push(format!("{at}: shorter than {arg}"));
                    }
                }
                "pattern" => {
                    if let Some(s) = v.as_str() {
                        if !pattern_matches(arg.as_str().unwrap(), s) {
                            errs.push(format!("{at}: {s:?} does not match {arg}"));
                        }
                    }
                }
                other => panic!("test evaluator does not know keyword {other:?} (at {at}); add it"),
            }
        }
        errs
    }
}

fn samples() -> Vec<Event> {
    let mut g = Generator::new(3, "host-s", T0);
    let mut v = g.demo_session("ses_demo");
    v.extend(g.mixed(8).take(20_000));
    let mut ck = Event::new(Kind::LedgerCheckpoint, Source::Ledger, None, "host-s", T0);
    ck.ledger = Some(Box::new(LedgerInfo {
        checkpoint: Some(CheckpointInfo {
            size: 3,
            root: "AAAA".into(),
        }),
        ..Default::default()
    }));
    v.push(ck);
    let mut rot = Event::new(Kind::LedgerKeyRotation, Source::Ledger, None, "host-s", T0);
    rot.ledger = Some(Box::new(LedgerInfo {
        rotation: Some(RotationInfo {
            epoch: 1,
            next_key: "k".into(),
            tree_size: 3,
        }),
        ..Default::default()
    }));
    v.push(rot);
    let mut rec = Event::new(Kind::LedgerRecovered, Source::Ledger, None, "host-s", T0);
    rec.ledger = Some(Box::new(LedgerInfo {
        recovered: Some(RecoveredInfo {
            truncated_bytes: 1,
            torn_records: 1,
            ..Default::default()
        }),
        ..Default::default()
    }));
    v.push(rec);
    let mut pr = Event::new(Kind::LedgerPruned, Source::Ledger, None, "host-s", T0);
    pr.ledger = Some(Box::new(LedgerInfo {
        pruned: Some(PrunedInfo {
            before_seq: 1,
            count: 1,
        }),
        ..Default::default()
    }));
    v.push(pr);
    v
}

#[test]
fn schema_shape() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["properties"]["schema"]["const"], SCHEMA);
    assert_eq!(s["additionalProperties"], false);
    let kinds: Vec<&str> = s["$defs"]["Kind"]["oneOf"]
        .as_array()
        .map(|a| a.iter().map(|k| k["const"].as_str().unwrap()).collect())
        .or_else(|| {
            s["$defs"]["Kind"]["enum"]
                .as_array()
                .map(|a| a.iter().map(|k| k.as_str().unwrap()).collect())
        })
        .expect("Kind is an enum or a oneOf of consts");
    assert_eq!(
        kinds,
        Kind::all().iter().map(|k| k.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(s["allOf"].as_array().unwrap().len(), Kind::COUNT);
    // Required envelope fields, as the design documents them.
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for f in [
        "schema", "ts", "ts_ns", "host_id", "kind", "source", "severity",
    ] {
        assert!(required.contains(&f), "{f} not required");
    }
    for f in ["seq", "session_id", "process", "ancestors"] {
        assert!(!required.contains(&f), "{f} required");
    }
}

#[test]
fn every_sample_event_validates_against_the_schema() {
    let s = schema();
    let c = Checker { root: &s };
    for e in samples() {
        e.validate().unwrap();
        let v = serde_json::to_value(&e).unwrap();
        let errs = c.errors(&s, &v, "$");
        assert!(errs.is_empty(), "{}: {errs:?}\n{v}", e.kind);
    }
}

type Mutation = (Kind, Box<dyn Fn(&mut Event)>);

/// Whatever `validate` rejects by a rule the schema can express, the schema rejects too.
#[test]
fn schema_rejects_what_validate_rejects() {
    let s = schema();
    let c = Checker { root: &s };
    let all = samples();
    let mut checked = 0;
    // Missing required fields, kind by kind.
    for e in all
        .iter()
        .filter(|e| e.kind.is_ledger() || e.session_id.as_deref() == Some("ses_demo"))
    {
        for path in required_fields(e.kind) {
            let segs: Vec<&str> = path.split('.').collect();
            let (last, parents) = segs.split_last().unwrap();
            let pointer: String = parents.iter().map(|p| format!("/{p}")).collect();
            // Both null and absent must be rejected.
            let mut v = serde_json::to_value(e).unwrap();
            v.pointer_mut(&pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(last.to_string(), Value::Null);
            assert!(!c.valid(&s, &v), "{}: null {path} accepted", e.kind);
            v.pointer_mut(&pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(*last);
            assert!(!c.valid(&s, &v), "{}: missing {path} accepted", e.kind);
            checked += 1;
        }
    }
    assert!(checked > 40);

    let find = |k: Kind| all.iter().find(|e| e.kind == k).unwrap().clone();
    let mutations: Vec<Mutation> = vec![
        (
            Kind::FileOpen,
            Box::new(|e| e.file.as_mut().unwrap().path = "etc/passwd".into()),
        ),
        (
            Kind::FileRename,
            Box::new(|e| e.file.as_mut().unwrap().new_path = Some("x".into())),
        ),
        (
            Kind::FileOpen,
            Box::new(|e| e.file.as_mut().unwrap().result = Some("fail".into())),
        ),
        (
            Kind::FileOpen,
            Box::new(|e| e.file.as_mut().unwrap().count = Some(0)),
        ),
        (
            Kind::FileChown,
            Box::new(|e| {
                let f = e.file.as_mut().unwrap();
                f.uid = None;
                f.gid = None;
            }),
        ),
        (
            Kind::SessionTerminate,
            Box::new(|e| e.session.as_mut().unwrap().reason = Some(SessionReason::Autopause)),
        ),
        (
            Kind::SessionPause,
            Box::new(|e| e.session.as_mut().unwrap().reason = Some(SessionReason::Oom)),
        ),
        (
            Kind::SessionCleanup,
            Box::new(|e| e.session.as_mut().unwrap().snapshot = None),
        ),
        (
            Kind::SessionCleanup,
            Box::new(|e| {
                e.session
                    .as_mut()
                    .unwrap()
                    .snapshot
                    .as_mut()
                    .unwrap()
                    .sha256 = "x".into()
            }),
        ),
        (
            Kind::SessionCreate,
            Box::new(|e| e.session.as_mut().unwrap().resources.as_mut().unwrap().cpus = Some(-1.0)),
        ),
        (
            Kind::DnsQuery,
            Box::new(|e| e.dns.as_mut().unwrap().name = "A.example".into()),
        ),
        (
            Kind::NetConnect,
            Box::new(|e| e.net.as_mut().unwrap().dst.domain = Some("a.example.".into())),
        ),
        (
            Kind::AuditLoss,
            Box::new(|e| e.loss.as_mut().unwrap().count = 0),
        ),
        (
            Kind::ToolInvoke,
            Box::new(|e| e.tool.as_mut().unwrap().name.clear()),
        ),
        (Kind::FileOpen, Box::new(|e| e.host_id.clear())),
        (
            Kind::FileOpen,
            Box::new(|e| e.schema = "sandtrail.event/2".into()),
        ),
        (Kind::FileOpen, Box::new(|e| e.session_id = None)),
    ];
    for (kind, m) in &mutations {
        let mut e = find(*kind);
        m(&mut e);
        assert!(e.validate().is_err(), "{kind}: validate accepted");
        let v = serde_json::to_value(&e).unwrap();
        assert!(!c.valid(&s, &v), "{kind}: schema accepted {v}");
    }
    // Unknown fields anywhere.
    let mut v = serde_json::to_value(find(Kind::FileOpen)).unwrap();
    v["file"]["pathh"] = "/x".into();
    assert!(!c.valid(&s, &v));
}
