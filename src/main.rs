//! The `pare` binary: argument parsing and output only; all logic lives in the library.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::{CmdResult, Exit};

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
    Info(cli::info::InfoArgs),
    /// List channel groups: channels that must be pruned together, and why some are locked.
    Groups(cli::prune::GroupsArgs),
    /// Structured channel pruning with validation.
    Prune(cli::prune::PruneArgs),
}

fn run(cli: Cli) -> CmdResult {
    match cli.command {
        None => cli::info::run(&cli::info::InfoArgs {
            model: None,
            model_args: cli::ModelArgs::default(),
            json: false,
        }),
        Some(Command::Info(a)) => cli::info::run(&a),
        Some(Command::Groups(a)) => cli::prune::run_groups(&a),
        Some(Command::Prune(a)) => cli::prune::run_prune(&a),
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
            eprintln!("{}", msg.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}
