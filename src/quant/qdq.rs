//! Writing Q/DQ into a graph: activations get a `QuantizeLinear → DequantizeLinear` pair
//! shared by every quantized consumer; weights are stored as INT8 initializers with a
//! per-channel `DequantizeLinear` (the float copy is dropped when nothing else reads it).
//! Nodes come out in topological order with each pair placed just before its first reader.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::placement::{Candidate, ConstSource, Plan, const_tensor};
use super::qparams::{QParams, QType, QuantizedWeight};
use crate::error::{PareError, Result};
use crate::model::GraphIndex;
use crate::model::builder::attr_i;
use crate::model::proto::{GraphProto, NodeProto, TensorProto};
use crate::model::tensor::{DataType, f32_tensor};

/// Scalar or 1-D tensor of int8/uint8 values.
pub fn int_tensor(name: &str, dims: &[i64], qtype: QType, values: &[i32]) -> TensorProto {
    let (dt, raw): (DataType, Vec<u8>) = match qtype {
        QType::Int8 => (
            DataType::INT8,
            values
                .iter()
                .map(|&v| v.clamp(-128, 127) as i8 as u8)
                .collect(),
        ),
        QType::Uint8 => (
            DataType::UINT8,
            values.iter().map(|&v| v.clamp(0, 255) as u8).collect(),
        ),
    };
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(dt.0),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

fn node(
    name: String,
    op: &str,
    inputs: Vec<String>,
    output: String,
    axis: Option<i64>,
) -> NodeProto {
    NodeProto {
        name: Some(name),
        op_type: Some(op.to_string()),
        input: inputs,
        output: vec![output],
        attribute: axis.map(|a| vec![attr_i("axis", a)]).unwrap_or_default(),
        ..Default::default()
    }
}

/// Names already used in a graph (tensors and nodes), so new ones never collide.
pub(super) struct Names(HashSet<String>);

impl Names {
    pub(super) fn of(g: &GraphProto) -> Self {
        let mut s = HashSet::new();
        for n in &g.node {
            s.insert(n.name().to_string());
            s.extend(n.output.iter().cloned());
            s.extend(n.input.iter().cloned());
        }
        s.extend(g.initializer.iter().map(|t| t.name().to_string()));
        s.extend(g.input.iter().map(|v| v.name().to_string()));
        s.extend(g.output.iter().map(|v| v.name().to_string()));
        Names(s)
    }
    pub(super) fn fresh(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// A weight tensor, where it comes from, its channel axis and its `(node, slot)` readers.
type WeightReaders = (String, ConstSource, usize, Vec<(usize, usize)>);

/// An activation tensor (original name) and its `(node, slot)` readers.
type ActReaders = (String, Vec<(usize, usize)>);

/// What to insert.
pub struct Insert<'a> {
    /// Parameters per activation tensor (original names).
    pub act_params: &'a HashMap<String, QParams>,
    /// Quantized weights per weight tensor name (original names).
    pub weights: &'a HashMap<String, QuantizedWeight>,
    pub per_channel: bool,
    /// Appended to every new name (for copies inside a diagnostic model).
    pub suffix: &'a str,
}

/// Inserts Q/DQ for `layers` (indices into `plan.candidates`) into `g`, whose nodes line up
/// one to one with the graph `index` was built from (tensor names may differ, e.g. renamed
/// copies). Nodes end up in topological order. Returns, per weight tensor (original name), the
/// name of its dequantized copy.
pub fn insert(
    g: &mut GraphProto,
    index: &GraphIndex,
    plan: &Plan,
    layers: &[usize],
    ins: &Insert,
) -> Result<HashMap<String, String>> {
    let (act_readers, weight_readers) = readers(plan, layers);
    let mut edits = Edits::new(g, index);
    for (t, readers) in &act_readers {
        let key = plan.shared.get(t).unwrap_or(t);
        let q = ins.act_params.get(key).ok_or_else(|| PareError::Tensor {
            tensor: t.clone(),
            message: "no calibration range".into(),
        })?;
        edits.activation(g, t, readers, q, ins.suffix);
    }
    // Float weights that may become unread.
    let mut drop_inits: HashSet<usize> = HashSet::new();
    for (t, src, axis, readers) in &weight_readers {
        let qw = ins.weights.get(t).ok_or_else(|| PareError::Tensor {
            tensor: t.clone(),
            message: "weight was not quantized".into(),
        })?;
        edits.weight(t, *axis, readers, qw, ins);
        if let ConstSource::Initializer(i) = src {
            drop_inits.insert(*i);
        }
        if let Some(b) = &qw.corrected_bias {
            drop_inits.extend(edits.corrected_bias(g, t, readers, b, ins.suffix));
        }
    }
    let Edits {
        rewire,
        mut before,
        new_inits,
        weight_dq,
        ..
    } = edits;
    let mut out = rebuild(g, index, &mut before, &rewire);
    // Constant/Identity nodes left without readers disappear; so do float weights nothing
    // reads any more (never in a suffixed copy, whose float twin still reads them).
    let graph_outputs: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    drop_dead_constants(&mut out, &graph_outputs);
    g.node = out;
    if ins.suffix.is_empty() && !drop_inits.is_empty() {
        drop_unread_initializers(g, &drop_inits, &graph_outputs);
    }
    g.initializer.extend(new_inits);
    Ok(weight_dq)
}

/// The quantized layers' activation readers, grouped by original tensor name, and their
/// weight readers, grouped by weight tensor and channel axis.
fn readers(plan: &Plan, layers: &[usize]) -> (Vec<ActReaders>, Vec<WeightReaders>) {
    let mut act_readers: Vec<ActReaders> = Vec::new();
    let mut weight_readers: Vec<WeightReaders> = Vec::new();
    for &li in layers {
        let c: &Candidate = &plan.candidates[li];
        for (slot, t) in &c.acts {
            match act_readers.iter_mut().find(|(n, _)| n == t) {
                Some((_, v)) => v.push((c.node, *slot)),
                None => act_readers.push((t.clone(), vec![(c.node, *slot)])),
            }
        }
        if let Some(w) = &c.weight {
            match weight_readers
                .iter_mut()
                .find(|(n, _, ax, _)| n == &w.tensor && *ax == w.axis)
            {
                Some((_, _, _, v)) => v.push((c.node, w.slot)),
                None => weight_readers.push((
                    w.tensor.clone(),
                    w.source.clone(),
                    w.axis,
                    vec![(c.node, w.slot)],
                )),
            }
        }
    }
    (act_readers, weight_readers)
}

/// The edits `insert` collects before rebuilding the node list.
struct Edits {
    names: Names,
    /// Position of each node in topological order.
    topo_pos: HashMap<usize, usize>,
    /// (node, slot) → new input tensor.
    rewire: HashMap<(usize, usize), String>,
    /// The nodes to place before node i.
    before: HashMap<usize, Vec<NodeProto>>,
    new_inits: Vec<TensorProto>,
    /// Per weight tensor (original name), its dequantized copy.
    weight_dq: HashMap<String, String>,
}

impl Edits {
    fn new(g: &GraphProto, index: &GraphIndex) -> Self {
        Edits {
            names: Names::of(g),
            topo_pos: index
                .topo
                .iter()
                .enumerate()
                .map(|(k, &n)| (n, k))
                .collect(),
            rewire: HashMap::new(),
            before: HashMap::new(),
            new_inits: Vec::new(),
            weight_dq: HashMap::new(),
        }
    }

    /// Points the bias input (slot 2) of `readers` at a new initializer holding `bias` (bias
    /// correction); returns the float biases' initializer indices, which may become unread.
    fn corrected_bias(
        &mut self,
        g: &GraphProto,
        t: &str,
        readers: &[(usize, usize)],
        bias: &[f32],
        suffix: &str,
    ) -> Vec<usize> {
        let name = self.names.fresh(format!("{t}_bias_corrected{suffix}"));
        self.new_inits
            .push(f32_tensor(&name, &[bias.len() as i64], bias));
        let mut old = Vec::new();
        for &(n, _) in readers {
            if let Some(b) = g.node.get(n).and_then(|n| n.input.get(2)) {
                old.extend(g.initializer.iter().position(|i| i.name() == b));
                self.rewire.insert((n, 2), name.clone());
            }
        }
        old
    }

    /// The reader that comes first in topological order.
    fn first(&self, readers: &[(usize, usize)]) -> usize {
        readers
            .iter()
            .map(|r| r.0)
            .min_by_key(|n| self.topo_pos.get(n).copied().unwrap_or(usize::MAX))
            .unwrap_or(0)
    }

    /// Places `nodes` before the first of `readers` and points every reader at `dqo`.
    fn place(&mut self, readers: &[(usize, usize)], nodes: Vec<NodeProto>, dqo: &str) {
        let at = self.first(readers);
        self.before.entry(at).or_default().extend(nodes);
        for r in readers {
            self.rewire.insert(*r, dqo.to_string());
        }
    }

    /// One Q/DQ pair on activation `t`, shared by all its quantized readers.
    fn activation(
        &mut self,
        g: &GraphProto,
        t: &str,
        readers: &[(usize, usize)],
        q: &QParams,
        sfx: &str,
    ) {
        let names = &mut self.names;
        // The tensor name in this graph (it may be a renamed copy).
        let (n0, s0) = readers[0];
        let actual = g.node[n0].input[s0].clone();
        let base = format!("{t}{sfx}");
        let scale = names.fresh(format!("{base}_scale"));
        let zp = names.fresh(format!("{base}_zero_point"));
        self.new_inits.push(f32_tensor(&scale, &[], &[q.scale]));
        self.new_inits
            .push(int_tensor(&zp, &[], q.qtype, &[q.zero_point]));
        let qo = names.fresh(format!("{base}_QuantizeLinear_Output"));
        let dqo = names.fresh(format!("{base}_DequantizeLinear_Output"));
        let qn = node(
            names.fresh(format!("{base}_QuantizeLinear")),
            "QuantizeLinear",
            vec![actual, scale.clone(), zp.clone()],
            qo.clone(),
            None,
        );
        let dqn = node(
            names.fresh(format!("{base}_DequantizeLinear")),
            "DequantizeLinear",
            vec![qo, scale, zp],
            dqo.clone(),
            None,
        );
        self.place(readers, vec![qn, dqn], &dqo);
    }

    /// Weight `t` as an INT8 initializer with a (per-channel) DequantizeLinear.
    fn weight(
        &mut self,
        t: &str,
        axis: usize,
        readers: &[(usize, usize)],
        qw: &QuantizedWeight,
        ins: &Insert,
    ) {
        let names = &mut self.names;
        let base = format!("{t}{}", ins.suffix);
        let qname = names.fresh(format!("{base}_quantized"));
        let scale = names.fresh(format!("{base}_scale"));
        let zp = names.fresh(format!("{base}_zero_point"));
        self.new_inits.push(TensorProto {
            name: Some(qname.clone()),
            dims: qw.dims.clone(),
            data_type: Some(DataType::INT8.0),
            raw_data: Some(Bytes::from(
                qw.values.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
            )),
            ..Default::default()
        });
        let (scales, axis_attr) = if ins.per_channel {
            (qw.scales.clone(), Some(axis as i64))
        } else {
            (vec![qw.scales.first().copied().unwrap_or(1.0)], None)
        };
        let sdims: Vec<i64> = if ins.per_channel {
            vec![scales.len() as i64]
        } else {
            vec![]
        };
        self.new_inits.push(f32_tensor(&scale, &sdims, &scales));
        self.new_inits
            .push(int_tensor(&zp, &sdims, QType::Int8, &vec![0; scales.len()]));
        let dqo = names.fresh(format!("{base}_DequantizeLinear_Output"));
        let dqn = node(
            names.fresh(format!("{base}_DequantizeLinear")),
            "DequantizeLinear",
            vec![qname, scale, zp],
            dqo.clone(),
            axis_attr,
        );
        self.weight_dq.insert(t.to_string(), dqo.clone());
        self.place(readers, vec![dqn], &dqo);
    }
}

/// Takes `g`'s nodes in topological order with the new nodes placed before their first reader
/// and the rewired inputs applied.
fn rebuild(
    g: &mut GraphProto,
    index: &GraphIndex,
    before: &mut HashMap<usize, Vec<NodeProto>>,
    rewire: &HashMap<(usize, usize), String>,
) -> Vec<NodeProto> {
    let old = std::mem::take(&mut g.node);
    let mut out = Vec::with_capacity(old.len() + before.values().map(Vec::len).sum::<usize>());
    let mut old: Vec<Option<NodeProto>> = old.into_iter().map(Some).collect();
    for &i in &index.topo {
        if let Some(ns) = before.remove(&i) {
            out.extend(ns);
        }
        let Some(mut n) = old[i].take() else { continue };
        for (s, inp) in n.input.iter_mut().enumerate() {
            if let Some(r) = rewire.get(&(i, s)) {
                *inp = r.clone();
            }
        }
        out.push(n);
    }
    out
}

/// Removes Constant/Identity nodes whose outputs nothing reads, until none is left.
fn drop_dead_constants(out: &mut Vec<NodeProto>, graph_outputs: &HashSet<String>) {
    loop {
        let read: HashSet<&String> = out.iter().flat_map(|n| n.input.iter()).collect();
        let dead: Vec<bool> = out
            .iter()
            .map(|n| {
                matches!(n.op_type(), "Constant" | "Identity")
                    && n.output
                        .iter()
                        .all(|o| !read.contains(o) && !graph_outputs.contains(o))
            })
            .collect();
        if !dead.iter().any(|&d| d) {
            break;
        }
        let mut k = 0;
        out.retain(|_| {
            k += 1;
            !dead[k - 1]
        });
    }
}

/// Drops the float weights among `drop_inits` that nothing reads any more.
fn drop_unread_initializers(
    g: &mut GraphProto,
    drop_inits: &HashSet<usize>,
    graph_outputs: &HashSet<String>,
) {
    let read: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    let unread: HashSet<String> = drop_inits
        .iter()
        .filter_map(|&i| g.initializer.get(i))
        .map(|t| t.name().to_string())
        .filter(|n| !read.contains(n) && !graph_outputs.contains(n))
        .collect();
    g.initializer.retain(|t| !unread.contains(t.name()));
    // Old IR models list initializers among the graph inputs.
    g.input.retain(|v| !unread.contains(v.name()));
}

/// Quantizes the weight of every candidate that has one (float layers too, for the
/// diagnostics), keyed by weight tensor name.
pub fn quantize_weights(
    g: &GraphProto,
    plan: &Plan,
    method: super::qparams::WeightMethod,
) -> Result<HashMap<String, QuantizedWeight>> {
    let mut jobs: Vec<(String, ConstSource, usize)> = Vec::new();
    for c in &plan.candidates {
        if let Some(w) = &c.weight
            && !jobs.iter().any(|(t, _, _)| t == &w.tensor)
        {
            jobs.push((w.tensor.clone(), w.source.clone(), w.axis));
        }
    }
    // Two threads: the MSE search is the slow part on big models.
    let results: Vec<Result<Option<(String, QuantizedWeight)>>> = std::thread::scope(|s| {
        let chunks: Vec<Vec<(String, ConstSource, usize)>> = {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (k, j) in jobs.into_iter().enumerate() {
                if k % 2 == 0 { a.push(j) } else { b.push(j) }
            }
            vec![a, b]
        };
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(t, src, axis)| {
                            let Some(tp) = const_tensor(g, &src) else {
                                return Ok(None);
                            };
                            if DataType(tp.data_type()) != DataType::FLOAT {
                                return Ok(None);
                            }
                            let values = crate::model::tensor::to_f32(tp)?;
                            let axis = axis.min(tp.dims.len().saturating_sub(1));
                            let qw = super::qparams::quantize_weight(
                                &values,
                                &tp.dims,
                                axis,
                                method,
                                plan.per_channel,
                            );
                            Ok(Some((t, qw)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = HashMap::new();
    for r in results {
        if let Some((t, q)) = r? {
            out.insert(t, q);
        }
    }
    Ok(out)
}
