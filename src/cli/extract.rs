//! `pare extract`, `pare split` and `pare reduce`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use serde_json::json;

use super::{CmdResult, Exit, ModelArgs, open, print};
use pare::extract::reduce::{self, ReduceOptions, ShellCheck};
use pare::extract::run::{DataRequest, ExtractRequest, PieceIo, piece_summary, write_data};
use pare::extract::{self as ex, Selector};
use pare::jobs::{CliProgress, JobEvent, Progress};
use pare::model::io::{SaveOptions, save_model};
use pare::report::check_output;
use pare::runtime::EngineChoice;

fn print_io(io: &PieceIo) {
    let mut s = String::new();
    io.render(&mut s);
    print!("{s}");
}

/// Where input data comes from (shared by extract, split and reduce): the data flags every
/// command that runs a model shares (`--data`, alias `--input-data`; default one seeded random
/// sample), plus the engine that computes boundary data.
#[derive(Args, Clone, Debug, Default)]
pub struct BoundaryDataArgs {
    #[command(flatten)]
    pub input: pare::data::DataArgs,
    /// Engine that computes the boundary data. tract (default) stores float64-exact reference
    /// outputs; ort stores what onnxruntime gives on the source model, run with the cut opaque
    /// to its fusions so that the piece run alone in onnxruntime reproduces it (needs a build
    /// with `--features ort`; env PARE_ENGINE).
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
    let (head_path, tail_path) = (&a.output[0], &a.output[1]);
    check_output(Some(&a.model), head_path).map_err(Exit::bad)?;
    check_output(Some(&a.model), tail_path).map_err(Exit::bad)?;
    if head_path == tail_path {
        return Err(Exit::bad(anyhow!(
            "HEAD and TAIL are the same file ({})",
            head_path.display()
        )));
    }
    make_parent(head_path)?;
    make_parent(tail_path)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let at = ex::split_names(&analysis, &a.at);
    let s = ex::split::split(&analysis, &at).map_err(Exit::bad)?;
    save_model(&s.head.model, head_path, &SaveOptions::default()).map_err(Exit::bad)?;
    save_model(&s.tail.model, tail_path, &SaveOptions::default()).map_err(Exit::bad)?;
    let mut verify = json!(null);
    let mut verify_line = String::new();
    let mut bad_diff = None;
    if !a.no_verify {
        let res = a.data.request().load(&analysis).and_then(|samples| {
            let mut worst = 0f64;
            let mut log = Vec::new();
            for set in &samples.sets {
                let c = ex::split::check_split(&analysis, &s, set)?;
                worst = worst.max(c.max_abs_diff);
                log.extend(c.log);
            }
            Ok((samples.source, worst, log))
        });
        match res {
            Ok((source, worst, log)) => {
                verify =
                    json!({"verified": true, "max_abs_diff": worst, "inputs": source, "log": log});
                verify_line = format!(
                    "verified: HEAD then TAIL equals the model on {source} (max abs diff {worst:.3e})"
                );
                if worst > 1e-4 {
                    bad_diff = Some(worst);
                }
            }
            Err(e) => {
                verify = json!({"verified": false, "why": e.to_string()});
                verify_line = format!("not verified: {e}");
            }
        }
    }
    let total = analysis.graph().node.len();
    let (hio, tio) = (PieceIo::of(&s.head), PieceIo::of(&s.tail));
    if a.json {
        let o = json!({
            "head": {"output": head_path.display().to_string(), "nodes": s.head.nodes.len(), "inputs": hio.inputs, "outputs": hio.outputs},
            "tail": {"output": tail_path.display().to_string(), "nodes": s.tail.nodes.len(), "inputs": tio.inputs, "outputs": tio.outputs},
            "bypass": s.bypass,
            "notes": s.notes.iter().chain(&s.head.notes).chain(&s.tail.notes).collect::<Vec<_>>(),
            "verify": verify,
        });
        println!("{}", serde_json::to_string_pretty(&o).map_err(Exit::bad)?);
    } else {
        println!("HEAD {}", piece_summary(&s.head, total));
        print_io(&hio);
        println!("TAIL {}", piece_summary(&s.tail, total));
        print_io(&tio);
        for n in s.notes.iter().chain(&s.head.notes).chain(&s.tail.notes) {
            println!("  note: {n}");
        }
        println!("wrote {} and {}", head_path.display(), tail_path.display());
        if !verify_line.is_empty() {
            println!("{verify_line}");
        }
    }
    if let Some(d) = bad_diff {
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

/// `MIN.log.txt`: `min.onnx` → `min.log.txt`.
pub fn log_path(min: &Path) -> PathBuf {
    let stem = min
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reduce".into());
    min.with_file_name(format!("{stem}.log.txt"))
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
    let with_data = a.with_data || !a.data.input.data.is_empty();
    let samples = if with_data {
        Some(a.data.request().load(&analysis).map_err(Exit::bad)?)
    } else {
        None
    };
    let (work_dir, temp) = match &a.work_dir {
        Some(d) => (d.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (
                std::env::temp_dir().join(format!("pare-reduce-{}-{nanos}", std::process::id())),
                true,
            )
        }
    };
    let oracle = ShellCheck {
        command: a.check.clone(),
        timeout: Duration::from_secs_f64(a.timeout),
        fail_match: a.fail_match.clone(),
    };
    let opts = ReduceOptions {
        max_tries: a.max_tries,
        work_dir: work_dir.clone(),
        keep_candidates: a.keep_candidates,
        samples,
    };
    let bar = CliLog {
        bar: quiet_bar(a.json),
        quiet: a.json,
    };
    let result = reduce::reduce(&analysis, &oracle, &opts, &bar);
    bar.bar.finish();
    if temp && !a.keep_candidates {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let r = result.map_err(Exit::bad)?;
    save_model(&r.piece.model, &a.output, &SaveOptions::default()).map_err(Exit::bad)?;
    let log = log_path(&a.output);
    pare::model::io::write_atomic(&log, reduce::render_log(&analysis, &oracle, &r).as_bytes())
        .map_err(Exit::bad)?;
    let mut data_json = Vec::new();
    if !r.data.is_empty() {
        data_json = write_data(&a.output, &r.piece, &r.data).map_err(Exit::bad)?;
    }
    let total = analysis.graph().node.len();
    let g = analysis.graph();
    let rio = PieceIo::of(&r.piece);
    if a.json {
        let o = json!({
            "output": a.output.display().to_string(),
            "log": log.display().to_string(),
            "nodes": r.piece.nodes.len(),
            "node_names": r.piece.nodes.iter().map(|&i| g.node[i].display_name()).collect::<Vec<_>>(),
            "ops": r.piece.op_summary(),
            "inputs": rio.inputs,
            "outputs": rio.outputs,
            "tries": r.tries,
            "minimal": r.minimal,
            "stop_reason": r.stop_reason,
            "test_data": data_json,
        });
        println!("{}", serde_json::to_string_pretty(&o).map_err(Exit::bad)?);
    } else {
        println!(
            "reduced {} nodes to {} ({}) in {} tries{}",
            total,
            r.piece.nodes.len(),
            r.piece.op_summary(),
            r.tries.len(),
            if r.minimal {
                "; removing any further part makes the check pass"
            } else {
                ""
            }
        );
        for &i in &r.piece.nodes {
            println!(
                "  node    {} ({})",
                g.node[i].display_name(),
                g.node[i].op_type()
            );
        }
        print_io(&rio);
        if let Some(why) = &r.stop_reason {
            println!("  note: {why}");
        }
        for n in &r.piece.notes {
            println!("  note: {n}");
        }
        println!("wrote {} (log: {})", a.output.display(), log.display());
        if !data_json.is_empty() {
            println!(
                "wrote boundary data next to it ({} sample{})",
                data_json.len(),
                if data_json.len() == 1 { "" } else { "s" }
            );
        }
        if a.keep_candidates {
            println!("candidates kept in {}", work_dir.display());
        }
    }
    Ok(())
}
