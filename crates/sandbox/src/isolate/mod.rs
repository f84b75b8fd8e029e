//! Process isolation: see the crate docs. (being written)
