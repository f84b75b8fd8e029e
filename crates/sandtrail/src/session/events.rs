//! The lifecycle events of a session, built from what the sandbox knows.

use sandtrail_event::{
    Event, FsState, Kind, LimitAction, LimitInfo, LimitType, PauseReason, Resources, SessionInfo,
    Snapshot, Source, TerminateReason, Usage,
};
use sandtrail_sandbox::Limits;
use sandtrail_store::now_ns;

/// Who and what a session is, as given on the command line or by the API.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// Session id.
    pub session_id: String,
    /// Tenant.
    pub tenant: Option<String>,
    /// User who started it.
    pub user: Option<String>,
    /// Template or image name.
    pub template: Option<String>,
}

/// Builds events of one session.
pub struct Lifecycle {
    /// Who the session is.
    pub id: Identity,
    /// This host.
    pub host_id: String,
}

/// The resources block of create/start events (`disk_bytes`: the writable layer's quota;
/// `net_rate_bps`: the veth's rate limit).
pub fn resources(
    limits: &Limits,
    disk_bytes: Option<u64>,
    net_rate_bps: Option<u64>,
    timeout_s: Option<u64>,
) -> Resources {
    Resources {
        memory_bytes: limits.memory_bytes,
        cpus: limits.cpus,
        pids: limits.pids,
        disk_bytes,
        net_rate_bps,
        timeout_s,
    }
}

impl Lifecycle {
    fn event(&self, kind: Kind, session: SessionInfo) -> Event {
        let mut e = Event::new(
            kind,
            Source::Sandbox,
            Some(self.id.session_id.clone()),
            &self.host_id,
            now_ns(),
        );
        e.session = Some(Box::new(session));
        e
    }

    /// session.create
    pub fn create(&self, res: Resources) -> Event {
        self.event(
            Kind::SessionCreate,
            SessionInfo {
                tenant_id: self.id.tenant.clone(),
                user: self.id.user.clone(),
                template: self.id.template.clone(),
                resources: Some(res),
                ..Default::default()
            },
        )
    }

    /// session.start
    pub fn start(&self, limits: Resources) -> Event {
        self.event(
            Kind::SessionStart,
            SessionInfo {
                host_id: Some(self.host_id.clone()),
                limits: Some(limits),
                ..Default::default()
            },
        )
    }

    /// session.pause / session.resume
    pub fn pause_resume(&self, pause: bool, reason: PauseReason, actor: &str) -> Event {
        self.event(
            if pause {
                Kind::SessionPause
            } else {
                Kind::SessionResume
            },
            SessionInfo {
                reason: Some(reason.into()),
                actor: Some(actor.to_string()),
                ..Default::default()
            },
        )
    }

    /// session.terminate
    pub fn terminate(
        &self,
        reason: TerminateReason,
        exit_code: Option<i32>,
        signal: Option<i32>,
        actor: Option<&str>,
        usage: Usage,
    ) -> Event {
        let mut e = self.event(
            Kind::SessionTerminate,
            SessionInfo {
                reason: Some(reason.into()),
                actor: actor.map(str::to_string),
                exit_code,
                signal,
                usage: Some(usage),
                ..Default::default()
            },
        );
        if !matches!(reason, TerminateReason::Exit) {
            e.severity = sandtrail_event::Severity::Medium;
        }
        e
    }

    /// session.cleanup
    pub fn cleanup(&self, fs_state: FsState, snapshot: Option<Snapshot>) -> Event {
        self.event(
            Kind::SessionCleanup,
            SessionInfo {
                fs_state: Some(fs_state),
                snapshot,
                ..Default::default()
            },
        )
    }

    /// audit.loss: `count` records of `source` were lost.
    pub fn loss(&self, source: &str, count: u64) -> Event {
        let mut e = Event::new(
            Kind::AuditLoss,
            Source::Sandbox,
            Some(self.id.session_id.clone()),
            &self.host_id,
            now_ns(),
        );
        e.severity = sandtrail_event::Severity::High;
        e.loss = Some(Box::new(sandtrail_event::LossInfo {
            source: source.into(),
            count,
            window_ns: None,
        }));
        e
    }

    /// limit.hit
    pub fn limit(&self, info: LimitInfo) -> Event {
        let mut e = Event::new(
            Kind::LimitHit,
            Source::Sandbox,
            Some(self.id.session_id.clone()),
            &self.host_id,
            now_ns(),
        );
        e.severity = match info.action {
            LimitAction::Kill => sandtrail_event::Severity::High,
            _ => sandtrail_event::Severity::Low,
        };
        e.limit = Some(Box::new(info));
        e
    }
}

/// A limit hit of `kind` with the measured value, the limit and the action.
pub fn limit_info(
    limit_type: LimitType,
    measured: u64,
    limit: u64,
    unit: &str,
    action: LimitAction,
) -> LimitInfo {
    LimitInfo {
        limit_type,
        measured,
        limit,
        unit: unit.into(),
        action,
        ..Default::default()
    }
}
