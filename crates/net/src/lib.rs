//! sandtrail's user-space network side: the egress [`policy`], the host's package
//! [`registries`] (discovered at run time), the table of [`resolved`] addresses, the
//! [`burst`] detector that raises `policy.violation`, the per-session [`dns`] forwarder, and
//! [`l7`], which names a flow's application protocol (TLS SNI, HTTP host, SSH, DNS) from the
//! first bytes its socket sent.
//!
//! Kernel enforcement (cgroup connect/sendmsg programs), flow byte counts and attribution of
//! queries to processes come with the BPF crate; they consult [`policy::Policy::decide_addr`]
//! and [`resolved::ResolvedIps`].

#![warn(missing_docs)]

pub mod burst;
pub mod dns;
pub mod l7;
pub mod policy;
pub mod registries;
pub mod resolved;
