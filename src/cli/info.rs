//! `pare info`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open, print};
use pare::model::info;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The ONNX model (default: the embedded demo model).
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &InfoArgs) -> CmdResult {
    let analysis = open(a.model.as_deref(), &a.model_args).map_err(Exit::bad)?;
    let mut report = info::model_info(&analysis);
    report.non_finite = info::non_finite(&analysis.model.proto);
    print(&report, a.json)
}
