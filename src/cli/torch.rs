//! `pare import-weights` and `pare finetune`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{CmdResult, EXIT_CHECK_FAILED, Exit, print};
use pare::torch::import::{ImportError, ImportRequest, import_weights};

#[derive(Args, Debug)]
pub struct ImportWeightsArgs {
    /// The ONNX model whose initializers receive the weights (never modified).
    pub model: PathBuf,
    /// The PyTorch checkpoint: a `state_dict` saved with torch.save (.pt/.pth), or .safetensors.
    #[arg(long = "from", value_name = "CHECKPOINT")]
    pub from: PathBuf,
    /// Where to write the model with the imported weights.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Write the model even when some tensors did not match (they keep the model's values).
    #[arg(long)]
    pub partial: bool,
    /// BatchNorm epsilon used when folding BatchNorm into convs (PyTorch's default).
    #[arg(long, default_value_t = 1e-5)]
    pub bn_eps: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Exit 1 when anything was left unmatched (even with `--partial`, which only decides whether
/// the model is written), so a partial load is never silent.
pub fn run_import(a: &ImportWeightsArgs) -> CmdResult {
    let req = ImportRequest {
        model: a.model.clone(),
        checkpoint: a.from.clone(),
        output: a.output.clone(),
        partial: a.partial,
        bn_eps: a.bn_eps,
    };
    let report = import_weights(&req).map_err(|e: ImportError| Exit::bad(e))?;
    print(&report, a.json)?;
    if report.complete() || a.partial {
        Ok(())
    } else {
        Err(Exit(
            EXIT_CHECK_FAILED,
            anyhow::anyhow!(
                "{} missing, {} unmatched model initializer(s), {} unmatched checkpoint tensor(s), {} shape mismatch(es){}",
                report.missing_checkpoint.len(),
                report.unmatched_model.len(),
                report.unmatched_checkpoint.len(),
                report.shape_mismatches.len(),
                first_problem(&report)
            ),
        ))
    }
}

fn first_problem(r: &pare::torch::ImportReport) -> String {
    if let Some(m) = r.missing_checkpoint.first() {
        format!("; first: checkpoint lacks {m}")
    } else if let Some(m) = r.shape_mismatches.first() {
        format!(
            "; first: {} {:?} vs {} {:?}",
            m.onnx, m.onnx_dims, m.checkpoint, m.checkpoint_dims
        )
    } else if let Some(u) = r.unmatched_checkpoint.first() {
        format!("; first: checkpoint tensor {}", u.name)
    } else if let Some(u) = r.unmatched_model.first() {
        format!("; first: model initializer {}", u.name)
    } else {
        String::new()
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Loss {
    Mse,
    Kl,
}

/// Which intermediate tensors the student also learns (see `pare::torch::finetune::Features`).
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Features {
    /// Outputs only.
    None,
    /// Also every conv/Gemm/MatMul/Add output both models compute under the same name and
    /// shape (the channel-group boundaries a pruned model kept).
    #[default]
    Auto,
}

#[cfg(feature = "torch")]
impl Features {
    fn request(self) -> pare::torch::finetune::Features {
        match self {
            Features::None => pare::torch::finetune::Features::None,
            Features::Auto => pare::torch::finetune::Features::Auto,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The model to train (e.g. a pruned model).
    pub student: PathBuf,
    /// The original model whose outputs the student learns to reproduce.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Unlabeled samples (images, .npy, …) read by the shared sample loader.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the fine-tuned model.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Peak learning rate (Adam), decayed to 0 over the steps or `--max-seconds` (cosine).
    /// Default: 1e-4, or 2e-5 for a quantized (QDQ) student.
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = Loss::Kl)]
    pub loss: Loss,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Samples held out to measure fidelity before and after.
    #[arg(long, default_value_t = 16)]
    pub eval_samples: usize,
    /// Training crop HxW: images are loaded at twice it; each step takes random crops of
    /// 30-100 % of the short side, resized to HxW and randomly flipped.
    /// (default: the model input's declared HxW, else 224x224)
    #[arg(long)]
    pub crop: Option<String>,
    /// Samples read (training + held out).
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Measure held-out agreement every N steps (the curve in the report).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Held-out samples from another folder (tensor files at their own size, images resized
    /// to the crop), instead of holding out some of --data.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Stop training after this many seconds (evaluation not counted).
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Intermediate tensors to match besides the outputs.
    #[arg(long, value_enum, default_value_t = Features::Auto)]
    pub features: Features,
    #[command(flatten)]
    pub preprocess: pare::data::PreprocessArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Without the `torch` feature: exit 2 saying how to get it.
#[cfg(not(feature = "torch"))]
pub fn run_finetune(_a: &FinetuneArgs) -> CmdResult {
    Err(Exit::bad(anyhow::anyhow!(
        "pare finetune needs libtorch, and this pare was built without the `torch` feature; \
         {ENABLE_TORCH}"
    )))
}

/// With the `torch` feature: distillation on libtorch.
#[cfg(feature = "torch")]
pub fn run_finetune(a: &FinetuneArgs) -> CmdResult {
    use pare::torch::finetune::{FinetuneRequest, Loss as L, finetune};
    let crop = a.crop.as_deref().map(parse_crop).transpose()?;
    let device = match a.device {
        Device::Cpu => tch::Device::Cpu,
        Device::Cuda if tch::Cuda::is_available() => tch::Device::Cuda(0),
        Device::Cuda => {
            return Err(Exit::bad(anyhow::anyhow!(
                "--device cuda: libtorch sees no CUDA device here"
            )));
        }
    };
    let data = a.data.display().to_string();
    let req = FinetuneRequest {
        student: a.student.clone(),
        teacher: a.teacher.clone(),
        output: a.output.clone(),
        data: pare::data::DataSource::parse(&[data], a.seed).map_err(Exit::bad)?,
        preprocess: a.preprocess.preprocess().map_err(Exit::bad)?,
        samples: a.samples,
        crop,
        steps: a.steps,
        batch: a.batch,
        lr: match a.lr {
            Some(lr) => lr,
            None => pare::torch::finetune::default_lr(&a.student).map_err(Exit::bad)?,
        },
        loss: match a.loss {
            Loss::Mse => L::Mse,
            Loss::Kl => L::Kl,
        },
        device,
        eval_samples: a.eval_samples,
        seed: a.seed,
        eval_every: a.eval_every,
        eval_data: match &a.eval_data {
            Some(d) => Some(
                pare::data::DataSource::parse(&[d.display().to_string()], a.seed)
                    .map_err(Exit::bad)?,
            ),
            None => None,
        },
        max_seconds: a.max_seconds,
        features: a.features.request(),
    };
    let bar = training_bar();
    let report = finetune(&req, &bar);
    bar.finish();
    print(&report.map_err(Exit::bad)?, a.json)
}

/// `--finetune STEPS` on `pare prune` and `pare quantize`: after compressing, distil the
/// written model from the original on the `--calib` samples (augmented).
#[derive(Args, Debug, Clone, Default)]
pub struct FinetuneFlags {
    /// After writing, fine-tune the result for STEPS steps by distillation from the original
    /// model on the --calib samples (random crops, flips, scale); a quantized (QDQ) model
    /// trains its float weights through fake quantization (QAT). Needs the `torch` feature.
    #[arg(long, value_name = "STEPS")]
    pub finetune: Option<usize>,
    #[arg(long = "finetune-batch", default_value_t = 8, requires = "finetune")]
    pub finetune_batch: usize,
    /// Peak learning rate (default 1e-4 after pruning, 2e-5 for QAT: measured on MobileNetV2,
    /// QAT at 1e-4 drifted off on held-out crops while 2e-5 beat post-training quantization).
    #[arg(long = "finetune-lr", requires = "finetune")]
    pub finetune_lr: Option<f64>,
    /// Stop fine-tuning after this many seconds of training.
    #[arg(long = "finetune-seconds", requires = "finetune")]
    pub finetune_seconds: Option<f64>,
    /// Training crop HxW (default: the model input's declared size, else 224x224).
    #[arg(long = "finetune-crop", requires = "finetune")]
    pub finetune_crop: Option<String>,
    /// Intermediate tensors to match besides the outputs.
    #[arg(long = "finetune-features", value_enum, default_value_t = Features::Auto, requires = "finetune")]
    pub finetune_features: Features,
}

/// Refuses `--finetune` up front where it cannot run (no `torch` feature, no `--calib`), so no
/// compression work is wasted.
pub fn check_finetune(f: &FinetuneFlags, data: &pare::data::DataArgs) -> CmdResult {
    if f.finetune.is_none() {
        return Ok(());
    }
    if !cfg!(feature = "torch") {
        return Err(Exit::bad(anyhow::anyhow!(
            "--finetune needs libtorch, and this pare was built without the `torch` feature; \
             {ENABLE_TORCH}"
        )));
    }
    if !data.has_files() {
        return Err(Exit::bad(anyhow::anyhow!(
            "--finetune trains on the --calib samples: give --calib DIR (images or .npy)"
        )));
    }
    if f.finetune == Some(0) {
        return Err(Exit::bad(anyhow::anyhow!(
            "--finetune STEPS must be at least 1"
        )));
    }
    Ok(())
}

/// How to get the `torch` feature (README: "Fine-tuning with libtorch").
pub const ENABLE_TORCH: &str = "rebuild with: pip install torch==2.13.0, then \
     LIBTORCH_USE_PYTORCH=1 cargo build --release --features torch (with that Python first on \
     PATH, and torch's lib folder on LD_LIBRARY_PATH to run; see README 'Fine-tuning with \
     libtorch')";

/// Prints a compression report, with the fine-tuning report as its `finetune` object (JSON)
/// or after it (text).
pub fn print_with_finetune(
    report: &impl pare::report::Report,
    finetune: Option<(serde_json::Value, String)>,
    json: bool,
) -> CmdResult {
    let Some((value, text)) = finetune else {
        return print(report, json);
    };
    if json {
        let mut v: serde_json::Value =
            serde_json::from_str(&report.to_json().map_err(Exit::bad)?).map_err(Exit::bad)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("finetune".into(), value);
        }
        println!("{v}");
    } else {
        print!("{}{}", report.render_text(), text);
    }
    Ok(())
}

/// Without the `torch` feature `check_finetune` has already refused.
#[cfg(not(feature = "torch"))]
pub fn finetune_written(
    _f: &FinetuneFlags,
    _teacher: &std::path::Path,
    _written: &std::path::Path,
    _data: &pare::data::DataArgs,
) -> Result<Option<(serde_json::Value, String)>, Exit> {
    Ok(None)
}

/// Fine-tunes the model just written at `written` (replaced atomically by the trained one).
#[cfg(feature = "torch")]
pub fn finetune_written(
    f: &FinetuneFlags,
    teacher: &std::path::Path,
    written: &std::path::Path,
    data: &pare::data::DataArgs,
) -> Result<Option<(serde_json::Value, String)>, Exit> {
    use pare::report::Report;
    use pare::torch::finetune::{FinetuneRequest, Loss as L, finetune};
    let Some(steps) = f.finetune else {
        return Ok(None);
    };
    let crop = f.finetune_crop.as_deref().map(parse_crop).transpose()?;
    let mut tmp = written.as_os_str().to_owned();
    tmp.push(".finetune.tmp.onnx");
    let tmp = PathBuf::from(tmp);
    let req = FinetuneRequest {
        student: written.to_path_buf(),
        teacher: teacher.to_path_buf(),
        output: tmp.clone(),
        data: data.source_or_random().map_err(Exit::bad)?,
        preprocess: data.preprocess.preprocess().map_err(Exit::bad)?,
        samples: data.limit(1 << 20).map_err(Exit::bad)?,
        crop,
        steps,
        batch: f.finetune_batch.max(1),
        lr: match f.finetune_lr {
            Some(lr) => lr,
            None => pare::torch::finetune::default_lr(written).map_err(Exit::bad)?,
        },
        loss: L::Kl,
        device: tch::Device::Cpu,
        eval_samples: 16,
        seed: data.seed,
        eval_every: 0,
        eval_data: None,
        max_seconds: f.finetune_seconds,
        features: f.finetune_features.request(),
    };
    let bar = training_bar();
    let report = finetune(&req, &bar);
    bar.finish();
    let mut report = report.map_err(Exit::bad)?;
    std::fs::rename(&tmp, written).map_err(|e| {
        Exit::bad(anyhow::anyhow!(
            "{} -> {}: {e}",
            tmp.display(),
            written.display()
        ))
    })?;
    report.output = written.display().to_string();
    let value = serde_json::to_value(&report).map_err(Exit::bad)?;
    Ok(Some((value, report.render_text())))
}

/// The training progress bar (stderr; hidden when stderr is not a terminal, as the JSON
/// report goes to stdout either way).
#[cfg(feature = "torch")]
fn training_bar() -> pare::jobs::CliProgress {
    pare::jobs::CliProgress::new(!std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

#[cfg(feature = "torch")]
fn parse_crop(c: &str) -> Result<(i64, i64), Exit> {
    c.split_once(['x', 'X'])
        .and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)))
        .ok_or_else(|| Exit::bad(anyhow::anyhow!("crop '{c}': expected HxW")))
}
