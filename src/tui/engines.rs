//! The TUI's one seam to the engines that are built alongside it (lint/fix, extract,
//! quantize). Every call the views and jobs make goes through here, so wiring an engine in is
//! a change to this file only.

use std::path::{Path, PathBuf};

use crate::jobs::Progress;
use crate::model::Analysis;

/// Deployment targets offered by the Diagnostics view (`t` cycles).
pub const TARGETS: &[&str] = &["tensorrt-7.1", "tensorrt-8.6", "tensorrt-10.1"];
pub const DEFAULT_TARGET: &str = "tensorrt-7.1";

fn parse_target(target: &str) -> Result<crate::lint::Target, String> {
    crate::lint::Target::parse(target)
}

/// Lint findings for `target`, as lint reports them (the session places them on nodes).
pub fn lint(a: &Analysis, target: &str) -> Result<Vec<crate::lint::Diagnostic>, String> {
    let opts = crate::lint::LintOptions {
        target: parse_target(target)?,
        ..crate::lint::LintOptions::default()
    };
    Ok(crate::lint::lint(a, &opts).diagnostics)
}

/// Applies the automatic fix of lint rule `rule` (found at `node`), verifies the fixed model
/// against the original on random inputs, and writes it to `out` only when they agree.
pub fn apply_fix(
    a: &Analysis,
    target: &str,
    rule: &str,
    node: &str,
    out: &Path,
    p: &dyn Progress,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    use crate::lint::fix::{FixOptions, fix_model, write_fixed};
    let err = |e: crate::PareError| e.to_string();
    let opts = FixOptions {
        only: vec![rule.to_string()],
        target: Some(parse_target(target)?),
        ..FixOptions::default()
    };
    let mut outcome = fix_model(a, &opts, p).map_err(err)?;
    if !outcome.changed() {
        return Err(format!(
            "fix for {rule} at {node} changed nothing (pin the input shapes with --input-shape if they are symbolic)"
        ));
    }
    let input = a.model.path.clone().unwrap_or_default();
    write_fixed(&mut outcome, &input, out, false).map_err(err)?;
    let mut summary = vec![format!(
        "{} → {} nodes",
        outcome.nodes_before, outcome.nodes_after
    )];
    for act in &outcome.actions {
        summary.push(format!("{}: {}", act.fix, act.description));
    }
    let v = &outcome.verification;
    summary.push(format!(
        "verified: {} (max abs diff {}, tolerance {:e}, reference {})",
        v.status,
        v.max_abs_diff
            .map_or("-".to_string(), |d| format!("{d:.2e}")),
        v.tolerance,
        v.reference
    ));
    summary.extend(v.notes.iter().map(|n| format!("note: {n}")));
    summary.push(format!("wrote {}", out.display()));
    p.log(&format!("fixed {rule}, wrote {}", out.display()));
    Ok((summary, vec![out.to_path_buf()]))
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
    /// onnxruntime QDQ flavour (UINT8 activations) instead of TensorRT's symmetric INT8.
    pub ort_format: bool,
    pub output: PathBuf,
}

pub const QUANT_METHODS: &[&str] = &["mse", "entropy", "percentile", "minmax"];

/// Quantizes with `crate::quant` and writes the QDQ model; per-layer SQNR arrives as
/// `JobEvent::Layer` events while it runs. Returns the report's headline lines.
pub fn quantize(
    a: &Analysis,
    req: &QuantRequest,
    p: &dyn Progress,
) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    use crate::quant::{CalibConfig, CalibSource, Format, Method, QuantOptions};
    let method = match req.method.as_str() {
        "minmax" => Method::Minmax,
        "percentile" => Method::Percentile,
        "entropy" => Method::Entropy,
        "mse" => Method::Mse,
        m => return Err(format!("unknown calibration method '{m}'")),
    };
    let opts = QuantOptions {
        source: match &req.calibration {
            Calibration::Random => CalibSource::Random { seed: 0 },
            Calibration::Images(dir) => CalibSource::Path(dir.clone()),
        },
        samples: req.samples.max(1),
        format: if req.ort_format {
            Format::Ort
        } else {
            Format::Trt
        },
        calib: CalibConfig {
            method,
            ..CalibConfig::default()
        },
        ..QuantOptions::default()
    };
    let r = crate::quant::quantize_to_file(a, &opts, &req.output, p).map_err(|e| e.to_string())?;
    let db = |v: Option<f64>| match v {
        Some(v) if v >= 300.0 => "exact".to_string(),
        Some(v) => format!("{v:.1} dB"),
        None => "-".to_string(),
    };
    let mut summary = vec![
        match r.output_sqnr_db {
            Some(_) => format!(
                "{} layers quantized, {} float; output SQNR {}, max abs err {:.3e}",
                r.quantized_layers,
                r.float_layers,
                db(r.output_sqnr_db),
                r.max_abs_err
            ),
            None => format!(
                "{} layers quantized, {} float; output SQNR not measured (see note)",
                r.quantized_layers, r.float_layers
            ),
        },
        format!(
            "calibration: {} samples from {} ({:.1} s)",
            r.samples, r.calibration_source, r.calibration_seconds
        ),
    ];
    let mut worst: Vec<_> = r.layers.iter().filter(|l| l.sqnr_db.is_some()).collect();
    worst.sort_by(|x, y| {
        x.sqnr_db
            .partial_cmp(&y.sqnr_db)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for l in worst.iter().take(5) {
        summary.push(format!("worst layer {} {}", l.node, db(l.sqnr_db)));
    }
    summary.extend(r.notes.iter().map(|n| format!("note: {n}")));
    summary.push(format!("wrote {}", req.output.display()));
    Ok((summary, vec![req.output.clone()]))
}

pub fn quantize_command(model: &str, req: &QuantRequest) -> String {
    let calib = match &req.calibration {
        Calibration::Random => "random".to_string(),
        Calibration::Images(p) => p.display().to_string(),
    };
    format!(
        "pare quantize {model} --calib {calib} --samples {} --method {}{} -o {}",
        req.samples,
        req.method,
        if req.ort_format { " --format ort" } else { "" },
        req.output.display()
    )
}
