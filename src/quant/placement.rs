//! Where Q/DQ pairs go, following TensorRT's explicit-quantization rules as NVIDIA's ModelOpt
//! encodes them:
//!
//! - **Weighted ops** (Conv, ConvTranspose, Gemm, MatMul): Q/DQ on the activation input,
//!   per-channel INT8 on the weight (Conv axis 0, ConvTranspose axis 1, the output-feature
//!   axis of Gemm/MatMul), bias left float. Only the *inputs* are quantized: TensorRT fuses
//!   the output re-quantization itself.
//! - **Residual Add**: an Add fed by a convolution branch and another tensor gets Q/DQ on the
//!   other (skip) input only, so TensorRT fuses Conv+Add in INT8; when both inputs come from
//!   convolutions, the one on the longer path back to their common ancestor is the fused one.
//! - **Pooling** (MaxPool, AveragePool, GlobalAveragePool): Q/DQ on the input. MaxPool
//!   commutes with quantization, so a Q/DQ after it reuses its input's scale (exact, no new
//!   rounding).
//! - **Concat**: no Q/DQ on its inputs; the consumer's input Q/DQ after it is propagated
//!   backwards by TensorRT, so all branches share one scale.
//! - **Small layers** stay float as ModelOpt leaves them (convs with fewer than 16 input or
//!   output channels that are not multiples of 8, GEMV and small GEMMs): INT8 buys nothing
//!   there and costs accuracy. `quantize_small` turns this off.
//! - Skip tags and `--exclude OP|NAME|GLOB` keep layers float.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::model::Analysis;
use crate::model::proto::{GraphProto, TensorProto};
use crate::model::tensor::DataType;
use crate::ops::QuantRole;
use crate::tags::{Tag, Tags, glob_match};

/// What kind of quantized layer a candidate is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Conv/ConvTranspose/Gemm/MatMul with a constant weight at `slot`, per-channel on `axis`.
    Weighted,
    /// MatMul of two activations (attention): both inputs per-tensor.
    ActMatMul,
    /// Residual Add: `fused` is the convolution TensorRT fuses with it.
    ResidualAdd {
        fused: String,
    },
    Pool,
}

/// Where a constant weight comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstSource {
    Initializer(usize),
    /// A `Constant` node (index) whose `value` is the weight.
    ConstantNode(usize),
}

/// A quantized weight input.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightRef {
    /// Input slot of the node.
    pub slot: usize,
    /// The tensor name at that slot.
    pub tensor: String,
    pub axis: usize,
    pub source: ConstSource,
}

/// One layer pare could quantize, and whether it does.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub node: usize,
    pub name: String,
    pub op: String,
    pub kind: Kind,
    /// `(input slot, tensor)` pairs that get Q/DQ.
    pub acts: Vec<(usize, String)>,
    pub weight: Option<WeightRef>,
    pub quantized: bool,
    /// Why it stays float.
    pub reason: Option<String>,
}

/// The placement for a model.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    /// Tensor → tensor whose quantization parameters it reuses (after a MaxPool).
    pub shared: HashMap<String, String>,
    /// Weights are per-channel (opset ≥ 13), else one scale per tensor.
    pub per_channel: bool,
    pub notes: Vec<String>,
}

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct PlacementOptions {
    pub tags: Tags,
    /// Op types, node names or globs kept float.
    pub exclude: Vec<String>,
    /// Quantize small layers too.
    pub quantize_small: bool,
}

impl Plan {
    /// Activation tensors that get Q/DQ in the quantized model.
    pub fn act_tensors(&self) -> BTreeSet<String> {
        self.candidates
            .iter()
            .filter(|c| c.quantized)
            .flat_map(|c| c.acts.iter().map(|(_, t)| t.clone()))
            .collect()
    }

    /// Tensors calibration must observe: every candidate's inputs (float layers too, so their
    /// would-be error can be shown), except those that reuse another tensor's scale.
    pub fn calib_tensors(&self) -> BTreeSet<String> {
        let mut v: BTreeSet<String> = self
            .candidates
            .iter()
            .flat_map(|c| c.acts.iter().map(|(_, t)| t.clone()))
            .collect();
        for (t, src) in &self.shared {
            v.remove(t);
            v.insert(src.clone());
        }
        v
    }

    /// Re-derives residual Adds after layers changed: an Add whose fused convolution stays
    /// float has no reason to be quantized.
    pub fn finalize(&mut self) {
        let quantized: HashSet<String> = self
            .candidates
            .iter()
            .filter(|c| c.quantized && c.kind == Kind::Weighted)
            .map(|c| c.name.clone())
            .collect();
        for c in &mut self.candidates {
            if let Kind::ResidualAdd { fused } = &c.kind {
                let ok = quantized.contains(fused);
                if !ok && c.quantized {
                    c.quantized = false;
                    c.reason = Some(format!("its convolution '{fused}' stays float"));
                } else if ok
                    && !c.quantized
                    && c.reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("its convolution"))
                {
                    c.quantized = true;
                    c.reason = None;
                }
            }
        }
    }

    pub fn quantized_count(&self) -> usize {
        self.candidates.iter().filter(|c| c.quantized).count()
    }
}

/// The op's quantization role from the op table (ops missing from it stay float).
fn role(op: &str) -> QuantRole {
    crate::ops::lookup(op).map_or(QuantRole::None, |d| d.quant)
}

/// Follows Identity nodes back to a constant: an initializer or a `Constant` node.
pub fn const_source(graph: &GraphProto, a: &Analysis, tensor: &str) -> Option<ConstSource> {
    let mut t = tensor.to_string();
    for _ in 0..16 {
        if let Some(&i) = a.index.initializers.get(&t) {
            return (i != usize::MAX).then_some(ConstSource::Initializer(i));
        }
        let &p = a.index.producer.get(&t)?;
        let n = &graph.node[p];
        match n.op_type() {
            "Constant" if n.attr_t("value").is_some() => return Some(ConstSource::ConstantNode(p)),
            "Identity" => t = n.input.first()?.clone(),
            _ => return None,
        }
    }
    None
}

/// The tensor behind a constant source.
pub fn const_tensor<'g>(graph: &'g GraphProto, src: &ConstSource) -> Option<&'g TensorProto> {
    match src {
        ConstSource::Initializer(i) => graph.initializer.get(*i),
        ConstSource::ConstantNode(n) => graph.node.get(*n)?.attr_t("value"),
    }
}

fn is_float(a: &Analysis, t: &str) -> bool {
    a.shapes
        .get(t)
        .and_then(|i| i.dtype)
        .is_none_or(|d| d == DataType::FLOAT || d == DataType::FLOAT16)
}

/// Computes the placement.
pub fn plan(a: &Analysis, opts: &PlacementOptions) -> Plan {
    let g = a.graph();
    let opset = a.model.proto.opset("").unwrap_or(13);
    let mut plan = Plan {
        per_channel: opset >= 13,
        ..Default::default()
    };
    if !plan.per_channel {
        plan.notes.push(format!(
            "opset {opset} < 13 has no per-channel DequantizeLinear: weights get one scale per tensor (convert the model to opset 13+ for per-channel)"
        ));
    }
    let first_weighted = a
        .index
        .topo
        .iter()
        .copied()
        .find(|&i| matches!(role(g.node[i].op_type()), QuantRole::Weighted { .. }));
    let is_const = |t: &str| const_source(g, a, t).is_some();
    for &i in &a.index.topo {
        let n = &g.node[i];
        let op = n.op_type();
        if n.op_domain() != "" {
            continue;
        }
        let name = n.display_name();
        let mut c = Candidate {
            node: i,
            name: name.clone(),
            op: op.to_string(),
            kind: Kind::Weighted,
            acts: Vec::new(),
            weight: None,
            quantized: true,
            reason: None,
        };
        let op_role = role(op);
        if let QuantRole::Weighted { slot, axis } = op_role {
            let (Some(x), Some(w)) = (n.input.first(), n.input.get(slot)) else {
                continue;
            };
            if x.is_empty() || !is_float(a, x) {
                continue;
            }
            if op == "MatMul" && !is_const(w) && !is_const(x) {
                if !is_float(a, w) {
                    continue;
                }
                c.kind = Kind::ActMatMul;
                c.acts = vec![(0, x.clone()), (1, w.clone())];
            } else {
                if is_const(x) {
                    continue;
                }
                c.acts = vec![(0, x.clone())];
                match const_source(g, a, w) {
                    Some(src) => {
                        let wt = const_tensor(g, &src);
                        let rank = wt.map_or(0, |t| t.dims.len());
                        let dt = wt.map_or(DataType::UNDEFINED, |t| DataType(t.data_type()));
                        if dt != DataType::FLOAT {
                            c.quantized = false;
                            c.reason = Some(format!("weight is {dt}, not float32"));
                        }
                        let axis = axis.resolve(n, rank);
                        if rank < 2 && op != "MatMul" || rank == 0 {
                            c.quantized = false;
                            c.reason = Some(format!("weight has rank {rank}"));
                        }
                        c.weight = Some(WeightRef {
                            slot,
                            tensor: w.clone(),
                            axis,
                            source: src,
                        });
                        if c.quantized
                            && !opts.quantize_small
                            && let Some(why) = small_layer(a, g, i, wt, Some(i) == first_weighted)
                        {
                            c.quantized = false;
                            c.reason = Some(why);
                        }
                    }
                    None => {
                        c.quantized = false;
                        c.reason = Some(
                            "weight is not a constant (ModelOpt leaves such layers float)".into(),
                        );
                    }
                }
            }
        } else if op_role == QuantRole::ResidualAdd {
            let Some((skip_slot, fused)) = residual_add(a, g, i) else {
                continue;
            };
            c.kind = Kind::ResidualAdd {
                fused: g.node[fused].display_name(),
            };
            c.acts = vec![(skip_slot, n.input[skip_slot].clone())];
        } else if op_role == QuantRole::Pool {
            let Some(x) = n.input.first() else { continue };
            if !is_float(a, x) || is_const(x) {
                continue;
            }
            c.kind = Kind::Pool;
            c.acts = vec![(0, x.clone())];
        } else {
            continue;
        }
        // User exclusions win over everything.
        if opts.tags.tag_of(&name) == Some(Tag::Skip) {
            c.quantized = false;
            c.reason = Some("skip tag".into());
        } else if let Some(p) = opts
            .exclude
            .iter()
            .find(|p| *p == op || glob_match(p, &name))
        {
            c.quantized = false;
            c.reason = Some(format!("--exclude {p}"));
        }
        plan.candidates.push(c);
    }
    // A Q/DQ after a MaxPool whose input is quantized reuses the input's scale.
    let quantized_inputs: HashSet<String> = plan.act_tensors().into_iter().collect();
    for c in &plan.candidates {
        if c.kind == Kind::Pool && c.op == "MaxPool" {
            let out = &g.node[c.node].output[0];
            if let Some((_, x)) = c.acts.first()
                && quantized_inputs.contains(out)
            {
                plan.shared.insert(out.clone(), x.clone());
            }
        }
    }
    plan.finalize();
    plan
}

/// Why a weighted layer is too small for INT8 to pay off (ModelOpt's rules), if it is.
fn small_layer(
    a: &Analysis,
    g: &GraphProto,
    i: usize,
    w: Option<&TensorProto>,
    first: bool,
) -> Option<String> {
    let n = &g.node[i];
    let w = w?;
    let dims = &w.dims;
    match n.op_type() {
        "Conv" | "ConvTranspose" => {
            let group = n.attr_i("group").unwrap_or(1).max(1);
            let (ic, oc) = if n.op_type() == "Conv" {
                (
                    dims.get(1).copied().unwrap_or(0) * group,
                    dims.first().copied().unwrap_or(0),
                )
            } else {
                (
                    dims.first().copied().unwrap_or(0),
                    dims.get(1).copied().unwrap_or(0) * group,
                )
            };
            if ic >= 16 && oc >= 16 {
                return None;
            }
            let kernel_ge3 = dims.iter().skip(2).all(|&k| k >= 3);
            let aligned = (ic % 8 == 0 || oc % 8 == 0) && (first || ic >= 16 || oc >= 16);
            let grouped_ok = group > 1 && oc % 8 == 0 && kernel_ge3;
            if aligned || grouped_ok {
                return None;
            }
            Some(format!(
                "small layer ({ic} in, {oc} out channels): INT8 does not pay off below 16 channels (ModelOpt rule)"
            ))
        }
        "Gemm" | "MatMul" => {
            let (k, nn) = if n.op_type() == "Gemm" && n.attr_i("transB").unwrap_or(0) != 0 {
                (
                    dims.get(1).copied().unwrap_or(0),
                    dims.first().copied().unwrap_or(0),
                )
            } else {
                (
                    dims.get(dims.len().saturating_sub(2)).copied().unwrap_or(0),
                    dims.last().copied().unwrap_or(0),
                )
            };
            if k < 16 || nn < 16 {
                return Some(format!(
                    "small GEMM (K={k}, N={nn} < 16): left float as ModelOpt does"
                ));
            }
            // Rows of the activation: 1 means a GEMV, which cannot use INT8 tensor cores.
            let x = n.input.first()?;
            let shape = a.shapes.static_shape(x)?;
            let m: i64 = if n.op_type() == "Gemm" {
                if n.attr_i("transA").unwrap_or(0) != 0 {
                    shape.get(1).copied()?
                } else {
                    shape.first().copied()?
                }
            } else {
                shape[..shape.len().saturating_sub(1)].iter().product()
            };
            (m == 1).then(|| {
                "GEMV (one row): INT8 cannot use tensor cores here, left float as ModelOpt does"
                    .to_string()
            })
        }
        _ => None,
    }
}

/// Producer op of a tensor, looking through a BatchNormalization (unfused training exports).
fn conv_producer(a: &Analysis, g: &GraphProto, t: &str) -> Option<usize> {
    let &p = a.index.producer.get(t)?;
    match g.node[p].op_type() {
        "Conv" | "ConvTranspose" => Some(p),
        "BatchNormalization" => {
            let &q = a.index.producer.get(g.node[p].input.first()?)?;
            matches!(g.node[q].op_type(), "Conv" | "ConvTranspose").then_some(q)
        }
        _ => None,
    }
}

/// Backward distances (in nodes) from a tensor to its ancestors, bounded.
fn ancestors(a: &Analysis, g: &GraphProto, t: &str, limit: usize) -> HashMap<usize, usize> {
    let mut dist = HashMap::new();
    let Some(&p) = a.index.producer.get(t) else {
        return dist;
    };
    let mut q = VecDeque::from([(p, 0usize)]);
    dist.insert(p, 0);
    while let Some((n, d)) = q.pop_front() {
        if dist.len() > limit {
            break;
        }
        for inp in &g.node[n].input {
            if let Some(&m) = a.index.producer.get(inp)
                && let std::collections::hash_map::Entry::Vacant(e) = dist.entry(m)
            {
                e.insert(d + 1);
                q.push_back((m, d + 1));
            }
        }
    }
    dist
}

/// If Add node `i` is a residual add, `(skip input slot, fused conv node)`.
fn residual_add(a: &Analysis, g: &GraphProto, i: usize) -> Option<(usize, usize)> {
    let n = &g.node[i];
    if n.input.len() != 2 {
        return None;
    }
    let (x, y) = (&n.input[0], &n.input[1]);
    if x.is_empty()
        || y.is_empty()
        || const_source(g, a, x).is_some()
        || const_source(g, a, y).is_some()
    {
        return None;
    }
    if !is_float(a, x) || !is_float(a, y) {
        return None;
    }
    // Same shape (no broadcast: a broadcast add is a bias or a gate, not a residual).
    if let (Some(sx), Some(sy)) = (a.shapes.shape(x), a.shapes.shape(y))
        && sx != sy
    {
        return None;
    }
    let (cx, cy) = (conv_producer(a, g, x), conv_producer(a, g, y));
    match (cx, cy) {
        (Some(f), None) => Some((1, f)),
        (None, Some(f)) => Some((0, f)),
        (Some(fx), Some(fy)) => {
            // The input on the longer path to the lowest common ancestor is the fused one.
            let (ax, ay) = (ancestors(a, g, x, 4096), ancestors(a, g, y, 4096));
            let lca = ax
                .iter()
                .filter_map(|(n, dx)| ay.get(n).map(|dy| (dx + dy, *dx, *dy)))
                .min();
            match lca {
                Some((_, dx, dy)) if dy > dx => Some((0, fy)),
                _ => Some((1, fx)),
            }
        }
        (None, None) => None,
    }
}
