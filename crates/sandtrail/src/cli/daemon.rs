//! `sandtrail daemon`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use sandtrail_store::Layout;

use crate::daemon::{self, auth::Tokens, Config};

/// Arguments of `daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Unix socket of the API (default: STATE/run/api.sock, root only, invisible to sessions).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Also serve the API on this TCP address, e.g. 127.0.0.1:7878 (needs --token-file).
    /// Prefer a loopback address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// File of bearer tokens, one `NAME TOKEN` per line (mode 0600). Required for --listen;
    /// when given, the Unix socket requires a token too. The token's NAME is logged as the
    /// actor of what it does.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Most argv bytes recorded per exec (NULs included), e.g. 4K; at most and by default 64K.
    /// Longer argument lists are cut and marked `argv_truncated`.
    #[arg(long, value_name = "SIZE", value_parser = super::run::parse_argv_cap)]
    pub argv_cap: Option<u32>,
    /// Size of the ring buffer the kernel programs write process and file records to, shared
    /// by every session (a power of two, 4K to 1G; default 8M). Records that find it full are
    /// reported as `audit.loss` events.
    #[arg(long, value_name = "SIZE", value_parser = super::run::parse_ring)]
    pub kernel_ring: Option<u32>,
}

/// Run `daemon`.
pub fn run(layout: &Layout, a: DaemonArgs) -> Result<ExitCode> {
    if let Some(cap) = a.argv_cap {
        crate::sources::kernel::set_argv_cap(cap);
    }
    if let Some(bytes) = a.kernel_ring {
        crate::sources::kernel::set_ring_bytes(bytes);
    }
    let tokens = a.token_file.as_deref().map(Tokens::load).transpose()?;
    let cfg = Config {
        socket: a.socket.unwrap_or_else(|| daemon::default_socket(layout)),
        tcp: a.listen,
        tokens,
    };
    daemon::run(layout.clone(), cfg)?;
    Ok(ExitCode::SUCCESS)
}
