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
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, value_enum, default_value_t = Loss::Kl)]
    pub loss: Loss,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Samples held out to measure fidelity before and after.
    #[arg(long, default_value_t = 16)]
    pub eval_samples: usize,
    /// Training crop HxW; samples are loaded at 8/7 of it and randomly cropped and flipped.
    #[arg(long, default_value = "224x224")]
    pub crop: String,
    /// Samples read (training + held out).
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Measure held-out agreement every N steps (the curve in the report).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
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
         rebuild with: pip install torch==2.13.0, then LIBTORCH_USE_PYTORCH=1 \
         cargo build --release --features torch (with that Python first on PATH; see README \
         'Fine-tuning with libtorch')"
    )))
}

/// With the `torch` feature: distillation on libtorch.
#[cfg(feature = "torch")]
pub fn run_finetune(a: &FinetuneArgs) -> CmdResult {
    use pare::torch::finetune::{FinetuneRequest, Loss as L, finetune};
    let crop = a
        .crop
        .split_once(['x', 'X'])
        .and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)))
        .ok_or_else(|| Exit::bad(anyhow::anyhow!("--crop '{}': expected HxW", a.crop)))?;
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
        lr: a.lr,
        loss: match a.loss {
            Loss::Mse => L::Mse,
            Loss::Kl => L::Kl,
        },
        device,
        eval_samples: a.eval_samples,
        seed: a.seed,
        eval_every: a.eval_every,
    };
    let report = finetune(&req).map_err(Exit::bad)?;
    print(&report, a.json)
}
