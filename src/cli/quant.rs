//! `pare quantize`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open};
use pare::convert::Precision;
use pare::data::DataArgs;
use pare::jobs::CliProgress;
use pare::quant::{self, CalibConfig, CalibSource, Format, Method, QuantOptions, WeightMethod};
use pare::report::{check_output, fmt_db};
use pare::tags::Tags;

/// `--precision` of `pare quantize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantPrecision {
    Fp16,
    Bf16,
    Fp32,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    pare quantize model.onnx -o model.int8.onnx --calib images/\n  \
    pare quantize stereo.onnx -o q.onnx --calib left=data/left --calib right=data/right\n  \
    pare quantize model.onnx -o q.onnx --calib random --samples 64 --format ort --json\n  \
    pare quantize model.onnx -o q.onnx --calib images/ --target-sqnr 30 --exclude /head/*")]
pub struct QuantizeArgs {
    /// The float ONNX model.
    pub model: PathBuf,
    /// Output QDQ model (never the input).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Calibration data (`--data`, alias `--calib`; required), `--samples` (default 32),
    /// `--seed` and image preprocessing.
    #[command(flatten)]
    pub data: DataArgs,
    /// Calibrator for activation ranges.
    #[arg(long, value_enum, default_value_t = Method::Mse)]
    pub method: Method,
    /// Percentile for `--method percentile`.
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    /// trt: symmetric INT8 everywhere (TensorRT); ort: UINT8 asymmetric activations
    /// (onnxruntime).
    #[arg(long, value_enum, default_value_t = Format::Trt)]
    pub format: Format,
    /// Precision of the non-quantized part and the DQ scales: fp32 (default), fp16 (what
    /// TensorRT 11 needs for an INT8 + FP16 engine: it takes precision only from the file) or
    /// bf16. Not the default: onnxruntime's CPU Q/DQ fusion miscomputes FP16 scales (measured:
    /// MobileNetV2 top-1 agreement 0.00 with its default optimizations, 0.69 with them off, as
    /// the FP32-scale file), so a file checked in onnxruntime would look broken; pare itself
    /// runs such files with onnxruntime's graph optimizations off.
    #[arg(long, value_enum)]
    pub precision: Option<QuantPrecision>,
    /// Keep the most sensitive layers float until the output SQNR reaches DB (ranked by the
    /// per-layer diagnostics, confirmed by a few runs on the evaluation samples).
    #[arg(long = "target-sqnr", value_name = "DB")]
    pub target_sqnr: Option<f64>,
    /// Keep the most sensitive layers float until the task agreement with the float model
    /// (top-1 for class scores, mask IoU / pixel agreement for dense maps) reaches F (0-1).
    #[arg(long = "min-agreement", value_name = "F")]
    pub min_agreement: Option<f64>,
    /// Tags file: layers tagged skip stay float.
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Keep layers float: an op type (`Gemm`), a node name or a glob (`/head/*`). Repeatable.
    #[arg(long, value_name = "OP|NAME|GLOB")]
    pub exclude: Vec<String>,
    /// Quantize small layers too (by default, as ModelOpt, layers under 16 channels and
    /// GEMVs stay float).
    #[arg(long = "quantize-small")]
    pub quantize_small: bool,
    /// Two passes: ranges first, then fixed-range histograms (TensorRT's scheme; twice the time).
    #[arg(long = "two-pass")]
    pub two_pass: bool,
    /// Per-channel weight scales: mse (clip outliers where it lowers the error) or minmax.
    #[arg(long = "weight-method", value_enum, default_value_t = WeightMethod::Mse)]
    pub weight_method: WeightMethod,
    /// Weight rounding: nearest, or learned per layer to minimise its output error on the
    /// calibration activations (AdaRound-style; adds seconds per model).
    #[arg(long, value_enum, default_value_t = quant::adaround::Rounding::Nearest)]
    pub rounding: quant::adaround::Rounding,
    /// Samples the diagnostics run on (the first ones of the calibration set).
    #[arg(long = "eval-samples", default_value_t = 8)]
    pub eval_samples: usize,
    /// Skip per-layer diagnostics (output SQNR is still measured).
    #[arg(long = "no-layer-diagnostics")]
    pub no_layer_diagnostics: bool,
    /// Worker threads (samples run in parallel).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Engine for the calibration runs: onnxruntime is several times faster on some models;
    /// auto uses it when its library loads (PARE_ORT_LIB, the active virtualenv, ./.venv,
    /// python3's onnxruntime package), else tract. Default: $PARE_ENGINE, else auto.
    #[arg(long, value_enum)]
    pub engine: Option<pare::runtime::EngineChoice>,
    /// Keep the float biases: no bias correction (by default the mean output shift that
    /// weight rounding causes is measured on the calibration samples and removed).
    #[arg(long = "no-bias-correction")]
    pub no_bias_correction: bool,
    /// One calibrator (--method) for every activation: no per-tensor choice of the range by the
    /// error it causes in the consuming layers.
    #[arg(long = "no-calibrator-choice")]
    pub no_calibrator_choice: bool,
    /// Keep the activations between a convolution and a depthwise one as they are: no
    /// per-channel range equalization (it changes weights and ReLU6 bounds, not the function).
    #[arg(long = "no-act-equalize")]
    pub no_act_equalize: bool,
    /// Strength (0-1) of activation equalization where the second conv is an ordinary one
    /// (depthwise -> pointwise projection, projection -> expansion): channel c is scaled by
    /// (range_c / largest)^-S, which costs that conv's weights precision; 0 equalizes only
    /// conv -> depthwise pairs.
    #[arg(long = "act-equalize-dense", value_name = "S", default_value_t = 0.5)]
    pub act_equalize_dense: f32,
    /// Keep ReLU/ReLU6 outputs as they are with --format trt: no centering (by default each
    /// one that feeds convolutions is shifted by half its range so the symmetric INT8 grid's
    /// negative half covers it too; the function is unchanged, padded convs get an explicit
    /// Pad).
    #[arg(long = "no-center")]
    pub no_center: bool,
    /// No residual-stream equalization: by default the channels of each stream of residual
    /// Adds (the projections' and the Adds' outputs) are evened out together at the
    /// --act-equalize-dense strength, producers' rows and consumers' columns absorbing it.
    #[arg(long = "no-stream-equalize")]
    pub no_stream_equalize: bool,
    /// Reconstruct the weights: refit each layer, in graph order, to the float layer's output
    /// from the input the quantized model gives it, then round with GPTQ's error feedback
    /// (trained MobileNetV2, --format trt: logit SQNR 18.2 -> 21.5 dB, top-1 agreement on 256
    /// held-out crops 0.832 -> 0.902, 33 s instead of 9; --format ort lost agreement although
    /// its SQNR rose; one run of both models' prefixes per layer).
    #[arg(long)]
    pub reconstruct: bool,
    /// Without --reconstruct, reconstruct only the first N quantized layers in graph order,
    /// where activation noise enters and is amplified most (0 turns it off; trained
    /// MobileNetV2, --format trt: logit SQNR 18.2 -> 21.8 dB for ~4 s; past 12 layers it
    /// gains under 0.1 dB).
    #[arg(long = "reconstruct-first", value_name = "N", default_value_t = QuantOptions::default().reconstruct_first)]
    pub reconstruct_first: usize,
    /// Cross-layer equalization: even out the channel ranges of conv → ReLU/ReLU6 → conv
    /// chains first (the function is unchanged). Off by default: on trained MobileNetV2 it
    /// lowered top-1 agreement.
    #[arg(long)]
    pub equalize: bool,
    /// `--holdout F`: share of the samples kept out of calibration to measure task fidelity.
    #[command(flatten)]
    pub holdout: pare::fidelity::HoldoutArgs,
    /// `--finetune STEPS`: quantization-aware training of the written QDQ model (fake
    /// quantization, float weights trained, INT8 weights written back) on the --calib samples.
    #[command(flatten)]
    pub finetune: super::torch::FinetuneFlags,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &QuantizeArgs) -> CmdResult {
    check_output(Some(&a.model), &a.output).map_err(Exit::bad)?;
    super::torch::check_finetune(&a.finetune, &a.data)?;
    let pp = a.data.preprocess.preprocess().map_err(Exit::bad)?;
    if !(0.0..=100.0).contains(&a.percentile) || a.percentile < 50.0 {
        return Err(Exit::bad(anyhow::anyhow!(
            "--percentile {} must be in [50, 100]",
            a.percentile
        )));
    }
    if let Some(f) = a.min_agreement.filter(|f| !(0.0..=1.0).contains(f)) {
        return Err(Exit::bad(anyhow::anyhow!(
            "--min-agreement {f} must be in [0, 1]"
        )));
    }
    let samples = a.data.limit(32).map_err(Exit::bad)?;
    let source = CalibSource::parse(&a.data.data, a.data.seed).map_err(Exit::bad)?;
    let tags = match &a.tags {
        Some(p) => Tags::load(p).map_err(Exit::bad)?,
        None => Tags::default(),
    };
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let opts = QuantOptions {
        source,
        preprocess: pp,
        samples,
        eval_samples: a.eval_samples.max(1),
        format: a.format,
        calib: CalibConfig {
            method: a.method,
            percentile: a.percentile,
        },
        two_pass: a.two_pass,
        weight_method: a.weight_method,
        rounding: a.rounding,
        target_sqnr: a.target_sqnr,
        min_agreement: a.min_agreement,
        tags,
        exclude: a.exclude.clone(),
        quantize_small: a.quantize_small,
        threads: a.threads.max(1),
        no_layer_diagnostics: a.no_layer_diagnostics,
        engine: a
            .engine
            .unwrap_or_else(pare::runtime::EngineChoice::from_env),
        precision: match (a.precision, a.format) {
            (Some(QuantPrecision::Fp16), _) => Some(Precision::Fp16),
            (Some(QuantPrecision::Bf16), _) => Some(Precision::Bf16),
            (Some(QuantPrecision::Fp32), _) | (None, _) => None,
        },
        bias_correction: !a.no_bias_correction,
        equalize: a.equalize,
        choose_calibrator: !a.no_calibrator_choice,
        act_equalize: !a.no_act_equalize,
        act_equalize_dense: a.act_equalize_dense,
        center: !a.no_center,
        stream_equalize: !a.no_stream_equalize,
        reconstruct: a.reconstruct,
        reconstruct_first: a.reconstruct_first,
        holdout: a.holdout.holdout,
    };
    let quiet = a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = CliProgress::new(quiet);
    let req = quant::QuantizeRequest {
        options: opts,
        output: a.output.clone(),
    };
    let result = quant::run(&analysis, &req, &bar);
    bar.finish();
    // A model tract cannot run is bad input too: `pare lint`/`pare fix` say why.
    let report = result.map_err(Exit::bad)?;
    let finetune = super::torch::finetune_written(&a.finetune, &a.model, &a.output, &a.data)?;
    super::torch::print_with_finetune(&report, finetune, a.json)?;
    if report.target_reached == Some(false) {
        return Err(Exit::failed(anyhow::anyhow!(
            "the target is not reached even with every layer returned to float (output SQNR {}{})",
            fmt_db(report.output_sqnr_db),
            report
                .target_sqnr_db
                .map_or(String::new(), |t| format!(", --target-sqnr {t} dB"))
        )));
    }
    Ok(())
}
