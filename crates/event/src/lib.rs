//! The `sandtrail.event/1` schema: typed events, validation, the canonical leaf encoding that
//! the ledger hashes, the generated JSON Schema, and a deterministic demo / benchmark generator.
//!
//! ```
//! use sandtrail_event::*;
//! let mut e = Event::new(Kind::FileOpen, Source::Kernel, Some("ses_1".into()), "host-a", 1_782_727_440_123_456_789);
//! e.file = Some(FileInfo { path: "/workspace/main.py".into(), access: Some(Access::Read), ..Default::default() });
//! e.validate().unwrap();
//! let leaf = encode_leaf(&e);
//! assert_eq!(decode_leaf(&leaf).unwrap(), e);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod error;
pub mod generate;
mod kind;
mod schema;
mod ts;
mod validate;

pub use body::*;
pub use error::EventError;
pub use kind::Kind;
pub use schema::{required_fields, schema_json, session_id_optional};
pub use ts::{format_ts, parse_ts};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The value of every event's `schema` field.
pub const SCHEMA: &str = "sandtrail.event/1";

/// First byte of every leaf: the version of the canonical leaf encoding.
pub const LEAF_VERSION: u8 = 1;

/// One audit event (schema `sandtrail.event/1`).
///
/// Field order here is the canonical order of the leaf encoding: never reorder or rename
/// fields. Adding an optional field that is skipped when empty keeps every existing leaf
/// byte-identical (old readers reject only the events that use it); any other change needs a
/// new [`LEAF_VERSION`].
///
/// Bodies that most events do not carry are boxed (the encoding is the same): an event is
/// moved several times between the collector and the ledger's thread, 576 bytes a time with
/// them boxed against 928 with them inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Always "sandtrail.event/1".
    pub schema: String,
    /// Leaf index in the ledger, assigned by the ledger (input may omit it).
    #[serde(default)]
    pub seq: u64,
    /// Time of the event: RFC 3339 UTC with 9 fractional digits, equal to `ts_ns`.
    pub ts: String,
    /// Time of the event in unix nanoseconds.
    pub ts_ns: u64,
    /// The session this event belongs to. Absent only for ledger.* events and for alert /
    /// audit.loss events that concern no single session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The host that recorded the event.
    pub host_id: String,
    /// What happened.
    pub kind: Kind,
    /// Which part of sandtrail produced the event.
    pub source: Source,
    /// How bad it is.
    pub severity: Severity,
    /// The acting process, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
    /// The agent tool call in progress when this happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// session.* details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Box<SessionInfo>>,
    /// process.exec details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Box<ExecInfo>>,
    /// process.exec: the parent process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<ParentRef>>,
    /// process.exec: ancestors above the parent, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Ancestor>,
    /// process.exit details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Box<ExitInfo>>,
    /// file.* details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// net.* details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Box<NetInfo>>,
    /// dns.query details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<DnsInfo>>,
    /// Policy decision (policy.violation; also on net.* and dns.query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<PolicyInfo>>,
    /// package.install details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Box<PackageInfo>>,
    /// tool.invoke details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Box<ToolInfo>>,
    /// model.call details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Box<ModelInfo>>,
    /// limit.hit details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Box<LimitInfo>>,
    /// alert details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Box<AlertInfo>>,
    /// audit.loss details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Box<LossInfo>>,
    /// ledger.* details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Box<LedgerInfo>>,
}

impl Event {
    /// A new event with `schema` and `ts` set from `ts_ns`, severity info, seq 0 and no body.
    pub fn new(
        kind: Kind,
        source: Source,
        session_id: Option<String>,
        host_id: &str,
        ts_ns: u64,
    ) -> Event {
        Event {
            schema: SCHEMA.to_string(),
            seq: 0,
            ts: format_ts(ts_ns),
            ts_ns,
            session_id,
            host_id: host_id.to_string(),
            kind,
            source,
            severity: Severity::Info,
            process: None,
            tool_call_id: None,
            session: None,
            exec: None,
            parent: None,
            ancestors: Vec::new(),
            exit: None,
            file: None,
            net: None,
            dns: None,
            policy: None,
            package: None,
            tool: None,
            model: None,
            limit: None,
            alert: None,
            loss: None,
            ledger: None,
        }
    }

    /// Checks every rule of the schema that the types alone do not enforce; see
    /// [`required_fields`] for what each kind needs. The error names the field path.
    pub fn validate(&self) -> Result<(), EventError> {
        validate::validate(self)
    }

    /// Rewrites fields into their canonical form: `ts` to the 9-digit UTC form when it agrees
    /// with `ts_ns`; `dns.name` and `net.dst.domain` to lower case without a trailing dot.
    /// [`parse_json_line`] calls this before validating.
    pub fn normalize(&mut self) {
        validate::normalize(self)
    }

    /// The file paths this event touched: `file.path` and `file.new_path` (file.* kinds only).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.file
            .iter()
            .flat_map(|f| std::iter::once(f.path.as_str()).chain(f.new_path.as_deref()))
    }

    /// Domain names this event concerns: `dns.name` and `net.dst.domain`, without a trailing dot.
    /// They are lower case in any event that passed [`validate`](Event::validate).
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        let dns = self.dns.as_ref().map(|d| d.name.as_str());
        let dst = self.net.as_ref().and_then(|n| n.dst.domain.as_deref());
        dns.into_iter()
            .chain(dst)
            .map(|d| d.trim_end_matches('.'))
            .filter(|d| !d.is_empty())
    }

    /// `(name, version, manager)` of the package this event installed, if any.
    pub fn package_ref(&self) -> Option<(&str, Option<&str>, Option<&str>)> {
        self.package.as_ref().map(|p| {
            (
                p.name.as_str(),
                p.version.as_deref(),
                Some(p.manager.as_str()).filter(|m| !m.is_empty()),
            )
        })
    }

    /// The termination reason of a session.terminate event.
    pub fn terminate_reason(&self) -> Option<TerminateReason> {
        if self.kind != Kind::SessionTerminate {
            return None;
        }
        self.session.as_ref()?.reason?.as_terminate()
    }
}

/// The canonical leaf encoding: `[LEAF_VERSION]` followed by the compact JSON of the event in
/// struct field order. The same event always gives the same bytes.
pub fn encode_leaf(e: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(768);
    encode_leaf_into(e, &mut buf);
    buf
}

/// Like [`encode_leaf`] but **appends** to `buf` (clear it first to reuse one buffer per event;
/// appending lets a caller frame several leaves in one buffer without copying).
pub fn encode_leaf_into(e: &Event, buf: &mut Vec<u8>) {
    buf.push(LEAF_VERSION);
    // Writing to a Vec cannot fail and every Event field serialises; non-finite floats (rejected
    // by validate) would be written as null.
    serde_json::to_writer(&mut *buf, e).expect("serialising an Event to memory cannot fail");
}

/// Decodes a leaf made by [`encode_leaf`]. Does not [`validate`](Event::validate): the ledger
/// only stores validated events.
pub fn decode_leaf(b: &[u8]) -> Result<Event, EventError> {
    match b.first() {
        None => Err(EventError::EmptyLeaf),
        Some(&LEAF_VERSION) => match serde_json::from_slice(&b[1..]) {
            Ok(e) => Ok(e),
            // Slow path only on error: re-run with path tracking for a useful message.
            Err(_) => {
                let mut de = serde_json::Deserializer::from_slice(&b[1..]);
                match serde_path_to_error::deserialize::<_, Event>(&mut de) {
                    Ok(_) => Err(EventError::Json {
                        path: "leaf".into(),
                        msg: "trailing bytes after the event JSON".into(),
                    }),
                    Err(e) => Err(validate::json_error(e)),
                }
            }
        },
        Some(&got) => Err(EventError::LeafVersion {
            got,
            known: LEAF_VERSION,
        }),
    }
}

/// Parses one line of JSON-lines input (`sandtrail ingest`): deserialises with field-path
/// tracking, [`normalizes`](Event::normalize), then [`validates`](Event::validate).
pub fn parse_json_line(line: &str) -> Result<Event, EventError> {
    // serde would also accept a positional JSON array for a struct: insist on an object.
    if !line.trim_start().starts_with('{') {
        let shown: String = line.trim().chars().take(40).collect();
        return Err(EventError::Json {
            path: "event".into(),
            msg: format!("must be a JSON object {{...}}, got {shown:?}"),
        });
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let mut e: Event = serde_path_to_error::deserialize(&mut de).map_err(validate::json_error)?;
    de.end().map_err(|err| EventError::Json {
        path: "event".into(),
        msg: format!(
            "{} (at column {}); put exactly one JSON object on each line",
            validate::strip_position(&err),
            err.column()
        ),
    })?;
    e.normalize();
    e.validate()?;
    Ok(e)
}
