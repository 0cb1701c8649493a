//! `pare groups` and `pare prune`.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Exit, ModelArgs, check_output, open};
use pare::analysis::channels::analyze_channels;
use pare::jobs::{CliProgress, NoProgress};
use pare::model::info::human;
use pare::prune::{self, Criterion, PruneOptions};
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
    /// Seed for random inputs and the random criterion.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    let ca = analyze_channels(&analysis);
    // Tags change lock status: reuse the planner's view with ratio 0.
    let opts = PruneOptions {
        ratio: 0.0,
        round_to: 1,
        tags,
        ..Default::default()
    };
    let plan = prune::make_plan(&analysis, &ca, &opts, &NoProgress).map_err(Exit::bad)?;
    if a.json {
        let groups: Vec<_> = ca
            .groups
            .iter()
            .filter_map(|g| {
                let mut d = ca.detail(g.id)?;
                d.locks = plan.groups[g.id].locked.clone();
                d.prunable = d.locks.is_empty() && d.channels > 1;
                Some(d)
            })
            .collect();
        let s = serde_json::to_string_pretty(
            &serde_json::json!({ "groups": groups, "notes": ca.notes }),
        )
        .map_err(Exit::bad)?;
        println!("{s}");
        return Ok(());
    }
    let prunable = plan
        .groups
        .iter()
        .filter(|g| g.locked.is_empty() && g.total > 1)
        .count();
    println!(
        "{} channel groups, {} prunable, {} locked",
        ca.groups.len(),
        prunable,
        ca.groups.len() - prunable
    );
    println!(
        "{:>4}  {:>5}  {:<8}  {:<48}  why",
        "id", "chans", "status", "producers"
    );
    for g in &ca.groups {
        let locks = &plan.groups[g.id].locked;
        let status = if locks.is_empty() && g.channels > 1 {
            "prunable"
        } else {
            "locked"
        };
        let mut prod = g
            .producers
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if g.producers.len() > 2 {
            prod.push_str(&format!(" +{}", g.producers.len() - 2));
        }
        let why = locks.first().cloned().unwrap_or_default();
        let more = if locks.len() > 1 {
            format!(" (+{} more)", locks.len() - 1)
        } else {
            String::new()
        };
        println!(
            "{:>4}  {:>5}  {:<8}  {:<48}  {why}{more}",
            g.id,
            g.channels,
            status,
            truncate(&prod, 48)
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

pub fn run_prune(a: &PruneArgs) -> CmdResult {
    if !a.dry_run && a.output.is_none() {
        return Err(Exit::bad(anyhow::anyhow!(
            "pare prune needs -o OUT (or --dry-run)"
        )));
    }
    if let Some(out) = &a.output {
        check_output(&a.model, out).map_err(Exit::bad)?;
    }
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let opts = PruneOptions {
        ratio: a.ratio,
        criterion: a.criterion,
        round_to: a.round_to.max(1),
        global: a.global,
        max_ratio: a.max_ratio,
        min_channels: a.min_channels,
        seed: a.seed,
        tags: load_tags(&a.tags).map_err(Exit::bad)?,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let pruned = prune::prune(&analysis, &opts, &bar).map_err(Exit::bad)?;
    let mut report = prune::report(&analysis, &pruned, &opts, a.no_validate || a.dry_run, &bar);
    bar.finish();
    if let (Some(out), false) = (&a.output, a.dry_run) {
        prune::write(&pruned, out).map_err(Exit::bad)?;
        report.output = Some(out.display().to_string());
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(Exit::bad)?
        );
    } else {
        println!(
            "groups     {} ({} pruned, {} locked)",
            report.groups, report.pruned_groups, report.locked_groups
        );
        for g in report.plan.iter().filter(|g| g.kept < g.total) {
            println!(
                "  group {:>4}  {:>5} -> {:<5} {}",
                g.group,
                g.total,
                g.kept,
                truncate(&g.producers.join(", "), 70)
            );
        }
        let pct = |b: u64, a: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * (1.0 - a as f64 / b as f64)
            }
        };
        println!(
            "params     {} -> {} (-{:.1}%)",
            human(report.params_before),
            human(report.params_after),
            pct(report.params_before, report.params_after)
        );
        println!(
            "MACs       {} -> {} (-{:.1}%)",
            human(report.macs_before),
            human(report.macs_after),
            pct(report.macs_before, report.macs_after)
        );
        if let Some(v) = &report.validation {
            let lat = match (v.engine, v.latency_ms_before, v.latency_ms_after) {
                (Some(e), Some(b), Some(a)) => format!(", {e} latency {b:.1} ms -> {a:.1} ms"),
                _ => String::new(),
            };
            println!(
                "validated  {} ({}){lat}",
                if v.passed { "yes" } else { "NO" },
                v.method
            );
            for n in &v.notes {
                println!("  note: {n}");
            }
        }
        match &report.output {
            Some(o) => println!("wrote      {o}"),
            None => println!("dry run: nothing written"),
        }
    }
    if a.check && !report.validated && !a.dry_run {
        return Err(Exit::failed(anyhow::anyhow!("validation failed")));
    }
    Ok(())
}
