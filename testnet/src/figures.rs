//! Figures a program can read: every benchmark ends its output with one line of JSON, and
//! `testnet compare` checks such lines against the reference figures in `docs/benchmarks.md`.
//!
//! A JSON line is a flat object: `"bench"` names the benchmark, every other key one figure
//! (numbers; the parameters of the run and a few flags ride along). The name of a key says
//! which way is better, so the line describes itself:
//!
//! - keys ending in `_s` or `_ms` (times), `_kb` or `_mb` (sizes) or `_size_ratio` (kith's
//!   size over another tool's) are better **lower**;
//! - every other number (ratios written so that more is better for kith, MB/s, requests per
//!   second) is better **higher**.
//!
//! The reference is the fenced `json` block under the heading [`REFERENCE_HEADING`]: an
//! object of benchmarks, each an object of figures. A figure regressed when it moved the
//! wrong way by more than the tolerance ([`TOLERANCE`], 30%): a higher-is-better figure fell
//! below `(1 - t)` times its reference, a lower-is-better one rose above `(1 + t)` times it.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

/// How far a figure may move the wrong way before it counts as regressed (0.3: 30%).
pub const TOLERANCE: f64 = 0.3;

/// The heading whose first ```` ```json ```` block holds the reference figures.
pub const REFERENCE_HEADING: &str = "Reference figures for scripts/bench-check";

/// Key endings of figures that are better lower.
const LOWER_IS_BETTER: [&str; 5] = ["_s", "_ms", "_kb", "_mb", "_size_ratio"];

/// Reference figures: benchmark name, then figure name, then value.
pub type Reference = BTreeMap<String, BTreeMap<String, f64>>;

/// A benchmark's figures as one line of JSON (no newline), for the end of its output.
pub fn line<T: Serialize>(figures: &T) -> Result<String> {
    serde_json::to_string(figures).context("cannot write the figures as JSON")
}

/// `x` rounded to `digits` decimals, so the JSON line stays readable.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Ratios, MB/s, requests per second.
    Higher,
    /// Times and sizes.
    Lower,
}

impl Better {
    /// Which way the figure named `key` is better, from the ending of its name.
    pub fn of(key: &str) -> Better {
        if LOWER_IS_BETTER.iter().any(|end| key.ends_with(end)) {
            Better::Lower
        } else {
            Better::Higher
        }
    }
}

/// A benchmark's JSON line, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The benchmark (`"bench"`).
    pub bench: String,
    /// Its figures and parameters.
    pub figures: Map<String, Value>,
}

/// Reads the JSON line at the end of a benchmark's output.
pub fn last_line(output: &str) -> Result<Measured> {
    let last =
        output.lines().rev().find(|l| !l.trim().is_empty()).context("the output is empty")?;
    let figures: Map<String, Value> = serde_json::from_str(last.trim())
        .with_context(|| format!("the last line is not a JSON object: {last}"))?;
    let bench = figures
        .get("bench")
        .and_then(Value::as_str)
        .with_context(|| format!("the JSON line names no \"bench\": {last}"))?
        .to_string();
    Ok(Measured { bench, figures })
}

/// Reads the reference block (the first ```` ```json ```` fence under [`REFERENCE_HEADING`])
/// from a Markdown document.
pub fn reference(markdown: &str) -> Result<Reference> {
    let mut lines = markdown.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.contains(REFERENCE_HEADING))
        .with_context(|| format!("no heading \"{REFERENCE_HEADING}\""))?;
    lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("```json"))
        .with_context(|| format!("no ```json block under \"{REFERENCE_HEADING}\""))?;
    let block: Vec<&str> = lines.take_while(|l| !l.trim_start().starts_with("```")).collect();
    serde_json::from_str(&block.join("\n")).with_context(|| {
        format!("the block under \"{REFERENCE_HEADING}\" is not {{bench: {{figure: number}}}}")
    })
}

/// What a comparison found for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the tolerance, or better than the reference.
    Ok,
    /// Moved the wrong way by more than the tolerance.
    Regressed,
    /// The reference names the figure, the benchmark did not report it (or not as a number).
    Missing,
}

/// One figure compared with its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Benchmark.
    pub bench: String,
    /// Figure.
    pub key: String,
    /// Which way is better.
    pub better: Better,
    /// The recorded figure.
    pub reference: f64,
    /// The figure of this run.
    pub measured: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Check {
    /// Measured over reference.
    pub fn ratio(&self) -> Option<f64> {
        self.measured.map(|m| m / self.reference)
    }
}

/// Judges one measured figure against its reference.
pub fn judge(better: Better, reference: f64, measured: Option<f64>, tolerance: f64) -> Verdict {
    let Some(m) = measured.filter(|m| m.is_finite()) else { return Verdict::Missing };
    let regressed = match better {
        Better::Higher => m < reference * (1.0 - tolerance),
        Better::Lower => m > reference * (1.0 + tolerance),
    };
    if regressed { Verdict::Regressed } else { Verdict::Ok }
}

/// Compares every reference figure of the measured benchmark; fails if the reference has no
/// figures for that benchmark.
pub fn compare(reference: &Reference, run: &Measured, tolerance: f64) -> Result<Vec<Check>> {
    let Some(figures) = reference.get(&run.bench) else {
        bail!("no reference figures for the benchmark \"{}\"", run.bench);
    };
    Ok(figures
        .iter()
        .map(|(key, &reference)| {
            let better = Better::of(key);
            let measured = run.figures.get(key).and_then(Value::as_f64);
            Check {
                bench: run.bench.clone(),
                key: key.clone(),
                better,
                reference,
                measured,
                verdict: judge(better, reference, measured, tolerance),
            }
        })
        .collect())
}

/// The header of [`Check`]'s lines.
pub fn header() -> String {
    format!(
        "{:<46} {:<6} {:>10} {:>10} {:>6}  verdict",
        "figure", "better", "reference", "measured", "ratio"
    )
}

/// A number in a width of 10, with the decimals its size calls for.
fn num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = format!("{}.{}", self.bench, self.key);
        let better = match self.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        let measured = self.measured.map_or_else(|| "-".to_string(), num);
        let ratio = self.ratio().map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let verdict = match self.verdict {
            Verdict::Ok => "ok",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "MISSING",
        };
        write!(
            f,
            "{name:<46} {better:<6} {:>10} {measured:>10} {ratio:>6}  {verdict}",
            num(self.reference)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Benchmarks\n\ntext\n\n## Reference figures for scripts/bench-check\n\n\
        Some words.\n\n```json\n{\n  \"transfer\": {\"fetch_over_raw_file\": 0.83, \"discovery_s\": 1.10},\n  \
        \"pool\": {\"pool_put_over_local\": 0.18}\n}\n```\n\n```json\n{\"later\": {}}\n```\n";

    fn measured(line: &str) -> Measured {
        last_line(&format!("| a | table |\n\nsome text\n{line}\n\n")).expect("a JSON line")
    }

    #[test]
    fn better_follows_the_key_ending() {
        for k in ["discovery_s", "cold_small_ms", "day_sync_kb", "store_v1_size_ratio"] {
            assert_eq!(Better::of(k), Better::Lower, "{k}");
        }
        for k in ["fetch_over_raw_file", "fetch_mbps", "kith_small_rps", "small_over_nginx"] {
            assert_eq!(Better::of(k), Better::Higher, "{k}");
        }
    }

    #[test]
    fn reads_the_reference_block_under_its_heading() {
        let r = reference(DOC).expect("reference");
        assert_eq!(r.len(), 2);
        assert_eq!(r["transfer"]["fetch_over_raw_file"], 0.83);
        assert_eq!(r["pool"]["pool_put_over_local"], 0.18);
        assert!(reference("# nothing here\n```json\n{}\n```\n").is_err());
    }

    #[test]
    fn reads_the_last_line_of_the_output() {
        let m = measured(r#"{"bench":"pool","pool_put_over_local":0.2,"identical":true}"#);
        assert_eq!(m.bench, "pool");
        assert_eq!(m.figures["pool_put_over_local"], 0.2);
        assert!(last_line("| table |\n{\"no_bench\":1}\n").is_err());
        assert!(last_line("{\"bench\":\"x\"}\n| a table after the JSON |\n").is_err());
        assert!(last_line("\n\n").is_err());
    }

    #[test]
    fn a_fall_of_40_percent_regresses_and_one_of_10_percent_does_not() {
        let r = reference(DOC).expect("reference");
        let checks = |line: &str| compare(&r, &measured(line), TOLERANCE).expect("compare");
        // Higher is better: 0.83 -> 0.498 (-40%) regressed; 0.747 (-10%) ok.
        // Lower is better: 1.10 -> 1.54 (+40%) regressed; 1.21 (+10%) ok.
        let bad = checks(r#"{"bench":"transfer","fetch_over_raw_file":0.498,"discovery_s":1.54}"#);
        assert!(bad.iter().all(|c| c.verdict == Verdict::Regressed), "{bad:?}");
        let fine = checks(r#"{"bench":"transfer","fetch_over_raw_file":0.747,"discovery_s":1.21}"#);
        assert!(fine.iter().all(|c| c.verdict == Verdict::Ok), "{fine:?}");
        // Better than the reference is never a regression.
        let better = checks(r#"{"bench":"transfer","fetch_over_raw_file":2.0,"discovery_s":0.1}"#);
        assert!(better.iter().all(|c| c.verdict == Verdict::Ok), "{better:?}");
    }

    #[test]
    fn a_figure_not_reported_is_missing_and_an_unknown_bench_an_error() {
        let r = reference(DOC).expect("reference");
        let c = compare(&r, &measured(r#"{"bench":"transfer","discovery_s":null}"#), TOLERANCE)
            .expect("compare");
        assert!(c.iter().all(|c| c.verdict == Verdict::Missing), "{c:?}");
        assert!(compare(&r, &measured(r#"{"bench":"nope"}"#), TOLERANCE).is_err());
    }

    #[test]
    fn a_line_names_the_figure_both_values_the_ratio_and_the_verdict() {
        let c = Check {
            bench: "pool".into(),
            key: "restore_after_writer_loss_s".into(),
            better: Better::Lower,
            reference: 0.59,
            measured: Some(40.1),
            verdict: Verdict::Regressed,
        };
        let line = c.to_string();
        for part in ["pool.restore_after_writer_loss_s", "lower", "0.590", "40.1", "67.97"] {
            assert!(line.contains(part), "{part} in {line}");
        }
        assert!(line.ends_with("REGRESSED"), "{line}");
    }

    #[test]
    fn the_reference_block_of_docs_benchmarks_names_figures_the_benchmarks_report() {
        let r = reference(include_str!("../../docs/benchmarks.md")).expect("docs/benchmarks.md");
        let benches: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            benches,
            [
                "browser",
                "compute",
                "ledger",
                "mesh",
                "move",
                "pool",
                "pool_link",
                "relay",
                "site",
                "store",
                "transfer"
            ],
            "scripts/bench-check runs these"
        );
        // The ledger simulation is quick enough to run here: its line carries every figure.
        let months = crate::ledger_sim::run(3, 1).expect("ledger sim");
        let json = line(&crate::ledger_sim::figures(3, &months)).expect("line");
        let run = last_line(&json).expect("read back");
        let checks = compare(&r, &run, TOLERANCE).expect("compare");
        assert!(checks.iter().all(|c| c.measured.is_some()), "{checks:?}");
    }
}
