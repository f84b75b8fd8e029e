//! The query index (SQLite, WAL mode): derived from the segments, rebuilt when missing.

pub mod query;
pub mod run;
pub mod schema;
pub mod writer;

pub use query::{BlockRow, Index, SessionFilter, SessionRow};
pub use writer::{Indexer, NO_SESSION};
