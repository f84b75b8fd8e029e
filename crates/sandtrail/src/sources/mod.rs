//! Where events come from besides the session's own lifecycle: the kernel ([`kernel`]: process,
//! file and, through [`egress`]'s programs, network records). (The DNS forwarder and seccomp
//! denials are started per session in `session/`; the forwarder's records are joined with the
//! kernel's in [`kernel`].)

pub mod egress;
pub mod kernel;
