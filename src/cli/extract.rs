//! `pare extract`, `pare split` and `pare reduce`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use serde_json::json;

use super::{CmdResult, Exit, ModelArgs, check_output, open};
use pare::extract::data::{self, BoundaryData, Samples};
use pare::extract::reduce::{self, ReduceOptions, ShellCheck};
use pare::extract::{self as ex, Piece, Selector};
use pare::jobs::{CliProgress, JobEvent, Progress};
use pare::model::Analysis;
use pare::model::io::{SaveOptions, save_model};
use pare::model::shape::format_shape;

/// Where input data comes from (shared by extract, split and reduce).
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// Input data for the model's inputs: an ONNX TensorProto (.pb) or .npy file per input, in
    /// input order or as NAME=PATH, or a test-data directory (input_0.pb, ...) per sample
    /// (repeatable). Default: seeded random inputs.
    #[arg(long = "input-data", value_name = "[NAME=]PATH")]
    pub input_data: Vec<String>,
    /// Number of random input samples (test_data_set_0..N-1).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Seed of the random inputs (sample K uses SEED+K).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    pub data: DataArgs,
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
    pub data: DataArgs,
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
    pub data: DataArgs,
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

fn bytes_human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} B"),
    }
}

fn io_json(
    list: Vec<(
        String,
        Option<pare::model::DataType>,
        Option<Vec<pare::model::shape::Dim>>,
    )>,
) -> serde_json::Value {
    list.into_iter()
        .map(|(n, dt, s)| {
            let shape: Option<Vec<serde_json::Value>> = s.map(|s| {
                s.iter()
                    .map(|d| match d {
                        pare::model::shape::Dim::Known(v) => json!(v),
                        other => json!(other.to_string()),
                    })
                    .collect()
            });
            json!({"name": n, "dtype": dt.map(|d| d.name()), "shape": shape})
        })
        .collect()
}

fn print_io(piece: &Piece) {
    let width = piece
        .inputs
        .iter()
        .chain(&piece.outputs)
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (kind, list) in [
        ("input ", piece.input_types()),
        ("output", piece.output_types()),
    ] {
        for (n, dt, s) in list {
            let dt = dt.map(|d| d.name()).unwrap_or("?");
            println!(
                "  {kind}  {n:<width$}  {dt:<8} {}",
                format_shape(s.as_deref())
            );
        }
    }
}

fn piece_summary(piece: &Piece, total: usize) -> String {
    format!(
        "{} node{} ({}) of {}: {} input{}, {} output{}, {} initializer{} ({})",
        piece.nodes.len(),
        if piece.nodes.len() == 1 { "" } else { "s" },
        piece.op_summary(),
        total,
        piece.inputs.len(),
        if piece.inputs.len() == 1 { "" } else { "s" },
        piece.outputs.len(),
        if piece.outputs.len() == 1 { "" } else { "s" },
        piece.initializers,
        if piece.initializers == 1 { "" } else { "s" },
        bytes_human(piece.initializer_bytes)
    )
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

fn load_samples(a: &Analysis, d: &DataArgs) -> anyhow::Result<Samples> {
    if d.samples == 0 {
        return Err(anyhow!("--samples must be at least 1"));
    }
    let engine = d
        .engine
        .unwrap_or_else(|| {
            pare::runtime::EngineChoice::from_env_or(pare::runtime::EngineChoice::Tract)
        })
        .resolve()?;
    let mut s = data::load_samples(a, &d.input_data, d.samples, d.seed)?;
    s.engine = engine;
    Ok(s)
}

/// Writes each sample's boundary data next to `out`; returns JSON per set and problems.
fn write_data(
    out: &Path,
    piece: &Piece,
    sets: &[BoundaryData],
) -> anyhow::Result<(Vec<serde_json::Value>, Vec<String>)> {
    let mut js = Vec::new();
    let mut problems = Vec::new();
    for (k, bd) in sets.iter().enumerate() {
        let dir = data::test_data_dir(out, k);
        let (ni, no) = data::write_test_data(&dir, piece, bd)?;
        for p in &bd.problems {
            problems.push(format!("sample {k}: {p}"));
        }
        js.push(json!({"dir": dir.display().to_string(), "engine": bd.engine, "inputs": ni, "outputs": no, "log": bd.log, "problems": bd.problems}));
    }
    Ok((js, problems))
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
    check_output(&a.model, &a.output).map_err(Exit::bad)?;
    make_parent(&a.output)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let sel = if let Some(n) = &a.node {
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
    let (boundary, mut piece) = ex::extract_selection(&analysis, &sel).map_err(Exit::bad)?;
    let with_data = a.with_data || !a.data.input_data.is_empty();
    let bar = CliLog {
        bar: quiet_bar(a.json),
        quiet: a.json,
    };
    let mut data_json = Vec::new();
    let mut problems = Vec::new();
    let mut data_lines = Vec::new();
    let mut engine = None;
    if with_data {
        let samples = load_samples(&analysis, &a.data).map_err(Exit::bad)?;
        let sets = data::piece_data(&analysis, &mut piece, &samples, &bar).map_err(Exit::bad)?;
        bar.bar.finish();
        save_model(&piece.model, &a.output, &SaveOptions::default()).map_err(Exit::bad)?;
        let (js, p) = write_data(&a.output, &piece, &sets).map_err(Exit::bad)?;
        data_json = js;
        problems = p;
        for n in &samples.notes {
            piece.notes.push(n.clone());
        }
        engine = sets.first().map(|s| s.engine);
        let mut how: Vec<String> = vec![
            samples.source.clone(),
            format!("engine {}", engine.unwrap_or(samples.engine)),
        ];
        how.extend(sets.first().map(|s| s.log.clone()).unwrap_or_default());
        data_lines.push(format!(
            "wrote {} ({})",
            if sets.len() == 1 {
                data::test_data_dir(&a.output, 0).display().to_string() + "/"
            } else {
                format!("test_data_set_0..{} next to it", sets.len() - 1)
            },
            how.join("; ")
        ));
    } else {
        save_model(&piece.model, &a.output, &SaveOptions::default()).map_err(Exit::bad)?;
    }
    let cmd = ex::command_line(
        &a.model,
        &a.output,
        &piece.inputs,
        &piece.outputs,
        &analysis.pins,
    );
    let total = analysis.graph().node.len();
    if a.json {
        let g = analysis.graph();
        let o = json!({
            "output": a.output.display().to_string(),
            "nodes": piece.nodes.len(),
            "node_names": piece.nodes.iter().map(|&i| g.node[i].display_name()).collect::<Vec<_>>(),
            "ops": piece.op_summary(),
            "inputs": io_json(piece.input_types()),
            "outputs": io_json(piece.output_types()),
            "initializers": piece.initializers,
            "initializer_bytes": piece.initializer_bytes,
            "notes": boundary.notes.iter().chain(&piece.notes).collect::<Vec<_>>(),
            "command": cmd,
            "engine": engine,
            "test_data": data_json,
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&o).map_err(Exit::bad)?);
    } else {
        println!("extracted {}", piece_summary(&piece, total));
        print_io(&piece);
        for n in boundary.notes.iter().chain(&piece.notes) {
            println!("  note: {n}");
        }
        println!("wrote {}", a.output.display());
        for l in &data_lines {
            println!("{l}");
        }
        println!("equivalent: {cmd}");
    }
    if !problems.is_empty() {
        return Err(Exit::failed(anyhow!(
            "--with-data: wrote the piece and the data that could be computed, but not all of it: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

pub fn run_split(a: &SplitArgs) -> CmdResult {
    let (head_path, tail_path) = (&a.output[0], &a.output[1]);
    check_output(&a.model, head_path).map_err(Exit::bad)?;
    check_output(&a.model, tail_path).map_err(Exit::bad)?;
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
        let res = load_samples(&analysis, &a.data).and_then(|samples| {
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
    if a.json {
        let o = json!({
            "head": {"output": head_path.display().to_string(), "nodes": s.head.nodes.len(), "inputs": io_json(s.head.input_types()), "outputs": io_json(s.head.output_types())},
            "tail": {"output": tail_path.display().to_string(), "nodes": s.tail.nodes.len(), "inputs": io_json(s.tail.input_types()), "outputs": io_json(s.tail.output_types())},
            "bypass": s.bypass,
            "notes": s.notes.iter().chain(&s.head.notes).chain(&s.tail.notes).collect::<Vec<_>>(),
            "verify": verify,
        });
        println!("{}", serde_json::to_string_pretty(&o).map_err(Exit::bad)?);
    } else {
        println!("HEAD {}", piece_summary(&s.head, total));
        print_io(&s.head);
        println!("TAIL {}", piece_summary(&s.tail, total));
        print_io(&s.tail);
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
    check_output(&a.model, &a.output).map_err(Exit::bad)?;
    if a.max_tries < 1 {
        return Err(Exit::bad(anyhow!("--max-tries must be at least 1")));
    }
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        return Err(Exit::bad(anyhow!("--timeout must be positive")));
    }
    make_parent(&a.output)?;
    let analysis = open(Some(&a.model), &a.model_args).map_err(Exit::bad)?;
    let with_data = a.with_data || !a.data.input_data.is_empty();
    let samples = if with_data {
        Some(load_samples(&analysis, &a.data).map_err(Exit::bad)?)
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
        data_json = write_data(&a.output, &r.piece, &r.data)
            .map_err(Exit::bad)?
            .0;
    }
    let total = analysis.graph().node.len();
    let g = analysis.graph();
    if a.json {
        let o = json!({
            "output": a.output.display().to_string(),
            "log": log.display().to_string(),
            "nodes": r.piece.nodes.len(),
            "node_names": r.piece.nodes.iter().map(|&i| g.node[i].display_name()).collect::<Vec<_>>(),
            "ops": r.piece.op_summary(),
            "inputs": io_json(r.piece.input_types()),
            "outputs": io_json(r.piece.output_types()),
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
        print_io(&r.piece);
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
