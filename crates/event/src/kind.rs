//! The closed set of event kinds and their stable names and ids.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident = $id:literal => $name:literal, )*) => {
        /// What happened. Serialised as the dotted name (`"process.exec"`).
        ///
        /// Every kind has a stable small id (`Kind::id`) for indexes: ids are the declaration
        /// order starting at 0 and are never reordered or reused; new kinds are appended.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[repr(u8)]
        pub enum Kind {
            $( $(#[doc = $doc])* #[serde(rename = $name)] $variant = $id, )*
        }

        const ALL: &[Kind] = &[$(Kind::$variant),*];

        impl Kind {
            /// The dotted wire name, e.g. `"process.exec"`.
            pub fn as_str(&self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }

            /// Looks a kind up by its dotted wire name (exact, case-sensitive).
            pub fn from_name(s: &str) -> Option<Kind> {
                match s { $($name => Some(Kind::$variant),)* _ => None }
            }
        }
    };
}

kinds! {
    /// A session was requested (tenant, user, template, resource configuration).
    SessionCreate = 0 => "session.create",
    /// The sandbox is running on a host with its assigned limits.
    SessionStart = 1 => "session.start",
    /// The session was paused (reason: api, timeout, autopause).
    SessionPause = 2 => "session.pause",
    /// The session was resumed (by an actor).
    SessionResume = 3 => "session.resume",
    /// The session ended (reason, exit status, resource usage).
    SessionTerminate = 4 => "session.terminate",
    /// The session's filesystem was preserved, deleted or snapshotted.
    SessionCleanup = 5 => "session.cleanup",
    /// A process executed a program (execve / execveat).
    ProcessExec = 6 => "process.exec",
    /// A process exited.
    ProcessExit = 7 => "process.exit",
    /// A file was opened (read, write or both).
    FileOpen = 8 => "file.open",
    /// A file was deleted (unlink / rmdir).
    FileDelete = 9 => "file.delete",
    /// A file was renamed or moved.
    FileRename = 10 => "file.rename",
    /// A filesystem was mounted.
    FileMount = 11 => "file.mount",
    /// A filesystem was unmounted.
    FileUnmount = 12 => "file.unmount",
    /// A file's mode was changed.
    FileChmod = 13 => "file.chmod",
    /// A file's owner or group was changed.
    FileChown = 14 => "file.chown",
    /// A hard or symbolic link was created.
    FileLink = 15 => "file.link",
    /// A file was truncated.
    FileTruncate = 16 => "file.truncate",
    /// An outbound connection was attempted (allowed or blocked).
    NetConnect = 17 => "net.connect",
    /// A socket started listening.
    NetListen = 18 => "net.listen",
    /// An inbound connection was accepted.
    NetAccept = 19 => "net.accept",
    /// A finished (or periodically reported) flow with byte and packet counts.
    NetFlow = 20 => "net.flow",
    /// A DNS query and its answers.
    DnsQuery = 21 => "dns.query",
    /// A package was installed (or an install was attempted / blocked).
    PackageInstall = 22 => "package.install",
    /// The agent invoked a tool (application-level intent).
    ToolInvoke = 23 => "tool.invoke",
    /// The agent called a model (summaries of input and output).
    ModelCall = 24 => "model.call",
    /// A resource limit was hit and an action taken.
    LimitHit = 25 => "limit.hit",
    /// A policy rule was violated.
    PolicyViolation = 26 => "policy.violation",
    /// A detection rule fired.
    Alert = 27 => "alert",
    /// Events were lost (counted, never silent).
    AuditLoss = 28 => "audit.loss",
    /// The ledger signed a checkpoint.
    LedgerCheckpoint = 29 => "ledger.checkpoint",
    /// The ledger rotated its signing key (forward security).
    LedgerKeyRotation = 30 => "ledger.key_rotation",
    /// The ledger recovered after a crash.
    LedgerRecovered = 31 => "ledger.recovered",
    /// Retention pruned old events.
    LedgerPruned = 32 => "ledger.pruned",
    /// A directory was created (mkdir, mkdirat).
    FileMkdir = 33 => "file.mkdir",
    /// A file system node was made by mknod/mknodat: a regular file, FIFO, socket or
    /// device node (`file.mode` carries its type bits).
    FileMknod = 34 => "file.mknod",
}

impl Kind {
    /// Number of kinds; every [`id`](Kind::id) is below this.
    pub const COUNT: usize = 35;

    /// Every kind, in id order (`Kind::all()[k.id() as usize] == k`).
    pub fn all() -> &'static [Kind] {
        ALL
    }

    /// The stable small number of this kind, for indexes. Never reordered.
    pub fn id(&self) -> u8 {
        *self as u8
    }

    /// The kind with this [`id`](Kind::id), if any.
    pub fn from_id(id: u8) -> Option<Kind> {
        ALL.get(id as usize).copied()
    }

    /// The part before the first dot (`"file"` for `file.open`; `"alert"` for `alert`).
    pub fn category(&self) -> &'static str {
        let s = self.as_str();
        match s.find('.') {
            Some(i) => &s[..i],
            None => s,
        }
    }

    /// `session.*`
    pub fn is_session(&self) -> bool {
        self.category() == "session"
    }

    /// `file.*`
    pub fn is_file(&self) -> bool {
        self.category() == "file"
    }

    /// `net.*` (not `dns.query`)
    pub fn is_net(&self) -> bool {
        self.category() == "net"
    }

    /// `ledger.*`: the only kinds that carry no `session_id`.
    pub fn is_ledger(&self) -> bool {
        self.category() == "ledger"
    }

    /// The closest kind name to a misspelt one (for "did you mean" hints).
    pub fn suggest(bad: &str) -> Option<Kind> {
        let bad = bad.to_ascii_lowercase();
        let mut best: Option<(usize, Kind)> = None;
        for &k in ALL {
            let d = edit_distance(&bad, k.as_str());
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, k));
            }
        }
        match best {
            Some((d, k))
                if d <= 3 || k.as_str().contains(bad.as_str()) || bad.contains(k.as_str()) =>
            {
                Some(k)
            }
            _ => {
                // A bare category or suffix ("exec", "dns") still deserves a hint.
                ALL.iter().copied().find(|k| {
                    !bad.is_empty()
                        && (k.as_str().ends_with(&format!(".{bad}")) || k.category() == bad)
                })
            }
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = crate::EventError;

    fn from_str(s: &str) -> Result<Kind, crate::EventError> {
        Kind::from_name(s).ok_or_else(|| crate::EventError::UnknownKind {
            path: "kind".into(),
            value: s.to_string(),
            suggestion: Kind::suggest(s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stable() {
        assert_eq!(Kind::all().len(), Kind::COUNT);
        for (i, k) in Kind::all().iter().enumerate() {
            assert_eq!(k.id() as usize, i);
            assert_eq!(Kind::from_id(k.id()), Some(*k));
            assert_eq!(Kind::from_name(k.as_str()), Some(*k));
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(Kind::from_id(Kind::COUNT as u8), None);
        // Pinned ids: indexes on disk depend on these.
        assert_eq!(Kind::SessionCreate.id(), 0);
        assert_eq!(Kind::FileOpen.id(), 8);
        assert_eq!(Kind::DnsQuery.id(), 21);
        assert_eq!(Kind::LedgerPruned.id(), 32);
        assert_eq!(Kind::FileMkdir.id(), 33);
        assert!(Kind::FileMkdir.is_file());
        assert_eq!(Kind::FileMknod.id(), 34);
        assert!(Kind::FileMknod.is_file());
    }

    #[test]
    fn suggestions() {
        assert_eq!(Kind::suggest("proces.exec"), Some(Kind::ProcessExec));
        assert_eq!(Kind::suggest("file.opne"), Some(Kind::FileOpen));
        assert_eq!(Kind::suggest("exec"), Some(Kind::ProcessExec));
        assert_eq!(Kind::suggest("zzzzzzzzzzzzzzzz"), None);
        assert!(Kind::LedgerCheckpoint.is_ledger());
        assert!(!Kind::Alert.is_ledger());
        assert_eq!(Kind::Alert.category(), "alert");
    }
}
