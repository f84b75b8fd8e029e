//! Per-kind requirements (shared by `validate` and the JSON Schema) and schema generation.

use crate::{Event, FsState, Kind, PauseReason, TerminateReason, SCHEMA};
use serde_json::{json, Map, Value};

/// Whether events of `kind` may omit `session_id`: ledger.* events, and alert / audit.loss
/// events that concern no single session.
pub fn session_id_optional(kind: Kind) -> bool {
    kind.is_ledger() || matches!(kind, Kind::Alert | Kind::AuditLoss)
}

/// The dotted field paths an event of `kind` must carry (beyond the envelope fields that every
/// event has). [`Event::validate`](crate::Event::validate) reports the first one missing, and
/// the JSON Schema carries the same list as an `if kind == ... then required` rule.
/// Further rules (absolute paths, reason vocabularies, chown's uid/gid) are in `validate`.
pub fn required_fields(kind: Kind) -> &'static [&'static str] {
    use Kind::*;
    match kind {
        SessionCreate | SessionStart => &["session_id"],
        SessionPause | SessionTerminate => &["session_id", "session", "session.reason"],
        SessionResume => &["session_id", "session", "session.actor"],
        SessionCleanup => &["session_id", "session", "session.fs_state"],
        ProcessExec => &["session_id", "process", "exec"],
        ProcessExit => &["session_id", "process", "exit"],
        FileOpen | FileDelete | FileMount | FileUnmount | FileTruncate | FileChown => {
            &["session_id", "file"]
        }
        FileRename | FileLink => &["session_id", "file", "file.new_path"],
        FileChmod | FileMkdir | FileMknod => &["session_id", "file", "file.mode"],
        NetConnect | NetListen | NetFlow => &["session_id", "net"],
        NetAccept => &["session_id", "net", "net.src"],
        DnsQuery => &["session_id", "dns"],
        PackageInstall => &["session_id", "package"],
        ToolInvoke => &["session_id", "tool"],
        ModelCall => &["session_id", "model"],
        LimitHit => &["session_id", "limit"],
        PolicyViolation => &["session_id", "policy", "policy.what"],
        Alert => &["alert"],
        AuditLoss => &["loss"],
        LedgerCheckpoint => &["ledger", "ledger.checkpoint"],
        LedgerKeyRotation => &["ledger", "ledger.rotation"],
        LedgerRecovered => &["ledger", "ledger.recovered"],
        LedgerPruned => &["ledger", "ledger.pruned"],
    }
}

/// Walks `properties` objects down `path` in `schema`, creating them as needed.
fn at<'a>(schema: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = schema;
    for seg in path {
        cur = cur
            .as_object_mut()
            .expect("object schema")
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("properties object")
            .entry(seg.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut().expect("object schema")
}

fn require(schema: &mut Value, dotted: &str) {
    let segs: Vec<&str> = dotted.split('.').collect();
    let (last, parents) = segs.split_last().expect("non-empty path");
    let obj = at(schema, parents);
    let req = obj
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("required array");
    req.push(json!(last));
    // Present but null deserialises to None, which validate() rejects: say so in the schema too.
    at(schema, &segs).insert("not".into(), json!({"type": "null"}));
}

fn def<'a>(root: &'a mut Value, name: &str) -> &'a mut Map<String, Value> {
    root.pointer_mut(&format!("/$defs/{name}"))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("$defs/{name}"))
}

fn prop<'a>(root: &'a mut Value, def_name: &str, field: &str) -> &'a mut Map<String, Value> {
    def(root, def_name)
        .get_mut("properties")
        .and_then(|p| p.get_mut(field))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("$defs/{def_name}/properties/{field}"))
}

fn vocab<T: std::fmt::Display>(all: &[T]) -> Value {
    Value::Array(all.iter().map(|v| json!(v.to_string())).collect())
}

/// The JSON Schema (draft 2020-12) of [`Event`], generated from the Rust types and extended
/// with the per-kind rules of [`Event::validate`](crate::Event::validate). Pretty-printed with
/// sorted keys; committed as `docs/schema/event.schema.json`.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut root = generator.into_root_schema_for::<Event>().to_value();

    let top = root.as_object_mut().expect("root object");
    top.insert("$id".into(), json!("urn:sandtrail:schema:event:1"));
    top.insert("title".into(), json!(SCHEMA));
    top.insert(
        "description".into(),
        json!("One sandtrail audit event (native schema sandtrail.event/1). Generated from the Rust \
               types in crates/event; regenerate with SANDTRAIL_UPDATE_SCHEMA=1 cargo test -p sandtrail-event. \
               Beyond this schema, validate() also checks that ts and ts_ns denote the same instant \
               and that IP addresses parse."),
    );
    at(&mut root, &["schema"]).insert("const".into(), json!(SCHEMA));
    at(&mut root, &["ts"]).insert("format".into(), json!("date-time"));
    at(&mut root, &["host_id"]).insert("minLength".into(), json!(1));
    at(&mut root, &["session_id"]).insert("minLength".into(), json!(1));
    at(&mut root, &["tool_call_id"]).insert("minLength".into(), json!(1));

    // Field-level rules that validate() enforces whatever the kind.
    let result_pattern = "^(ok|E[A-Z0-9]+)$";
    let domain_pattern = "^[^A-Z]*[^A-Z.]$";
    prop(&mut root, "FileInfo", "path").insert("pattern".into(), json!("^/"));
    prop(&mut root, "FileInfo", "new_path").insert("pattern".into(), json!("^/"));
    prop(&mut root, "FileInfo", "result").insert("pattern".into(), json!(result_pattern));
    prop(&mut root, "FileInfo", "count").insert("minimum".into(), json!(1));
    prop(&mut root, "ExecInfo", "result").insert("pattern".into(), json!(result_pattern));
    prop(&mut root, "ExecInfo", "path").insert("minLength".into(), json!(1));
    prop(&mut root, "Snapshot", "path").insert("pattern".into(), json!("^/"));
    prop(&mut root, "Snapshot", "sha256").insert("pattern".into(), json!("^[0-9a-f]{64}$"));
    prop(&mut root, "Resources", "cpus").insert("minimum".into(), json!(0));
    prop(&mut root, "DnsInfo", "name").insert("pattern".into(), json!(domain_pattern));
    prop(&mut root, "DnsInfo", "type").insert("minLength".into(), json!(1));
    prop(&mut root, "Endpoint", "domain").insert("pattern".into(), json!(domain_pattern));
    for (d, f) in [
        ("ProcessRef", "exe"),
        ("ProcessRef", "exec_id"),
        ("NetInfo", "protocol"),
        ("PackageInfo", "manager"),
        ("PackageInfo", "name"),
        ("ToolInfo", "name"),
        ("ModelInfo", "name"),
        ("AlertInfo", "rule_id"),
        ("LossInfo", "source"),
    ] {
        prop(&mut root, d, f).insert("minLength".into(), json!(1));
    }
    prop(&mut root, "LossInfo", "count").insert("minimum".into(), json!(1));
    prop(&mut root, "Endpoint", "ip").insert(
        "anyOf".into(),
        json!([{"format": "ipv4"}, {"format": "ipv6"}]),
    );

    // Per-kind rules: `if kind == K then <required fields and kind-specific constraints>`.
    let mut rules = Vec::new();
    for &kind in Kind::all() {
        let mut then = json!({});
        for path in required_fields(kind) {
            require(&mut then, path);
        }
        match kind {
            Kind::SessionTerminate => {
                at(&mut then, &["session", "reason"])
                    .insert("enum".into(), vocab(TerminateReason::ALL));
            }
            Kind::SessionPause | Kind::SessionResume => {
                at(&mut then, &["session", "reason"])
                    .insert("enum".into(), vocab(PauseReason::ALL));
            }
            Kind::SessionCleanup => {
                let s = at(&mut then, &["session"]);
                s.insert("if".into(), json!({"properties": {"fs_state": {"const": FsState::Snapshot.as_str()}}, "required": ["fs_state"]}));
                s.insert("then".into(), json!({"required": ["snapshot"], "properties": {"snapshot": {"not": {"type": "null"}}}}));
            }
            Kind::FileChown => {
                at(&mut then, &["file"]).insert(
                    "anyOf".into(),
                    json!([
                        {"required": ["uid"], "properties": {"uid": {"type": "integer"}}},
                        {"required": ["gid"], "properties": {"gid": {"type": "integer"}}}
                    ]),
                );
            }
            _ => {}
        }
        rules.push(json!({
            "if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]},
            "then": then,
        }));
    }
    root.as_object_mut()
        .expect("root object")
        .insert("allOf".into(), Value::Array(rules));

    root.sort_all_objects();
    let mut out = serde_json::to_string_pretty(&root).expect("schema serialises");
    out.push('\n');
    out
}
