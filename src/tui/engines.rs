//! The TUI's one seam to the engines that are built alongside it (lint/fix, extract,
//! quantize). Every call the views and jobs make goes through here, so wiring an engine in is
//! a change to this file only. An engine that has not landed answers `Err(NOT_AVAILABLE…)`,
//! and the views show that state instead of inventing data.

use std::path::{Path, PathBuf};

use crate::jobs::Progress;
use crate::model::Analysis;

use super::session::Diagnostic;

/// Deployment targets offered by the Diagnostics view (`t` cycles).
pub const TARGETS: &[&str] = &["tensorrt-7.1", "tensorrt-8.6", "tensorrt-10.1"];
pub const DEFAULT_TARGET: &str = "tensorrt-7.1";

pub const LINT_MISSING: &str = "lint: not available yet in this build (src/lint has not landed)";
pub const EXTRACT_MISSING: &str =
    "extract: not available yet in this build (src/extract has not landed)";
pub const QUANT_MISSING: &str =
    "quantize: not available yet in this build (src/quant has not landed)";

/// Whether each engine is wired in.
pub fn lint_available() -> bool {
    false
}
pub fn extract_available() -> bool {
    true
}
pub fn quant_available() -> bool {
    false
}

/// Lint findings for `target`, as TUI diagnostics.
pub fn lint(_a: &Analysis, _target: &str) -> Result<Vec<Diagnostic>, String> {
    Err(LINT_MISSING.to_string())
}

/// Applies the automatic fix of diagnostic `rule` at `node`, writing `out`.
pub fn apply_fix(
    _a: &Analysis,
    _target: &str,
    _rule: &str,
    _node: &str,
    _out: &Path,
    _p: &dyn Progress,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    Err(LINT_MISSING.to_string())
}

/// What an extraction is asked to do.
#[derive(Clone, Debug)]
pub struct ExtractRequest {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub output: PathBuf,
    /// Also write real boundary input data (computed by running the model head).
    pub with_data: bool,
}

/// Extracts the subgraph between `inputs` and `outputs` with `crate::extract`, writes it
/// (and, with `with_data`, real boundary tensors computed by running the model head on a
/// seeded random sample, as `test_data_set_0/`); returns summary lines and files.
pub fn extract(
    a: &Analysis,
    req: &ExtractRequest,
    p: &dyn Progress,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    use crate::extract::{self as ex, data};
    let err = |e: crate::PareError| e.to_string();
    p.phase("cutting the subgraph", None);
    let mut piece = ex::extract(a, &req.inputs, &req.outputs).map_err(err)?;
    p.check_cancel().map_err(err)?;
    let mut summary = vec![format!(
        "{} nodes: {}",
        piece.nodes.len(),
        piece.op_summary()
    )];
    let mut files = vec![req.output.clone()];
    let mut sets = Vec::new();
    if req.with_data {
        let samples = data::load_samples(a, &[], 1, 0).map_err(err)?;
        sets = data::piece_data(a, &mut piece, &samples, p).map_err(err)?;
        summary.push(format!("boundary data from {}", samples.source));
    }
    p.phase("writing", None);
    crate::model::save_model(
        &piece.model,
        &req.output,
        &crate::model::SaveOptions::default(),
    )
    .map_err(err)?;
    for (k, bd) in sets.iter().enumerate() {
        let dir = data::test_data_dir(&req.output, k);
        let (ni, no) = data::write_test_data(&dir, &piece, bd).map_err(err)?;
        summary.push(format!(
            "wrote {}/ ({ni} input(s), {no} output(s))",
            dir.display()
        ));
        for problem in &bd.problems {
            summary.push(format!("data: {problem}"));
        }
        files.push(dir);
    }
    for (name, dt, shape) in piece.input_types() {
        let dt = dt
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| "?".into());
        summary.push(format!(
            "input  {name} {dt} {}",
            crate::model::shape::format_shape(shape.as_deref())
        ));
    }
    for (name, dt, shape) in piece.output_types() {
        let dt = dt
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| "?".into());
        summary.push(format!(
            "output {name} {dt} {}",
            crate::model::shape::format_shape(shape.as_deref())
        ));
    }
    summary.extend(piece.notes.iter().map(|n| format!("note: {n}")));
    summary.push(format!("wrote {}", req.output.display()));
    p.log(&format!(
        "extracted {} nodes to {}",
        piece.nodes.len(),
        req.output.display()
    ));
    Ok((summary, files))
}

/// The equivalent command line of an extraction.
pub fn extract_command(
    model: &str,
    req: &ExtractRequest,
    pins: &crate::model::InputPins,
) -> String {
    let mut s = crate::extract::command_line(
        Path::new(model),
        &req.output,
        &req.inputs,
        &req.outputs,
        pins,
    );
    if req.with_data {
        s.push_str(" --with-data");
    }
    s
}

/// Calibration data source of a quantization.
#[derive(Clone, Debug, PartialEq)]
pub enum Calibration {
    Random,
    Images(PathBuf),
}

#[derive(Clone, Debug)]
pub struct QuantRequest {
    pub calibration: Calibration,
    pub samples: usize,
    pub method: String,
    pub per_channel: bool,
    pub output: PathBuf,
}

pub const QUANT_METHODS: &[&str] = &["minmax", "percentile", "entropy"];

/// Quantizes; per-layer SQNR arrives as `JobEvent::Layer` events.
pub fn quantize(
    _a: &Analysis,
    _req: &QuantRequest,
    _p: &dyn Progress,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    Err(QUANT_MISSING.to_string())
}

pub fn quantize_command(model: &str, req: &QuantRequest) -> String {
    let calib = match &req.calibration {
        Calibration::Random => "random".to_string(),
        Calibration::Images(p) => p.display().to_string(),
    };
    format!(
        "pare quantize {model} --calibration {calib} --samples {} --method {}{} -o {}",
        req.samples,
        req.method,
        if req.per_channel { "" } else { " --per-tensor" },
        req.output.display()
    )
}
