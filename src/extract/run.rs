//! `pare extract` as one library function: selection → piece → (boundary data) → files →
//! report. The CLI and the TUI's extract job both call [`run`] and show the report's one text
//! rendering; `pare split` and `pare reduce` share its boundary listing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::data::{self, BoundaryData, Samples};
use super::{Piece, Selector, command_line, extract_selection, shell_quote};
use crate::data::DataArgs;
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::io::{SaveOptions, save_model};
use crate::model::shape::{Dim, format_shape};
use crate::model::{Analysis, DataType};
use crate::report::{Report, check_output};
use crate::runtime::EngineChoice;

/// Where the model's input data comes from when a command runs it (extract, split, reduce).
#[derive(Clone, Debug)]
pub struct DataRequest {
    /// The shared data flags (`--data`, `--samples`, `--seed`, preprocessing); no `--data`:
    /// seeded random inputs.
    pub input: DataArgs,
    pub engine: EngineChoice,
}

impl Default for DataRequest {
    fn default() -> Self {
        DataRequest {
            input: DataArgs::default(),
            engine: EngineChoice::Tract,
        }
    }
}

impl DataRequest {
    /// Loads (or makes up) the samples and resolves the engine that runs them: one random
    /// sample by default, every sample given unless `--samples` caps them.
    pub fn load(&self, a: &Analysis) -> Result<Samples> {
        let d = &self.input;
        let limit = d.limit(if d.has_files() { usize::MAX } else { 1 })?;
        let engine = self.engine.resolve()?;
        let source = d.source_or_random()?;
        let mut s = crate::data::load_all(a, &source, limit, d.preprocess.preprocess()?)?;
        s.engine = engine;
        Ok(s)
    }
}

/// What `pare extract` is asked to do.
#[derive(Clone, Debug)]
pub struct ExtractRequest {
    pub selector: Selector,
    /// The piece's file (never the input); boundary data goes next to it.
    pub output: PathBuf,
    /// Compute real boundary data by running the model (`--with-data`).
    pub data: Option<DataRequest>,
}

impl ExtractRequest {
    /// The equivalent `pare extract` command line (what the TUI shows before the job runs).
    pub fn command_line(&self, model: &Path, pins: &crate::model::InputPins) -> String {
        let mut s = match &self.selector {
            Selector::Tensors { inputs, outputs } => {
                command_line(model, &self.output, inputs, outputs, pins)
            }
            Selector::Node(n) => format!(
                "pare extract {} --node {} -o {}",
                shell_quote(&model.display().to_string()),
                shell_quote(n),
                shell_quote(&self.output.display().to_string())
            ),
            Selector::Range { from, to } => format!(
                "pare extract {} --from {} --to {} -o {}",
                shell_quote(&model.display().to_string()),
                shell_quote(from),
                shell_quote(to),
                shell_quote(&self.output.display().to_string())
            ),
        };
        if self.data.is_some() {
            s.push_str(" --with-data");
        }
        s
    }
}

/// A boundary tensor of a piece: name, element type and shape (numbers where known).
#[derive(Clone, Debug, Serialize)]
pub struct IoInfo {
    pub name: String,
    pub dtype: Option<&'static str>,
    pub shape: Option<Vec<Value>>,
    /// The shape as text (`1x3x?x?`), for the text rendering.
    #[serde(skip)]
    pub shape_text: String,
}

fn io_info(list: Vec<(String, Option<DataType>, Option<Vec<Dim>>)>) -> Vec<IoInfo> {
    list.into_iter()
        .map(|(name, dt, s)| IoInfo {
            name,
            dtype: dt.map(|d| d.name()),
            shape_text: format_shape(s.as_deref()),
            shape: s.map(|s| {
                s.iter()
                    .map(|d| match d {
                        Dim::Known(v) => json!(v),
                        other => json!(other.to_string()),
                    })
                    .collect()
            }),
        })
        .collect()
}

/// A piece's inputs and outputs.
#[derive(Clone, Debug, Serialize)]
pub struct PieceIo {
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
}

impl PieceIo {
    pub fn of(piece: &Piece) -> Self {
        PieceIo {
            inputs: io_info(piece.input_types()),
            outputs: io_info(piece.output_types()),
        }
    }

    /// `  input   name  dtype  shape` lines, names aligned.
    pub fn render(&self, s: &mut String) {
        let width = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .map(|t| t.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        for (kind, list) in [("input ", &self.inputs), ("output", &self.outputs)] {
            for t in list {
                let dt = t.dtype.unwrap_or("?");
                let _ = writeln!(s, "  {kind}  {:<width$}  {dt:<8} {}", t.name, t.shape_text);
            }
        }
    }
}

fn bytes_human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} B"),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `3 nodes (Conv x2, Relu) of 120: 1 input, 1 output, 4 initializers (1.2 MB)`.
pub fn piece_summary(piece: &Piece, total: usize) -> String {
    format!(
        "{} node{} ({}) of {}: {} input{}, {} output{}, {} initializer{} ({})",
        piece.nodes.len(),
        plural(piece.nodes.len()),
        piece.op_summary(),
        total,
        piece.inputs.len(),
        plural(piece.inputs.len()),
        piece.outputs.len(),
        plural(piece.outputs.len()),
        piece.initializers,
        plural(piece.initializers),
        bytes_human(piece.initializer_bytes)
    )
}

/// One `test_data_set_K` folder written next to a piece.
#[derive(Clone, Debug, Serialize)]
pub struct TestData {
    pub dir: String,
    pub inputs: usize,
    pub outputs: usize,
    pub log: Vec<String>,
    pub problems: Vec<String>,
}

/// Writes each sample's boundary data next to `out` (`test_data_set_K/`).
pub fn write_data(out: &Path, piece: &Piece, sets: &[BoundaryData]) -> Result<Vec<TestData>> {
    let mut written = Vec::new();
    for (k, bd) in sets.iter().enumerate() {
        let dir = data::test_data_dir(out, k);
        let (inputs, outputs) = data::write_test_data(&dir, piece, bd)?;
        written.push(TestData {
            dir: dir.display().to_string(),
            inputs,
            outputs,
            log: bd.log.clone(),
            problems: bd.problems.clone(),
        });
    }
    Ok(written)
}

/// What `pare extract` did (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct ExtractReport {
    pub output: String,
    pub nodes: usize,
    pub node_names: Vec<String>,
    pub ops: String,
    #[serde(flatten)]
    pub io: PieceIo,
    pub initializers: usize,
    pub initializer_bytes: u64,
    pub notes: Vec<String>,
    /// The equivalent tensor-boundary command line, which reproduces the piece exactly.
    pub command: String,
    pub test_data: Vec<TestData>,
    /// Boundary data that could not be computed (`sample K: why`).
    pub problems: Vec<String>,
    /// Engine that computed the boundary data (`tract`, `onnxruntime`); `None` without data.
    pub engine: Option<String>,
    /// `3 nodes (Conv x2, Relu) of 120: …`, for the text rendering.
    #[serde(skip)]
    pub summary: String,
    /// Where the boundary data came from, for the text rendering.
    #[serde(skip)]
    pub data_line: Option<String>,
}

impl Report for ExtractReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "extracted {}", self.summary);
        self.io.render(&mut s);
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        let _ = writeln!(s, "wrote {}", self.output);
        if let Some(l) = &self.data_line {
            let _ = writeln!(s, "{l}");
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        let _ = writeln!(s, "equivalent: {}", self.command);
        s
    }
}

/// Boundary data written for a piece.
struct Written {
    test_data: Vec<TestData>,
    line: String,
    engine: String,
    notes: Vec<String>,
}

/// Computes the piece's boundary data on the requested samples, writes the piece (its types
/// refined by the data) and the data next to it.
fn write_with_data(
    a: &Analysis,
    piece: &mut Piece,
    d: &DataRequest,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Written> {
    let samples = d.load(a)?;
    let sets = data::piece_data(a, piece, &samples, progress)?;
    progress.phase("writing", None);
    save_model(&piece.model, out, &SaveOptions::default())?;
    let test_data = write_data(out, piece, &sets)?;
    let mut how = vec![samples.source.clone()];
    how.extend(sets.first().map(|s| s.log.clone()).unwrap_or_default());
    let wrote = if sets.len() == 1 {
        data::test_data_dir(out, 0).display().to_string() + "/"
    } else {
        format!(
            "test_data_set_0..{} next to it",
            sets.len().saturating_sub(1)
        )
    };
    Ok(Written {
        test_data,
        line: format!("wrote {wrote} ({})", how.join("; ")),
        engine: samples.engine.name().to_string(),
        notes: samples.notes,
    })
}

/// `pare extract`: cuts what the request selects, writes it, and with `data` computes and
/// writes real boundary data next to it. Missing boundary data is listed in `problems`
/// (the piece and the data that could be computed are still written).
pub fn run(a: &Analysis, req: &ExtractRequest, progress: &dyn Progress) -> Result<ExtractReport> {
    check_output(a.model.path.as_deref(), &req.output)?;
    progress.phase("cutting the subgraph", None);
    let (boundary, mut piece) = extract_selection(a, &req.selector)?;
    progress.check_cancel()?;
    let written = match &req.data {
        Some(d) => {
            let w = write_with_data(a, &mut piece, d, &req.output, progress)?;
            piece.notes.extend(w.notes.iter().cloned());
            Some(w)
        }
        None => {
            progress.phase("writing", None);
            save_model(&piece.model, &req.output, &SaveOptions::default())?;
            None
        }
    };
    progress.log(&format!(
        "extracted {} nodes to {}",
        piece.nodes.len(),
        req.output.display()
    ));
    let g = a.graph();
    let test_data = written
        .as_ref()
        .map(|w| w.test_data.clone())
        .unwrap_or_default();
    Ok(ExtractReport {
        output: req.output.display().to_string(),
        nodes: piece.nodes.len(),
        node_names: piece
            .nodes
            .iter()
            .map(|&i| g.node[i].display_name())
            .collect(),
        ops: piece.op_summary(),
        io: PieceIo::of(&piece),
        initializers: piece.initializers,
        initializer_bytes: piece.initializer_bytes,
        notes: boundary.notes.iter().chain(&piece.notes).cloned().collect(),
        command: command_line(
            &a.model.path.clone().unwrap_or_default(),
            &req.output,
            &piece.inputs,
            &piece.outputs,
            &a.pins,
        ),
        problems: test_data
            .iter()
            .enumerate()
            .flat_map(|(k, t)| t.problems.iter().map(move |p| format!("sample {k}: {p}")))
            .collect(),
        test_data,
        engine: written.as_ref().map(|w| w.engine.clone()),
        summary: piece_summary(&piece, g.node.len()),
        data_line: written.map(|w| w.line),
    })
}

/// What `pare split` is asked to do.
#[derive(Clone, Debug)]
pub struct SplitRequest {
    /// Tensors to cut at.
    pub at: Vec<String>,
    pub head: PathBuf,
    pub tail: PathBuf,
    /// Check HEAD then TAIL against the model on these samples; `None` skips the check.
    pub verify: Option<DataRequest>,
}

/// One half of a split, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct SplitHalf {
    pub output: String,
    pub nodes: usize,
    #[serde(flatten)]
    pub io: PieceIo,
    /// `3 nodes (Conv x2, Relu) of 120: …`, for the text rendering.
    #[serde(skip)]
    pub summary: String,
}

impl SplitHalf {
    fn of(piece: &Piece, out: &Path, total: usize) -> Self {
        SplitHalf {
            output: out.display().to_string(),
            nodes: piece.nodes.len(),
            io: PieceIo::of(piece),
            summary: piece_summary(piece, total),
        }
    }
}

/// Whether HEAD then TAIL reproduces the model.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum SplitVerify {
    Verified {
        verified: bool,
        max_abs_diff: f64,
        inputs: String,
        log: Vec<String>,
    },
    NotVerified {
        verified: bool,
        why: String,
    },
}

/// Largest difference between HEAD then TAIL and the model that still counts as equal.
pub const SPLIT_TOLERANCE: f64 = 1e-4;

/// What `pare split` did (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    pub head: SplitHalf,
    pub tail: SplitHalf,
    pub bypass: Vec<String>,
    pub notes: Vec<String>,
    /// `None` when the check was skipped (`--no-verify`).
    pub verify: Option<SplitVerify>,
}

impl SplitReport {
    /// The difference when HEAD then TAIL differs from the model beyond [`SPLIT_TOLERANCE`].
    pub fn differs(&self) -> Option<f64> {
        match &self.verify {
            Some(SplitVerify::Verified { max_abs_diff, .. }) if *max_abs_diff > SPLIT_TOLERANCE => {
                Some(*max_abs_diff)
            }
            _ => None,
        }
    }
}

impl Report for SplitReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        for (name, half) in [("HEAD", &self.head), ("TAIL", &self.tail)] {
            let _ = writeln!(s, "{name} {}", half.summary);
            half.io.render(&mut s);
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        let _ = writeln!(s, "wrote {} and {}", self.head.output, self.tail.output);
        match &self.verify {
            Some(SplitVerify::Verified {
                max_abs_diff,
                inputs,
                ..
            }) => {
                let _ = writeln!(
                    s,
                    "verified: HEAD then TAIL equals the model on {inputs} (max abs diff {max_abs_diff:.3e})"
                );
            }
            Some(SplitVerify::NotVerified { why, .. }) => {
                let _ = writeln!(s, "not verified: {why}");
            }
            None => {}
        }
        s
    }
}

/// `pare split`: cuts the model into HEAD and TAIL at the request's tensors, writes both and
/// checks their composition against the model unless asked not to.
pub fn split(a: &Analysis, req: &SplitRequest) -> Result<SplitReport> {
    check_output(a.model.path.as_deref(), &req.head)?;
    check_output(a.model.path.as_deref(), &req.tail)?;
    if req.head == req.tail {
        return Err(PareError::Usage(format!(
            "HEAD and TAIL are the same file ({})",
            req.head.display()
        )));
    }
    let s = super::split::split(a, &req.at)?;
    save_model(&s.head.model, &req.head, &SaveOptions::default())?;
    save_model(&s.tail.model, &req.tail, &SaveOptions::default())?;
    let verify = req.verify.as_ref().map(|d| {
        let res = d.load(a).and_then(|samples| {
            let mut worst = 0f64;
            let mut log = Vec::new();
            for set in &samples.sets {
                let c = super::split::check_split(a, &s, set)?;
                worst = worst.max(c.max_abs_diff);
                log.extend(c.log);
            }
            Ok((samples.source, worst, log))
        });
        match res {
            Ok((inputs, max_abs_diff, log)) => SplitVerify::Verified {
                verified: true,
                max_abs_diff,
                inputs,
                log,
            },
            Err(e) => SplitVerify::NotVerified {
                verified: false,
                why: e.to_string(),
            },
        }
    });
    let total = a.graph().node.len();
    Ok(SplitReport {
        head: SplitHalf::of(&s.head, &req.head, total),
        tail: SplitHalf::of(&s.tail, &req.tail, total),
        bypass: s.bypass.clone(),
        notes: s
            .notes
            .iter()
            .chain(&s.head.notes)
            .chain(&s.tail.notes)
            .cloned()
            .collect(),
        verify,
    })
}

/// What `pare reduce` is asked to do.
#[derive(Clone, Debug)]
pub struct ReduceRequest {
    /// The check that fails on the model and must keep failing on the reduced one.
    pub check: super::reduce::ShellCheck,
    /// The minimal failing model; its log goes next to it (`MIN.log.txt`).
    pub output: PathBuf,
    pub max_tries: usize,
    /// Where candidates are written; `None`: a temporary directory, removed afterwards unless
    /// `keep_candidates`.
    pub work_dir: Option<PathBuf>,
    pub keep_candidates: bool,
    /// Give every candidate real boundary data from these samples.
    pub data: Option<DataRequest>,
}

/// `MIN.log.txt`: `min.onnx` → `min.log.txt`.
pub fn reduce_log_path(min: &Path) -> PathBuf {
    let stem = min
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reduce".into());
    min.with_file_name(format!("{stem}.log.txt"))
}

/// What `pare reduce` found (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct ReduceReport {
    pub output: String,
    pub log: String,
    pub nodes: usize,
    pub node_names: Vec<String>,
    pub ops: String,
    #[serde(flatten)]
    pub io: PieceIo,
    pub tries: Vec<super::reduce::TryRecord>,
    pub minimal: bool,
    pub stop_reason: Option<String>,
    pub test_data: Vec<TestData>,
    /// Nodes of the source model, for the text rendering.
    #[serde(skip)]
    pub total_nodes: usize,
    /// `name (op)` of each kept node, for the text rendering.
    #[serde(skip)]
    pub node_lines: Vec<String>,
    #[serde(skip)]
    pub notes: Vec<String>,
    /// Where the candidates were kept, when asked to keep them.
    #[serde(skip)]
    pub kept_in: Option<String>,
}

impl Report for ReduceReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "reduced {} nodes to {} ({}) in {} tries{}",
            self.total_nodes,
            self.nodes,
            self.ops,
            self.tries.len(),
            if self.minimal {
                "; removing any further part makes the check pass"
            } else {
                ""
            }
        );
        for l in &self.node_lines {
            let _ = writeln!(s, "  node    {l}");
        }
        self.io.render(&mut s);
        for n in self.stop_reason.iter().chain(&self.notes) {
            let _ = writeln!(s, "  note: {n}");
        }
        let _ = writeln!(s, "wrote {} (log: {})", self.output, self.log);
        if !self.test_data.is_empty() {
            let _ = writeln!(
                s,
                "wrote boundary data next to it ({} sample{})",
                self.test_data.len(),
                plural(self.test_data.len())
            );
        }
        if let Some(d) = &self.kept_in {
            let _ = writeln!(s, "candidates kept in {d}");
        }
        s
    }
}

/// `pare reduce`: shrinks the model to a minimal subgraph on which the check still fails,
/// writes it with its log (and boundary data when asked).
pub fn reduce(a: &Analysis, req: &ReduceRequest, progress: &dyn Progress) -> Result<ReduceReport> {
    use super::reduce::{ReduceOptions, render_log};
    check_output(a.model.path.as_deref(), &req.output)?;
    if req.max_tries < 1 {
        return Err(PareError::Usage("--max-tries must be at least 1".into()));
    }
    let samples = req.data.as_ref().map(|d| d.load(a)).transpose()?;
    let (work_dir, temp) = match &req.work_dir {
        Some(d) => (d.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = format!("pare-reduce-{}-{nanos}", std::process::id());
            (std::env::temp_dir().join(dir), true)
        }
    };
    let opts = ReduceOptions {
        max_tries: req.max_tries,
        work_dir: work_dir.clone(),
        keep_candidates: req.keep_candidates,
        samples,
    };
    let result = super::reduce::reduce(a, &req.check, &opts, progress);
    if temp && !req.keep_candidates {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let r = result?;
    save_model(&r.piece.model, &req.output, &SaveOptions::default())?;
    let log = reduce_log_path(&req.output);
    crate::model::io::write_atomic(&log, render_log(a, &req.check, &r).as_bytes())?;
    let test_data = if r.data.is_empty() {
        Vec::new()
    } else {
        write_data(&req.output, &r.piece, &r.data)?
    };
    let g = a.graph();
    Ok(ReduceReport {
        output: req.output.display().to_string(),
        log: log.display().to_string(),
        nodes: r.piece.nodes.len(),
        node_names: r
            .piece
            .nodes
            .iter()
            .map(|&i| g.node[i].display_name())
            .collect(),
        ops: r.piece.op_summary(),
        io: PieceIo::of(&r.piece),
        minimal: r.minimal,
        stop_reason: r.stop_reason.clone(),
        test_data,
        total_nodes: g.node.len(),
        node_lines: r
            .piece
            .nodes
            .iter()
            .map(|&i| format!("{} ({})", g.node[i].display_name(), g.node[i].op_type()))
            .collect(),
        notes: r.piece.notes.clone(),
        kept_in: req.keep_candidates.then(|| work_dir.display().to_string()),
        tries: r.tries,
    })
}
