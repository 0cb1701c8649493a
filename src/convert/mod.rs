//! `pare convert`: FP32 → mixed FP16 (or BF16) with the precision written into the ONNX file,
//! which is the only way to get a reduced-precision engine from TensorRT 11 (strongly typed
//! networks: no `--fp16` builder flag any more).
//!
//! As NVIDIA ModelOpt's AutoCast, and unlike onnxconverter-common (which clamps weights to
//! ±1e4 silently and breaks Resize scales), nodes stay FP32 when a measured activation
//! exceeds 512 in magnitude or an initializer exceeds FP16's 65504, and so do the tensors
//! whose type the schema fixes or that compute shapes (Resize scales/sizes, shape arithmetic;
//! indices are integers and never touched). Every node kept FP32 is reported with its reason.
//! Casts are inserted only at precision boundaries, one per tensor and precision, never
//! chained, in topological order; If/Loop/Scan bodies are converted too. The report gives the
//! share of MACs in the low precision and each output's fidelity against the FP32 model.

mod measure;
pub mod rewrite;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

pub use crate::fidelity::OutputFidelity;

use crate::data::{self, DataSource, DynamicDims, Preprocess, SampleSet};
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::proto::{GraphProto, ModelProto, NodeProto};
use crate::model::{Analysis, DataType, SaveOptions, save_model};
use crate::report::{Report, fmt_db};
use crate::runtime::{EngineChoice, EngineKind};

/// The low precision to convert to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DataType {
        match self {
            Precision::Fp16 => DataType::FLOAT16,
            Precision::Bf16 => DataType::BFLOAT16,
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
    fn upper(self) -> &'static str {
        match self {
            Precision::Fp16 => "FP16",
            Precision::Bf16 => "BF16",
        }
    }
}

/// Why a node stays FP32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// `--exclude` matched it.
    Excluded,
    /// A measured input or output exceeds 512 in magnitude.
    ActivationRange,
    /// An initializer (or Constant) exceeds 65504: FP16 would make it infinite.
    InitializerRange,
    /// It computes a shape, size, axes or Resize-scale tensor.
    ShapeTensor,
    /// Its op keeps FP32 (types fixed by attribute or schema, custom or unknown op).
    OpType,
    /// Shape inference could not type one of its tensors.
    UnknownType,
    /// If/Loop/Scan: the node's interface stays FP32 (its body is converted).
    ControlFlow,
    /// Inside a control-flow body that is not converted.
    Subgraph,
    /// A Constant or Cast whose reader stays FP32.
    FollowsReaders,
}

/// One node kept FP32, and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeptNode {
    /// Display name; nested nodes are prefixed by their control-flow node (`/If_0 > /then/Mul`).
    pub node: String,
    pub op: String,
    pub reason: KeepReason,
    pub detail: String,
}

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub precision: Precision,
    /// Sample data for activation ranges and fidelity (random when none was given).
    pub source: DataSource,
    pub samples: usize,
    pub preprocess: Preprocess,
    /// Keep the float inputs and outputs FP32 (Casts at the boundary).
    pub keep_io_types: bool,
    /// Nodes to keep FP32: an op type, a node name or a glob.
    pub exclude: Vec<String>,
    /// Engine for the fidelity comparison.
    pub engine: EngineChoice,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Fp16,
            source: DataSource::Random { seed: 0 },
            samples: 8,
            preprocess: Preprocess::default(),
            keep_io_types: false,
            exclude: Vec::new(),
            engine: EngineChoice::Auto,
        }
    }
}

/// `pare convert` as a typed request.
#[derive(Clone, Debug)]
pub struct ConvertRequest {
    pub options: ConvertOptions,
    pub output: PathBuf,
}

/// What convert did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct ConvertReport {
    pub model: String,
    pub output: Option<String>,
    pub precision: Precision,
    pub keep_io_types: bool,
    /// Nodes with a float input or output (all graphs).
    pub float_nodes: usize,
    pub converted_nodes: usize,
    pub kept: Vec<KeptNode>,
    pub casts_inserted: usize,
    pub initializers_converted: usize,
    /// Nonzero initializer values that became zero (below the format's smallest subnormal).
    pub values_flushed_to_zero: u64,
    pub macs_total: u64,
    pub macs_low: u64,
    /// Share of the model's MACs computed in the low precision.
    pub macs_low_share: f64,
    /// Samples whose activations were measured (0: not measured), and where from.
    pub range_samples: usize,
    pub range_engine: Option<EngineKind>,
    pub data_source: String,
    /// Per-output fidelity against the FP32 model.
    pub fidelity: Vec<OutputFidelity>,
    pub fidelity_samples: usize,
    /// True when the fidelity samples were not used to measure ranges.
    pub fidelity_held_out: bool,
    pub fidelity_engine: Option<EngineKind>,
    /// Why fidelity could not be measured (the converted model did not run).
    pub fidelity_error: Option<String>,
    pub notes: Vec<String>,
}

/// `--exclude` patterns: an op type, a node name, or a glob over node names.
pub struct Exclusions {
    plain: Vec<String>,
    globs: Vec<(String, globset::GlobMatcher)>,
}

impl Exclusions {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut plain = Vec::new();
        let mut globs = Vec::new();
        for p in patterns {
            plain.push(p.clone());
            if p.contains(['*', '?', '[', '{']) {
                let g = globset::Glob::new(p)
                    .map_err(|e| PareError::Usage(format!("--exclude '{p}': {e}")))?;
                globs.push((p.clone(), g.compile_matcher()));
            }
        }
        Ok(Self { plain, globs })
    }

    /// The pattern that keeps `n` FP32, if any.
    pub fn matching(&self, n: &NodeProto) -> Option<String> {
        let name = n.display_name();
        self.plain
            .iter()
            .find(|p| **p == name || *p == n.op_type())
            .cloned()
            .or_else(|| {
                self.globs
                    .iter()
                    .find(|(_, g)| g.is_match(&name))
                    .map(|(p, _)| p.clone())
            })
    }
}

/// Element types of every tensor of `a` (nested graphs included).
fn dtype_map(a: &Analysis) -> HashMap<String, DataType> {
    fn walk(g: &GraphProto, m: &mut HashMap<String, DataType>) {
        for t in &g.initializer {
            m.insert(t.name().to_string(), DataType(t.data_type()));
        }
        for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
            if let Some(tt) = vi.tensor_type()
                && let Some(e) = tt.elem_type
                && e != 0
            {
                m.entry(vi.name().to_string()).or_insert(DataType(e));
            }
        }
        for n in &g.node {
            for (_, sub) in n.subgraphs() {
                walk(sub, m);
            }
        }
    }
    let mut m = HashMap::new();
    walk(a.graph(), &mut m);
    m
}

/// The main graph's float activations (non-initializer inputs and node outputs).
fn float_activations(a: &Analysis, dt: &dyn Fn(&str) -> Option<DataType>) -> Vec<String> {
    let g = a.graph();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let mut v: Vec<String> = g
        .input
        .iter()
        .map(|i| i.name())
        .filter(|n| !inits.contains(n))
        .map(str::to_string)
        .collect();
    v.extend(
        g.node
            .iter()
            .flat_map(|n| n.output.iter())
            .filter(|o| !o.is_empty())
            .cloned(),
    );
    v.retain(|t| dt(t) == Some(DataType::FLOAT));
    v
}

/// The rewritten model (one pass of [`rewrite::rewrite`]).
fn rewritten(
    a: &Analysis,
    o: &ConvertOptions,
    keep_io_types: bool,
    ranges: Option<&HashMap<String, f32>>,
    ex: &Exclusions,
    dt: &dyn Fn(&str) -> Option<DataType>,
) -> (ModelProto, rewrite::Outcome) {
    let mut m = a.model.proto.clone();
    let opset = m.opset("").unwrap_or(1);
    let excluded = |n: &NodeProto| ex.matching(n);
    let inp = rewrite::Inputs {
        precision: o.precision,
        opset,
        dtype: dt,
        ranges,
        excluded: &excluded,
        keep_io_types,
    };
    let mut outcome = rewrite::Outcome::default();
    if let Some(g) = m.graph.as_mut() {
        outcome = rewrite::rewrite(g, &inp);
    }
    (m, outcome)
}

/// Converts the analysed model in memory; the converted model and the report (its
/// `output` unset).
pub fn convert(
    a: &Analysis,
    o: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<(ModelProto, ConvertReport)> {
    let ex = Exclusions::new(&o.exclude)?;
    let types = dtype_map(a);
    let dt = |t: &str| a.shapes.dtype(t).or_else(|| types.get(t).copied());
    let mut notes = Vec::new();
    progress.phase("reading samples", None);
    let decls = data::input_decls(a.graph(), &a.pins)?;
    let set = SampleSet::open_with(
        decls,
        &o.source,
        o.samples,
        o.preprocess.clone(),
        DynamicDims::Guess,
    )?;
    notes.extend(set.notes.clone());
    let n = set.len();
    let n_ranges = if n >= 2 { n / 2 } else { n };
    let fid_range = if n >= 2 { n_ranges..n } else { 0..n };
    let inputs = a.index.inputs.clone();
    let mut ranges = None;
    let mut range_engine = None;
    if o.precision == Precision::Fp16 {
        progress.phase("measuring activation ranges", None);
        let watched = float_activations(a, &dt);
        match measure::activation_ranges(&a.model.proto, &inputs, &watched, &set, 0..n_ranges) {
            Ok((r, e)) => {
                ranges = Some(r);
                range_engine = Some(e);
            }
            Err(e) => notes.push(format!(
                "activation ranges not measured ({e}): only initializer ranges decide"
            )),
        }
    }
    progress.check_cancel()?;
    progress.phase("converting", None);
    // Fidelity runs the model with FP32 inputs/outputs (engines take FP32 host tensors); its
    // compute is the written model's, whose Casts at the boundary are the only difference.
    let (measured, measured_outcome) = rewritten(a, o, true, ranges.as_ref(), &ex, &dt);
    let (written, outcome) = if o.keep_io_types {
        (measured.clone(), measured_outcome)
    } else {
        rewritten(a, o, false, ranges.as_ref(), &ex, &dt)
    };
    let pinned = pinned_for_macs(a, &set);
    let (macs_total, macs_low) = macs(pinned.as_ref().unwrap_or(a), &outcome.converted);
    progress.phase("measuring fidelity", None);
    let outputs = a.index.outputs.clone();
    let engine = o.engine.resolve()?;
    let (fidelity, fidelity_samples, fidelity_error) = match measure::fidelity(
        &a.model.proto,
        &measured,
        &inputs,
        &outputs,
        &set,
        fid_range,
        engine,
    ) {
        Ok((f, k)) => (f, k, None),
        Err(e) => (Vec::new(), 0, Some(e.to_string())),
    };
    if outcome.flushed_to_zero > 0 {
        notes.push(format!(
            "{} nonzero initializer values are below {}'s smallest subnormal and became 0",
            outcome.flushed_to_zero,
            o.precision.upper()
        ));
    }
    let report = ConvertReport {
        model: a
            .model
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        output: None,
        precision: o.precision,
        keep_io_types: o.keep_io_types,
        float_nodes: outcome.converted.len() + outcome.kept.len(),
        converted_nodes: outcome.converted.len(),
        kept: outcome.kept,
        casts_inserted: outcome.casts,
        initializers_converted: outcome.initializers_converted,
        values_flushed_to_zero: outcome.flushed_to_zero,
        macs_total,
        macs_low,
        macs_low_share: if macs_total == 0 {
            0.0
        } else {
            macs_low as f64 / macs_total as f64
        },
        range_samples: if ranges.is_some() { n_ranges } else { 0 },
        range_engine,
        data_source: set.source.clone(),
        fidelity,
        fidelity_samples,
        fidelity_held_out: n >= 2,
        fidelity_engine: fidelity_error.is_none().then_some(engine),
        fidelity_error,
        notes,
    };
    Ok((written, report))
}

/// With dynamic input dims MACs are unknown: the analysis again with the inputs pinned to
/// the first sample's shapes (`None` when every MAC is known already, or pinning fails).
fn pinned_for_macs(a: &Analysis, set: &SampleSet) -> Option<Analysis> {
    let known = a
        .graph()
        .node
        .iter()
        .all(|n| crate::model::stats::node_macs(n, &a.shapes).is_some());
    if known || set.is_empty() {
        return None;
    }
    let s = set.load(0).ok()?;
    let mut pins = a.pins.clone();
    for (name, t) in a.index.inputs.iter().zip(&s.tensors) {
        pins.insert(name.clone(), t.shape.iter().map(|&d| d as i64).collect());
    }
    Analysis::new(a.model.clone(), &pins).ok()
}

/// MACs of the main graph, and those of its converted nodes.
fn macs(a: &Analysis, converted: &[String]) -> (u64, u64) {
    let low: HashSet<&str> = converted.iter().map(String::as_str).collect();
    let mut total = 0u64;
    let mut lo = 0u64;
    for n in &a.graph().node {
        let m = crate::model::stats::node_macs(n, &a.shapes).unwrap_or(0);
        total += m;
        if low.contains(n.display_name().as_str()) {
            lo += m;
        }
    }
    (total, lo)
}

/// Converts and writes the model to `req.output` (temp file + rename).
pub fn run(a: &Analysis, req: &ConvertRequest, progress: &dyn Progress) -> Result<ConvertReport> {
    crate::report::check_output(a.model.path.as_deref(), &req.output)?;
    let (proto, mut report) = convert(a, &req.options, progress)?;
    let mut m = a.model.clone();
    m.proto = proto;
    save_model(&m, &req.output, &SaveOptions::default())?;
    report.output = Some(req.output.display().to_string());
    Ok(report)
}

impl Report for ConvertReport {
    fn render_text(&self) -> String {
        let mut s = String::new();
        let p = self.precision.upper();
        s.push_str(&format!(
            "converted {} -> {} ({p}; inputs/outputs {})\n",
            self.model,
            self.output.as_deref().unwrap_or("-"),
            if self.keep_io_types { "kept FP32" } else { p }
        ));
        s.push_str(&format!(
            "  {} of {} float nodes in {p} ({:.1} % of MACs); {} kept FP32; {} Casts; {} initializers converted\n",
            self.converted_nodes,
            self.float_nodes,
            100.0 * self.macs_low_share,
            self.kept.len(),
            self.casts_inserted,
            self.initializers_converted
        ));
        match self.range_engine {
            Some(e) => s.push_str(&format!(
                "  activation ranges: {} samples ({}) on {e}; nodes beyond ±{} stay FP32\n",
                self.range_samples,
                self.data_source,
                rewrite::ACTIVATION_LIMIT
            )),
            None if self.precision == Precision::Fp16 => {
                s.push_str("  activation ranges: not measured\n")
            }
            None => s.push_str("  activation ranges: not needed (BF16 has FP32's range)\n"),
        }
        if !self.kept.is_empty() {
            s.push_str("  kept FP32:\n");
            for k in self.kept.iter().take(40) {
                s.push_str(&format!("    {} ({}): {}\n", k.node, k.op, k.detail));
            }
            if self.kept.len() > 40 {
                s.push_str(&format!(
                    "    … and {} more (--json lists all)\n",
                    self.kept.len() - 40
                ));
            }
        }
        match &self.fidelity_error {
            Some(e) => s.push_str(&format!(
                "  fidelity: the converted model did not run: {e}\n"
            )),
            None => {
                s.push_str(&format!(
                    "  fidelity vs FP32 ({} {}samples on {}):\n",
                    self.fidelity_samples,
                    if self.fidelity_held_out {
                        "held-out "
                    } else {
                        ""
                    },
                    self.fidelity_engine.map(|e| e.name()).unwrap_or("-")
                ));
                for f in &self.fidelity {
                    let pct = |label: &str, v: Option<f64>| {
                        v.map(|t| format!("  {label} {:.1} %", 100.0 * t))
                            .unwrap_or_default()
                    };
                    let top1 = format!(
                        "{}{}{}",
                        pct("top-1 agreement", f.top1_agreement),
                        pct("mask IoU", f.mask_iou),
                        pct("pixel agreement", f.pixel_agreement)
                    );
                    s.push_str(&format!(
                        "    {}: SQNR {}{top1}  max |diff| {:.3e}\n",
                        f.name,
                        fmt_db(f.sqnr_db),
                        f.max_abs_diff
                    ));
                }
            }
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}

/// Reduce ops whose `axes` moved from an attribute to an input at opset 18.
const REDUCE_AXES_18: &[&str] = &[
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// FP16 Q/DQ scales need opset 19. Raises a model at opset 13–18 to 19, moving Reduce axes
/// attributes into inputs (the one schema change on the way that pare's models meet);
/// returns why not when an op changed meaning in between (RoiAlign's default mode at 16).
fn raise_to_opset_19(m: &mut ModelProto) -> std::result::Result<(), String> {
    let opset = m.opset("").unwrap_or(1);
    if opset >= 19 {
        return Ok(());
    }
    if opset < 13 {
        return Err(format!("opset {opset} is below 13"));
    }
    let Some(g) = m.graph.as_mut() else {
        return Err("no graph".into());
    };
    if g.node
        .iter()
        .any(|n| n.op_type() == "RoiAlign" || n.subgraphs().next().is_some())
    {
        return Err("RoiAlign or control flow present".into());
    }
    let mut extra = Vec::new();
    for (k, n) in g.node.iter_mut().enumerate() {
        if opset < 18
            && REDUCE_AXES_18.contains(&n.op_type())
            && n.op_domain().is_empty()
            && let Some(pos) = n.attribute.iter().position(|a| a.name() == "axes")
        {
            {
                let axes = n.attribute.remove(pos).ints;
                let name = format!("{}__axes{k}", n.output.first().cloned().unwrap_or_default());
                extra.push(crate::model::tensor::i64_tensor(
                    &name,
                    &[axes.len() as i64],
                    &axes,
                ));
                n.input.truncate(1);
                n.input.push(name);
            }
        }
    }
    g.initializer.extend(extra);
    for o in m.opset_import.iter_mut() {
        if o.domain.as_deref().unwrap_or("").is_empty() || o.domain.as_deref() == Some("ai.onnx") {
            o.version = Some(19);
        }
    }
    m.ir_version = Some(m.ir_version.unwrap_or(9).max(9));
    Ok(())
}

/// `pare quantize --precision fp16`: the Q/DQ model `qdq` of `a` with its non-quantized part
/// and DQ scales in the low precision (inputs and outputs keep their types). Activation
/// ranges are measured on the quantized model with the calibration source.
pub fn lower_quantized(
    a: &Analysis,
    mut qdq: ModelProto,
    opts: &crate::quant::QuantOptions,
    progress: &dyn Progress,
) -> Result<(ModelProto, Option<ConvertReport>)> {
    let Some(precision) = opts.precision else {
        return Ok((qdq, None));
    };
    let raised = raise_to_opset_19(&mut qdq);
    let mut model = a.model.clone();
    model.proto = qdq;
    let qa = Analysis::new(model, &a.pins)?;
    let o = ConvertOptions {
        precision,
        source: opts.source.clone(),
        samples: opts.samples.clamp(1, 4),
        preprocess: opts.preprocess.clone(),
        keep_io_types: true,
        exclude: Vec::new(),
        engine: opts.engine,
    };
    let (m, mut r) = convert(&qa, &o, progress)?;
    r.model = qa
        .model
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if r.fidelity_engine == Some(EngineKind::OnnxRuntime) {
        r.notes.push(
            "fidelity here compares with the FP32 Q/DQ model on onnxruntime, whose CPU graph optimizations (Q/DQ fusion) can miscompute FP16 Q/DQ; compare with its optimizations disabled (TensorRT is the consumer of this file)".into(),
        );
    }
    if let Err(why) = raised {
        r.notes.push(format!(
            "Q/DQ scales stay FP32 (FP16 scales need opset 19; not raised: {why})"
        ));
    }
    Ok((m, Some(r)))
}
