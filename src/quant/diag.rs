//! Per-layer diagnostics without keeping activations: one *diagnostic model* holds the float
//! graph, a renamed copy of the quantized graph, and for every candidate layer a shadow copy
//! fed with quantized versions of the float layer's own inputs. In-graph reductions turn each
//! comparison into a few scalars (`ReduceSumSquare` of the reference and of the difference,
//! `ReduceMax(|diff|)` for outputs), so a run returns a handful of numbers per layer and the
//! activations are freed as the engine goes — memory does not grow with the model's size of
//! activations nor with the number of samples (onnxruntime's `qdq_loss_debug` keeps every
//! tensor of every sample).
//!
//! Per layer this gives:
//! - `sqnr_db` (isolated): the layer quantized on its own, on the float model's activations:
//!   the error this layer adds — what ranks the culprit (seed Q9);
//! - `cumulative_sqnr_db`: the layer's output in the fully quantized model vs float.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::data::SampleSet;
use super::placement::Plan;
use super::qdq::{Insert, insert, int_tensor};
use super::qparams::{QParams, QType, QuantizedWeight};
use crate::error::{PareError, Result};
use crate::jobs::{JobEvent, Progress};
use crate::model::GraphIndex;
use crate::model::builder::attr_i;
use crate::model::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::model::tensor::{DataType, f32_tensor};
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{EngineKind, InputSpec, Runner, RunnerOptions};

const QSFX: &str = "__pq";
const ISFX: &str = "__iso";

/// One layer's diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerDiag {
    pub node: String,
    pub op: String,
    /// Isolated SQNR: this layer quantized alone, on float inputs (dB).
    pub sqnr_db: Option<f64>,
    /// In the quantized model, vs float (dB).
    pub cumulative_sqnr_db: Option<f64>,
    pub quantized: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One model output's error.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputDiag {
    pub name: String,
    pub sqnr_db: Option<f64>,
    pub max_abs_err: f64,
}

/// What a diagnostic run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    pub layers: Vec<LayerDiag>,
    pub outputs: Vec<OutputDiag>,
    /// All float outputs together.
    pub output_sqnr_db: Option<f64>,
    pub max_abs_err: f64,
    pub samples: usize,
    pub seconds: f64,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// SQNR in dB from energies; `None` when the reference is all zeros, capped at 300 dB when
/// the error is exactly zero.
pub fn db(signal: f64, noise: f64) -> Option<f64> {
    if signal.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        || !signal.is_finite()
        || !noise.is_finite()
    {
        return None;
    }
    Some((10.0 * (signal / noise.max(0.0)).log10()).min(300.0))
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Ref(usize),
    Iso(usize),
    Cum(usize),
    OutRef(usize),
    OutErr(usize),
    OutMax(usize),
}

/// Renames every tensor produced inside `nodes` (and names read from them in nested graphs).
fn rename_copy(nodes: &[NodeProto], sfx: &str) -> (Vec<NodeProto>, HashMap<String, String>) {
    let mut map: HashMap<String, String> = HashMap::new();
    for n in nodes {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            map.insert(o.clone(), format!("{o}{sfx}"));
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        let mut c = n.clone();
        if !c.name().is_empty() {
            c.name = Some(format!("{}{sfx}", c.name()));
        }
        for t in c.input.iter_mut().chain(c.output.iter_mut()) {
            if let Some(r) = map.get(t) {
                *t = r.clone();
            }
        }
        for g in c.subgraphs_mut() {
            rename_outer(g, &map);
        }
        out.push(c);
    }
    (out, map)
}

/// Renames outer-scope reads inside a nested graph.
fn rename_outer(g: &mut GraphProto, map: &HashMap<String, String>) {
    let local: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.input.iter().map(|v| v.name().to_string()))
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    for n in &mut g.node {
        for t in &mut n.input {
            if !local.contains(t)
                && let Some(r) = map.get(t)
            {
                *t = r.clone();
            }
        }
        for sg in n.subgraphs_mut() {
            rename_outer(sg, map);
        }
    }
    for o in &mut g.output {
        if !local.contains(o.name())
            && let Some(r) = map.get(o.name())
        {
            o.name = Some(r.clone());
        }
    }
}

fn mk(name: String, op: &str, inputs: Vec<String>, output: String) -> NodeProto {
    NodeProto {
        name: Some(name),
        op_type: Some(op.to_string()),
        input: inputs,
        output: vec![output],
        ..Default::default()
    }
}

/// Float graph outputs computed by nodes (the ones an SQNR makes sense for).
fn float_outputs(model: &ModelProto, index: &GraphIndex) -> Vec<String> {
    model
        .graph
        .as_ref()
        .map(|g| {
            g.output
                .iter()
                .filter(|o| {
                    o.tensor_type()
                        .and_then(|t| t.elem_type)
                        .is_none_or(|e| DataType(e).is_float())
                })
                .map(|o| o.name().to_string())
                .filter(|o| index.producer.contains_key(o))
                .collect()
        })
        .unwrap_or_default()
}

/// The diagnostic model and what each of its outputs means.
struct DiagModel {
    model: ModelProto,
    slots: Vec<Slot>,
    outputs: Vec<String>,
}

fn build(
    model: &ModelProto,
    index: &GraphIndex,
    plan: &Plan,
    params: &HashMap<String, QParams>,
    weights: &HashMap<String, QuantizedWeight>,
    per_layer: bool,
    only_outputs: Option<&[String]>,
) -> Result<DiagModel> {
    let g0 = model
        .graph
        .as_ref()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let float_outputs: Vec<String> = float_outputs(model, index)
        .into_iter()
        .filter(|o| only_outputs.is_none_or(|keep| keep.contains(o)))
        .collect();
    let (qg, map, quant_weight_dq) = quantized_copy(g0, index, plan, params, weights)?;
    let mut g = g0.clone();
    g.value_info.clear();
    g.node.extend(qg.node);
    g.initializer.extend(qg.initializer);
    let mut x = Extra::default();
    if per_layer {
        // Shadows of quantized layers read the quantized copy's dequantized weights (one folded
        // constant in tract instead of two).
        x.wdq_of = quant_weight_dq;
        for (ci, c) in plan.candidates.iter().enumerate() {
            let n = &g0.node[c.node];
            let Some(y) = n.output.first().filter(|y| !y.is_empty()) else {
                continue;
            };
            let Some(y_iso) = x.shadow(n, c, plan, params, weights) else {
                continue;
            };
            x.measure(Slot::Ref(ci), y, "ref");
            let d = x.diff(&y_iso, y, "iso");
            x.measure(Slot::Iso(ci), &d, "iso");
            if let Some(yq) = map.get(y) {
                let d = x.diff(yq, y, "cum");
                x.measure(Slot::Cum(ci), &d, "cum");
            }
        }
    }
    for (oi, o) in float_outputs.iter().enumerate() {
        if let Some(oq) = map.get(o) {
            x.compare_output(oi, o, oq);
        }
    }
    g.node.extend(x.nodes);
    g.initializer.extend(x.inits);
    g.output = x
        .outputs
        .iter()
        .map(|o| ValueInfoProto {
            name: Some(o.clone()),
            ..Default::default()
        })
        .collect();
    let mut m = model.clone();
    m.graph = Some(g);
    Ok(DiagModel {
        model: m,
        slots: x.slots,
        outputs: float_outputs,
    })
}

/// A renamed copy of `g0`'s nodes with Q/DQ inserted for the quantized layers, the map from
/// original to copied tensor names, and each weight's dequantized copy.
#[allow(clippy::type_complexity)]
fn quantized_copy(
    g0: &GraphProto,
    index: &GraphIndex,
    plan: &Plan,
    params: &HashMap<String, QParams>,
    weights: &HashMap<String, QuantizedWeight>,
) -> Result<(GraphProto, HashMap<String, String>, HashMap<String, String>)> {
    let (qnodes, map) = rename_copy(&g0.node, QSFX);
    let mut qg = GraphProto {
        node: qnodes,
        output: g0
            .output
            .iter()
            .map(|o| ValueInfoProto {
                name: Some(
                    map.get(o.name())
                        .cloned()
                        .unwrap_or_else(|| o.name().to_string()),
                ),
                ..Default::default()
            })
            .collect(),
        input: g0.input.clone(),
        ..Default::default()
    };
    let layers: Vec<usize> = (0..plan.candidates.len())
        .filter(|&i| plan.candidates[i].quantized)
        .collect();
    let weight_dq = insert(
        &mut qg,
        index,
        plan,
        &layers,
        &Insert {
            act_params: params,
            weights,
            per_channel: plan.per_channel,
            suffix: QSFX,
        },
    )?;
    Ok((qg, map, weight_dq))
}

/// What the diagnostic model adds to the float and quantized graphs: shadow layers, their
/// fake-quantized inputs, the reductions and the outputs (with what each one means).
#[derive(Default)]
struct Extra {
    nodes: Vec<NodeProto>,
    inits: Vec<crate::model::proto::TensorProto>,
    slots: Vec<Slot>,
    outputs: Vec<String>,
    /// Fake-quantized copy of each float activation.
    qdq_of: HashMap<String, String>,
    /// Dequantized copy of each weight.
    wdq_of: HashMap<String, String>,
}

impl Extra {
    /// `ReduceSumSquare(x)` as a scalar.
    fn reduce(&mut self, x: &str, tag: &str) -> String {
        let out = format!("{x}__diag_{tag}");
        let mut n = mk(
            format!("{out}_node"),
            "ReduceSumSquare",
            vec![x.to_string()],
            out.clone(),
        );
        n.attribute.push(attr_i("keepdims", 0));
        self.nodes.push(n);
        out
    }

    /// `a - b`.
    fn diff(&mut self, a: &str, b: &str, tag: &str) -> String {
        let out = format!("{b}__diag_{tag}_diff");
        self.nodes.push(mk(
            format!("{out}_node"),
            "Sub",
            vec![a.to_string(), b.to_string()],
            out.clone(),
        ));
        out
    }

    /// Adds the energy of `x` as an output meaning `slot`.
    fn measure(&mut self, slot: Slot, x: &str, tag: &str) {
        let r = self.reduce(x, tag);
        self.slots.push(slot);
        self.outputs.push(r);
    }

    /// Reference energy, error energy and largest absolute error of model output `o` (float)
    /// against `oq` (quantized).
    fn compare_output(&mut self, oi: usize, o: &str, oq: &str) {
        self.measure(Slot::OutRef(oi), o, "oref");
        let d = self.diff(oq, o, "out");
        self.measure(Slot::OutErr(oi), &d, "oerr");
        let a = format!("{d}_abs");
        self.nodes
            .push(mk(format!("{a}_node"), "Abs", vec![d.clone()], a.clone()));
        let m = format!("{d}_max");
        let mut mx = mk(format!("{m}_node"), "ReduceMax", vec![a], m.clone());
        mx.attribute.push(attr_i("keepdims", 0));
        self.nodes.push(mx);
        self.slots.push(Slot::OutMax(oi));
        self.outputs.push(m);
    }

    /// A shadow copy of float layer `n` reading fake-quantized versions of its own inputs and
    /// its quantized weight: its first output, or `None` when a range or weight is missing.
    fn shadow(
        &mut self,
        n: &NodeProto,
        c: &super::placement::Candidate,
        plan: &Plan,
        params: &HashMap<String, QParams>,
        weights: &HashMap<String, QuantizedWeight>,
    ) -> Option<String> {
        let mut shadow = n.clone();
        for (slot, t) in &c.acts {
            let key = plan.shared.get(t).unwrap_or(t);
            let q = params.get(key)?;
            shadow.input[*slot] = self.act_qdq(t, q);
        }
        if let Some(w) = &c.weight {
            let qw = weights.get(&w.tensor)?;
            shadow.input[w.slot] = self.weight_dq(&w.tensor, w.axis, qw, plan.per_channel);
        }
        shadow.name = Some(format!("{}{ISFX}", n.display_name()));
        for o in shadow.output.iter_mut().filter(|o| !o.is_empty()) {
            *o = format!("{o}{ISFX}");
        }
        let y_iso = shadow.output[0].clone();
        self.nodes.push(shadow);
        Some(y_iso)
    }

    /// The fake-quantized copy of activation `t` (made once).
    fn act_qdq(&mut self, t: &str, q: &QParams) -> String {
        if let Some(dq) = self.qdq_of.get(t) {
            return dq.clone();
        }
        let base = format!("{t}{ISFX}");
        let (s, z) = (format!("{base}_scale"), format!("{base}_zero_point"));
        self.inits.push(f32_tensor(&s, &[], &[q.scale]));
        self.inits
            .push(int_tensor(&z, &[], q.qtype, &[q.zero_point]));
        let (qo, dqo) = (format!("{base}_q"), format!("{base}_dq"));
        self.nodes.push(mk(
            format!("{base}_Q"),
            "QuantizeLinear",
            vec![t.to_string(), s.clone(), z.clone()],
            qo.clone(),
        ));
        self.nodes.push(mk(
            format!("{base}_DQ"),
            "DequantizeLinear",
            vec![qo, s, z],
            dqo.clone(),
        ));
        self.qdq_of.insert(t.to_string(), dqo.clone());
        dqo
    }

    /// The dequantized copy of weight `tensor` (made once, unless the quantized copy of the
    /// model already has one).
    fn weight_dq(
        &mut self,
        tensor: &str,
        axis: usize,
        qw: &QuantizedWeight,
        per_channel: bool,
    ) -> String {
        if let Some(dq) = self.wdq_of.get(tensor) {
            return dq.clone();
        }
        let base = format!("{tensor}{ISFX}");
        let (qn, s, z) = (
            format!("{base}_int8"),
            format!("{base}_scale"),
            format!("{base}_zero_point"),
        );
        self.inits.push(crate::model::proto::TensorProto {
            name: Some(qn.clone()),
            dims: qw.dims.clone(),
            data_type: Some(DataType::INT8.0),
            raw_data: Some(bytes::Bytes::from(
                qw.values.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
            )),
            ..Default::default()
        });
        let (scales, sd, axis): (Vec<f32>, Vec<i64>, Option<i64>) = if per_channel {
            (
                qw.scales.clone(),
                vec![qw.scales.len() as i64],
                Some(axis as i64),
            )
        } else {
            (vec![qw.scales[0]], vec![], None)
        };
        self.inits.push(f32_tensor(&s, &sd, &scales));
        self.inits
            .push(int_tensor(&z, &sd, QType::Int8, &vec![0; scales.len()]));
        let out = format!("{base}_dq");
        let mut d = mk(
            format!("{base}_DQ"),
            "DequantizeLinear",
            vec![qn, s, z],
            out.clone(),
        );
        if let Some(a) = axis {
            d.attribute.push(attr_i("axis", a));
        }
        self.nodes.push(d);
        self.wdq_of.insert(tensor.to_string(), out.clone());
        out
    }
}

/// Runs the diagnostics over `indices` of `set`. With `per_layer` false only the model
/// outputs are compared (the cheaper run the `--target-sqnr` search repeats).
#[allow(clippy::too_many_arguments)]
pub fn diagnose(
    model: &ModelProto,
    index: &GraphIndex,
    plan: &Plan,
    params: &HashMap<String, QParams>,
    weights: &HashMap<String, QuantizedWeight>,
    set: &SampleSet,
    indices: &[usize],
    threads: usize,
    engine: EngineKind,
    per_layer: bool,
    progress: &dyn Progress,
) -> Result<Diagnosis> {
    let start = Instant::now();
    let mut notes = Vec::new();
    let Some(&first) = indices.first() else {
        return Err(PareError::Usage("no samples to diagnose on".into()));
    };
    let specs: Vec<InputSpec> = set
        .inputs
        .iter()
        .zip(&set.shapes[first])
        .map(|(d, s)| InputSpec {
            name: d.name.clone(),
            dtype: d.dtype,
            shape: s.clone(),
        })
        .collect();
    let mut dm = build(model, index, plan, params, weights, per_layer, None)?;
    // Depth-first on tract: see `RunnerOptions::depth_first`.
    let opts = RunnerOptions {
        threads,
        depth_first: true,
        ..Default::default()
    };
    let mut prepared = Runner::or_tract(engine, &dm.model, &specs, &opts);
    let mut per_layer = per_layer;
    if let Err(e) = &prepared {
        (dm, prepared, per_layer) = runnable_part(
            model, index, plan, params, weights, &specs, &opts, e, per_layer, &mut notes,
        )?;
    }
    let DiagModel {
        model: diag_model,
        slots,
        outputs: diag_outputs,
    } = dm;
    let used = prepared.as_ref().map_or(EngineKind::Tract, |r| r.engine());
    let runners = RunnerCache::new(diag_model, "diagnostics").on(used, threads);
    match prepared {
        Ok(r) => runners.insert(set.shapes[first].clone(), r),
        Err(e) => {
            notes.push(format!("diagnostics could not run in tract: {e}"));
            return Ok(unmeasured(plan, notes, start));
        }
    }
    let acc = Mutex::new(Acc::new(plan.candidates.len(), diag_outputs.len()));
    for_each_sample(
        &runners,
        set,
        indices,
        threads,
        progress,
        0,
        |sample, runner| {
            let mut vals: Vec<f64> = vec![f64::NAN; slots.len()];
            runner.run_f32(&sample.tensors, &mut |k, v| {
                vals[k] = v.first().map_or(f64::NAN, |&x| x as f64);
                Ok(())
            })?;
            let mut a = acc
                .lock()
                .map_err(|_| PareError::Runtime("diagnostics state poisoned".into()))?;
            a.add(&slots, vals);
            if per_layer {
                a.report_layers(plan, progress);
            }
            Ok(())
        },
    )?;
    let a = acc.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(a.diagnosis(plan, &diag_outputs, indices.len(), start, notes))
}

/// When the whole diagnostic model cannot be prepared (part of it is beyond tract: a
/// data-dependent If, an unknown op), the diagnostic model for what can run: the outputs that
/// evaluate, and the per-layer comparisons when those do. Says in `notes` what was left out.
#[allow(clippy::too_many_arguments)]
fn runnable_part(
    model: &ModelProto,
    index: &GraphIndex,
    plan: &Plan,
    params: &HashMap<String, QParams>,
    weights: &HashMap<String, QuantizedWeight>,
    specs: &[InputSpec],
    opts: &RunnerOptions,
    e: &PareError,
    per_layer: bool,
    notes: &mut Vec<String>,
) -> Result<(DiagModel, Result<Runner>, bool)> {
    let tract_only = |m: &ModelProto| Runner::with_options(EngineKind::Tract, m, specs, opts);
    let mut per_layer = per_layer;
    let all = float_outputs(model, index);
    let mut ok = Vec::new();
    for o in &all {
        let one = build(
            model,
            index,
            plan,
            params,
            weights,
            false,
            Some(std::slice::from_ref(o)),
        )?;
        if tract_only(&one.model).is_ok() {
            ok.push(o.clone());
        } else {
            notes.push(format!(
                "output '{o}' cannot be evaluated with tract, so its SQNR is not measured (run `pare lint`/`pare fix`): {e}"
            ));
        }
    }
    if per_layer {
        let layers_only = build(model, index, plan, params, weights, true, Some(&[]))?;
        if tract_only(&layers_only.model).is_err() {
            per_layer = false;
            notes.push("per-layer SQNR is not measured: tract cannot run part of the model".into());
        }
    }
    let dm = build(model, index, plan, params, weights, per_layer, Some(&ok))?;
    let prepared = tract_only(&dm.model);
    Ok((dm, prepared, per_layer))
}

/// The diagnosis when nothing could be measured: the layers as planned, no numbers.
fn unmeasured(plan: &Plan, notes: Vec<String>, start: Instant) -> Diagnosis {
    Diagnosis {
        layers: plan
            .candidates
            .iter()
            .map(|c| LayerDiag {
                node: c.name.clone(),
                op: c.op.clone(),
                sqnr_db: None,
                cumulative_sqnr_db: None,
                quantized: c.quantized,
                reason: c.reason.clone(),
            })
            .collect(),
        outputs: Vec::new(),
        output_sqnr_db: None,
        max_abs_err: 0.0,
        samples: 0,
        seconds: start.elapsed().as_secs_f64(),
        notes,
    }
}

/// Energies summed over samples, per layer and per output.
#[derive(Default, Clone)]
struct Acc {
    r: Vec<f64>,
    iso: Vec<f64>,
    cum: Vec<f64>,
    has_iso: Vec<bool>,
    has_cum: Vec<bool>,
    oref: Vec<f64>,
    oerr: Vec<f64>,
    omax: Vec<f64>,
}

impl Acc {
    fn new(n_layers: usize, n_out: usize) -> Self {
        Acc {
            r: vec![0.0; n_layers],
            iso: vec![0.0; n_layers],
            cum: vec![0.0; n_layers],
            has_iso: vec![false; n_layers],
            has_cum: vec![false; n_layers],
            oref: vec![0.0; n_out],
            oerr: vec![0.0; n_out],
            omax: vec![0.0; n_out],
        }
    }

    /// Adds one sample's values (one per slot; NaN, an overflow, counts as infinite).
    fn add(&mut self, slots: &[Slot], vals: Vec<f64>) {
        let a = self;
        for (slot, v) in slots.iter().zip(vals) {
            let v = if v.is_nan() { f64::INFINITY } else { v };
            match *slot {
                Slot::Ref(i) => a.r[i] += v,
                Slot::Iso(i) => {
                    a.iso[i] += v;
                    a.has_iso[i] = true;
                }
                Slot::Cum(i) => {
                    a.cum[i] += v;
                    a.has_cum[i] = true;
                }
                Slot::OutRef(i) => a.oref[i] += v,
                Slot::OutErr(i) => a.oerr[i] += v,
                Slot::OutMax(i) => a.omax[i] = a.omax[i].max(v),
            }
        }
    }

    /// The isolated SQNR so far of every layer, as live events.
    fn report_layers(&self, plan: &Plan, progress: &dyn Progress) {
        let a = self;
        for (i, c) in plan.candidates.iter().enumerate() {
            if a.has_iso[i]
                && let Some(v) = db(a.r[i], a.iso[i])
            {
                progress.event(JobEvent::Layer {
                    node: c.name.clone(),
                    value: v,
                    label: crate::jobs::LayerLabel::SqnrDb,
                });
            }
        }
    }

    fn diagnosis(
        &self,
        plan: &Plan,
        diag_outputs: &[String],
        samples: usize,
        start: Instant,
        notes: Vec<String>,
    ) -> Diagnosis {
        let a = self;
        let layers = plan
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| LayerDiag {
                node: c.name.clone(),
                op: c.op.clone(),
                sqnr_db: if a.has_iso[i] {
                    db(a.r[i], a.iso[i])
                } else {
                    None
                },
                cumulative_sqnr_db: if a.has_cum[i] {
                    db(a.r[i], a.cum[i])
                } else {
                    None
                },
                quantized: c.quantized,
                reason: c.reason.clone(),
            })
            .collect();
        let outputs: Vec<OutputDiag> = diag_outputs
            .iter()
            .enumerate()
            .map(|(i, name)| OutputDiag {
                name: name.clone(),
                sqnr_db: db(a.oref[i], a.oerr[i]),
                max_abs_err: a.omax[i],
            })
            .collect();
        let output_sqnr_db = db(a.oref.iter().sum(), a.oerr.iter().sum());
        let max_abs_err = a.omax.iter().copied().fold(0.0, f64::max);
        Diagnosis {
            layers,
            outputs,
            output_sqnr_db,
            max_abs_err,
            samples,
            seconds: start.elapsed().as_secs_f64(),
            notes,
        }
    }
}
