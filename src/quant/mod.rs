//! INT8 post-training quantization to QDQ ONNX, with streaming calibration and per-layer
//! diagnostics.
//!
//! The flow ([`quantize`]):
//! 1. **Inputs** ([`data`]): calibration samples are found and every one is checked against
//!    the model's declared inputs before anything runs (seed Q8); dynamic inputs may take
//!    several shapes, which are reported with what TensorRT needs to serve them (seed Q11).
//! 2. **Placement** ([`placement`]): TensorRT's Q/DQ rules as ModelOpt encodes them.
//! 3. **Calibration** ([`calibrate`]): the float model runs on tract over the samples, two at a
//!    time; each observed tensor is folded into running min/max and histograms and dropped.
//! 4. **Ranges** ([`calibrators`]): minmax, percentile, entropy (TensorRT KL) or mse.
//! 5. **Q/DQ** ([`qdq`]): symmetric INT8 with zero point 0 and per-channel weights for
//!    TensorRT (`Format::Trt`), or UINT8 asymmetric activations for onnxruntime
//!    (`Format::Ort`).
//! 6. **Diagnostics** ([`diag`]): per-layer SQNR (isolated and cumulative), output SQNR and
//!    max abs error on the same inputs, ranked worst first.
//! 7. **Mixed precision** ([`mixed`]): `target_sqnr` / `min_agreement` return the worst-ranked
//!    layers to float, choosing how many from the ranking and a few confirmation runs.
//!
//! Progress goes through [`Progress`]: phases and steps for the bar, and
//! `JobEvent::Layer { node, value, label }` per layer as values fill in — label
//! [`LayerLabel::Estimate`] during calibration (SQNR of the layer's quantized input, from the
//! statistics so far), [`LayerLabel::SqnrDb`] during diagnostics (isolated SQNR, refined with
//! every sample), [`LayerLabel::Fallback`] when the mixed-precision search puts a layer in float
//! (value: its isolated SQNR), and `JobEvent::Fidelity` after each confirmation run (output
//! SQNR and task agreement).

pub mod adaround;
pub mod bias_correct;
pub mod calibrate;
pub mod calibrators;
pub mod center;
pub mod choose;
/// Sample loading is `crate::data`; re-exported under the name calibration code uses.
pub use crate::data;
pub mod diag;
pub mod equalize;
pub mod histogram;
pub mod mixed;
pub mod placement;
pub mod qdq;
pub mod qparams;
pub mod reconstruct;
pub mod stream;
/// Kept for old paths: the worker pool now lives in [`crate::runtime::pool`].
pub use crate::runtime::pool as run;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

pub use crate::data::{DataSource as CalibSource, Layout, Preprocess};
pub use calibrators::{CalibConfig, Method};
pub use qparams::{QParams, QType, WeightMethod};

use crate::error::{PareError, Result};
use crate::jobs::{JobEvent, Progress};
use crate::model::Analysis;
use crate::model::proto::{ModelProto, StringStringEntryProto};
use crate::report::{Report, fmt_db};
use crate::tags::Tags;

/// Target runtime of the QDQ model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// TensorRT explicit quantization: symmetric INT8, zero point 0 everywhere.
    #[default]
    Trt,
    /// onnxruntime: UINT8 asymmetric activations, INT8 symmetric per-channel weights.
    Ort,
}

/// Everything `quantize` needs besides the model.
#[derive(Clone, Debug)]
pub struct QuantOptions {
    pub source: CalibSource,
    pub preprocess: Preprocess,
    /// Most calibration samples to use.
    pub samples: usize,
    /// Samples (the first ones of the set) the diagnostics run on.
    pub eval_samples: usize,
    pub format: Format,
    pub calib: CalibConfig,
    pub two_pass: bool,
    pub weight_method: WeightMethod,
    /// Nearest or learned ([`adaround`]) rounding of the INT8 weights.
    pub rounding: adaround::Rounding,
    pub target_sqnr: Option<f64>,
    /// Lowest task agreement (top-1 / mask IoU) with the float model: layers go back to
    /// float until it holds ([`mixed`]).
    pub min_agreement: Option<f64>,
    pub tags: Tags,
    pub exclude: Vec<String>,
    pub quantize_small: bool,
    pub threads: usize,
    /// Skip the per-layer diagnostics (output SQNR is still measured).
    pub no_layer_diagnostics: bool,
    /// Engine for calibration runs (onnxruntime only with the `ort` feature).
    pub engine: crate::runtime::EngineChoice,
    /// After Q/DQ insertion, convert the rest of the graph and the DQ scales to this precision
    /// (`pare convert`), for TensorRT 11's strongly typed INT8 + FP16 engines.
    pub precision: Option<crate::convert::Precision>,
    /// Bias correction ([`bias_correct`]): remove the mean output shift weight rounding causes.
    pub bias_correction: bool,
    /// Cross-layer equalization ([`equalize`]) of the float graph before calibration.
    pub equalize: bool,
    /// Per-tensor calibrator choice ([`choose`]): each activation gets the range whose
    /// downstream error is smallest, not one calibrator for all.
    pub choose_calibrator: bool,
    /// Activation-range equalization ([`equalize::equalize_activations`]) of conv → depthwise
    /// pairs, from per-channel ranges measured on a few calibration samples.
    pub act_equalize: bool,
    /// Strength (0–1) of activation equalization for pairs whose second conv is an ordinary
    /// one (depthwise → pointwise, projection → expansion); 0 equalizes only conv → depthwise
    /// ([`equalize::equalize_activations`]).
    pub act_equalize_dense: f32,
    /// Residual-stream equalization ([`stream`]) at the dense strength, with activation
    /// equalization.
    pub stream_equalize: bool,
    /// Centering of ReLU/ReLU6 outputs that feed convolutions ([`center`]), `--format trt`
    /// only: the symmetric grid's negative half covers them too.
    pub center: bool,
    /// Weight reconstruction on quantized inputs ([`reconstruct`]): each layer refitted to the
    /// float layer's output from the input the quantized model gives it, then GPTQ-rounded.
    pub reconstruct: bool,
    /// Without `reconstruct`: reconstruct only the first this many quantized layers in graph
    /// order (0: none), with nearest rounding.
    pub reconstruct_first: usize,
    /// Share of the samples held out of calibration to measure task fidelity on
    /// ([`crate::fidelity::holdout`]); 0 calibrates on all and measures on all.
    pub holdout: f64,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            source: CalibSource::Random { seed: 0 },
            preprocess: Preprocess::default(),
            samples: 32,
            eval_samples: 8,
            format: Format::Trt,
            calib: CalibConfig::default(),
            two_pass: false,
            weight_method: WeightMethod::default(),
            rounding: adaround::Rounding::default(),
            target_sqnr: None,
            min_agreement: None,
            tags: Tags::default(),
            exclude: Vec::new(),
            quantize_small: false,
            threads: 2,
            no_layer_diagnostics: false,
            engine: crate::runtime::EngineChoice::from_env(),
            precision: None,
            bias_correction: true,
            // Off by default: on MobileNetV2 (trained, 24 calibration crops) it cost top-1
            // agreement (0.664 -> 0.570 with --format trt) although it evened the weights out.
            equalize: false,
            // On by default: on MobileNetV2 (trained, 24 calibration crops, 128 held out) it
            // raised top-1 agreement with --format trt.
            choose_calibrator: true,
            act_equalize: true,
            // MobileNetV2 (trained, 24 calibration crops, 128 held out), --format trt: top-1
            // agreement 0.766 -> 0.812, logit SQNR 13.1 -> 14.8 dB at 0.5 (0.3: 0.781, 0.7:
            // 0.742, 1.0: 0.742).
            act_equalize_dense: 0.5,
            // MobileNetV2 (trained, 24 calibration crops, 128 held out), --format trt: logit
            // SQNR 17.3 -> 18.2 dB, top-1 agreement 0.844 -> 0.898.
            stream_equalize: true,
            center: true,
            // Off by default: on MobileNetV2 (trained, 8 of 24 calibration crops, 128 held
            // out) it raised --format trt top-1 agreement 0.898 -> 0.898 and logit SQNR 18.2 ->
            // 21.5 dB (0.832 -> 0.902 on 256 other crops), but takes 48 s against 7 s, and
            // lowered --format ort's agreement 0.891 -> 0.797 (before centering); on open_nsfw
            // it raised the calibration samples' SQNR and lowered the held-out one. 16 samples
            // instead of 8: 21.6 dB for 78 s.
            reconstruct: false,
            // The first layers only, where activation noise enters and is amplified most. On
            // MobileNetV2 (trt) logit SQNR on 256 held-out crops at 2048 positions per layer:
            // first 4 20.5 dB, 8 21.7, 12 22.0, 24 22.0, all 21.6 (4x the time of 12); at
            // 8192, 12 gives 22.1 dB; with prefix runs the whole quantization takes 8-10 s
            // (16 s before them). --format ort 18.4 -> 19.7 dB; open_nsfw (trt) 35.4 -> 38.9 dB;
            // DeepLabV3 (random data) SQNR unchanged.
            reconstruct_first: 12,
            holdout: crate::fidelity::HoldoutArgs::default().holdout,
        }
    }
}

/// One `--target-sqnr` step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FallbackStep {
    pub node: String,
    /// Isolated SQNR that made it the worst layer.
    pub layer_sqnr_db: Option<f64>,
    /// Output SQNR with this layer (and the ones before) in float.
    pub output_sqnr_db: Option<f64>,
}

/// A calibrated tensor's range, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorRange {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
    pub scale: f32,
    pub zero_point: i32,
}

/// The report of a quantization run (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct QuantReport {
    /// Output path, filled in by the caller once written.
    pub output: Option<String>,
    pub model: String,
    pub format: Format,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub two_pass: bool,
    pub weight_method: WeightMethod,
    pub rounding: adaround::Rounding,
    /// What learned rounding did per layer (`--rounding learned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_rounding: Option<adaround::RoundingReport>,
    /// What weight reconstruction did per layer (`--reconstruct`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<reconstruct::ReconstructReport>,
    pub calibration_source: String,
    /// Engine that ran the calibration (JSON `"tract"`, `"onnxruntime"`).
    pub engine: crate::runtime::EngineKind,
    /// Samples read.
    pub samples: usize,
    /// Of those, the ones calibration ran on (the rest are held out for `fidelity`).
    pub calibration_samples: usize,
    pub eval_samples: usize,
    pub input_shapes: Vec<data::ShapeCount>,
    pub calibration_seconds: f64,
    pub diagnostics_seconds: f64,
    pub total_seconds: f64,
    /// Bytes the calibrator kept (independent of the number of samples).
    pub calibration_state_bytes: usize,
    /// Most samples held in memory at once.
    pub peak_samples_in_memory: usize,
    pub output_sqnr_db: Option<f64>,
    pub max_abs_err: f64,
    pub outputs: Vec<diag::OutputDiag>,
    pub quantized_layers: usize,
    pub float_layers: usize,
    /// Every candidate layer, worst isolated SQNR first (float layers after quantized ones).
    pub layers: Vec<diag::LayerDiag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sqnr_db: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    pub target_reached: Option<bool>,
    /// Layers returned to float by `--target-sqnr` / `--min-agreement`, worst first.
    pub fallback: Vec<FallbackStep>,
    /// The mixed-precision search: probes, float layers, INT8 share of MACs, times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed: Option<mixed::MixedReport>,
    pub ranges: Vec<TensorRange>,
    /// Task fidelity of the written model against the float one, on the held-out samples.
    pub fidelity: Option<crate::fidelity::Fidelity>,
    /// Whether bias correction was on, and the layers it corrected.
    pub bias_correction: bool,
    pub bias_corrected: Vec<bias_correct::BiasCorrection>,
    /// Cross-layer equalization, when on.
    pub equalization: Option<equalize::EqualizeReport>,
    /// The per-tensor calibrator choice, when on.
    pub calibrator_choice: Option<choose::ChoiceReport>,
    /// Activation-range equalization, when on (spreads are of activation ranges).
    pub activation_equalization: Option<equalize::EqualizeReport>,
    /// What residual-stream equalization did (with activation equalization's dense strength).
    pub stream_equalization: Option<stream::StreamReport>,
    /// What activation centering did (`--format trt`; `--no-center` turns it off).
    pub centering: Option<center::CenterReport>,
    pub notes: Vec<String>,
    /// The FP16/BF16 pass after Q/DQ insertion (`precision`): what stayed FP32 and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_precision: Option<crate::convert::ConvertReport>,
}

/// A quantized model and its report.
pub struct Quantized {
    pub model: ModelProto,
    pub report: QuantReport,
}

/// The model at opset 13 when it is older and every node means the same there
/// ([`crate::model::opset`]): Q/DQ needs 10, per-channel weight scales 13. An opset below 10
/// that cannot be raised is refused, naming the node that blocks it; 10–12 is kept (one
/// weight scale per tensor) with a note saying why.
fn upgrade_opset(a: &Analysis, notes: &mut Vec<String>) -> Result<Option<Analysis>> {
    use crate::model::opset::{TARGET, upgrade};
    let from = a.model.proto.opset("").unwrap_or(0);
    match upgrade(a) {
        Ok(None) => Ok(None),
        Ok(Some(proto)) => {
            notes.push(format!(
                "opset raised from {from} to {TARGET} for per-channel Q/DQ: every node means the same there"
            ));
            let mut model = a.model.clone();
            model.proto = proto;
            Ok(Some(Analysis::new(model, &a.pins)?))
        }
        Err(b) if from < 10 => Err(PareError::Usage(format!(
            "the model uses opset {from}; QuantizeLinear/DequantizeLinear need opset 10+ and pare cannot raise it: {b}"
        ))),
        Err(b) => {
            notes.push(format!(
                "opset {from} kept, so weights get one scale per tensor (per-channel needs {TARGET}): {b}"
            ));
            Ok(None)
        }
    }
}

/// Rejects what no quantization can serve before any sample is read: an opset without Q/DQ,
/// tags naming nodes that do not exist, `--exclude` patterns that match nothing.
fn check_options(a: &Analysis, opts: &QuantOptions) -> Result<()> {
    let opset = a.model.proto.opset("").unwrap_or(0);
    if opset < 10 {
        return Err(PareError::Usage(format!(
            "the model uses opset {opset}; QuantizeLinear/DequantizeLinear need opset 10+ (13+ for per-channel weights)"
        )));
    }
    let names: Vec<&str> = a.graph().node.iter().map(|n| n.name()).collect();
    opts.tags.check_against(&names)?;
    for p in &opts.exclude {
        let hits = a
            .graph()
            .node
            .iter()
            .any(|n| n.op_type() == p || crate::tags::glob_match(p, &n.display_name()));
        if !hits {
            return Err(PareError::Usage(format!(
                "--exclude '{p}' matches no op type or node (closest: {})",
                crate::tags::closest(p, &names, 3).join(", ")
            )));
        }
    }
    Ok(())
}

/// What every diagnostic run of one quantization shares: the model, its calibrated ranges and
/// quantized weights, and the samples it is measured on.
struct DiagRun<'a> {
    a: &'a Analysis,
    params: &'a HashMap<String, QParams>,
    weights: &'a HashMap<String, qparams::QuantizedWeight>,
    set: &'a data::SampleSet,
    eval: &'a [usize],
    threads: usize,
    /// The calibration engine, for output-only diagnostics.
    engine: crate::runtime::EngineKind,
}

impl DiagRun<'_> {
    /// Measures `plan`.
    fn run(
        &self,
        plan: &placement::Plan,
        per_layer: bool,
        progress: &dyn Progress,
    ) -> Result<diag::Diagnosis> {
        diag::diagnose(
            &self.a.model.proto,
            &self.a.index,
            plan,
            self.params,
            self.weights,
            self.set,
            self.eval,
            self.threads,
            // Per-layer diagnostics stay on tract: its depth-first order frees each layer's
            // comparison before the next (onnxruntime ran DeepLabV3's diagnostic graph 2.5x
            // faster but at 1.0 GB peak instead of 0.66 GB, above onnxruntime's own MinMax
            // calibration). Output-only diagnostics run on the calibration engine.
            if per_layer {
                crate::runtime::EngineKind::Tract
            } else {
                self.engine
            },
            per_layer,
            progress,
        )
    }
}

/// `--target-sqnr` / `--min-agreement`: the fast mixed-precision search ([`mixed`]) on the
/// isolated SQNR the diagnostics measured; updates `plan` and the diagnosis to the chosen
/// float set.
fn mixed_precision(
    run: &DiagRun,
    opts: &QuantOptions,
    plan: &mut placement::Plan,
    diagnosis: &mut diag::Diagnosis,
    progress: &dyn Progress,
) -> Result<Option<mixed::Chosen>> {
    let target = mixed::Target {
        sqnr_db: opts.target_sqnr,
        agreement: opts.min_agreement,
    };
    if !target.is_set() {
        return Ok(None);
    }
    let iso: Vec<Option<f64>> = diagnosis.layers.iter().map(|l| l.sqnr_db).collect();
    let build =
        |p: &placement::Plan| write_qdq(run.a, opts, p, run.params, run.weights, run.set.len());
    let cx = mixed::Context {
        a: run.a,
        set: run.set,
        eval: run.eval,
        threads: run.threads,
        engine: run.engine,
        build: &build,
    };
    let chosen = mixed::choose(&cx, plan, &iso, diagnosis.output_sqnr_db, &target, progress)?;
    if chosen.report.float_layers.is_empty() {
        return Ok(Some(chosen));
    }
    for (l, c) in diagnosis.layers.iter_mut().zip(&plan.candidates) {
        l.quantized = c.quantized;
        l.reason = c.reason.clone();
        // Measured in the all-INT8 model, not the one written.
        l.cumulative_sqnr_db = None;
    }
    match &chosen.fidelity {
        Some(f) => {
            diagnosis.outputs = f
                .outputs
                .iter()
                .map(|o| diag::OutputDiag {
                    name: o.name.clone(),
                    sqnr_db: o.sqnr_db,
                    max_abs_err: o.max_abs_diff,
                })
                .collect();
            diagnosis.output_sqnr_db = f.min_sqnr_db();
            diagnosis.max_abs_err = f.outputs.iter().map(|o| o.max_abs_diff).fold(0.0, f64::max);
        }
        None => {
            let d = run.run(plan, false, &crate::jobs::NoProgress)?;
            (
                diagnosis.outputs,
                diagnosis.output_sqnr_db,
                diagnosis.max_abs_err,
            ) = (d.outputs, d.output_sqnr_db, d.max_abs_err);
        }
    }
    Ok(Some(chosen))
}

/// `--rounding learned`: learns the rounding of the quantized weights ([`adaround`]) on the
/// calibration samples.
#[allow(clippy::too_many_arguments)]
fn learn_rounding(
    a: &Analysis,
    opts: &QuantOptions,
    plan: &placement::Plan,
    weights: &mut HashMap<String, qparams::QuantizedWeight>,
    set: &data::SampleSet,
    fit: &[usize],
    engine: crate::runtime::EngineKind,
    bias_corrected: &mut Vec<bias_correct::BiasCorrection>,
    progress: &dyn Progress,
) -> Result<Option<adaround::RoundingReport>> {
    if opts.rounding != adaround::Rounding::Learned {
        return Ok(None);
    }
    // Layers whose bias is corrected afterwards learn against the centered loss.
    let centered = if opts.bias_correction {
        let (_, probes) = bias_correct::probes(&a.model.proto, plan, weights)?;
        probes.into_iter().map(|p| p.weight).collect()
    } else {
        Default::default()
    };
    let ropts = adaround::RoundingOptions {
        threads: opts.threads.max(1),
        engine,
        centered,
        ..Default::default()
    };
    let r = adaround::learn(a, plan, weights, set, &ropts, progress)?;
    progress.log(&format!(
        "learned rounding of {} layers in {:.1} s",
        r.layers.len(),
        r.seconds
    ));
    if opts.bias_correction {
        // Calibration measured nearest rounding's shift; the weights have changed since.
        *bias_corrected = bias_correct::remeasure(
            &a.model.proto,
            plan,
            weights,
            set,
            fit,
            engine,
            opts.threads.max(1),
            progress,
        )?;
    }
    Ok(Some(r))
}

/// Weight reconstruction on quantized inputs ([`reconstruct`]) when `opts.reconstruct` (and
/// the rounding is nearest: learned rounding is the other way to fit weights to their layer).
#[allow(clippy::too_many_arguments)]
fn reconstruct_weights(
    a: &Analysis,
    opts: &QuantOptions,
    plan: &placement::Plan,
    weights: &mut HashMap<String, qparams::QuantizedWeight>,
    cal: &calibrate::Calibration,
    set: &data::SampleSet,
    fit: &[usize],
    engine: crate::runtime::EngineKind,
    progress: &dyn Progress,
) -> Result<Option<reconstruct::ReconstructReport>> {
    let first_layers = match (opts.reconstruct, opts.reconstruct_first) {
        (true, _) => None,
        (false, 0) => return Ok(None),
        (false, n) => Some(n),
    };
    if opts.rounding != adaround::Rounding::Nearest {
        return Ok(None);
    }
    let ropts = reconstruct::ReconstructOptions {
        threads: opts.threads.max(1),
        engine,
        weight_method: opts.weight_method,
        per_channel: plan.per_channel,
        first_layers,
        ..Default::default()
    };
    let build = |w: &HashMap<String, qparams::QuantizedWeight>| {
        write_qdq(a, opts, plan, &cal.params, w, cal.samples)
    };
    let r = reconstruct::reconstruct(a, plan, weights, set, fit, &ropts, &build, progress)?;
    trim_freed_memory();
    progress.log(&format!(
        "reconstructed {} layers on quantized inputs in {:.1} s",
        r.layers.len(),
        r.seconds
    ));
    Ok(Some(r))
}

/// The QDQ model: the float model with Q/DQ pairs on the quantized layers and a
/// `pare.quantize` metadata entry saying how it was made.
fn write_qdq(
    a: &Analysis,
    opts: &QuantOptions,
    plan: &placement::Plan,
    act_params: &HashMap<String, QParams>,
    weights: &HashMap<String, qparams::QuantizedWeight>,
    samples: usize,
) -> Result<ModelProto> {
    let mut out = a.model.proto.clone();
    let layers: Vec<usize> = (0..plan.candidates.len())
        .filter(|&i| plan.candidates[i].quantized)
        .collect();
    let g = out
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    qdq::insert(
        g,
        &a.index,
        plan,
        &layers,
        &qdq::Insert {
            act_params,
            weights,
            per_channel: plan.per_channel,
            suffix: "",
        },
    )?;
    out.metadata_props
        .retain(|p| p.key.as_deref() != Some("pare.quantize"));
    out.metadata_props.push(StringStringEntryProto::new(
        "pare.quantize",
        format!(
            "format={} method={} samples={samples} weights={} per_channel={} rounding={}",
            match opts.format {
                Format::Trt => "trt",
                Format::Ort => "ort",
            },
            opts.calib.method.name(),
            match opts.weight_method {
                WeightMethod::Minmax => "minmax",
                WeightMethod::Mse => "mse",
            },
            plan.per_channel,
            match opts.rounding {
                adaround::Rounding::Nearest => "nearest",
                adaround::Rounding::Learned => "learned",
            }
        ),
    ));
    Ok(out)
}

/// Calibrated ranges for the report, sorted by tensor.
fn ranges(cal: &calibrate::Calibration) -> Vec<TensorRange> {
    let mut ranges: Vec<TensorRange> = cal
        .stats
        .iter()
        .filter_map(|(t, s)| {
            let q = cal.params.get(t)?;
            Some(TensorRange {
                tensor: t.clone(),
                min: s.min,
                max: s.max,
                scale: q.scale,
                zero_point: q.zero_point,
            })
        })
        .collect();
    ranges.sort_by(|a, b| a.tensor.cmp(&b.tensor));
    ranges
}

/// Quantized layers worst first, then float layers worst first.
fn ranked(layers: &[diag::LayerDiag]) -> Vec<diag::LayerDiag> {
    let mut layers = layers.to_vec();
    layers.sort_by(|x, y| {
        y.quantized.cmp(&x.quantized).then(
            x.sqnr_db
                .unwrap_or(f64::INFINITY)
                .total_cmp(&y.sqnr_db.unwrap_or(f64::INFINITY)),
        )
    });
    layers
}

/// What calibration hands to the rest of the pipeline.
struct Calibrated {
    set: data::SampleSet,
    plan: placement::Plan,
    cal: calibrate::Calibration,
    engine: crate::runtime::EngineKind,
    weights: HashMap<String, qparams::QuantizedWeight>,
    /// Which samples calibrated and which measure fidelity.
    split: crate::fidelity::Split,
    bias_corrected: Vec<bias_correct::BiasCorrection>,
    choice: Option<choose::ChoiceReport>,
}

/// Calibration: checks the samples against the model, places Q/DQ, quantizes the weights and
/// runs the float model over the fitting samples (with bias correction's probes riding along).
fn calibrate_model(
    a: &Analysis,
    opts: &QuantOptions,
    notes: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Calibrated> {
    progress.phase("checking inputs", None);
    let decls = data::input_decls(a.graph(), &a.pins)?;
    let set = data::SampleSet::open(decls, &opts.source, opts.samples, opts.preprocess.clone())?;
    notes.extend(set.notes.clone());
    notes.extend(set.dynamic_notes());
    progress.log(&format!(
        "{} calibration samples from {}",
        set.len(),
        set.source
    ));
    let plan = placement::plan(
        a,
        &placement::PlacementOptions {
            tags: opts.tags.clone(),
            exclude: opts.exclude.clone(),
            quantize_small: opts.quantize_small,
        },
    );
    notes.extend(plan.notes.clone());
    if plan.candidates.is_empty() {
        return Err(PareError::Usage(
            "nothing to quantize: the model has no Conv, ConvTranspose, Gemm, MatMul, residual Add or pooling on float tensors".into(),
        ));
    }
    let engine = opts.engine.resolve()?;
    let split = crate::fidelity::HoldoutArgs {
        holdout: opts.holdout,
    }
    .split(set.len())?;
    progress.phase("quantizing weights", None);
    let mut weights = qdq::quantize_weights(a.graph(), &plan, opts.weight_method)?;
    let (calib_model, probes) = if opts.bias_correction {
        bias_correct::probes(&a.model.proto, &plan, &weights)?
    } else {
        (a.model.proto.clone(), Vec::new())
    };
    bound_allocator_arenas();
    let copts = calibrate::CalibrateOptions {
        config: opts.calib,
        two_pass: opts.two_pass,
        threads: opts.threads.max(1),
        symmetric: opts.format == Format::Trt,
        engine,
        fit: split.fit.clone(),
        means: probes.iter().map(|p| p.output.clone()).collect(),
    };
    let mut cal = calibrate::calibrate(&calib_model, &plan, &set, &copts, progress)?;
    drop(calib_model);
    let choice = if opts.choose_calibrator {
        let c = choose::choose(&a.model.proto, &plan, &set, &copts, &mut cal, progress)?;
        cal.seconds += c.seconds;
        Some(c)
    } else {
        None
    };
    let bias_corrected = bias_correct::apply(&a.model.proto, &probes, &cal.means, &mut weights);
    trim_freed_memory();
    progress.log(&format!(
        "calibrated {} tensors on {} samples in {:.1} s ({})",
        cal.stats.len(),
        cal.samples,
        cal.seconds,
        engine
    ));
    for (t, s) in &cal.stats {
        if s.nans > 0 {
            notes.push(format!(
                "tensor '{t}' had {} NaN values during calibration",
                s.nans
            ));
        }
    }
    Ok(Calibrated {
        set,
        plan,
        cal,
        engine,
        weights,
        split,
        bias_corrected,
        choice,
    })
}

/// Quantizes the analysed model: calibration, weights, diagnostics, `--target-sqnr`
/// fallback, Q/DQ insertion, report.
pub fn quantize(
    original: &Analysis,
    opts: &QuantOptions,
    progress: &dyn Progress,
) -> Result<Quantized> {
    let start = Instant::now();
    let mut notes = Vec::new();
    let upgraded = upgrade_opset(original, &mut notes)?;
    let original = upgraded.as_ref().unwrap_or(original);
    check_options(original, opts)?;
    let (equalized, equalization) = equalize_model(original, opts)?;
    let a = equalized.as_ref().unwrap_or(original);
    let (act_equalized, activation_equalization, stream_equalization) =
        act_equalize_model(a, opts, progress)?;
    let a = act_equalized.as_ref().unwrap_or(a);
    let (centered, centering, fixed, folds) = center_model(a, opts, progress)?;
    let a = centered.as_ref().unwrap_or(a);
    let Calibrated {
        set,
        mut plan,
        mut cal,
        engine,
        mut weights,
        split,
        mut bias_corrected,
        choice,
    } = calibrate_model(a, opts, &mut notes, progress)?;
    for (t, o) in &fixed {
        if let Some(p) = cal.params.get_mut(t) {
            *p = qparams::QParams::symmetric(f64::from(*o));
        }
    }
    let learned_rounding = learn_rounding(
        a,
        opts,
        &plan,
        &mut weights,
        &set,
        &split.fit,
        engine,
        &mut bias_corrected,
        progress,
    )?;
    let reconstruction = reconstruct_weights(
        a,
        opts,
        &plan,
        &mut weights,
        &cal,
        &set,
        &split.fit,
        engine,
        progress,
    )?;
    // Where no bias correction set a centered consumer's bias, the offset goes through the
    // INT8 weights it meets.
    center::fold_quantized(&a.model.proto, &folds, &mut weights)?;
    let eval: Vec<usize> = (0..set.len().min(opts.eval_samples.max(1))).collect();
    progress.phase("diagnosing", Some(eval.len() as u64));
    let diag_start = Instant::now();
    // The mixed-precision search ranks layers by their isolated SQNR: it needs them.
    let per_layer =
        !opts.no_layer_diagnostics || opts.target_sqnr.is_some() || opts.min_agreement.is_some();
    let run = DiagRun {
        a,
        params: &cal.params,
        weights: &weights,
        set: &set,
        eval: &eval,
        threads: opts.threads.max(1),
        engine,
    };
    let mut diagnosis = run.run(&plan, per_layer, progress)?;
    for n in &diagnosis.notes {
        if !notes.contains(n) {
            notes.push(n.clone());
        }
    }
    let chosen = mixed_precision(&run, opts, &mut plan, &mut diagnosis, progress)?;
    let reached = chosen.as_ref().map(|c| c.report.reached);
    let (fallback, mixed) = chosen.map_or((Vec::new(), None), |c| (c.steps, Some(c.report)));
    let diagnostics_seconds = diag_start.elapsed().as_secs_f64();
    if let Some(n) = discrete_note(a, &plan, &diagnosis) {
        notes.push(n);
    }
    progress.phase("writing Q/DQ", None);
    let out = write_qdq(a, opts, &plan, &cal.params, &weights, cal.samples)?;
    let (out, low_precision) = crate::convert::lower_quantized(a, out, opts, progress)?;
    let fidelity = measure_fidelity(original, &out, &set, &split, engine, opts.threads, progress)
        .map_err(|e| notes.push(format!("task fidelity not measured: {e}")))
        .ok();
    let quantized_layers = plan.quantized_count();
    let report = QuantReport {
        output: None,
        model: a
            .model
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<memory>".into()),
        format: opts.format,
        method: opts.calib.method,
        percentile: (opts.calib.method == Method::Percentile).then_some(opts.calib.percentile),
        two_pass: opts.two_pass,
        weight_method: opts.weight_method,
        rounding: opts.rounding,
        learned_rounding,
        reconstruction,
        calibration_source: set.source.clone(),
        engine,
        samples: set.len(),
        calibration_samples: cal.samples,
        eval_samples: eval.len(),
        input_shapes: set.shape_counts(),
        calibration_seconds: cal.seconds,
        diagnostics_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        calibration_state_bytes: cal.state_bytes,
        peak_samples_in_memory: set.peak_live(),
        output_sqnr_db: diagnosis.output_sqnr_db,
        max_abs_err: diagnosis.max_abs_err,
        outputs: diagnosis.outputs.clone(),
        quantized_layers,
        float_layers: plan.candidates.len() - quantized_layers,
        layers: ranked(&diagnosis.layers),
        target_sqnr_db: opts.target_sqnr,
        min_agreement: opts.min_agreement,
        target_reached: reached,
        fallback,
        mixed,
        ranges: ranges(&cal),
        fidelity,
        bias_correction: opts.bias_correction,
        bias_corrected,
        equalization,
        calibrator_choice: choice,
        activation_equalization,
        stream_equalization,
        centering,
        notes,
        low_precision,
    };
    Ok(Quantized { model: out, report })
}

/// Cross-layer equalization of the float model when `opts.equalize`: the equalized model's
/// analysis (None when nothing changed) and the report.
fn equalize_model(
    a: &Analysis,
    opts: &QuantOptions,
) -> Result<(Option<Analysis>, Option<equalize::EqualizeReport>)> {
    if !opts.equalize {
        return Ok((None, None));
    }
    let (m, report) = equalize::equalize(&a.model.proto, 4)?;
    if report.pairs == 0 {
        return Ok((None, Some(report)));
    }
    let mut model = a.model.clone();
    model.proto = m;
    Ok((Some(Analysis::new(model, &a.pins)?), Some(report)))
}

/// Activation-range equalization when `opts.act_equalize`: per-channel ranges of the
/// activations between a convolution and a depthwise one, measured on the first
/// [`choose::EQUALIZE_SAMPLES`] fitting samples, evened out ([`equalize::equalize_activations`]).
fn act_equalize_model(
    a: &Analysis,
    opts: &QuantOptions,
    progress: &dyn Progress,
) -> Result<ActEqualized> {
    if !opts.act_equalize {
        return Ok((None, None, None));
    }
    let dense = opts.act_equalize_dense > 0.0;
    let mut tensors = equalize::activation_pairs(&a.model.proto, dense);
    let found = if dense && opts.stream_equalize {
        stream::streams(&a.model.proto)
    } else {
        Vec::new()
    };
    for s in &found {
        tensors.extend(s.tensors.iter().map(|t| (t.clone(), s.channels)));
    }
    if tensors.is_empty() {
        return Ok((None, Some(equalize::EqualizeReport::default()), None));
    }
    let decls = data::input_decls(a.graph(), &a.pins)?;
    let set = data::SampleSet::open(decls, &opts.source, opts.samples, opts.preprocess.clone())?;
    let split = crate::fidelity::HoldoutArgs {
        holdout: opts.holdout,
    }
    .split(set.len())?;
    let indices: Vec<usize> = split
        .fit
        .iter()
        .copied()
        .take(choose::EQUALIZE_SAMPLES)
        .collect();
    let engine = opts.engine.resolve()?;
    // The ranges pass runs before calibration: bound the allocator's arenas for it too, and
    // hand its freed session memory back before the calibration session grows (it raised the
    // peak by ~70 MB on MobileNetV2).
    bound_allocator_arenas();
    let amax = choose::channel_amax(
        &a.model.proto,
        &tensors,
        &set,
        &indices,
        engine,
        opts.threads.max(1),
        progress,
    )?;
    trim_freed_memory();
    let (m, report) = equalize::equalize_activations(
        &a.model.proto,
        &amax,
        ACT_EQUALIZE_CAP,
        opts.act_equalize_dense,
    )?;
    // Pair equalization only appends initializers: the streams' indices still hold.
    let (m, streams) =
        stream::equalize_streams(&m, &found, &amax, opts.act_equalize_dense, ACT_EQUALIZE_CAP)?;
    let streams = (dense && opts.stream_equalize).then_some(streams);
    if report.pairs == 0 && streams.as_ref().is_none_or(|s| s.streams == 0) {
        return Ok((None, Some(report), streams));
    }
    let mut model = a.model.clone();
    model.proto = m;
    Ok((Some(Analysis::new(model, &a.pins)?), Some(report), streams))
}

/// What [`act_equalize_model`] hands on: the equalized model's analysis (None when nothing
/// changed), the pairs' report and the residual streams' report.
type ActEqualized = (
    Option<Analysis>,
    Option<equalize::EqualizeReport>,
    Option<stream::StreamReport>,
);

/// What [`center_model`] hands on: the centered model's analysis (None when nothing changed),
/// the report, and the fixed ranges of the centered tensors.
type Centered = (
    Option<Analysis>,
    Option<center::CenterReport>,
    HashMap<String, f32>,
    Vec<center::Fold>,
);

/// The centered model, its report and the fixed ranges of its centered tensors
/// ([`center`]), when `opts.center` and the format is symmetric.
fn center_model(a: &Analysis, opts: &QuantOptions, progress: &dyn Progress) -> Result<Centered> {
    if !opts.center || opts.format != Format::Trt {
        return Ok((None, None, HashMap::new(), Vec::new()));
    }
    let plan = placement::plan(
        a,
        &placement::PlacementOptions {
            tags: opts.tags.clone(),
            exclude: opts.exclude.clone(),
            quantize_small: opts.quantize_small,
        },
    );
    // Only where every reader is a quantized layer: a float consumer gains nothing and would
    // pay for the Pad.
    let quantized: HashSet<usize> = plan
        .candidates
        .iter()
        .filter(|c| c.quantized && c.kind == placement::Kind::Weighted)
        .map(|c| c.node)
        .collect();
    let sites: Vec<center::Site> = center::sites(&a.model.proto)
        .into_iter()
        .filter(|s| s.consumers().iter().all(|k| quantized.contains(k)))
        .collect();
    if sites.is_empty() {
        return Ok((
            None,
            Some(center::CenterReport::default()),
            HashMap::new(),
            Vec::new(),
        ));
    }
    let decls = data::input_decls(a.graph(), &a.pins)?;
    let set = data::SampleSet::open(decls, &opts.source, opts.samples, opts.preprocess.clone())?;
    let split = crate::fidelity::HoldoutArgs {
        holdout: opts.holdout,
    }
    .split(set.len())?;
    // The sites' ranges come from calibration itself, run on the layers that read them, over
    // all fitting samples: on MobileNetV2 ranges from the first 8 alone clipped more and gave
    // 15.6 dB at the logits instead of 17.3 (the pass costs ~1 s of ~7).
    let readers: HashSet<usize> = sites.iter().flat_map(|s| s.consumers().to_vec()).collect();
    let mut sub = plan;
    sub.candidates.retain(|c| readers.contains(&c.node));
    sub.shared.clear();
    let copts = calibrate::CalibrateOptions {
        config: opts.calib,
        two_pass: false,
        threads: opts.threads.max(1),
        symmetric: true,
        engine: opts.engine.resolve()?,
        fit: split.fit,
        means: Vec::new(),
    };
    bound_allocator_arenas();
    let cal = calibrate::calibrate(&a.model.proto, &sub, &set, &copts, progress)?;
    trim_freed_memory();
    let offsets = center::offsets(&sites, &cal.stats, &opts.calib);
    let c = center::apply(&a.model.proto, &sites, &offsets)?;
    if c.report.tensors == 0 {
        return Ok((None, Some(c.report), HashMap::new(), Vec::new()));
    }
    let mut model = a.model.clone();
    model.proto = c.model;
    Ok((
        Some(Analysis::new(model, &a.pins)?),
        Some(c.report),
        c.fixed,
        c.folds,
    ))
}

/// Largest factor activation equalization multiplies a channel by: a channel a thousand times
/// below the largest is noise the calibration samples barely exercised.
const ACT_EQUALIZE_CAP: f32 = 100.0;

/// Task fidelity (top-1 agreement, mask IoU, SQNR per output) of the QDQ model `out` against
/// the float model on the samples calibration did not see.
fn measure_fidelity(
    a: &Analysis,
    out: &ModelProto,
    set: &data::SampleSet,
    split: &crate::fidelity::Split,
    engine: crate::runtime::EngineKind,
    threads: usize,
    progress: &dyn Progress,
) -> Result<crate::fidelity::Fidelity> {
    progress.phase("measuring fidelity", Some(split.eval.len() as u64));
    let threads = threads.max(1);
    let reference = crate::runtime::pool::RunnerCache::new(a.model.proto.clone(), "float model")
        .on(engine, threads);
    let candidate =
        crate::runtime::pool::RunnerCache::new(out.clone(), "quantized model").on(engine, threads);
    let acc =
        crate::fidelity::measure(&reference, &candidate, set, &split.eval, threads, progress)?;
    Ok(acc.finish(split.held_out, &set.source, Some(engine)))
}

/// glibc gives every thread that allocates its own malloc arena and keeps what is freed there;
/// with calibration workers, engine threads and then diagnostics each touching different
/// arenas, the process peak grew by 20 % (DeepLabV3, 64 samples: 0.69 GB with two arenas,
/// up to 0.85 GB with the default eight per core). Two arenas serve two workers, and trimming
/// after calibration hands the histograms' scratch back before diagnostics start.
fn bound_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is thread-safe and has no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn trim_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim releases free pages of the allocator; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What `pare quantize` is asked to do.
#[derive(Clone, Debug)]
pub struct QuantizeRequest {
    pub options: QuantOptions,
    /// Where the QDQ model goes (never the input).
    pub output: std::path::PathBuf,
}

impl QuantizeRequest {
    /// The equivalent `pare quantize` command line (what the TUI's job view shows), for the
    /// options a TUI dialog sets.
    pub fn command_line(&self, model: &str) -> String {
        let o = &self.options;
        let calib = match &o.source {
            CalibSource::Random { .. } => "random".to_string(),
            CalibSource::Path(p) => p.display().to_string(),
            CalibSource::Paths(ps) => ps
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" --calib "),
            CalibSource::PerInput(v) => v
                .iter()
                .map(|(n, p)| format!("{n}={}", p.display()))
                .collect::<Vec<_>>()
                .join(" --calib "),
        };
        format!(
            "pare quantize {model} --calib {calib} --samples {} --method {}{}{} -o {}",
            o.samples,
            o.calib.method.name(),
            if o.format == Format::Ort {
                " --format ort"
            } else {
                ""
            },
            o.precision
                .map_or(String::new(), |p| format!(" --precision {}", p.suffix())),
            self.output.display()
        )
    }
}

/// `pare quantize`: quantizes and writes the QDQ model; the report's `output` names the file.
pub fn run(a: &Analysis, req: &QuantizeRequest, progress: &dyn Progress) -> Result<QuantReport> {
    crate::report::check_output(a.model.path.as_deref(), &req.output)?;
    quantize_to_file(a, &req.options, &req.output, progress)
}

/// Quantizes and writes the QDQ model to `out`; the report's `output` names the file.
pub fn quantize_to_file(
    a: &Analysis,
    opts: &QuantOptions,
    out: &std::path::Path,
    progress: &dyn Progress,
) -> Result<QuantReport> {
    let q = quantize(a, opts, progress)?;
    let mut m = a.model.clone();
    m.proto = q.model;
    crate::model::io::save_model(&m, out, &crate::model::io::SaveOptions::default())?;
    let mut report = q.report;
    report.output = Some(out.display().to_string());
    progress.event(JobEvent::Finished {
        summary: format!(
            "{} layers quantized, output SQNR {}, wrote {}",
            report.quantized_layers,
            fmt_db(report.output_sqnr_db),
            out.display()
        ),
    });
    Ok(report)
}

impl QuantReport {
    /// `224x224 image` style list of the calibration input shapes.
    fn shapes_text(&self) -> String {
        let shapes: Vec<String> = self
            .input_shapes
            .iter()
            .map(|s| {
                let dims: Vec<String> = s
                    .shapes
                    .iter()
                    .map(|(n, d)| {
                        let d: Vec<String> = d.iter().map(|x| x.to_string()).collect();
                        format!("{n} {}", d.join("x"))
                    })
                    .collect();
                if self.input_shapes.len() > 1 {
                    format!("{} ({} samples)", dims.join(", "), s.samples)
                } else {
                    dims.join(", ")
                }
            })
            .collect();
        shapes.join("; ")
    }

    /// Worst quantized layers and the layers left float.
    fn layers_text(&self, s: &mut String) {
        let quantized: Vec<_> = self.layers.iter().filter(|l| l.quantized).collect();
        if !quantized.is_empty() {
            s.push_str(
                "worst layers (isolated SQNR = this layer alone; cumulative = in the quantized model):\n",
            );
            for l in quantized.iter().take(10) {
                let _ = writeln!(
                    s,
                    "  {:>9}  {:>9}  {:<16} {}",
                    fmt_db(l.sqnr_db),
                    fmt_db(l.cumulative_sqnr_db),
                    l.op,
                    l.node
                );
            }
            if quantized.len() > 10 {
                let _ = writeln!(s, "  … {} more (see --json)", quantized.len() - 10);
            }
        }
        let float: Vec<_> = self.layers.iter().filter(|l| !l.quantized).collect();
        if !float.is_empty() {
            s.push_str("float layers:\n");
            for l in float.iter().take(12) {
                let _ = writeln!(
                    s,
                    "  {:<16} {}  ({}; would be {})",
                    l.op,
                    l.node,
                    l.reason.as_deref().unwrap_or("float"),
                    fmt_db(l.sqnr_db)
                );
            }
            if float.len() > 12 {
                let _ = writeln!(s, "  … {} more", float.len() - 12);
            }
        }
    }
}

impl Report for QuantReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        if let Some(l) = &self.low_precision {
            s.push_str(&l.render_text());
        }
        let fmt = match self.format {
            Format::Trt => "TensorRT: INT8 symmetric, per-channel weights",
            Format::Ort => "onnxruntime: UINT8 activations, INT8 per-channel weights",
        };
        let _ = writeln!(s, "quantized   {} ({fmt})", self.model);
        let _ = writeln!(
            s,
            "calibration {} samples from {}, {} ({}), {:.1} s",
            self.calibration_samples,
            self.calibration_source,
            self.method.name(),
            self.shapes_text(),
            self.calibration_seconds
        );
        let _ = writeln!(
            s,
            "engine      {} (calibration; per-layer diagnostics on tract)",
            self.engine
        );
        if let Some(r) = &self.learned_rounding {
            r.render_text(&mut s);
        }
        if let Some(r) = &self.reconstruction {
            r.render_text(&mut s);
        }
        let _ = writeln!(
            s,
            "layers      {} quantized, {} float   (diagnostics on {} samples, {:.1} s)",
            self.quantized_layers, self.float_layers, self.eval_samples, self.diagnostics_seconds
        );
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "output      {:<24} SQNR {:>9}   max abs err {:.4}",
                o.name,
                fmt_db(o.sqnr_db),
                o.max_abs_err
            );
        }
        if self.outputs.len() > 1 {
            let _ = writeln!(s, "all outputs SQNR {}", fmt_db(self.output_sqnr_db));
        }
        if let Some(f) = &self.fidelity {
            s.push_str(&f.render_text());
        }
        if let Some(e) = &self.equalization {
            let _ = writeln!(
                s,
                "equalize    {} conv pairs, {} ReLU6 rewritten as Relu+Min; per-channel weight ranges span {:.2} -> {:.2} decades (--equalize)",
                e.pairs, e.clips_rewritten, e.spread_before, e.spread_after
            );
        }
        if let Some(c) = &self.calibrator_choice {
            let picks: Vec<String> = c.chosen.iter().map(|(m, n)| format!("{m} {n}")).collect();
            let _ = writeln!(
                s,
                "ranges      chosen per tensor by downstream error on {} samples ({:.1} s): {}; {:.1} dB below {} on average (--no-calibrator-choice to use one for all)",
                c.samples,
                c.seconds,
                picks.join(", "),
                c.mean_gain_db,
                self.method.name()
            );
        }
        if let Some(e) = &self.activation_equalization {
            let _ = writeln!(
                s,
                "act-equal   {} conv -> depthwise and {} conv -> conv activations (strength {:.2}, --act-equalize-dense) evened out per channel ({} ReLU6 as Relu+Min); per-channel ranges span {:.2} -> {:.2} decades (--no-act-equalize to keep)",
                e.pairs - e.dense_pairs,
                e.dense_pairs,
                e.dense_strength,
                e.clips_rewritten,
                e.spread_before,
                e.spread_after
            );
        }
        if let Some(e) = self.stream_equalization.as_ref().filter(|e| e.streams > 0) {
            let _ = writeln!(
                s,
                "streams     {} residual streams ({} tensors) evened out per channel at strength {:.2}; channel ranges span {:.2} -> {:.2} decades",
                e.streams, e.tensors, e.strength, e.spread_before, e.spread_after
            );
        }
        if let Some(c) = self.centering.as_ref().filter(|c| c.tensors > 0) {
            let _ = writeln!(
                s,
                "centering   {} ReLU/ReLU6 outputs shifted to use the whole symmetric INT8 grid (half the step; {} explicit Pad nodes for padded convs; --no-center to keep)",
                c.tensors, c.pads
            );
        }
        if self.bias_correction {
            let _ = writeln!(
                s,
                "bias        corrected {} layers (mean output shift of weight rounding; --no-bias-correction to keep)",
                self.bias_corrected.len()
            );
        }
        self.layers_text(&mut s);
        if let Some(m) = &self.mixed {
            m.render_text(&mut s);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note        {n}");
        }
        if let Some(o) = &self.output {
            let _ = writeln!(s, "wrote       {o}");
        }
        s
    }
}

/// Ops whose output jumps when their input moves a little: selections and comparisons.
const DISCRETE: [&str; 14] = [
    "ArgMax",
    "ArgMin",
    "TopK",
    "NonZero",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Round",
    "Floor",
    "Ceil",
    "Sign",
    "NonMaxSuppression",
];

/// When the output loses far more than any quantized layer, the loss happens after them:
/// name the value-dependent ops downstream that amplify small differences (seed Q9).
fn discrete_note(a: &Analysis, plan: &placement::Plan, d: &diag::Diagnosis) -> Option<String> {
    let out = d.output_sqnr_db?;
    let worst = d
        .layers
        .iter()
        .filter(|l| l.quantized)
        .filter_map(|l| l.cumulative_sqnr_db)
        .reduce(f64::min)?;
    if out >= worst - 10.0 {
        return None;
    }
    let starts: Vec<usize> = plan
        .candidates
        .iter()
        .filter(|c| c.quantized)
        .map(|c| c.node)
        .collect();
    let g = a.graph();
    let mut ops: Vec<String> = a
        .index
        .reachable(&starts, true)
        .into_iter()
        .filter(|&n| DISCRETE.contains(&g.node[n].op_type()))
        .map(|n| format!("{} ({})", g.node[n].display_name(), g.node[n].op_type()))
        .collect();
    ops.sort();
    if ops.is_empty() {
        return None;
    }
    Some(format!(
        "the output SQNR ({out:.1} dB) is far below every quantized layer's ({worst:.1} dB and up): the loss happens after them, in value-dependent ops that turn small differences into different selections: {}. Keep the layers feeding them float (--exclude) or quantize only the part before them (pare split)",
        ops.join(", ")
    ))
}

/// Parameters keyed by tensor, for callers that build their own Q/DQ (benchmarks, tests).
pub type ParamMap = HashMap<String, QParams>;
