//! Errors: every message names the field path, what is wrong, and how to fix it.

use crate::Kind;

/// Why an event could not be parsed, decoded or validated.
///
/// `Display` is `"<field path>: <what is wrong>; <how to fix>"`, e.g.
/// `file.path: must be absolute, got "etc/passwd"`. Line numbers are the caller's to add.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The JSON did not parse into an event (syntax, type, unknown or missing field).
    #[error("{path}: {msg}")]
    Json {
        /// Dotted field path (`file.path`, `exec.argv[2]`), or `event` for the whole object.
        path: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// `kind` is not one of the known kinds.
    #[error("{path}: unknown kind {value:?}{hint}; valid kinds: {list} (also the \"kind\" enum in docs/schema/event.schema.json)",
        hint = suggestion.map(|k| format!(" (did you mean {:?}?)", k.as_str())).unwrap_or_default(),
        list = kind_list())]
    UnknownKind {
        /// Where the kind was found (`kind`).
        path: String,
        /// The unknown value.
        value: String,
        /// The closest valid kind, if any is close.
        suggestion: Option<Kind>,
    },
    /// `ts` is not an RFC 3339 timestamp.
    #[error("ts: not an RFC 3339 timestamp ({reason}): {value:?}; write e.g. \"2026-06-29T10:04:00.123456789Z\"")]
    Timestamp {
        /// The text that failed to parse.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event parsed but breaks a rule of the schema.
    #[error("{path}: {msg}")]
    Invalid {
        /// Dotted field path.
        path: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// The leaf's version byte is not one this build can read.
    #[error("leaf: unknown leaf encoding version {got} (this build reads version {known}); read it with a sandtrail release that supports version {got}")]
    LeafVersion {
        /// The version byte found.
        got: u8,
        /// The version this build reads ([`LEAF_VERSION`](crate::LEAF_VERSION)).
        known: u8,
    },
    /// The leaf is empty.
    #[error("leaf: empty record; a leaf is a version byte followed by the event's JSON")]
    EmptyLeaf,
}

impl EventError {
    /// The field path the error is about (`"ts"` for timestamps, `"leaf"` for leaf framing).
    pub fn path(&self) -> &str {
        match self {
            EventError::Json { path, .. }
            | EventError::UnknownKind { path, .. }
            | EventError::Invalid { path, .. } => path,
            EventError::Timestamp { .. } => "ts",
            EventError::LeafVersion { .. } | EventError::EmptyLeaf => "leaf",
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, msg: impl Into<String>) -> EventError {
        EventError::Invalid {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

fn kind_list() -> String {
    let names: Vec<&str> = Kind::all().iter().map(|k| k.as_str()).collect();
    names.join(", ")
}
