//! The `pare` binary: argument parsing and output only; all logic lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use pare::model::{Analysis, InputPins, info, io, parse_input_shape};

/// Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.
const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "pare",
    version,
    about = "Prune, quantize, lint and cut ONNX vision models — without guesswork",
    long_about = "pare analyses ONNX models (channel groups, shapes, deployment rules) and \
                  prunes, quantizes, fixes and extracts them. Run it without arguments to \
                  explore the embedded demo model.\n\nExit codes: 0 ok, 1 a check failed, \
                  2 bad input or usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a model: inputs/outputs, opsets, op histogram, params, MACs, heaviest layers.
    Info(InfoArgs),
}

/// Options shared by every command that analyses a model.
#[derive(Args, Clone, Default)]
struct ModelArgs {
    /// Pin an input shape, e.g. `--input-shape left:1x3x256x512` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME:DIMS")]
    input_shape: Vec<String>,
}

impl ModelArgs {
    fn pins(&self) -> anyhow::Result<InputPins> {
        let mut pins = InputPins::new();
        for spec in &self.input_shape {
            let (name, dims) = parse_input_shape(spec)?;
            pins.insert(name, dims);
        }
        Ok(pins)
    }
}

#[derive(Args)]
struct InfoArgs {
    /// The ONNX model (default: the embedded demo model).
    model: Option<PathBuf>,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// An error that carries its exit code.
#[derive(Debug)]
struct Exit(u8, anyhow::Error);

fn open(model: Option<&PathBuf>, args: &ModelArgs) -> anyhow::Result<Analysis> {
    let pins = args.pins()?;
    let analysis = match model {
        Some(path) => Analysis::open(path, &pins)?,
        None => {
            let m = io::load_model_bytes(
                bytes::Bytes::from_static(pare::demo::DEMO_ONNX),
                std::path::Path::new("<embedded demo>"),
            )?;
            Analysis::new(m, &pins)?
        }
    };
    Ok(analysis)
}

fn cmd_info(a: &InfoArgs) -> anyhow::Result<()> {
    let analysis = open(a.model.as_ref(), &a.model_args)?;
    let report = info::model_info(&analysis);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).context("encoding JSON")?);
    } else {
        print!("{}", info::render_text(&report, &analysis));
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Exit> {
    let bad = |e: anyhow::Error| Exit(EXIT_BAD_INPUT, e);
    match cli.command {
        None => cmd_info(&InfoArgs {
            model: None,
            model_args: ModelArgs::default(),
            json: false,
        })
        .map_err(bad),
        Some(Command::Info(a)) => cmd_info(&a).map_err(bad),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, e)) => {
            // One line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(&format!(": {c}"));
                }
            }
            eprintln!("{msg}");
            let _ = EXIT_CHECK_FAILED;
            ExitCode::from(code)
        }
    }
}
