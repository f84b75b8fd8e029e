//! Where events come from besides the session's own lifecycle: the kernel ([`kernel`]).
//! (The DNS forwarder and seccomp denials are started per session in `session/`.)

pub mod kernel;
