//! `pare extract`, `pare split` and `pare reduce`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use super::{CmdResult, Exit, ModelArgs, open, print};
use pare::extract::reduce::ShellCheck;
use pare::extract::run::{DataRequest, ExtractRequest, ReduceRequest, SplitRequest};
use pare::extract::{self as ex, Selector};
use pare::jobs::{CliProgress, JobEvent, Progress};
use pare::report::check_output;
use pare::runtime::EngineChoice;

/// Where input data comes from (shared by extract, split and reduce): the data flags every
/// command that runs a model shares (`--data`, alias `--input-data`; default one seeded random
/// sample), plus the engine that computes boundary data.
#[derive(Args, Clone, Debug, Default)]
pub struct BoundaryDataArgs {
    #[command(flatten)]
    pub input: pare::data::DataArgs,
    /// Engine that computes the boundary data. tract (default) stores float64-exact reference
    /// outputs; ort stores what onnxruntime gives on the source model, run with the cut opaque
    /// to its fusions so that the piece run alone in onnxruntime reproduces it (needs its
    /// library, found as for `quantize`); auto: ort when it loads. Env PARE_ENGINE.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<pare::runtime::EngineChoice>,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// The ONNX model to cut from.
    pub model: PathBuf,
    /// Output model (never the input).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Tensors the piece starts from (comma-separated or repeated). Alone: from there to the
    /// model outputs that depend on them.
    #[arg(long, value_name = "T1,T2")]
    pub inputs: Vec<String>,
    /// Tensors the piece computes. Alone: from the model inputs they need.
    #[arg(long, value_name = "T3")]
    pub outputs: Vec<String>,
    /// One node (by name, or by a tensor it produces).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// First node of a range (with --to): every node on a path between them.
    #[arg(long, value_name = "NODE")]
    pub from: Option<String>,
    /// Last node of a range (with --from).
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Compute the piece's inputs and outputs by running the model (tract, or --engine), and
    /// write them next to OUT as test_data_set_K/input_I.pb, output_I.pb.
    #[arg(long = "with-data")]
    pub with_data: bool,
    #[command(flatten)]
    pub data: BoundaryDataArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The ONNX model to split.
    pub model: PathBuf,
    /// Tensors to cut at (comma-separated or repeated).
    #[arg(long, required = true, value_name = "T[,T..]")]
    pub at: Vec<String>,
    /// The two output models.
    #[arg(short, long, num_args = 2, required = true, value_names = ["HEAD", "TAIL"])]
    pub output: Vec<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Skip checking HEAD∘TAIL against the model with tract.
    #[arg(long = "no-verify")]
    pub no_verify: bool,
    #[command(flatten)]
    pub data: BoundaryDataArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReduceArgs {
    /// The ONNX model on which the check fails.
    pub model: PathBuf,
    /// Shell command that fails (non-zero exit) on a bad model; `{}` is the candidate file
    /// (appended when absent; also in $PARE_CANDIDATE).
    #[arg(long, value_name = "CMD {}")]
    pub check: String,
    /// The minimal failing model; the log goes next to it (MIN.log.txt).
    #[arg(short, long, value_name = "MIN")]
    pub output: PathBuf,
    /// Count a try as failing only when the check's output also contains this text (so the
    /// reduction keeps the same failure, not any failure).
    #[arg(long = "fail-match", value_name = "TEXT")]
    pub fail_match: Option<String>,
    /// Most runs of the check.
    #[arg(long = "max-tries", default_value_t = 200)]
    pub max_tries: usize,
    /// Seconds before a run of the check is killed (a timeout counts as not failing).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Give every candidate real boundary data (test_data_set_K next to it) for the check.
    #[arg(long = "with-data")]
    pub with_data: bool,
    #[command(flatten)]
    pub data: BoundaryDataArgs,
    /// Where candidates are written (default: a temporary directory, removed afterwards).
    #[arg(long = "work-dir", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep every candidate (try_NNNN/model.onnx) in the work directory.
    #[arg(long = "keep-candidates")]
    pub keep_candidates: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

/// Prints log lines to stderr (unless quiet) and drives the progress bar.
struct CliLog {
    bar: CliProgress,
    quiet: bool,
}

impl Progress for CliLog {
    fn event(&self, e: JobEvent) {
        match &e {
            JobEvent::Log(l) if !self.quiet => eprintln!("{l}"),
            JobEvent::Log(_) => {}
            _ => self.bar.event(e),
        }
    }
}

fn quiet_bar(json: bool) -> CliProgress {
    CliProgress::new(json || !std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

impl BoundaryDataArgs {
    /// The typed data request; `--engine` defaults to $PARE_ENGINE, else tract.
    fn request(&self) -> DataRequest {
        DataRequest {
            input: self.input.clone(),
            engine: self
                .engine
                .unwrap_or_else(|| EngineChoice::from_env_or(EngineChoice::Tract)),
        }
    }
}

pub fn run_extract(a: &ExtractArgs) -> CmdResult {
    if a.from.is_some() != a.to.is_some() {
        return Err(Exit::bad(anyhow!(
            "--from and --to go together: give both ends of the range"
        )));
    }
    let n_sel = usize::from(!a.inputs.is_empty() || !a.outputs.is_empty())
        + usize::from(a.node.is_some())
        + usize::from(a.from.is_some());
    if n_sel != 1 {
        return Err(Exit::bad(anyhow!(
            "give exactly one selector: --inputs/--outputs TENSORS, --node NAME, or --from NODE --to NODE{}",
            if n_sel > 1 {
                " (several were given)"
            } else {
                ""
            }
        )));
    }
    check_output(Some(&a.model), &a.output).map_err(Exit::bad)?;
    make_parent(&a.output)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let selector = if let Some(n) = &a.node {
        Selector::Node(n.clone())
    } else if let (Some(f), Some(t)) = (&a.from, &a.to) {
        Selector::Range {
            from: f.clone(),
            to: t.clone(),
        }
    } else {
        Selector::Tensors {
            inputs: ex::split_names(&analysis, &a.inputs),
            outputs: ex::split_names(&analysis, &a.outputs),
        }
    };
    let req = ExtractRequest {
        selector,
        output: a.output.clone(),
        data: (a.with_data || !a.data.input.data.is_empty()).then(|| a.data.request()),
    };
    let bar = CliLog {
        bar: quiet_bar(a.json),
        quiet: a.json,
    };
    let report = ex::run::run(&analysis, &req, &bar);
    bar.bar.finish();
    let report = report.map_err(Exit::bad)?;
    print(&report, a.json)?;
    if !report.problems.is_empty() {
        return Err(Exit::failed(anyhow!(
            "--with-data: wrote the piece and the data that could be computed, but not all of it: {}",
            report.problems.join("; ")
        )));
    }
    Ok(())
}

pub fn run_split(a: &SplitArgs) -> CmdResult {
    let (head, tail) = (&a.output[0], &a.output[1]);
    check_output(Some(&a.model), head).map_err(Exit::bad)?;
    check_output(Some(&a.model), tail).map_err(Exit::bad)?;
    make_parent(head)?;
    make_parent(tail)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let req = SplitRequest {
        at: ex::split_names(&analysis, &a.at),
        head: head.clone(),
        tail: tail.clone(),
        verify: (!a.no_verify).then(|| a.data.request()),
    };
    let report = ex::run::split(&analysis, &req).map_err(Exit::bad)?;
    print(&report, a.json)?;
    if let Some(d) = report.differs() {
        return Err(Exit::failed(anyhow!(
            "HEAD then TAIL differs from the model by {d:.3e}"
        )));
    }
    Ok(())
}

/// Creates the directory an output goes to.
fn make_parent(out: &Path) -> Result<(), Exit> {
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => std::fs::create_dir_all(d)
            .map_err(|e| Exit::bad(anyhow!("cannot create {}: {e}", d.display()))),
        None => Ok(()),
    }
}

pub fn run_reduce(a: &ReduceArgs) -> CmdResult {
    check_output(Some(&a.model), &a.output).map_err(Exit::bad)?;
    if a.max_tries < 1 {
        return Err(Exit::bad(anyhow!("--max-tries must be at least 1")));
    }
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        return Err(Exit::bad(anyhow!("--timeout must be positive")));
    }
    make_parent(&a.output)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let req = ReduceRequest {
        check: ShellCheck {
            command: a.check.clone(),
            timeout: Duration::from_secs_f64(a.timeout),
            fail_match: a.fail_match.clone(),
        },
        output: a.output.clone(),
        max_tries: a.max_tries,
        work_dir: a.work_dir.clone(),
        keep_candidates: a.keep_candidates,
        data: (a.with_data || !a.data.input.data.is_empty()).then(|| a.data.request()),
    };
    let bar = CliLog {
        bar: quiet_bar(a.json),
        quiet: a.json,
    };
    let report = ex::run::reduce(&analysis, &req, &bar);
    bar.bar.finish();
    print(&report.map_err(Exit::bad)?, a.json)
}
