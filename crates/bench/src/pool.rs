//! `pool`: one mode's slowdown against `unaudited` over the rounds of several `overhead` runs.
//!
//! One `overhead` run of 21 to 31 rounds on a shared 2-vCPU host gives a median slowdown that
//! moves by two points or more from run to run. Pooling the rounds of many runs (each round's
//! mode against the unaudited workload of the same round, which ran seconds before it) gives
//! one estimate with a confidence interval, so that a bar can be judged by more than one run.
//! The input is what `overhead` prints on stderr, one line per round:
//! `round 3/31: unaudited 1.018s, sandtrail 1.042s, sealed 1.049s`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One round: each mode's wall time in seconds, in the order printed.
type Round = Vec<(String, f64)>;

/// Parses one `round K/N: mode T.TTTs, ...` line; `None` for any other line.
fn parse_round(line: &str) -> Option<Result<Round, String>> {
    let rest = line.strip_prefix("round ")?;
    let (_, times) = rest.split_once(": ")?;
    let parse = |item: &str| -> Result<(String, f64), String> {
        let (name, t) = item
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("`{item}` is not `MODE SECONDSs`"))?;
        let secs = t
            .strip_suffix('s')
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| format!("`{t}` (mode {name}) is not a time like `1.018s`"))?;
        Ok((name.to_string(), secs))
    };
    Some(times.split(", ").map(parse).collect())
}

/// The slowdowns in % of `mode` against `unaudited` in each round of the run logged in `text`
/// (none when the run did not have the mode).
fn slowdowns(text: &str, mode: &str, file: &Path) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(round) = parse_round(line) else {
            continue;
        };
        let round = round.map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), i + 1))?;
        let time = |m: &str| round.iter().find(|(n, _)| n == m).map(|&(_, t)| t);
        let Some(base) = time("unaudited") else {
            bail!(
                "{}:{}: the round has no `unaudited` time to compare with",
                file.display(),
                i + 1
            );
        };
        if let Some(t) = time(mode) {
            out.push((t / base - 1.0) * 100.0);
        }
    }
    Ok(out)
}

/// The median of `v` (sorted in place) and a 95 % confidence interval for it from order
/// statistics (distribution-free: the ranks n/2 ± 0.98·√n of the sorted values, the normal
/// approximation of the binomial; 1-based ranks returned for the printout).
fn median_ci(v: &mut [f64]) -> (f64, (f64, usize), (f64, usize)) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let half = 0.98 * (n as f64).sqrt();
    let lo = ((n as f64 / 2.0 - half).floor() as usize).clamp(1, n);
    let hi = ((n as f64 / 2.0 + half).ceil() as usize + 1).clamp(1, n);
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, (v[lo - 1], lo), (v[hi - 1], hi))
}

/// Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom (more: the last,
/// which is then a little wide).
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The mean of `v` (two values at least) and its 95 % t-interval.
fn mean_ci(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let t = T95[(v.len() - 2).min(T95.len() - 1)];
    let half = t * (var / n).sqrt();
    (mean, mean - half, mean + half)
}

/// What an interval says of `bar`; `more` says what would narrow it ("rounds", "runs").
fn verdict(lo: f64, hi: f64, bar: f64, more: &str) -> String {
    if hi <= bar {
        "the whole interval is within it".into()
    } else if lo > bar {
        "the whole interval is over it".into()
    } else {
        format!("the interval straddles it: more {more} are needed to tell")
    }
}

/// Prints each run's median and the pooled median with its confidence interval against `bar`;
/// with three runs or more, also the mean of the runs' medians with its t-interval (each run one
/// observation: this one does not assume the rounds independent of each other).
pub fn pool(mode: &str, bar: f64, files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        bail!("name at least one file holding an `overhead` run's round lines (its stderr)");
    }
    let mut all = Vec::new();
    let mut medians = Vec::new();
    println!("mode {mode} against unaudited, round by round (each round's two times side by side)");
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut r = slowdowns(&text, mode, f)?;
        if r.is_empty() {
            println!("  {}: no round of mode {mode}: left out", f.display());
            continue;
        }
        all.extend_from_slice(&r);
        let (med, _, _) = median_ci(&mut r);
        medians.push(med);
        println!("  {}: {} rounds, median {med:+.1} %", f.display(), r.len());
    }
    if all.is_empty() {
        bail!(
            "no round of mode `{mode}` in any file (expected lines like `round 1/31: unaudited 1.018s, {mode} 1.049s`, from `overhead`'s stderr)"
        );
    }
    let runs = medians.len();
    let n = all.len();
    let mean = all.iter().sum::<f64>() / n as f64;
    let (med, (lo, lo_rank), (hi, hi_rank)) = median_ci(&mut all);
    println!(
        "pooled: {runs} runs, {n} rounds: median {med:+.1} %, 95 % confidence interval of the median {lo:+.1} to {hi:+.1} % (rounds ranked {lo_rank} and {hi_rank} of {n}), mean {mean:+.1} %"
    );
    println!("bar {bar:+.1} %: {}", verdict(lo, hi, bar, "rounds"));
    if runs >= 3 {
        let (mean, lo, hi) = mean_ci(&medians);
        println!(
            "runs as units: the {runs} runs' medians average {mean:+.1} %, 95 % t-interval {lo:+.1} to {hi:+.1} %\nbar {bar:+.1} %: {}",
            verdict(lo, hi, bar, "runs")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_lines_give_each_modes_slowdown_and_other_lines_are_skipped() {
        let text = "workload: 400 x /bin/true\n\
                    round 1/2: unaudited 1.000s, sandtrail 1.030s, sealed 1.050s\n\
                    the sealed mode's feeding thread runs on any CPU\n\
                    round 2/2: unaudited 0.800s, sandtrail 0.820s\n";
        let p = Path::new("run.err");
        let r = slowdowns(text, "sealed", p).unwrap();
        assert_eq!(r.len(), 1);
        assert!((r[0] - 5.0).abs() < 1e-9, "{r:?}");
        let r = slowdowns(text, "sandtrail", p).unwrap();
        assert_eq!(r.len(), 2);
        assert!(
            (r[0] - 3.0).abs() < 1e-9 && (r[1] - 2.5).abs() < 1e-9,
            "{r:?}"
        );
    }

    #[test]
    fn bad_input_names_the_file_the_line_and_what_was_wrong() {
        let p = Path::new("run.err");
        let e = slowdowns("round 1/2: unaudited 1.0s, sealed fast\n", "sealed", p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run.err:1: `fast` (mode sealed) is not a time like `1.018s`"
        );
        let e = slowdowns("round 1/2: sandtrail 1.0s, sealed 1.1s\n", "sealed", p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run.err:1: the round has no `unaudited` time to compare with"
        );
        assert_eq!(
            slowdowns("round 1/2: unaudited 1.0s\n", "sealed", p).unwrap(),
            Vec::<f64>::new()
        );
        let e = pool("sealed", 5.0, &[]).unwrap_err();
        assert!(e.to_string().starts_with("name at least one file"), "{e}");
    }

    #[test]
    fn the_median_interval_comes_from_order_statistics() {
        // 100 values 1..=100: median 50.5; ranks 50 ± 9.8 → 40 and 61.
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let (med, (lo, lo_rank), (hi, hi_rank)) = median_ci(&mut v);
        assert_eq!((med, lo, lo_rank, hi, hi_rank), (50.5, 40.0, 40, 61.0, 61));
        // 21 values: median the 11th; ranks 10.5 ± 4.49 → 6 and 16.
        let mut v: Vec<f64> = (1..=21).map(f64::from).collect();
        let (med, (lo, lo_rank), (hi, hi_rank)) = median_ci(&mut v);
        assert_eq!((med, lo, lo_rank, hi, hi_rank), (11.0, 6.0, 6, 16.0, 16));
    }

    #[test]
    fn runs_as_units_give_a_t_interval_of_their_medians() {
        // 1, 2, 3: mean 2, sd 1, t(2 df) 4.303 → 2 ± 4.303/√3 = 2 ± 2.484.
        let (mean, lo, hi) = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(mean, 2.0);
        assert!(
            (lo - -0.4844).abs() < 1e-3 && (hi - 4.4844).abs() < 1e-3,
            "{lo} {hi}"
        );
        // 40 runs: the 30-df quantile (2.042), sd of 1..=40 = 11.690, se 1.848.
        let v: Vec<f64> = (1..=40).map(f64::from).collect();
        let (mean, lo, hi) = mean_ci(&v);
        assert_eq!(mean, 20.5);
        assert!((hi - mean - 3.774).abs() < 1e-3, "{hi}");
        assert!((mean - lo - 3.774).abs() < 1e-3, "{lo}");
        assert_eq!(
            verdict(-0.5, 4.5, 5.0, "runs"),
            "the whole interval is within it"
        );
        assert_eq!(
            verdict(5.1, 6.0, 5.0, "runs"),
            "the whole interval is over it"
        );
        assert_eq!(
            verdict(4.0, 5.2, 5.0, "runs"),
            "the interval straddles it: more runs are needed to tell"
        );
    }
}
