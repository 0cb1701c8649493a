//! Real boundary data for extracted pieces: input samples (ONNX TensorProto `.pb`, `.npy`, test
//! data directories or seeded random), tensor conversions, a tract runner that computes any
//! intermediate tensors of a model, and ONNX's test-data layout (`test_data_set_K/input_I.pb`).
//!
//! tract refuses some models users most need to cut apart, typically an `If` whose condition
//! depends on data (PyTorch's `squeeze(dim)` export) with branches of different ranks. The
//! [`Evaluator`] then evaluates each such condition (from pare's shape inference when it knows the
//! value, else by running the condition's own ancestors), inlines the branch taken and runs
//! again. It only ever runs the ancestors of the tensors asked for, so an op tract lacks
//! elsewhere in the model does not matter.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;

use super::Piece;
use crate::data::codec::tensor_err;
use crate::error::{PareError, Result};
use crate::model::graph::{PrefixInputs, prefix};
use crate::model::proto::{ModelProto, NodeProto, TensorProto};
use crate::model::shape::Dim;
use crate::model::tensor::DataType;
pub use crate::model::tensor::f32_to_f16;
use crate::model::{Analysis, Model};
use crate::runtime::{EngineKind, HostData, HostTensor, InputSpec, Runner};

// Data codecs and sample loading live in `crate::data`; re-exported for the callers here.
pub use crate::data::{
    Samples, cast_host, host_to_tensor, load_samples, read_npy, read_tensor_file, tensor_to_host,
    write_npy,
};

fn fmt_dims(d: &[usize]) -> String {
    format!("[{}]", crate::data::dims_text(d, ", "))
}

// ---------------------------------------------------------------------------------------------
// Running parts of a model with tract.

/// Replaces each top-level `If` node whose condition is in `conds` (node position → value)
/// by the nodes of the branch taken, wiring the branch outputs to the `If` outputs.
pub fn inline_ifs(proto: &ModelProto, conds: &HashMap<usize, bool>) -> ModelProto {
    let mut m = proto.clone();
    let Some(g) = m.graph.as_mut() else { return m };
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        let Some(&c) = conds.get(&i) else {
            g.node.push(n);
            continue;
        };
        let attr = if c { "then_branch" } else { "else_branch" };
        let Some(branch) = n.attr(attr).and_then(|a| a.g.as_deref()).cloned() else {
            g.node.push(n);
            continue;
        };
        let prefix = format!("{}/{attr}", n.display_name());
        for mut bn in branch.node {
            bn.name = Some(format!("{prefix}/{}", bn.name()));
            g.node.push(bn);
        }
        g.initializer.extend(branch.initializer);
        g.sparse_initializer.extend(branch.sparse_initializer);
        for (k, bo) in branch.output.iter().enumerate() {
            let Some(out) = n.output.get(k).filter(|o| !o.is_empty()) else {
                continue;
            };
            g.node.push(NodeProto {
                name: Some(format!("{prefix}/output_{k}")),
                op_type: Some("Identity".into()),
                input: vec![bo.name().to_string()],
                output: vec![out.clone()],
                ..Default::default()
            });
        }
    }
    m
}

/// tract computes shape arithmetic in its own dimension type, which comes back as float32;
/// this restores the ONNX type (`want`, from pare's inference) of such tensors.
fn coerce_tract_output(h: HostTensor, want: DataType) -> HostTensor {
    if !matches!(h.data, HostData::F32(_)) || want == DataType::FLOAT {
        return h;
    }
    let v = h.to_f64();
    let data = match want {
        DataType::INT64 => HostData::I64(v.iter().map(|&x| x as i64).collect()),
        DataType::INT32 => HostData::I32(v.iter().map(|&x| x as i32).collect()),
        DataType::INT8 => HostData::I8(v.iter().map(|&x| x as i8).collect()),
        DataType::UINT8 => HostData::U8(v.iter().map(|&x| x as u8).collect()),
        DataType::BOOL => HostData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        DataType::DOUBLE => HostData::F64(v),
        _ => return h,
    };
    HostTensor {
        shape: h.shape,
        data,
    }
}

fn first_line(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("runtime: ").unwrap_or(s);
    let mut t: String = s
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if t.chars().count() > 600 {
        t = t.chars().take(600).collect::<String>() + "…";
    }
    t
}

/// Computes named tensors of one analysed model for one input sample, caching what it
/// computed: prunes the model to their ancestors, runs that on a [`Runner`], and inlines
/// `If` branches where tract refuses a data-dependent `If`.
pub struct Evaluator<'a> {
    a: &'a Analysis,
    cache: HashMap<String, HostTensor>,
    engine: EngineKind,
    /// What was done beyond a plain run (If specialisation), for reports.
    pub log: Vec<String>,
}

impl<'a> Evaluator<'a> {
    /// `inputs` in the model's input order (`a.index.inputs`).
    pub fn new(a: &'a Analysis, inputs: &[HostTensor]) -> Self {
        let cache = a
            .index
            .inputs
            .iter()
            .cloned()
            .zip(inputs.iter().cloned())
            .collect();
        Self {
            a,
            cache,
            engine: EngineKind::Tract,
            log: Vec::new(),
        }
    }

    /// Runs on `engine` instead of tract (switching to tract for good, with a log line, once
    /// onnxruntime refuses a model).
    pub fn on(mut self, engine: EngineKind) -> Self {
        self.engine = engine;
        self
    }

    /// The engine that runs from here on (tract once onnxruntime refused).
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.cache.get(name)
    }

    /// Computes `wanted` (any main-graph tensors) by running their ancestors.
    pub fn compute(&mut self, wanted: &[String]) -> Result<()> {
        self.compute_in(None, wanted)
    }

    /// [`Evaluator::compute`] for a piece's boundary: `cut` (the piece inputs) as the piece's own
    /// nodes (`members`, top-level positions) see them. A graph optimizer fuses across any
    /// tensor it can (onnxruntime folds a residual `Add` into the `Conv` before it when both
    /// sides are in its blocked layout), so the same nodes round differently in the whole model
    /// than in the piece, where that tensor is a graph input. Each cut tensor reaches the
    /// piece's nodes through `Add(T, 0)` with the zero fed at run time: exact, and opaque to
    /// fusion, so the source model is run end to end with the fusions the piece gets.
    pub fn compute_at_cut(
        &mut self,
        wanted: &[String],
        cut: &[String],
        members: &[usize],
    ) -> Result<()> {
        self.compute_in(Some((cut, members)), wanted)
    }

    fn compute_in(&mut self, cut: Option<(&[String], &[usize])>, wanted: &[String]) -> Result<()> {
        let mut todo: Vec<String> = Vec::new();
        for t in wanted {
            // At a cut, tensors already at hand are computed again in the same run, so inputs
            // and outputs come from one consistent graph.
            let again = cut.is_some()
                && self.engine != EngineKind::Tract
                && self.a.index.producer.contains_key(t);
            if (self.cache.contains_key(t) && !again) || todo.contains(t) {
                continue;
            }
            if let Some(&pos) = self.a.index.initializers.get(t) {
                let init = self
                    .a
                    .graph()
                    .initializer
                    .get(pos)
                    .ok_or_else(|| tensor_err(t, "is a sparse initializer"))?;
                self.cache.insert(t.clone(), tensor_to_host(init)?);
                continue;
            }
            if !self.a.index.producer.contains_key(t) {
                return Err(tensor_err(t, "is not computed by the main graph"));
            }
            todo.push(t.clone());
        }
        if todo.is_empty() {
            return Ok(());
        }
        let proto = match cut {
            Some((cut, members)) if self.engine != EngineKind::Tract => {
                let (source, zeros) = self.with_cut(cut, members);
                self.cache.extend(zeros);
                prefix(&source, &todo, PrefixInputs::Needed)?
            }
            _ => prefix(&self.a.model.proto, &todo, PrefixInputs::Needed)?,
        };
        let outs = self.run_proto(&proto, &todo, 0)?;
        for (t, h) in todo.into_iter().zip(outs) {
            let h = match self.a.shapes.dtype(&t) {
                Some(want) => coerce_tract_output(h, want),
                None => h,
            };
            self.cache.insert(t, h);
        }
        Ok(())
    }

    /// The source model with each float tensor of `cut` reaching the nodes at `members`
    /// through `Add(T, zero)`, and the zero inputs to feed.
    fn with_cut(
        &self,
        cut: &[String],
        members: &[usize],
    ) -> (ModelProto, Vec<(String, HostTensor)>) {
        let mut m = self.a.model.proto.clone();
        let mut zeros: Vec<(String, HostTensor)> = Vec::new();
        let Some(g) = m.graph.as_mut() else {
            return (m, zeros);
        };
        for t in cut {
            if !self.a.index.producer.contains_key(t) {
                continue;
            }
            let (zero_name, zero) = match self.a.shapes.dtype(t) {
                Some(DataType::FLOAT) => ("pare::cut_zero_f32", HostTensor::f32(vec![], vec![0.0])),
                Some(DataType::DOUBLE) => (
                    "pare::cut_zero_f64",
                    HostTensor {
                        shape: vec![],
                        data: HostData::F64(vec![0.0]),
                    },
                ),
                _ => continue,
            };
            let cut_name = format!("{t}::pare_cut");
            let mut used = false;
            for &p in members {
                if let Some(n) = g.node.get_mut(p) {
                    for i in n.input.iter_mut().filter(|i| *i == t) {
                        *i = cut_name.clone();
                        used = true;
                    }
                }
            }
            if !used {
                continue;
            }
            if !zeros.iter().any(|(z, _)| z == zero_name) {
                let dtype = zero.dtype();
                g.input
                    .push(super::make_value_info(zero_name, dtype, Some(&[])));
                zeros.push((zero_name.to_string(), zero));
            }
            g.node.push(NodeProto {
                name: Some(format!("{t}::pare_cut")),
                op_type: Some("Add".into()),
                input: vec![t.clone(), zero_name.to_string()],
                output: vec![cut_name],
                ..Default::default()
            });
        }
        (m, zeros)
    }

    fn run_plain(&mut self, proto: &ModelProto) -> Result<Vec<HostTensor>> {
        let g = proto.graph().expect("pruned models have a graph");
        let mut specs = Vec::new();
        let mut feeds = Vec::new();
        for v in &g.input {
            let h = self
                .cache
                .get(v.name())
                .ok_or_else(|| tensor_err(v.name(), "has no data"))?;
            specs.push(InputSpec {
                name: v.name().to_string(),
                dtype: h.dtype(),
                shape: h.shape.clone(),
            });
            feeds.push(h.clone());
        }
        if self.engine != EngineKind::Tract {
            match Runner::new(self.engine, proto, &specs).and_then(|r| r.run(&feeds)) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    // Once refused, tract from here on: retrying the same graph family in
                    // onnxruntime would only fail again, slowly.
                    self.log.push(format!(
                        "{} could not run it ({}); used tract",
                        self.engine,
                        first_line(&e.to_string())
                    ));
                    self.engine = EngineKind::Tract;
                }
            }
        }
        Runner::tract(proto, &specs)?.run(&feeds)
    }

    /// Runs `proto` (pruned to `outputs`); when tract refuses it and it has top-level `If`
    /// nodes, inlines the branches their conditions take and tries again.
    fn run_proto(
        &mut self,
        proto: &ModelProto,
        outputs: &[String],
        depth: usize,
    ) -> Result<Vec<HostTensor>> {
        let first = match self.run_plain(proto) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let g = proto.graph().expect("pruned models have a graph");
        let ifs: Vec<usize> = (0..g.node.len())
            .filter(|&i| g.node[i].op_type() == "If" && g.node[i].op_domain().is_empty())
            .collect();
        if ifs.is_empty() || depth > 8 {
            return Err(PareError::Runtime(first_line(&first.to_string())));
        }
        let mut conds = HashMap::new();
        for &i in &ifs {
            let n = &g.node[i];
            let cond = n.input.first().cloned().unwrap_or_default();
            let known = self
                .a
                .shapes
                .get(&cond)
                .and_then(|t| t.int_values())
                .filter(|v| v.len() == 1)
                .map(|v| v[0] != 0);
            let value = match known.or_else(|| {
                self.cache
                    .get(&cond)
                    .map(|h| h.to_f64().first().is_some_and(|&x| x != 0.0))
            }) {
                Some(v) => v,
                None => {
                    let sub = prefix(proto, std::slice::from_ref(&cond), PrefixInputs::Needed)?;
                    let h = self.run_proto(&sub, std::slice::from_ref(&cond), depth + 1).map_err(|e| {
                        PareError::Runtime(format!(
                            "tract cannot run the model ({}), nor evaluate the condition '{cond}' of If '{}' to inline its branch: {}",
                            first_line(&first.to_string()),
                            n.display_name(),
                            first_line(&e.to_string())
                        ))
                    })?;
                    let v = h[0].to_f64().first().is_some_and(|&x| x != 0.0);
                    self.cache.insert(cond.clone(), h[0].clone());
                    v
                }
            };
            self.log.push(format!(
                "If '{}': condition '{cond}' is {value}, ran its {} inline (tract cannot run this If as a whole)",
                n.display_name(),
                if value { "then_branch" } else { "else_branch" }
            ));
            conds.insert(i, value);
        }
        let inlined = prefix(&inline_ifs(proto, &conds), outputs, PrefixInputs::Needed)?;
        self.run_proto(&inlined, outputs, depth + 1).map_err(|e| {
            PareError::Runtime(format!(
                "{} (after inlining the branches its If nodes take: {})",
                first_line(&first.to_string()),
                first_line(&e.to_string())
            ))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Boundary data of a piece.

/// Data for a piece's inputs and outputs, for one sample.
#[derive(Clone, Debug, Default)]
pub struct BoundaryData {
    /// The engine that computed the data (tract where onnxruntime refused).
    pub engine: EngineKind,
    pub inputs: Vec<Option<HostTensor>>,
    pub outputs: Vec<Option<HostTensor>>,
    /// How it was computed, and anything that went wrong (with tract's reasons).
    pub log: Vec<String>,
    pub problems: Vec<String>,
}

impl BoundaryData {
    pub fn complete(&self) -> bool {
        self.inputs.iter().chain(&self.outputs).all(Option::is_some)
    }
}

/// Computes a piece's boundary tensors by running the source model (only the ancestors of
/// those tensors) on one input sample. When tract cannot run that, computes the piece inputs
/// alone and then runs the piece itself on them; what still fails is explained in
/// `problems`.
pub fn boundary_data(a: &Analysis, piece: &Piece, sample: &[HostTensor]) -> BoundaryData {
    let mut runner = Evaluator::new(a, sample);
    boundary_with(&mut runner, piece)
}

/// [`boundary_data`] with a runner that may already hold computed tensors (they are reused).
pub fn boundary_with(runner: &mut Evaluator, piece: &Piece) -> BoundaryData {
    let mut bd = boundary_f32(runner, piece);
    bd.engine = runner.engine();
    if bd.complete() && runner.engine() == EngineKind::Tract {
        exact_outputs(piece, &mut bd);
    }
    bd
}

fn boundary_f32(runner: &mut Evaluator, piece: &Piece) -> BoundaryData {
    let mut bd = BoundaryData::default();
    let mut all = piece.inputs.clone();
    all.extend(piece.outputs.iter().cloned());
    let first = runner.compute_at_cut(&all, &piece.inputs, &piece.nodes);
    bd.log.append(&mut runner.log);
    if first.is_ok() {
        bd.inputs = piece
            .inputs
            .iter()
            .map(|t| runner.get(t).cloned())
            .collect();
        bd.outputs = piece
            .outputs
            .iter()
            .map(|t| runner.get(t).cloned())
            .collect();
        bd.log.push(format!(
            "ran the source model with {} up to the piece's outputs{}",
            runner.engine(),
            if runner.engine() == EngineKind::Tract {
                ""
            } else {
                ", the cut opaque to its fusions"
            }
        ));
        return bd;
    }
    let first = first
        .err()
        .map(|e| first_line(&e.to_string()))
        .unwrap_or_default();
    if let Err(e) = runner.compute(&piece.inputs) {
        bd.log.append(&mut runner.log);
        bd.inputs = piece
            .inputs
            .iter()
            .map(|t| runner.get(t).cloned())
            .collect();
        bd.outputs = vec![None; piece.outputs.len()];
        bd.problems.push(format!(
            "tract cannot compute the piece's inputs from the model's inputs: {}",
            first_line(&e.to_string())
        ));
        return bd;
    }
    bd.log.append(&mut runner.log);
    bd.inputs = piece
        .inputs
        .iter()
        .map(|t| runner.get(t).cloned())
        .collect();
    bd.log.push(format!(
        "ran the source model with {} up to the piece's inputs",
        runner.engine()
    ));
    // The piece itself, on the computed inputs.
    let feeds: Vec<HostTensor> = bd.inputs.iter().flatten().cloned().collect();
    let engine = runner.engine();
    let piece_run =
        crate::model::Analysis::new(piece.model.clone(), &Default::default()).and_then(|pa| {
            let mut r = Evaluator::new(&pa, &feeds).on(engine);
            r.compute(&piece.outputs)?;
            bd.log.append(&mut r.log);
            Ok(piece
                .outputs
                .iter()
                .map(|t| r.get(t).cloned())
                .collect::<Vec<_>>())
        });
    match piece_run {
        Ok(outs) => {
            bd.outputs = outs;
            bd.log.push(format!(
                "ran the piece itself for its outputs (the source model as a whole failed: {first})"
            ));
        }
        Err(e) => {
            bd.outputs = vec![None; piece.outputs.len()];
            bd.problems.push(format!(
                "tract cannot run the piece itself, so its outputs were not computed: {}",
                first_line(&e.to_string())
            ));
        }
    }
    bd
}

// ---------------------------------------------------------------------------------------------
// Exact reference outputs.

fn tensor_to_double(t: &mut TensorProto) {
    if t.data_type() != DataType::FLOAT.0 {
        return;
    }
    let Ok(h) = tensor_to_host(t) else { return };
    let d = HostTensor {
        shape: h.shape.clone(),
        data: HostData::F64(h.to_f64()),
    };
    if let Ok(mut n) = host_to_tensor(t.name(), &d, Some(DataType::DOUBLE)) {
        n.doc_string = t.doc_string.take();
        *t = n;
    }
}

fn graph_to_double(g: &mut crate::model::proto::GraphProto) {
    use crate::model::proto::{TypeValue, attribute_type as at};
    for t in &mut g.initializer {
        tensor_to_double(t);
    }
    for s in &mut g.sparse_initializer {
        if let Some(v) = s.values.as_mut() {
            tensor_to_double(v);
        }
    }
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        if let Some(TypeValue::TensorType(tt)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
            && tt.elem_type == Some(DataType::FLOAT.0)
        {
            tt.elem_type = Some(DataType::DOUBLE.0);
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_deref_mut() {
                tensor_to_double(t);
            }
            for t in &mut a.tensors {
                tensor_to_double(t);
            }
            if matches!(a.name(), "to" | "dtype") && a.i == Some(DataType::FLOAT.0 as i64) {
                a.i = Some(DataType::DOUBLE.0 as i64);
            }
            if let Some(sub) = a.g.as_deref_mut() {
                graph_to_double(sub);
            }
            for sub in &mut a.graphs {
                graph_to_double(sub);
            }
        }
        // Constant's float shorthands become double tensors.
        if n.op_type() == "Constant" && n.op_domain().is_empty() {
            let vals = n
                .attr("value_float")
                .and_then(|a| a.f)
                .map(|f| (vec![], vec![f as f64]))
                .or_else(|| {
                    n.attr("value_floats").map(|a| {
                        (
                            vec![a.floats.len() as i64],
                            a.floats.iter().map(|&f| f as f64).collect(),
                        )
                    })
                });
            if let Some((dims, v)) = vals {
                let h = HostTensor {
                    shape: dims.iter().map(|&d| d as usize).collect(),
                    data: HostData::F64(v),
                };
                if let Ok(t) = host_to_tensor("", &h, Some(DataType::DOUBLE)) {
                    n.attribute
                        .retain(|a| !matches!(a.name(), "value_float" | "value_floats"));
                    n.attribute.push(crate::model::proto::AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(at::TENSOR),
                        t: Some(Box::new(t)),
                        ..Default::default()
                    });
                }
            }
        }
    }
}

/// `model` with every float32 tensor, type and cast target turned into float64.
pub fn to_double(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        graph_to_double(g);
    }
    for f in &mut m.functions {
        let mut g = crate::model::proto::GraphProto {
            node: std::mem::take(&mut f.node),
            ..Default::default()
        };
        graph_to_double(&mut g);
        f.node = g.node;
    }
    m
}

/// Recomputes a piece's float outputs in float64 from its (float32) boundary inputs and
/// rounds them: the stored reference is then the exact result for those inputs, which any
/// correct float32 runtime reproduces to within its own rounding. tract's float32 kernels
/// alone differ from onnxruntime's by several ulps on deep convolutions. Kept only when the
/// float64 run succeeds and agrees with the float32 one (discrete outputs equal, float
/// outputs close); otherwise the float32 results stay.
fn exact_outputs(piece: &Piece, bd: &mut BoundaryData) {
    let any_float = bd
        .outputs
        .iter()
        .flatten()
        .any(|h| matches!(h.data, HostData::F32(_)));
    if !any_float {
        return;
    }
    let feeds: Vec<HostTensor> = bd
        .inputs
        .iter()
        .flatten()
        .map(|h| match &h.data {
            HostData::F32(_) => HostTensor {
                shape: h.shape.clone(),
                data: HostData::F64(h.to_f64()),
            },
            _ => h.clone(),
        })
        .collect();
    let double = Model {
        proto: to_double(&piece.model.proto),
        path: None,
        file_size: 0,
        external_tensors: Vec::new(),
    };
    let Ok(pa) = Analysis::new(double, &Default::default()) else {
        return;
    };
    let mut r = Evaluator::new(&pa, &feeds);
    if r.compute(&piece.outputs).is_err() {
        return;
    }
    let mut exact = Vec::new();
    for (name, f32_out) in piece.outputs.iter().zip(&bd.outputs) {
        let (Some(d), Some(f)) = (r.get(name), f32_out) else {
            return;
        };
        if d.shape != f.shape {
            return;
        }
        match (&d.data, &f.data) {
            (HostData::F64(v), HostData::F32(w)) => {
                let scale = w.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
                let close = v.iter().zip(w).all(|(&a, &b)| {
                    (a - b as f64).abs() <= 1e-3 * (1.0 + scale) || (a.is_nan() && b.is_nan())
                });
                if !close {
                    return;
                }
                exact.push(Some(HostTensor {
                    shape: f.shape.clone(),
                    data: HostData::F32(v.iter().map(|&x| x as f32).collect()),
                }));
            }
            _ if d.to_f64() == f.to_f64() => exact.push(Some(f.clone())),
            _ => return,
        }
    }
    bd.outputs = exact;
    bd.log.push("outputs computed in float64 from the boundary inputs and rounded to float32 (the exact reference)".into());
}

/// Corrects declared boundary types of a piece with the data computed for it: a dim pare's
/// inference got wrong or did not know, a type it had to guess. Returns notes.
pub fn refine_types(piece: &mut Piece, data: &BoundaryData) -> Vec<String> {
    let mut notes = Vec::new();
    let n_in = piece.inputs.len();
    let guessed: HashSet<String> = piece
        .notes
        .iter()
        .filter_map(|n| {
            n.strip_prefix("the type of '")
                .and_then(|r| r.split('\'').next())
                .map(String::from)
        })
        .collect();
    let g = piece
        .model
        .proto
        .graph
        .as_mut()
        .expect("pieces always have a graph");
    let slots = g
        .input
        .iter_mut()
        .take(n_in)
        .zip(&data.inputs)
        .chain(g.output.iter_mut().zip(&data.outputs));
    for (vi, d) in slots {
        let Some(d) = d else { continue };
        let (name, dtype, shape) = super::vi_type(vi);
        let mut new_dtype = dtype.unwrap_or(d.dtype());
        if guessed.contains(&name) && d.dtype() != new_dtype {
            new_dtype = d.dtype();
            notes.push(format!("'{name}' is {new_dtype} in the data; declared so"));
        }
        let actual: Vec<Dim> = d.shape.iter().map(|&v| Dim::Known(v as i64)).collect();
        let new_shape = match shape {
            None => {
                notes.push(format!(
                    "'{name}': shape taken from the data ({})",
                    fmt_dims(&d.shape)
                ));
                actual
            }
            Some(s) if s.len() != actual.len() => {
                notes.push(format!(
                    "'{name}': declared rank {} but the data has shape {}; declared from the data",
                    s.len(),
                    fmt_dims(&d.shape)
                ));
                actual
            }
            Some(s) => {
                let mut out = Vec::with_capacity(s.len());
                for (k, (dim, &v)) in s.iter().zip(&d.shape).enumerate() {
                    match dim {
                        Dim::Known(x) if *x != v as i64 => {
                            notes.push(format!(
                                "'{name}' dim {k}: inferred {x} but the data has {v}; declared {v}"
                            ));
                            out.push(Dim::Known(v as i64));
                        }
                        Dim::Unknown => out.push(Dim::Known(v as i64)),
                        other => out.push(other.clone()),
                    }
                }
                out
            }
        };
        let keep_meta = (vi.doc_string.clone(), vi.metadata_props.clone());
        *vi = super::make_value_info(&name, new_dtype, Some(&new_shape));
        vi.doc_string = keep_meta.0;
        vi.metadata_props = keep_meta.1;
    }
    notes
}

/// Boundary tensors of a piece declared without a shape (pare's inference does not know their
/// rank: a custom op, a local function, an `If` whose branches differ). ONNX's checker requires
/// a shape on graph inputs and outputs, so these get one: from a tract run on a random sample
/// when tract can compute them, else the shape of the producer's first input (a guess, with a
/// note).
pub fn complete_shapes(a: &Analysis, piece: &mut Piece) {
    let missing = |p: &Piece| -> Vec<String> {
        let g = p.graph();
        g.input
            .iter()
            .take(p.inputs.len())
            .chain(g.output.iter())
            .filter(|v| super::vi_type(v).2.is_none())
            .map(|v| v.name().to_string())
            .collect()
    };
    let m = missing(piece);
    if m.is_empty() {
        return;
    }
    if let Ok(samples) = load_samples(a, &[], 1, 0) {
        let mut bd = boundary_data(a, piece, &samples.sets[0]);
        for (name, slot) in piece
            .inputs
            .iter()
            .zip(bd.inputs.iter_mut())
            .chain(piece.outputs.iter().zip(bd.outputs.iter_mut()))
        {
            if !m.contains(name) {
                *slot = None;
            }
        }
        refine_types(piece, &bd);
        let got: Vec<&String> = m.iter().filter(|n| !missing(piece).contains(n)).collect();
        if !got.is_empty() {
            piece.notes.push(format!(
                "pare's shape inference does not know the shape of {}; declared as computed by tract on random inputs",
                got.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let still = missing(piece);
    if still.is_empty() {
        return;
    }
    let g = a.graph();
    let n_in = piece.inputs.len();
    let pg = piece
        .model
        .proto
        .graph
        .as_mut()
        .expect("pieces have a graph");
    for vi in pg.input.iter_mut().take(n_in).chain(pg.output.iter_mut()) {
        let (name, dtype, shape) = super::vi_type(vi);
        if shape.is_some() {
            continue;
        }
        let guess = a
            .index
            .producer
            .get(&name)
            .and_then(|&p| g.node[p].input.iter().find(|i| !i.is_empty()))
            .and_then(|i| {
                a.shapes
                    .shape(i)
                    .map(|s| s.iter().map(|_| Dim::Unknown).collect::<Vec<_>>())
            });
        if let Some(s) = guess {
            let meta = (vi.doc_string.clone(), vi.metadata_props.clone());
            *vi = super::make_value_info(&name, dtype.unwrap_or(DataType::FLOAT), Some(&s));
            vi.doc_string = meta.0;
            vi.metadata_props = meta.1;
            piece.notes.push(format!(
                "the rank of '{name}' is unknown to pare's shape inference and tract could not compute it; declared with the rank of its producer's input ({}), dims unknown",
                s.len()
            ));
        } else {
            piece.notes.push(format!("the shape of '{name}' is unknown: ONNX's checker requires one on graph inputs and outputs"));
        }
    }
}

/// Writes one sample in ONNX's test-data layout: `dir/input_K.pb`, `dir/output_K.pb`, after
/// removing stale `input_*.pb`/`output_*.pb` files from an earlier run. Each tensor is written
/// with its name and the type the piece declares.
pub fn write_test_data(dir: &Path, piece: &Piece, data: &BoundaryData) -> Result<(usize, usize)> {
    std::fs::create_dir_all(dir).map_err(|source| PareError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if (n.starts_with("input_") || n.starts_with("output_")) && n.ends_with(".pb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let declared: HashMap<String, Option<DataType>> = piece
        .graph()
        .input
        .iter()
        .chain(piece.graph().output.iter())
        .map(|v| {
            let t = super::vi_type(v);
            (t.0, t.1)
        })
        .collect();
    let mut counts = (0, 0);
    for (k, (name, d)) in piece.inputs.iter().zip(&data.inputs).enumerate() {
        if let Some(h) = d {
            let t = host_to_tensor(name, h, declared.get(name).copied().flatten())?;
            crate::model::io::write_atomic(&dir.join(format!("input_{k}.pb")), &t.encode_to_vec())?;
            counts.0 += 1;
        }
    }
    for (k, (name, d)) in piece.outputs.iter().zip(&data.outputs).enumerate() {
        if let Some(h) = d {
            let t = host_to_tensor(name, h, declared.get(name).copied().flatten())?;
            crate::model::io::write_atomic(
                &dir.join(format!("output_{k}.pb")),
                &t.encode_to_vec(),
            )?;
            counts.1 += 1;
        }
    }
    Ok(counts)
}

/// `test_data_set_K` next to `out`.
pub fn test_data_dir(out: &Path, k: usize) -> PathBuf {
    out.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(format!("test_data_set_{k}"))
}

/// Everything `--with-data` does for a piece: computes its boundary for every sample, refines
/// its declared types from the first complete sample, and returns the data per sample.
pub fn piece_data(
    a: &Analysis,
    piece: &mut Piece,
    samples: &Samples,
    progress: &dyn crate::jobs::Progress,
) -> Result<Vec<BoundaryData>> {
    progress.phase("computing boundary data", Some(samples.sets.len() as u64));
    let mut out = Vec::new();
    for (k, s) in samples.sets.iter().enumerate() {
        progress.check_cancel()?;
        let mut runner = Evaluator::new(a, s).on(samples.engine);
        let bd = boundary_with(&mut runner, piece);
        progress.step(k as u64 + 1, &format!("sample {k}"));
        out.push(bd);
    }
    if let Some(bd) = out.iter().find(|b| b.complete()).or_else(|| out.first()) {
        let notes = refine_types(piece, bd);
        piece.notes.extend(notes);
    }
    Ok(out)
}
