//! Raw system calls. (being written)
