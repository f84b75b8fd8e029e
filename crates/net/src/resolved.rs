//! The addresses the session's names resolved to, with their TTLs: what lets the kernel
//! enforcement allow an address because an allowed name pointed at it, and what puts the domain
//! on `net.connect` events.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sandtrail_event::Decision;

use crate::policy::{canonical_ip, Verdict};

/// Added to every TTL: a client connects just after its lookup, and a zero or tiny TTL must
/// not make that connection fail. (Long-lived caches in clients that ignore TTLs are not
/// covered: such a client has to resolve again.)
pub const TTL_GRACE: Duration = Duration::from_secs(30);

/// One remembered answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEntry {
    /// The queried name (lower case, no trailing dot).
    pub domain: String,
    /// The decision on the name when it was resolved.
    pub decision: Decision,
    /// The rule that decided (e.g. `allow:domain:*.example.org`).
    pub rule: String,
    /// When the answer stops counting (`TTL + TTL_GRACE` after the answer).
    pub expires: Instant,
}

/// Told of every allowed answer as it is remembered, before the forwarder sends the answer to
/// the client (the kernel enforcement allows the address here, so the connect that follows
/// the lookup finds it allowed).
pub type AllowListener = Box<dyn Fn(IpAddr, &ResolvedEntry) + Send + Sync>;

/// Address → names it was resolved from. Shared (`Arc`) between the forwarder that fills it
/// and whatever enforces or annotates connections. Thread-safe.
#[derive(Default)]
pub struct ResolvedIps {
    map: Mutex<HashMap<IpAddr, Vec<ResolvedEntry>>>,
    listener: Mutex<Option<AllowListener>>,
}

impl std::fmt::Debug for ResolvedIps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedIps")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl ResolvedIps {
    /// A new, empty table.
    pub fn new() -> ResolvedIps {
        ResolvedIps::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Vec<ResolvedEntry>>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (each operation is one insert or retain): keep going.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the function told of each allowed answer ([`AllowListener`]), replacing any earlier one.
    pub fn set_listener(&self, listener: AllowListener) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Remembers that `domain` resolved to `ip` with `ttl` seconds, under `verdict`. A repeated
    /// answer for the same name replaces the older one. An allowed one goes to the listener
    /// before this returns.
    pub fn insert(&self, ip: IpAddr, domain: &str, verdict: &Verdict, ttl: u32, now: Instant) {
        let ip = canonical_ip(ip);
        let expires = now + Duration::from_secs(ttl as u64) + TTL_GRACE;
        let entry = ResolvedEntry {
            domain: domain.to_string(),
            decision: verdict.decision,
            rule: verdict.rule.clone(),
            expires,
        };
        {
            let mut map = self.lock();
            let list = map.entry(ip).or_default();
            list.retain(|e| e.domain != domain && e.expires > now);
            list.push(entry.clone());
        }
        if entry.decision == Decision::Allow {
            if let Some(f) = &*self.listener.lock().unwrap_or_else(|p| p.into_inner()) {
                f(ip, &entry);
            }
        }
    }

    /// The live entry through which `ip` is allowed (decision allow), if any: the one that
    /// lives longest.
    pub fn allowed_ip(&self, ip: IpAddr, now: Instant) -> Option<ResolvedEntry> {
        let ip = canonical_ip(ip);
        self.lock()
            .get(&ip)?
            .iter()
            .filter(|e| e.expires > now && e.decision == Decision::Allow)
            .max_by_key(|e| e.expires)
            .cloned()
    }

    /// The most recent live name `ip` was resolved from, whatever its decision (for the
    /// domain of a connection event).
    pub fn domain_of(&self, ip: IpAddr, now: Instant) -> Option<ResolvedEntry> {
        let ip = canonical_ip(ip);
        self.lock()
            .get(&ip)?
            .iter()
            .filter(|e| e.expires > now)
            .max_by_key(|e| e.expires)
            .cloned()
    }

    /// Drops expired entries; returns how many addresses are left.
    pub fn prune(&self, now: Instant) -> usize {
        let mut map = self.lock();
        map.retain(|_, list| {
            list.retain(|e| e.expires > now);
            !list.is_empty()
        });
        map.len()
    }

    /// Number of addresses with at least one entry (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(rule: &str) -> Verdict {
        Verdict {
            decision: Decision::Allow,
            rule: rule.into(),
            domain: None,
        }
    }

    #[test]
    fn ttl_aware() {
        let t = ResolvedIps::new();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(ip, "a.test", &allow("allow:domain:a.test"), 10, now);
        let e = t.allowed_ip(ip, now).unwrap();
        assert_eq!(e.domain, "a.test");
        assert_eq!(e.rule, "allow:domain:a.test");
        assert_eq!(e.expires, now + Duration::from_secs(10) + TTL_GRACE);
        let edge = now + Duration::from_secs(10) + TTL_GRACE;
        assert!(t.allowed_ip(ip, edge - Duration::from_millis(1)).is_some());
        assert!(t.allowed_ip(ip, edge).is_none());
        // Mapped form finds it too.
        assert!(t
            .allowed_ip("::ffff:192.0.2.1".parse().unwrap(), now)
            .is_some());
        assert_eq!(t.prune(edge), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn longest_living_allowed_entry_wins_and_log_entries_only_name() {
        let t = ResolvedIps::new();
        let now = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        t.insert(ip, "a.test", &allow("allow:domain:a.test"), 10, now);
        t.insert(ip, "b.test", &allow("allow:domain:b.test"), 100, now);
        let logged = Verdict {
            decision: Decision::Log,
            rule: "default:open".into(),
            domain: None,
        };
        t.insert(ip, "c.test", &logged, 1000, now);
        assert_eq!(t.allowed_ip(ip, now).unwrap().domain, "b.test");
        assert_eq!(t.domain_of(ip, now).unwrap().domain, "c.test");
        // Re-resolving a name replaces its entry.
        t.insert(ip, "a.test", &allow("allow:domain:a.test"), 5000, now);
        assert_eq!(t.allowed_ip(ip, now).unwrap().domain, "a.test");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_listener_hears_allowed_answers_only_before_insert_returns() {
        let t = ResolvedIps::new();
        let heard = std::sync::Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        t.set_listener(Box::new(move |ip, e| {
            h.lock()
                .unwrap()
                .push((ip, e.domain.clone(), e.rule.clone()))
        }));
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.insert(ip, "a.example", &allow("allow:domain:a.example"), 60, now);
        let deny = Verdict {
            decision: Decision::Deny,
            rule: "deny:domain:b.example".into(),
            domain: None,
        };
        t.insert(ip, "b.example", &deny, 60, now);
        assert_eq!(
            *heard.lock().unwrap(),
            vec![(
                ip,
                "a.example".to_string(),
                "allow:domain:a.example".to_string()
            )]
        );
    }
}
