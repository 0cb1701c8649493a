//! The TUI's one seam to the commands (lint/fix, prune, extract, quantize). Jobs are started
//! with the same typed requests the CLI builds from its flags, call the same library
//! functions, and show the same report rendering (`Report::render_text`).

use std::path::{Path, PathBuf};

use crate::convert::ConvertRequest;
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
        sensitivity: None,
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

/// The Diagnostics view's measured remedy for an FP32-only model: `pare convert` with
/// random inputs for the activation ranges (the dialog-free default of the CLI), written to
/// `out`; its report carries the fidelity against the original.
pub fn convert_request(precision: crate::convert::Precision, out: &Path) -> ConvertRequest {
    ConvertRequest {
        options: crate::convert::ConvertOptions {
            precision,
            ..Default::default()
        },
        output: out.to_path_buf(),
    }
}

/// Converts with [`crate::convert::run`].
pub fn convert(a: &Analysis, req: &ConvertRequest, p: &dyn Progress) -> Result<JobOutcome> {
    let report = crate::convert::run(a, req, p)?;
    let outputs = report.output.iter().map(PathBuf::from).collect();
    Ok(outcome(&report, outputs))
}

/// `pare groups --sensitivity` for the Groups view: `data` is a sample folder or file, or
/// empty for 16 seeded random samples (as the CLI); ratio 0.5, L1, the session's tags.
pub fn sensitivity_request(
    data: &str,
    tags: crate::tags::Tags,
) -> Result<crate::prune::sensitivity::SensitivityRequest> {
    use crate::prune::sensitivity::{SampleSpec, SensitivityRequest};
    let data = data.trim();
    let spec = if data.is_empty() || data == "random" {
        SampleSpec::random(0, 16)
    } else {
        let path = PathBuf::from(data);
        if !path.exists() {
            return Err(PareError::Usage(format!(
                "{}: no such sample folder or file",
                path.display()
            )));
        }
        SampleSpec {
            source: crate::data::DataSource::Path(path),
            samples: 1 << 20,
            ..SampleSpec::random(0, 16)
        }
    };
    Ok(SensitivityRequest {
        data: spec,
        ratio: 0.5,
        options: crate::prune::PruneOptions {
            round_to: 1,
            tags,
            ..Default::default()
        },
    })
}

/// Measures every group's sensitivity; the report travels back for the Groups view.
pub fn sensitivity(
    a: &Analysis,
    req: &crate::prune::sensitivity::SensitivityRequest,
    p: &dyn Progress,
) -> Result<JobOutcome> {
    let report = crate::prune::sensitivity::sensitivity(a, req, p)?;
    let mut out = outcome(&report, Vec::new());
    out.sensitivity = Some(report);
    Ok(out)
}

/// What the Jobs view's fine-tune prompt asked for: `STEPS FOLDER` (steps optional).
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneAsk {
    pub student: PathBuf,
    pub teacher: PathBuf,
    pub output: PathBuf,
    pub steps: usize,
    pub data: PathBuf,
}

/// Steps when the prompt gives none: what `pare finetune` does by default.
pub const FINETUNE_STEPS: usize = 200;

/// Parses the fine-tune prompt (`300 images/`, or just a folder) for `student`, taught by
/// `teacher`, written next to the student as `NAME_ft.onnx`.
pub fn finetune_ask(text: &str, student: &Path, teacher: &Path) -> Result<FinetuneAsk> {
    let text = text.trim();
    let (steps, folder) = match text.split_once(char::is_whitespace) {
        Some((n, rest)) if n.parse::<usize>().is_ok() => (n.parse().ok(), rest.trim()),
        _ => match text.parse::<usize>() {
            Ok(n) => (Some(n), ""),
            Err(_) => (None, text),
        },
    };
    let steps = steps.unwrap_or(FINETUNE_STEPS);
    if steps == 0 {
        return Err(PareError::Usage("fine-tuning needs at least 1 step".into()));
    }
    if folder.is_empty() {
        return Err(PareError::Usage(
            "fine-tuning trains on unlabeled samples: give a folder of images or .npy".into(),
        ));
    }
    let data = PathBuf::from(folder);
    if !data.exists() {
        return Err(PareError::Usage(format!(
            "{}: no such sample folder or file",
            data.display()
        )));
    }
    let stem = student
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    Ok(FinetuneAsk {
        output: student.with_file_name(format!("{stem}_ft.onnx")),
        student: student.to_path_buf(),
        teacher: teacher.to_path_buf(),
        steps,
        data,
    })
}

impl FinetuneAsk {
    /// The equivalent command line.
    pub fn command_line(&self) -> String {
        format!(
            "pare finetune {} --teacher {} --data {} -o {} --steps {} --eval-every {}",
            self.student.display(),
            self.teacher.display(),
            self.data.display(),
            self.output.display(),
            self.steps,
            self.eval_every()
        )
    }

    /// Held-out agreement about ten times per run, for the chart's legend.
    fn eval_every(&self) -> usize {
        (self.steps / 10).max(1)
    }
}

/// Distils the student from the teacher on libtorch (`pare finetune` with its defaults).
#[cfg(feature = "torch")]
pub fn finetune(ask: &FinetuneAsk, p: &dyn Progress) -> Result<JobOutcome> {
    use crate::torch::finetune::{FinetuneRequest, Loss, finetune};
    let req = FinetuneRequest {
        student: ask.student.clone(),
        teacher: ask.teacher.clone(),
        output: ask.output.clone(),
        data: crate::data::DataSource::parse(&[ask.data.display().to_string()], 0)?,
        preprocess: crate::data::Preprocess::default(),
        samples: 256,
        crop: None,
        steps: ask.steps,
        batch: 8,
        lr: crate::torch::finetune::default_lr(&ask.student)?,
        loss: Loss::Kl,
        device: tch::Device::Cpu,
        eval_samples: 16,
        seed: 0,
        eval_every: ask.eval_every(),
        eval_data: None,
        max_seconds: None,
        features: crate::torch::finetune::Features::Auto,
    };
    let report = finetune(&req, p).map_err(|e| match e {
        crate::torch::finetune::FinetuneError::Pare(e) => e,
        e => PareError::Runtime(e.to_string()),
    })?;
    Ok(outcome(&report, vec![ask.output.clone()]))
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
