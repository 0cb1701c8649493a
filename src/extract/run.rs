//! `pare extract` as one library function: selection → piece → (boundary data) → files →
//! report. The CLI and the TUI's extract job both call [`run`] and show the report's one text
//! rendering; `pare split` and `pare reduce` share its boundary listing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::data::{self, BoundaryData, Samples};
use super::{Piece, Selector, command_line, extract_selection, shell_quote};
use crate::error::Result;
use crate::jobs::Progress;
use crate::model::io::{SaveOptions, save_model};
use crate::model::shape::{Dim, format_shape};
use crate::model::{Analysis, DataType};
use crate::report::{Report, check_output};
use crate::data::DataArgs;
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
