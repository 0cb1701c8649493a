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
    /// Share of --calib held out for fidelity (never used to choose or fit anything).
    #[command(flatten)]
    pub holdout: pare::fidelity::HoldoutArgs,
    /// Repair consumers of pruned channels on the --calib samples: least squares toward the
    /// original's outputs, bias folding, or nothing (default: lsq with --calib, else none).
    #[arg(long, value_enum)]
    pub recover: Option<pare::prune::recover::RecoverMode>,
    /// Engine for fidelity and recovery runs (default: $PARE_ENGINE, else auto).
    #[arg(long, value_enum)]
    pub engine: Option<pare::runtime::EngineChoice>,
    /// Print the plan; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Skip the tract validation run.
    #[arg(long = "no-validate")]
    pub no_validate: bool,
    /// Exit 1 when validation fails.
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

/// Fidelity and recovery settings: `--calib` samples (held-out part for fidelity, the rest
/// for recovery), or without `--calib` a few random inputs for fidelity alone when
/// validating (`--no-validate` runs nothing).
fn calib_options(a: &PruneArgs) -> anyhow::Result<Option<prune::recover::CalibOptions>> {
    use prune::recover::{CalibOptions, RecoverMode, RecoverOptions};
    let given = !a.data.data.is_empty();
    let mode = a.recover.unwrap_or(if given {
        RecoverMode::Lsq
    } else {
        RecoverMode::None
    });
    if !given && mode != RecoverMode::None {
        anyhow::bail!(
            "--recover {} needs calibration samples: --calib DIR (or --calib random)",
            mode.name()
        );
    }
    if !given && (a.no_validate || a.dry_run) {
        return Ok(None);
    }
    let random = !a.data.has_files();
    Ok(Some(CalibOptions {
        source: a.data.source_or_random()?,
        given,
        samples: a.data.limit(if !given {
            2
        } else if random {
            8
        } else {
            10_000
        })?,
        preprocess: a.data.preprocess.preprocess()?,
        holdout: a.holdout.holdout,
        engine: a
            .engine
            .unwrap_or_else(pare::runtime::EngineChoice::from_env),
        recover: RecoverOptions {
            mode,
            seed: a.data.seed,
            ..Default::default()
        },
    }))
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
            activations: None,
        },
        output: a.output.clone().filter(|_| !a.dry_run),
        validate: !(a.no_validate || a.dry_run),
        calib: calib_options(a).map_err(Exit::bad)?,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = prune::run(&analysis, &req, &bar);
    bar.finish();
    let report = report.map_err(Exit::bad)?;
    print(&report, a.json)?;
    if a.check && !report.validated && !a.dry_run {
        return Err(Exit::failed(anyhow::anyhow!("validation failed")));
    }
    Ok(())
}
