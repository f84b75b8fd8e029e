//! The per-session network rate limit: token-bucket shapers on the host side of the veth, and
//! their kernel counters.
//!
//! Both directions are shaped by a `tbf` qdisc at the same rate, each on a host-side device:
//!
//! - **download** (host → sandbox): `tbf` as the root qdisc of the veth's host end
//!   `st-<hash8>`, whose egress is the traffic going into the sandbox;
//! - **upload** (sandbox → host): traffic from the sandbox arrives on the host end's *ingress*,
//!   where a qdisc cannot delay packets. An `ingress` qdisc with a match-everything `u32`
//!   filter redirects (`mirred egress redirect`) every packet to an IFB device
//!   `st-<hash8>-ifb`, whose root `tbf` shapes it before the IFB hands it back to the stack as
//!   if it had just arrived on the host end. (A `police` action on the ingress would avoid the
//!   IFB, but it can only drop, not delay, and the kernel of this project's machines is built
//!   without it: no `CONFIG_NET_ACT_POLICE`, nor `cls_matchall`, hence `u32`.)
//!
//! The sandbox cannot change any of this: all of it is in the host's network namespace. The
//! veth's qdiscs and filter go with the veth; the IFB is a device of its own, so it carries the
//! same `sandtrail:<session>` alias as the veth, is deleted by [`SessionNet::teardown`] and,
//! after a crash, by [`sweep`].
//!
//! Sizing (both shapers alike), for a rate of R bytes/s:
//!
//! - `burst` (the bucket): 10 ms of traffic at R, at least [`MIN_BURST`] bytes. tbf can never
//!   send a frame larger than its bucket (a full Ethernet frame is 1514 bytes; larger GSO
//!   packets are split first). 10 ms covers a timer tick even at HZ=100, so the shaper keeps
//!   up with the rate when its wake-up comes late, and does not need one per packet. The
//!   bucket is also what may leave at line rate after an idle period: small against a
//!   second's worth of traffic (at low rates the 4 KiB floor is a few seconds' worth).
//! - `limit` (the queue, in bytes): the bucket plus 100 ms of traffic at R, at least
//!   [`MIN_QUEUE`] bytes. Enough for TCP to keep the link busy, short enough that a saturated
//!   link adds at most about 100 ms of delay (at rates below ~650 kbit/s the floor dominates
//!   and the delay can be longer). Packets arriving at a full queue are dropped.
//!
//! [`SessionNet::teardown`]: super::SessionNet::teardown
//! [`sweep`]: super::sweep

use super::{run_with_hint, NetError};

/// The lowest rate accepted, in bits/s (1000 bytes/s).
pub const MIN_RATE_BPS: u64 = 8_000;
/// The highest rate accepted, in bits/s (100 Gbit/s): with these sizes, tc's 32-bit queue
/// limit overflows at about 300 Gbit/s.
pub const MAX_RATE_BPS: u64 = 100_000_000_000;
/// Smallest token bucket, bytes: two full-size Ethernet frames (2 × 1514) with room to spare.
pub const MIN_BURST: u64 = 4096;
/// Smallest queue beyond the bucket, bytes: about five full-size frames.
pub const MIN_QUEUE: u64 = 8192;
/// Suffix of the IFB device's name (after the host end's name).
pub const IFB_SUFFIX: &str = "-ifb";

/// Checks a rate limit in bits/s.
pub fn validate_rate(bps: u64) -> Result<(), NetError> {
    if bps < MIN_RATE_BPS {
        return Err(NetError::InvalidConfig(format!(
            "network rate limit {bps} bit/s is below the minimum of {MIN_RATE_BPS} bit/s (8 kbit/s): give a higher rate, or none for an unlimited network"
        )));
    }
    if bps > MAX_RATE_BPS {
        return Err(NetError::InvalidConfig(format!(
            "network rate limit {bps} bit/s is above the maximum of {MAX_RATE_BPS} bit/s (100 Gbit/s): give a lower rate, or none for an unlimited network"
        )));
    }
    Ok(())
}

/// The IFB device that shapes uploads, for the host end `host_if` (15 characters, the most a
/// Linux interface name may have).
pub fn ifb_name(host_if: &str) -> String {
    format!("{host_if}{IFB_SUFFIX}")
}

/// Token bucket size in bytes for `bps`: 10 ms at the rate, at least [`MIN_BURST`].
pub fn burst_bytes(bps: u64) -> u64 {
    (bps / 8 / 100).max(MIN_BURST)
}

/// Queue limit in bytes for `bps`: the bucket plus max(100 ms at the rate, [`MIN_QUEUE`]).
pub fn queue_bytes(bps: u64) -> u64 {
    burst_bytes(bps) + (bps / 8 / 10).max(MIN_QUEUE)
}

/// Counters of one direction's shaper (a `tbf` qdisc), cumulative since setup. tc reports
/// `drops` and `overlimits` as 32-bit counters, so they wrap after 2^32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Bytes the shaper let through (link-layer bytes, Ethernet header included).
    pub bytes_sent: u64,
    /// Packets the shaper let through (a GSO packet counts as its segments).
    pub packets_sent: u64,
    /// Packets dropped because the shaper's queue was full (tbf `drops`): the rate limit
    /// refused them.
    pub dropped: u64,
    /// Times the shaper held back the packet at the head of its queue because the bucket did
    /// not have enough tokens (tbf `overlimits`): the rate limit delayed traffic. Counted per
    /// check, not per packet: a packet that is checked again before enough tokens have
    /// accrued counts again, so this can exceed the number of delayed packets.
    pub overlimits: u64,
}

/// Counters of a session's rate limit, per direction, as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateStats {
    /// Host → sandbox: the `tbf` at the root of the veth's host end.
    pub download: ShaperStats,
    /// Sandbox → host: the `tbf` at the root of the IFB the host end's ingress redirects to.
    pub upload: ShaperStats,
}

impl RateStats {
    /// Packets dropped in both directions.
    pub fn dropped(&self) -> u64 {
        self.download.dropped + self.upload.dropped
    }

    /// Overlimit (delay) events in both directions.
    pub fn overlimits(&self) -> u64 {
        self.download.overlimits + self.upload.overlimits
    }
}

const TC_HINT: &str = "the rate limit needs root and a kernel with the tbf and ingress qdiscs, the u32 classifier, the mirred action and IFB devices (CONFIG_NET_SCH_TBF, CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED, CONFIG_IFB, or modprobe sch_tbf sch_ingress cls_u32 act_mirred ifb); without them, run without a network rate limit";

/// The tc arguments that put a `tbf` at the root of `dev`.
pub(super) fn tbf_args(dev: &str, bps: u64) -> Vec<String> {
    [
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "handle",
        "1:",
        "tbf",
        "rate",
        &format!("{bps}bit"),
        "burst",
        &burst_bytes(bps).to_string(),
        "limit",
        &queue_bytes(bps).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The tc arguments of the filter that redirects everything arriving on `host_if` to `ifb`.
pub(super) fn redirect_args(host_if: &str, ifb: &str) -> Vec<String> {
    [
        "filter", "add", "dev", host_if, "parent", "ffff:", "protocol", "all", "u32", "match",
        "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn tc(args: &[String]) -> Result<String, NetError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with_hint("tc", &args, None, None, TC_HINT)
}

/// Creates the IFB `ifb`, with `alias`, up.
pub(super) fn create_ifb(ifb: &str, alias: &str) -> Result<(), NetError> {
    // One `ip` process for the three steps: if sandtrail dies meanwhile, `ip` still finishes,
    // so the IFB never exists without the alias the sweep recognizes it by.
    run_with_hint(
        "ip",
        &["-batch", "-"],
        Some(&format!(
            "link add name {ifb} type ifb\nlink set dev {ifb} alias {alias} up\n"
        )),
        None,
        TC_HINT,
    )?;
    Ok(())
}

/// Installs both shapers at `bps`: downloads on `host_if`'s egress, uploads redirected from
/// its ingress to `ifb`. The caller removes the veth and the IFB if this fails.
pub(super) fn shape(host_if: &str, ifb: &str, bps: u64) -> Result<(), NetError> {
    // The upload shaper exists before anything is redirected to it.
    tc(&tbf_args(ifb, bps))?;
    tc(&tbf_args(host_if, bps))?;
    tc(&[
        "qdisc".into(),
        "add".into(),
        "dev".into(),
        host_if.into(),
        "handle".into(),
        "ffff:".into(),
        "ingress".into(),
    ])?;
    tc(&redirect_args(host_if, ifb))?;
    Ok(())
}

/// Reads both shapers' counters.
pub(super) fn read_stats(host_if: &str, ifb: &str) -> Result<RateStats, NetError> {
    let read = |dev: &str| -> Result<ShaperStats, NetError> {
        let args = ["-s", "-j", "qdisc", "show", "dev", dev];
        let out = run_with_hint(
            "tc",
            &args,
            None,
            None,
            "the session network must still be set up: read the counters before teardown",
        )?;
        parse_tbf(&out).map_err(|detail| NetError::TcOutput {
            cmd: format!("tc {}", args.join(" ")),
            detail,
        })
    };
    Ok(RateStats {
        download: read(host_if)?,
        upload: read(ifb)?,
    })
}

/// The root `tbf`'s counters out of `tc -s -j qdisc show dev X` (iproute2 6.1 prints an array
/// of qdisc objects, with the counters as top-level fields of each).
pub(super) fn parse_tbf(json: &str) -> Result<ShaperStats, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json:?}"))?;
    let qdiscs = v
        .as_array()
        .ok_or_else(|| format!("not a JSON array: {json:?}"))?;
    let tbf = qdiscs
        .iter()
        .find(|q| q["kind"] == "tbf" && q["root"] == true)
        .ok_or_else(|| {
            format!(
                "no root tbf qdisc: the rate limit was removed from outside sandtrail (qdiscs: {json})"
            )
        })?;
    let field = |name: &str| {
        tbf[name]
            .as_u64()
            .ok_or_else(|| format!("the tbf qdisc has no counter {name:?} (run tc with -s): {tbf}"))
    };
    Ok(ShaperStats {
        bytes_sent: field("bytes")?,
        packets_sent: field("packets")?,
        dropped: field("drops")?,
        overlimits: field("overlimits")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated() {
        assert!(validate_rate(MIN_RATE_BPS).is_ok());
        assert!(validate_rate(MAX_RATE_BPS).is_ok());
        let e = validate_rate(7_999).unwrap_err().to_string();
        assert!(e.contains("7999 bit/s is below the minimum of 8000"), "{e}");
        let e = validate_rate(MAX_RATE_BPS + 1).unwrap_err().to_string();
        assert!(e.contains("above the maximum"), "{e}");
    }

    #[test]
    fn sizes() {
        // 8 kbit/s and 1 Mbit/s: the floors.
        assert_eq!(
            (burst_bytes(8_000), queue_bytes(8_000)),
            (4096, 4096 + 8192)
        );
        assert_eq!(
            (burst_bytes(1_000_000), queue_bytes(1_000_000)),
            (4096, 4096 + 12_500)
        );
        // 100 Mbit/s: 10 ms and 100 ms at the rate.
        assert_eq!(
            (burst_bytes(100_000_000), queue_bytes(100_000_000)),
            (125_000, 125_000 + 1_250_000)
        );
        // The largest rate still fits tc's u32 limit.
        assert!(queue_bytes(MAX_RATE_BPS) < u32::MAX as u64);
        assert_eq!(ifb_name("st-0123abcd"), "st-0123abcd-ifb");
        assert_eq!(ifb_name("st-0123abcd").len(), 15);
    }

    #[test]
    fn commands() {
        assert_eq!(
            tbf_args("st-1", 1_000_000).join(" "),
            "qdisc add dev st-1 root handle 1: tbf rate 1000000bit burst 4096 limit 16596"
        );
        assert_eq!(
            redirect_args("st-1", "st-1-ifb").join(" "),
            "filter add dev st-1 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev st-1-ifb"
        );
    }

    #[test]
    fn parses_tc_6_1_json() {
        // Verbatim from `tc -s -j qdisc show dev st-...` (iproute2 6.1) after a transfer.
        let host_end = r#"[{"kind":"tbf","handle":"1:","root":true,"refcnt":3,"options":{"rate":125000,"burst":4096,"lat":98304},"bytes":1139336,"packets":1322,"drops":589,"overlimits":2692,"requeues":0,"backlog":0,"qlen":0},{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{},"bytes":1295160,"packets":1409,"drops":0,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(
            parse_tbf(host_end).unwrap(),
            ShaperStats {
                bytes_sent: 1_139_336,
                packets_sent: 1322,
                dropped: 589,
                overlimits: 2692
            }
        );
        let ifb = r#"[{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{"rate":125000,"burst":4096,"lat":98304},"bytes":1138964,"packets":1274,"drops":110,"overlimits":1578,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(parse_tbf(ifb).unwrap().dropped, 110);
        // The shaper is gone, or tc ran without -s.
        let e =
            parse_tbf(r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#)
                .unwrap_err();
        assert!(e.contains("no root tbf"), "{e}");
        let e = parse_tbf(
            r#"[{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{"rate":125000,"burst":4096,"lat":98304}}]"#,
        )
        .unwrap_err();
        assert!(e.contains("no counter \"bytes\""), "{e}");
        assert!(parse_tbf("Cannot find device").is_err());
    }
}
