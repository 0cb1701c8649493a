//! Argument structs and printing for each subcommand. Each `run` function parses nothing and
//! decides nothing beyond presentation: it calls the library and prints what it returns.

pub mod convert;
pub mod diff;
pub mod extract;
pub mod info;
pub mod lint;
pub mod prune;
pub mod quant;
pub mod torch;
pub mod tui;

use std::path::Path;

use clap::Args;

use pare::model::{Analysis, InputPins, io, parse_input_shape};

/// Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.
pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub anyhow::Error);

impl Exit {
    pub fn bad(e: impl Into<anyhow::Error>) -> Self {
        Exit(EXIT_BAD_INPUT, e.into())
    }
    pub fn failed(e: impl Into<anyhow::Error>) -> Self {
        Exit(EXIT_CHECK_FAILED, e.into())
    }
}

pub type CmdResult = Result<(), Exit>;

/// Options shared by every command that analyses a model.
#[derive(Args, Clone, Default, Debug)]
pub struct ModelArgs {
    /// Pin an input shape, e.g. `--input-shape left:1x3x256x512` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME:DIMS")]
    pub input_shape: Vec<String>,
}

impl ModelArgs {
    pub fn pins(&self) -> anyhow::Result<InputPins> {
        let mut pins = InputPins::new();
        for spec in &self.input_shape {
            let (name, dims) = parse_input_shape(spec)?;
            pins.insert(name, dims);
        }
        Ok(pins)
    }
}

/// Loads and analyses `model`, or the embedded demo model when `None`.
pub fn open(model: Option<&Path>, args: &ModelArgs) -> anyhow::Result<Analysis> {
    let pins = args.pins()?;
    let analysis = match model {
        Some(path) => Analysis::open(path, &pins)?,
        None => {
            let m = io::load_model_bytes(
                bytes::Bytes::from_static(pare::demo::DEMO_ONNX),
                Path::new("<embedded demo>"),
            )?;
            Analysis::new(m, &pins)?
        }
    };
    Ok(analysis)
}

/// Prints a command's report: its JSON with `--json`, else its one text rendering.
pub fn print(report: &impl pare::report::Report, json: bool) -> CmdResult {
    if json {
        println!("{}", report.to_json().map_err(Exit::bad)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}
