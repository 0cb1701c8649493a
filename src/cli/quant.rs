//! `pare quantize`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, check_output, open};
use pare::jobs::CliProgress;
use pare::quant::{
    self, CalibConfig, CalibSource, Format, Layout, Method, Preprocess, QuantOptions, WeightMethod,
};
use pare::tags::Tags;

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
    /// Calibration data: a folder (images .png/.jpg, .npy, ONNX .pb tensors, or one subfolder
    /// per input), NAME=FOLDER once per input, or `random` (seeded normal data).
    #[arg(long, required = true, value_name = "DIR|NAME=DIR|random")]
    pub calib: Vec<String>,
    /// Most calibration samples to use.
    #[arg(long, default_value_t = 32)]
    pub samples: usize,
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
    /// Return the worst layers to float, one at a time, until the output SQNR reaches DB.
    #[arg(long = "target-sqnr", value_name = "DB")]
    pub target_sqnr: Option<f64>,
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
    /// Samples the diagnostics run on (the first ones of the calibration set).
    #[arg(long = "eval-samples", default_value_t = 8)]
    pub eval_samples: usize,
    /// Skip per-layer diagnostics (output SQNR is still measured).
    #[arg(long = "no-layer-diagnostics")]
    pub no_layer_diagnostics: bool,
    /// Seed for `--calib random`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images: resize to HxW (default: the input's declared size).
    #[arg(long, value_name = "HxW")]
    pub resize: Option<String>,
    /// Images: per-channel mean subtracted after scaling (default ImageNet: 0.485,0.456,0.406).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Images: per-channel std (default ImageNet: 0.229,0.224,0.225).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Images: pixel scale before mean/std (default 1/255).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Images: BGR channel order (OpenCV-trained models).
    #[arg(long)]
    pub bgr: bool,
    /// Images: tensor layout (auto: NHWC when the input's last dim is 1 or 3).
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,
    /// Worker threads (samples run in parallel).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Engine for the calibration runs: onnxruntime is several times faster on some models;
    /// auto uses it when its library loads (PARE_ORT_LIB, the active virtualenv, ./.venv,
    /// python3's onnxruntime package), else tract. Default: $PARE_ENGINE, else auto.
    #[arg(long, value_enum)]
    pub engine: Option<pare::runtime::EngineChoice>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn parse_resize(s: &str) -> anyhow::Result<(usize, usize)> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow::anyhow!("--resize '{s}': expected HxW, e.g. 224x224"))?;
    Ok((h.trim().parse()?, w.trim().parse()?))
}

fn fmt_db(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 300.0 => "exact".into(),
        Some(v) => format!("{v:.1} dB"),
        None => "-".into(),
    }
}

pub fn run(a: &QuantizeArgs) -> CmdResult {
    check_output(&a.model, &a.output).map_err(Exit::bad)?;
    let mut pp = Preprocess::default();
    if let Some(r) = &a.resize {
        pp.resize = Some(parse_resize(r).map_err(Exit::bad)?);
    }
    if let Some(m) = &a.mean {
        pp.mean = m.clone();
    }
    if let Some(s) = &a.std {
        if s.iter().any(|v| *v <= 0.0) {
            return Err(Exit::bad(anyhow::anyhow!("--std values must be positive")));
        }
        pp.std = s.clone();
    }
    if let Some(s) = a.scale {
        pp.scale = s;
    }
    pp.bgr = a.bgr;
    pp.layout = a.layout;
    if !(0.0..=100.0).contains(&a.percentile) || a.percentile < 50.0 {
        return Err(Exit::bad(anyhow::anyhow!(
            "--percentile {} must be in [50, 100]",
            a.percentile
        )));
    }
    if a.samples == 0 {
        return Err(Exit::bad(anyhow::anyhow!("--samples must be at least 1")));
    }
    let source = CalibSource::parse(&a.calib, a.seed).map_err(Exit::bad)?;
    let tags = match &a.tags {
        Some(p) => Tags::load(p).map_err(Exit::bad)?,
        None => Tags::default(),
    };
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let opts = QuantOptions {
        source,
        preprocess: pp,
        samples: a.samples,
        eval_samples: a.eval_samples.max(1),
        format: a.format,
        calib: CalibConfig {
            method: a.method,
            percentile: a.percentile,
        },
        two_pass: a.two_pass,
        weight_method: a.weight_method,
        target_sqnr: a.target_sqnr,
        tags,
        exclude: a.exclude.clone(),
        quantize_small: a.quantize_small,
        threads: a.threads.max(1),
        no_layer_diagnostics: a.no_layer_diagnostics,
        engine: a
            .engine
            .unwrap_or_else(pare::runtime::EngineChoice::from_env),
    };
    let quiet = a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = CliProgress::new(quiet);
    let result = quant::quantize_to_file(&analysis, &opts, &a.output, &bar);
    bar.finish();
    // A model tract cannot run is bad input too: `pare lint`/`pare fix` say why.
    let report = result.map_err(Exit::bad)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(Exit::bad)?
        );
    } else {
        print_text(&report);
    }
    if report.target_reached == Some(false) {
        return Err(Exit::failed(anyhow::anyhow!(
            "output SQNR {} is below --target-sqnr {} dB even with every layer returned to float",
            fmt_db(report.output_sqnr_db),
            report.target_sqnr_db.unwrap_or(0.0)
        )));
    }
    Ok(())
}

fn print_text(r: &quant::QuantReport) {
    let fmt = match r.format {
        Format::Trt => "TensorRT: INT8 symmetric, per-channel weights",
        Format::Ort => "onnxruntime: UINT8 activations, INT8 per-channel weights",
    };
    println!("quantized   {} ({fmt})", r.model);
    let shapes: Vec<String> = r
        .input_shapes
        .iter()
        .map(|s| {
            let dims: Vec<String> = s
                .shapes
                .iter()
                .map(|(n, d)| {
                    format!(
                        "{n} {}",
                        d.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join("x")
                    )
                })
                .collect();
            if r.input_shapes.len() > 1 {
                format!("{} ({} samples)", dims.join(", "), s.samples)
            } else {
                dims.join(", ")
            }
        })
        .collect();
    println!(
        "calibration {} samples from {}, {} ({}), {:.1} s",
        r.samples,
        r.calibration_source,
        r.method.name(),
        shapes.join("; "),
        r.calibration_seconds
    );
    println!(
        "engine      {} (calibration; diagnostics on tract)",
        r.engine
    );
    println!(
        "layers      {} quantized, {} float   (diagnostics on {} samples, {:.1} s)",
        r.quantized_layers, r.float_layers, r.eval_samples, r.diagnostics_seconds
    );
    for o in &r.outputs {
        println!(
            "output      {:<24} SQNR {:>9}   max abs err {:.4}",
            o.name,
            fmt_db(o.sqnr_db),
            o.max_abs_err
        );
    }
    if r.outputs.len() > 1 {
        println!("all outputs SQNR {}", fmt_db(r.output_sqnr_db));
    }
    let quantized: Vec<_> = r.layers.iter().filter(|l| l.quantized).collect();
    if !quantized.is_empty() {
        println!(
            "worst layers (isolated SQNR = this layer alone; cumulative = in the quantized model):"
        );
        for l in quantized.iter().take(10) {
            println!(
                "  {:>9}  {:>9}  {:<16} {}",
                fmt_db(l.sqnr_db),
                fmt_db(l.cumulative_sqnr_db),
                l.op,
                l.node
            );
        }
        if quantized.len() > 10 {
            println!("  … {} more (see --json)", quantized.len() - 10);
        }
    }
    let float: Vec<_> = r.layers.iter().filter(|l| !l.quantized).collect();
    if !float.is_empty() {
        println!("float layers:");
        for l in float.iter().take(12) {
            println!(
                "  {:<16} {}  ({}; would be {})",
                l.op,
                l.node,
                l.reason.as_deref().unwrap_or("float"),
                fmt_db(l.sqnr_db)
            );
        }
        if float.len() > 12 {
            println!("  … {} more", float.len() - 12);
        }
    }
    if !r.fallback.is_empty() {
        println!("fallback to reach {} dB:", r.target_sqnr_db.unwrap_or(0.0));
        for s in &r.fallback {
            println!("  {:<48} -> output {}", s.node, fmt_db(s.output_sqnr_db));
        }
    }
    for n in &r.notes {
        println!("note        {n}");
    }
    if let Some(o) = &r.output {
        println!("wrote       {o}");
    }
}
