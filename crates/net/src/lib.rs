//! sandtrail's user-space network side: the egress [`policy`], the host's package
//! [`registries`] (discovered at run time), the table of [`resolved`] addresses, the
//! [`burst`] detector that raises `policy.violation`, and the per-session [`dns`] forwarder.
//!
//! Kernel enforcement (cgroup connect/sendmsg programs), flow byte counts and attribution of
//! queries to processes come with the BPF crate; they consult [`policy::Policy::decide_addr`]
//! and [`resolved::ResolvedIps`].

#![warn(missing_docs)]

pub mod burst;
pub mod dns;
pub mod policy;
pub mod registries;
pub mod resolved;
