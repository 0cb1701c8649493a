//! The TUI's one seam to the commands (lint/fix, prune, extract, quantize). Jobs are started
//! with the same typed requests the CLI builds from its flags, call the same library
//! functions, and show the same report rendering (`Report::render_text`).

use std::path::{Path, PathBuf};

use crate::error::{PareError, Result};
use crate::extract::run::ExtractRequest;
use crate::jobs::Progress;
use crate::lint::target::{TRT10_DEFAULT, TRT11_DEFAULT};
use crate::lint::{FixOptions, FixRequest, Target};
use crate::model::Analysis;
use crate::prune::PruneRequest;
use crate::quant::{Method, QuantizeRequest};
use crate::report::Report;

use super::jobs::JobOutcome;

/// Deployment targets offered by the Diagnostics view (`t` cycles, starting from the
/// default target, TensorRT 11, as `pare lint`).
pub const TARGETS: [Target; 4] = [
    Target::TensorRt(TRT11_DEFAULT),
    Target::TensorRt(701),
    Target::TensorRt(806),
    Target::TensorRt(TRT10_DEFAULT),
];

/// The target after `t` in [`TARGETS`].
pub fn next_target(t: Target) -> Target {
    let i = TARGETS.iter().position(|x| *x == t).unwrap_or(0);
    TARGETS[(i + 1) % TARGETS.len()]
}

/// Calibration methods the quantize dialog cycles through.
pub const QUANT_METHODS: [Method; 4] = [
    Method::Mse,
    Method::Entropy,
    Method::Percentile,
    Method::Minmax,
];

/// Lint findings for `target`, as lint reports them (the session places them on nodes).
pub fn lint(a: &Analysis, target: Target) -> Vec<crate::lint::Diagnostic> {
    let opts = crate::lint::LintOptions {
        target,
        ..crate::lint::LintOptions::default()
    };
    crate::lint::lint(a, &opts).diagnostics
}

/// A finished job's outcome: the report's one text rendering and the files it wrote.
fn outcome(report: &impl Report, outputs: Vec<PathBuf>) -> JobOutcome {
    JobOutcome {
        summary: report.render_text().lines().map(str::to_string).collect(),
        outputs,
    }
}

/// The fix for lint rule `rule` (found at `node`) as a typed request: only that fix, for the
/// Diagnostics view's target, written to `out` only once verified.
pub fn fix_request(target: Target, rule: &str, out: &Path) -> FixRequest {
    FixRequest {
        options: FixOptions {
            only: vec![rule.to_string()],
            target: Some(target),
            ..FixOptions::default()
        },
        output: Some(out.to_path_buf()),
        allow_unverified: false,
    }
}

/// Applies a fix, verifies the fixed model against the original on random inputs, and
/// writes it only when they agree.
pub fn apply_fix(
    a: &Analysis,
    req: &FixRequest,
    node: &str,
    p: &dyn Progress,
) -> Result<JobOutcome> {
    let mut report = crate::lint::fix(a, req, p)?;
    let rule = req.options.only.join(",");
    if !report.outcome.changed() {
        return Err(PareError::Usage(format!(
            "fix for {rule} at {node} changed nothing (pin the input shapes with --input-shape if they are symbolic)"
        )));
    }
    if let Some(e) = report.write_error.take() {
        return Err(e);
    }
    let outputs: Vec<PathBuf> = req.output.iter().cloned().collect();
    if let Some(out) = &req.output {
        p.log(&format!("fixed {rule}, wrote {}", out.display()));
    }
    Ok(outcome(&report, outputs))
}

/// Extracts with [`crate::extract::run::run`]; the files are the piece, then its
/// `test_data_set_K/` folders.
pub fn extract(a: &Analysis, req: &ExtractRequest, p: &dyn Progress) -> Result<JobOutcome> {
    let report = crate::extract::run::run(a, req, p)?;
    let mut files = vec![req.output.clone()];
    files.extend(report.test_data.iter().map(|t| PathBuf::from(&t.dir)));
    Ok(outcome(&report, files))
}

/// Quantizes with [`crate::quant::run`]; per-layer SQNR arrives as `JobEvent::Layer` events
/// while it runs.
pub fn quantize(a: &Analysis, req: &QuantizeRequest, p: &dyn Progress) -> Result<JobOutcome> {
    let report = crate::quant::run(a, req, p)?;
    Ok(outcome(&report, vec![req.output.clone()]))
}

/// Prunes with [`crate::prune::run`].
pub fn prune(a: &Analysis, req: &PruneRequest, p: &dyn Progress) -> Result<JobOutcome> {
    let report = crate::prune::run(a, req, p)?;
    // Only what was written: an unvalidated model is withheld.
    Ok(outcome(
        &report,
        report.output.iter().map(PathBuf::from).collect(),
    ))
}
