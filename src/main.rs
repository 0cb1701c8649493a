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
    /// Let external data files live outside the model's folder (absolute paths, `..`,
    /// symbolic links); refused by default, as onnx's checker does, so a downloaded model
    /// cannot make pare read arbitrary files.
    #[arg(long = "allow-external-outside", global = true)]
    allow_external_outside: bool,
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
    /// Deployment lint for TensorRT 11 (default)/7.1/8.6/10, onnxruntime or tract: what will break, where, why.
    Lint(cli::lint::LintArgs),
    /// Rewrite what lint can fix safely (If folding, Clip bounds, ConvTranspose padding, …),
    /// proven equal on seeded inputs before writing.
    Fix(cli::lint::FixArgs),
    /// INT8 post-training quantization to QDQ (TensorRT or onnxruntime), with per-layer SQNR.
    Quantize(cli::quant::QuantizeArgs),
    /// Mixed FP16/BF16 with the precision in the file (TensorRT 11 builds no FP16 otherwise):
    /// nodes that would overflow stay FP32, each named with its reason; fidelity vs FP32.
    Convert(cli::convert::ConvertArgs),
    /// Compare two models: structure (added, removed, folded, changed nodes; channel widths)
    /// and every matched tensor's SQNR, worst first, with the first divergence.
    Diff(cli::diff::DiffArgs),
    /// Cut a subgraph out as a standalone model (by tensors, one node or a node range),
    /// optionally with real boundary data.
    Extract(cli::extract::ExtractArgs),
    /// Split a model at tensors into HEAD and TAIL models whose composition is the model.
    Split(cli::extract::SplitArgs),
    /// Shrink a model to a minimal subgraph on which a check command still fails.
    Reduce(cli::extract::ReduceArgs),
    /// Load a PyTorch checkpoint (.pt/.pth state_dict, .safetensors) into an ONNX model's
    /// initializers, matching renamed and BatchNorm-folded weights; reports every leftover.
    ImportWeights(cli::torch::ImportWeightsArgs),
    /// Fine-tune a (pruned or quantized) model by distillation from the original (needs the
    /// `torch` feature).
    Finetune(cli::torch::FinetuneArgs),
    /// Explore a model in the terminal: scope tree, neighbourhood graph, channel groups, tags, jobs.
    Tui(cli::tui::TuiArgs),
}

fn run(cli: Cli) -> CmdResult {
    pare::model::io::set_allow_external_outside(cli.allow_external_outside);
    match cli.command {
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            cli::tui::run(&cli::tui::TuiArgs::default())
        }
        None => cli::info::run(&cli::info::InfoArgs {
            model: None,
            model_args: cli::ModelArgs::default(),
            json: false,
        }),
        Some(Command::Info(a)) => cli::info::run(&a),
        Some(Command::Groups(a)) => cli::prune::run_groups(&a),
        Some(Command::Prune(a)) => cli::prune::run_prune(&a),
        Some(Command::Lint(a)) => cli::lint::run_lint(&a),
        Some(Command::Fix(a)) => cli::lint::run_fix(&a),
        Some(Command::Quantize(a)) => cli::quant::run(&a),
        Some(Command::Convert(a)) => cli::convert::run(&a),
        Some(Command::Diff(a)) => cli::diff::run(&a),
        Some(Command::Extract(a)) => cli::extract::run_extract(&a),
        Some(Command::Split(a)) => cli::extract::run_split(&a),
        Some(Command::Reduce(a)) => cli::extract::run_reduce(&a),
        Some(Command::ImportWeights(a)) => cli::torch::run_import(&a),
        Some(Command::Finetune(a)) => cli::torch::run_finetune(&a),
        Some(Command::Tui(a)) => cli::tui::run(&a),
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
