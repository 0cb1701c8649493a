//! `pare lint` and `pare fix`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open};
use pare::jobs::CliProgress;
use pare::lint::render::{RenderOptions, render_lint};
use pare::lint::{FixOptions, FixRequest, LintOptions, Target, all_rules, lint};
use pare::report::check_output;

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The ONNX model to check.
    pub model: Option<PathBuf>,
    /// Deployment target: tensorrt-11 (the default: 11.5; tensorrt-11.0 … 11.4 for older
    /// minors), tensorrt-7.1, tensorrt-8.6, tensorrt-10 (any tensorrt-X.Y from 6.0),
    /// onnxruntime or tract.
    #[arg(long, short = 't', default_value_t = Target::default())]
    pub target: Target,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Only these rules (repeatable, or comma-separated ids such as L7,L11).
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Print a JSON list of {rule, severity, nodes, message, seed_case, fixable, ...}.
    #[arg(long)]
    pub json: bool,
    /// One line per finding, without explanations and source-side fixes.
    #[arg(long)]
    pub brief: bool,
    /// List every rule (id, title, where it applies) and exit.
    #[arg(long = "list-rules")]
    pub list_rules: bool,
}

#[derive(Args, Debug)]
pub struct FixArgs {
    /// The ONNX model to fix (never modified).
    pub model: PathBuf,
    /// Output file (written only when the fixed model is proven equal).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Only these fixes: fix names (fold-if, clip-bounds, …) or lint rule ids (L7, L11, …).
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Apply only the fixes for what `pare lint --target T` reports, and lint the result.
    #[arg(long, short = 't')]
    pub target: Option<Target>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Verification data (`--data`; default: `--samples` (2) seeded random input sets from
    /// `--seed` on), as for every command that runs a model.
    #[command(flatten)]
    pub data: pare::data::DataArgs,
    /// Write the fixed model even when it could not be verified (never when it diverged).
    #[arg(long = "allow-unverified")]
    pub allow_unverified: bool,
    /// Show what would change and verify it; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

fn split_ids(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn list_rules(json: bool) -> CmdResult {
    if json {
        let v: Vec<_> = all_rules()
            .map(|r| {
                serde_json::json!({
                    "rule": r.id, "title": r.title, "seed_case": r.seed_case, "applies": r.applies,
                    "explanation": r.explanation, "fix_snippet": r.snippet, "fix": r.fix.map(|f| f.name()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).map_err(Exit::bad)?);
        return Ok(());
    }
    for r in all_rules() {
        println!(
            "{:<4} {:<62} {}{}",
            r.id,
            r.title,
            r.seed_case.map(|s| format!("[{s}] ")).unwrap_or_default(),
            r.fix
                .map(|f| format!("(pare fix: {})", f.name()))
                .unwrap_or_default()
        );
        println!("     {}", r.applies);
    }
    Ok(())
}

pub fn run_lint(a: &LintArgs) -> CmdResult {
    if a.list_rules {
        return list_rules(a.json);
    }
    let Some(model) = a.model.as_deref() else {
        return Err(Exit::bad(anyhow::anyhow!(
            "pare lint needs a MODEL (or --list-rules)"
        )));
    };
    let target = a.target;
    let rules = split_ids(&a.rules);
    for r in &rules {
        if pare::lint::rule_by_id(r).is_none() {
            return Err(Exit::bad(anyhow::anyhow!(
                "--rule '{r}': no such rule (pare lint --list-rules)"
            )));
        }
    }
    let analysis = open(Some(model), &a.model_args).map_err(Exit::bad)?;
    let report = lint(&analysis, &LintOptions { target, rules });
    if a.json {
        let s = serde_json::to_string_pretty(&report.diagnostics)
            .context("encoding JSON")
            .map_err(Exit::bad)?;
        println!("{s}");
    } else {
        print!(
            "{}",
            render_lint(
                &report,
                &RenderOptions {
                    brief: a.brief,
                    max_per_rule: 8
                }
            )
        );
    }
    if report.has_errors() {
        // The report is the explanation; the exit code says it failed.
        return Err(Exit(
            super::EXIT_CHECK_FAILED,
            anyhow::anyhow!("{} error(s) for {}", report.errors, report.target_name),
        ));
    }
    Ok(())
}

pub fn run_fix(a: &FixArgs) -> CmdResult {
    if !a.dry_run && a.output.is_none() {
        return Err(Exit::bad(anyhow::anyhow!(
            "pare fix needs -o OUT (or --dry-run)"
        )));
    }
    if let Some(out) = &a.output {
        check_output(Some(&a.model), out).map_err(Exit::bad)?;
    }
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let n_sets = a.data.limit(2).map_err(Exit::bad)?;
    let inputs = match a.data.source().map_err(Exit::bad)? {
        Some(src) if a.data.has_files() => {
            let pp = a.data.preprocess.preprocess().map_err(Exit::bad)?;
            pare::data::load_all(&analysis, &src, n_sets, pp)
                .map_err(Exit::bad)?
                .sets
        }
        _ => Vec::new(),
    };
    let req = FixRequest {
        options: FixOptions {
            only: split_ids(&a.rules),
            target: a.target,
            seeds: (0..n_sets as u64).map(|k| a.data.seed + k).collect(),
            inputs,
            ..Default::default()
        },
        output: a.output.clone().filter(|_| !a.dry_run),
        allow_unverified: a.allow_unverified,
    };
    let bar = CliProgress::new(a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = pare::lint::fix(&analysis, &req, &bar);
    bar.finish();
    let mut report = report.map_err(Exit::bad)?;
    super::print(&report, a.json)?;
    let failed = report.check_failed();
    if let Some(e) = report.write_error.take() {
        return Err(if failed {
            Exit::failed(e)
        } else {
            Exit::bad(e)
        });
    }
    Ok(())
}
