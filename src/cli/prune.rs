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
    /// Measure each prunable group's sensitivity: the fidelity when only that group is
    /// pruned at --ratio, and the MACs that saves (most sensitive first).
    #[arg(long)]
    pub sensitivity: bool,
    /// With --sensitivity: the ratio each group is pruned at.
    #[arg(long, default_value_t = 0.5, requires = "sensitivity")]
    pub ratio: f64,
    #[arg(long, value_enum, default_value_t = Criterion::L1, requires = "sensitivity")]
    pub criterion: Criterion,
    /// With --sensitivity: samples (`--calib DIR`, default 16 random), `--samples N`, image
    /// preprocessing.
    #[command(flatten)]
    pub data: pare::data::DataArgs,
}

/// The budget flags of `pare prune` (issue 15): a size target, the search picks per-group
/// ratios that keep fidelity highest.
#[derive(Args, Debug, Default)]
pub struct BudgetArgs {
    /// Keep this share of the original's MACs (0.8) or this many (1.2G); per-group ratios are
    /// searched (replaces --ratio).
    #[arg(long = "target-macs", value_name = "F|N")]
    pub target_macs: Option<String>,
    /// Keep this share of the original's parameters (0.5) or this many (3M).
    #[arg(long = "target-params", value_name = "F|N")]
    pub target_params: Option<String>,
    /// With a target: stop the search before the output SQNR (on the calibration samples)
    /// falls below DB.
    #[arg(long = "min-sqnr", value_name = "DB")]
    pub min_sqnr: Option<f64>,
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
    /// How channels are ranked (default: activation with --calib files, where a channel's
    /// weight norm times its activation RMS measures what it carries; else l1).
    #[arg(long, value_enum)]
    pub criterion: Option<Criterion>,
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
    #[command(flatten)]
    pub budget: BudgetArgs,
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
    pub recover: Option<pare::prune::RecoverMode>,
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
    /// `--finetune STEPS`: distil the pruned model from the original on the --calib samples.
    #[command(flatten)]
    pub finetune: super::torch::FinetuneFlags,
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
    if !a.sensitivity {
        let report = prune::groups(&analysis, &tags).map_err(Exit::bad)?;
        return print(&report, a.json);
    }
    let req = prune::sensitivity::SensitivityRequest {
        data: sample_spec(&a.data, 16).map_err(Exit::bad)?,
        ratio: a.ratio,
        options: PruneOptions {
            criterion: a.criterion,
            round_to: 1,
            tags,
            ..Default::default()
        },
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = prune::sensitivity::sensitivity(&analysis, &req, &bar);
    bar.finish();
    print(&report.map_err(Exit::bad)?, a.json)
}

/// Samples for sensitivity and budget searches: `--calib` (all files up to --samples), else
/// `default_random` seeded random samples.
fn sample_spec(
    d: &pare::data::DataArgs,
    default_random: usize,
) -> anyhow::Result<prune::sensitivity::SampleSpec> {
    let source = d.source_or_random()?;
    let random = matches!(source, pare::data::DataSource::Random { .. });
    Ok(prune::sensitivity::SampleSpec {
        source,
        samples: d.limit(if random { default_random } else { 1 << 20 })?,
        preprocess: d.preprocess.preprocess()?,
        engine: pare::runtime::EngineChoice::from_env(),
    })
}

/// The budget search the flags ask for, `None` without a target.
fn budget_options(a: &PruneArgs) -> anyhow::Result<Option<prune::budget::BudgetOptions>> {
    let b = &a.budget;
    if b.target_macs.is_none() && b.target_params.is_none() {
        if b.min_sqnr.is_some() {
            anyhow::bail!("--min-sqnr needs --target-macs or --target-params");
        }
        return Ok(None);
    }
    let mut o = prune::budget::BudgetOptions::new(sample_spec(&a.data, 8)?);
    o.target_macs = b.target_macs.as_deref().map(str::parse).transpose()?;
    o.target_params = b.target_params.as_deref().map(str::parse).transpose()?;
    o.min_sqnr_db = b.min_sqnr;
    o.holdout = a.holdout.holdout;
    Ok(Some(o))
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

/// `--recover`, defaulting to `lsq` with `--calib` and `none` without.
fn recover_mode(a: &PruneArgs) -> anyhow::Result<prune::RecoverMode> {
    use prune::RecoverMode;
    let given = !a.data.data.is_empty();
    let mode = a.recover.unwrap_or(if given {
        RecoverMode::Lsq
    } else {
        RecoverMode::None
    });
    if !given && mode != RecoverMode::None {
        anyhow::bail!(
            "--recover {} needs calibration samples: --calib DIR",
            mode.name()
        );
    }
    Ok(mode)
}

/// Fidelity and recovery settings: `--calib` samples (held-out part for fidelity, the rest
/// for recovery), or without `--calib` a few random inputs for fidelity alone when
/// validating (`--no-validate` runs nothing).
fn calib_options(a: &PruneArgs) -> anyhow::Result<Option<prune::recover::CalibOptions>> {
    let given = !a.data.data.is_empty();
    if !given && (a.no_validate || a.dry_run) {
        return Ok(None);
    }
    let mut data = sample_spec(&a.data, if given { 8 } else { 2 })?;
    if !given {
        data.samples = 2;
    }
    Ok(Some(prune::recover::CalibOptions {
        data,
        given,
        holdout: a.holdout.holdout,
        recover: prune::recover::RecoverOptions {
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
    super::torch::check_finetune(&a.finetune, &a.data)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let req = PruneRequest {
        options: PruneOptions {
            ratio: a.ratio,
            criterion: a.criterion.unwrap_or(if a.data.has_files() {
                Criterion::Activation
            } else {
                Criterion::L1
            }),
            round_to: a.round_to.max(1),
            global: a.global,
            max_ratio: a.max_ratio,
            min_channels: a.min_channels,
            seed: a.data.seed,
            inputs: validation_inputs(&analysis, &a.data).map_err(Exit::bad)?,
            tags: load_tags(&a.tags).map_err(Exit::bad)?,
            ..Default::default()
        },
        output: a.output.clone().filter(|_| !a.dry_run),
        validate: !(a.no_validate || a.dry_run),
        allow_unvalidated: a.allow_unvalidated,
        budget: budget_options(a).map_err(Exit::bad)?,
        calib: calib_options(a).map_err(Exit::bad)?,
        recover: recover_mode(a).map_err(Exit::bad)?,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = prune::run(&analysis, &req, &bar);
    bar.finish();
    let report = report.map_err(Exit::bad)?;
    let finetune = match (&report.output, a.dry_run) {
        (Some(out), false) => super::torch::finetune_written(
            &a.finetune,
            &a.model,
            std::path::Path::new(out),
            &a.data,
        )?,
        _ => None,
    };
    super::torch::print_with_finetune(&report, finetune, a.json)?;
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
