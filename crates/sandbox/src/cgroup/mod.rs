//! cgroups: see the crate docs. (being written)
