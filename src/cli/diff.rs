//! `pare diff A B`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open, print};
use pare::diff::{self, DiffData, DiffRequest};
use pare::jobs::CliProgress;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The reference model (the original).
    pub a: PathBuf,
    /// The model to compare with it (pruned, quantized, fixed, re-exported).
    pub b: PathBuf,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Samples both models run on (`--data DIR|random`, default 2 random), `--samples N`,
    /// `--seed`, image preprocessing.
    #[command(flatten)]
    pub data: pare::data::DataArgs,
    /// Engine that runs both models (default: auto, or PARE_ENGINE).
    #[arg(long, value_enum)]
    pub engine: Option<pare::runtime::EngineChoice>,
    /// SQNR (dB) below which a tensor counts as diverged (first_divergence).
    #[arg(long, value_name = "DB", default_value_t = 30.0)]
    pub threshold: f64,
    /// Exit 1 when some output's SQNR is below DB (a regression check for CI).
    #[arg(long = "fail-below", value_name = "DB")]
    pub fail_below: Option<f64>,
    /// Intermediate tensors exposed per run: bounds memory to this many activations per model.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub chunk: usize,
    /// Compare structure only (run nothing).
    #[arg(long = "structure-only", conflicts_with = "fail_below")]
    pub structure_only: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &DiffArgs) -> CmdResult {
    let ma = open(Some(&a.a), &a.model_args).map_err(Exit::bad)?;
    let mb = open(Some(&a.b), &a.model_args).map_err(Exit::bad)?;
    let data = if a.structure_only {
        None
    } else {
        let source = a.data.source_or_random().map_err(Exit::bad)?;
        let random = matches!(source, pare::data::DataSource::Random { .. });
        Some(DiffData {
            source,
            samples: a
                .data
                .limit(if random { 2 } else { 16 })
                .map_err(Exit::bad)?,
            preprocess: a.data.preprocess.preprocess().map_err(Exit::bad)?,
            engine: a
                .engine
                .unwrap_or_else(pare::runtime::EngineChoice::from_env),
        })
    };
    if a.chunk == 0 {
        return Err(Exit::bad(anyhow::anyhow!("--chunk must be at least 1")));
    }
    let req = DiffRequest {
        data,
        threshold_db: a.threshold,
        chunk: a.chunk,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = diff::run(&ma, &mb, &req, &bar);
    bar.finish();
    let report = report.map_err(Exit::bad)?;
    print(&report, a.json)?;
    if let Some(db) = a.fail_below
        && report.fails_below(db)
    {
        return Err(Exit::failed(anyhow::anyhow!(
            "an output of {} is below {db} dB SQNR against {}",
            report.b,
            report.a
        )));
    }
    Ok(())
}
