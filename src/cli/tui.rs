//! `pare tui` (and `pare` without arguments on a terminal).

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs};
use pare::tui::{App, KeyMap};

#[derive(Args, Debug, Default)]
pub struct TuiArgs {
    /// The ONNX model (default: the embedded demo model).
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Tags file (skip/lock per layer); created on the first save when missing.
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Keymap file overriding the defaults (see assets/keymap.toml).
    #[arg(long)]
    pub keymap: Option<PathBuf>,
    /// Open the Compare view: this model (A) against B, structure and per-tensor SQNR.
    #[arg(long, value_name = "B")]
    pub compare: Option<PathBuf>,
}

pub fn run(a: &TuiArgs) -> CmdResult {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Exit::bad(anyhow::anyhow!(
            "pare tui needs a terminal; for scripts use pare info / groups / prune"
        )));
    }
    if let Some(m) = &a.model
        && !m.exists()
    {
        return Err(Exit::bad(anyhow::anyhow!("{}: no such file", m.display())));
    }
    let pins = a.model_args.pins().map_err(Exit::bad)?;
    let keymap = KeyMap::load(a.keymap.as_deref()).map_err(Exit::bad)?;
    let mut app = App::loading(a.model.clone(), pins, a.tags.clone(), keymap);
    if let Some(b) = &a.compare {
        if !b.exists() {
            return Err(Exit::bad(anyhow::anyhow!("{}: no such file", b.display())));
        }
        app.compare_with(b.clone());
    }
    pare::tui::term::run(app).map_err(|e| Exit::bad(anyhow::anyhow!("terminal: {e}")))
}
