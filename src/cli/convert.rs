//! `pare convert`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open};
use pare::convert::{self, ConvertOptions, ConvertRequest, Precision};
use pare::data::DataArgs;
use pare::jobs::CliProgress;
use pare::report::check_output;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    pare convert model.onnx -o model.fp16.onnx --precision fp16\n  \
    pare convert model.onnx -o model.fp16.onnx --data images/ --keep-io-types\n  \
    pare convert model.onnx -o m.onnx --exclude Softmax --exclude '/head/*' --json")]
pub struct ConvertArgs {
    /// The FP32 ONNX model.
    pub model: PathBuf,
    /// Output model (never the input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Low precision: fp16 (nodes whose activations exceed 512 or initializers 65504 stay
    /// FP32) or bf16.
    #[arg(long, value_enum, default_value_t = Precision::Fp16)]
    pub precision: Precision,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Sample data for activation ranges and fidelity (`--data`, alias `--calib`; random when
    /// absent), `--samples` (default 8; half measure ranges, half fidelity).
    #[command(flatten)]
    pub data: DataArgs,
    /// Keep float model inputs and outputs FP32 (Casts at the boundary).
    #[arg(long = "keep-io-types")]
    pub keep_io_types: bool,
    /// Keep nodes FP32: an op type (`Softmax`), a node name or a glob (`/head/*`). Repeatable.
    #[arg(long, value_name = "OP|NAME|GLOB")]
    pub exclude: Vec<String>,
    /// Engine that compares the converted model with the FP32 one (default auto).
    #[arg(long, value_enum)]
    pub engine: Option<pare::runtime::EngineChoice>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &ConvertArgs) -> CmdResult {
    check_output(Some(&a.model), &a.output).map_err(Exit::bad)?;
    let preprocess = a.data.preprocess.preprocess().map_err(Exit::bad)?;
    let options = ConvertOptions {
        precision: a.precision,
        source: a.data.source_or_random().map_err(Exit::bad)?,
        samples: a.data.limit(8).map_err(Exit::bad)?,
        preprocess,
        keep_io_types: a.keep_io_types,
        exclude: a.exclude.clone(),
        engine: a
            .engine
            .unwrap_or_else(pare::runtime::EngineChoice::from_env),
    };
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let quiet = a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = CliProgress::new(quiet);
    let req = ConvertRequest {
        options,
        output: a.output.clone(),
    };
    let result = convert::run(&analysis, &req, &bar);
    bar.finish();
    let report = result.map_err(Exit::bad)?;
    super::print(&report, a.json)?;
    if let Some(e) = &report.fidelity_error {
        return Err(Exit::failed(anyhow::anyhow!(
            "the converted model did not run: {e}"
        )));
    }
    Ok(())
}
