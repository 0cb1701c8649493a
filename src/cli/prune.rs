//! `pare groups` and `pare prune`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open, print};
use pare::jobs::CliProgress;
use pare::prune::{self, Criterion, PruneOptions, PruneRequest};
use pare::report::check_output;
use pare::tags::Tags;

#[derive(Args, Debug)]
pub struct GroupsArgs {
    /// The ONNX model (default: the embedded demo model).
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Tags file (skip/lock/ratio per layer).
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Print JSON: every group with its members.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The ONNX model to prune.
    pub model: PathBuf,
    /// Output file (never the input).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Fraction of channels to remove (per group, or overall with --global).
    #[arg(long, default_value_t = 0.5)]
    pub ratio: f64,
    #[arg(long, value_enum, default_value_t = Criterion::L1)]
    pub criterion: Criterion,
    /// Kept channel counts are multiples of N in every group.
    #[arg(long = "round-to", default_value_t = 8)]
    pub round_to: usize,
    /// Rank channels across all groups.
    #[arg(long)]
    pub global: bool,
    /// With --global: most of one group that may go.
    #[arg(long = "max-ratio", default_value_t = 0.9)]
    pub max_ratio: f64,
    /// Never keep fewer channels than this in a group.
    #[arg(long = "min-channels", default_value_t = 1)]
    pub min_channels: usize,
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Validation data (`--data`; default: one seeded random sample), `--seed` and image
    /// preprocessing, as for every command that runs a model.
    #[command(flatten)]
    pub data: pare::data::DataArgs,
    /// Print the plan; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Skip the validation run (the report then says "not validated"; exit 0).
    #[arg(long = "no-validate")]
    pub no_validate: bool,
    /// Write the pruned model even when validation does not pass (exit 0, with a warning).
    /// Without it an unvalidated model is not written and pare exits 1.
    #[arg(long = "allow-unvalidated")]
    pub allow_unvalidated: bool,
    /// Exit 1 when validation fails, even with --allow-unvalidated.
    #[arg(long)]
    pub check: bool,
    #[arg(long)]
    pub json: bool,
}

fn load_tags(p: &Option<PathBuf>) -> anyhow::Result<Tags> {
    Ok(match p {
        Some(p) => Tags::load(p)?,
        None => Tags::default(),
    })
}

pub fn run_groups(a: &GroupsArgs) -> CmdResult {
    let analysis = open(a.model.as_deref(), &a.model_args).map_err(Exit::bad)?;
    let tags = load_tags(&a.tags).map_err(Exit::bad)?;
    let report = prune::groups(&analysis, &tags).map_err(Exit::bad)?;
    print(&report, a.json)
}

/// The first sample of `--data` files for validation; `None` for random inputs.
fn validation_inputs(
    analysis: &pare::model::Analysis,
    d: &pare::data::DataArgs,
) -> anyhow::Result<Option<Vec<pare::runtime::HostTensor>>> {
    let Some(source) = d.source()?.filter(|_| d.has_files()) else {
        return Ok(None);
    };
    let samples = pare::data::load_all(analysis, &source, 1, d.preprocess.preprocess()?)?;
    Ok(samples.sets.into_iter().next())
}

pub fn run_prune(a: &PruneArgs) -> CmdResult {
    if !a.dry_run && a.output.is_none() {
        return Err(Exit::bad(anyhow::anyhow!(
            "pare prune needs -o OUT (or --dry-run)"
        )));
    }
    if let Some(out) = &a.output {
        check_output(Some(&a.model), out).map_err(Exit::bad)?;
    }
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let req = PruneRequest {
        options: PruneOptions {
            ratio: a.ratio,
            criterion: a.criterion,
            round_to: a.round_to.max(1),
            global: a.global,
            max_ratio: a.max_ratio,
            min_channels: a.min_channels,
            seed: a.data.seed,
            inputs: validation_inputs(&analysis, &a.data).map_err(Exit::bad)?,
            tags: load_tags(&a.tags).map_err(Exit::bad)?,
        },
        output: a.output.clone().filter(|_| !a.dry_run),
        validate: !(a.no_validate || a.dry_run),
        allow_unvalidated: a.allow_unvalidated,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = prune::run(&analysis, &req, &bar);
    bar.finish();
    let report = report.map_err(Exit::bad)?;
    print(&report, a.json)?;
    let ran = req.validate;
    if ran && !report.validated && (a.check || !a.allow_unvalidated) {
        let what = if report.output.is_some() {
            "validation did not pass"
        } else {
            "validation did not pass; the pruned model was not written"
        };
        return Err(Exit::failed(anyhow::anyhow!(what)));
    }
    Ok(())
}
