//! ONNX → libtorch executor (feature `torch`): runs a model's nodes as libtorch ops, so the
//! same graph can be trained (its float initializers are leaf tensors that can require grad).
//!
//! Every node is lowered eagerly, one op at a time (the op table (`crate::ops`, each family's `lowering`)); shape subgraphs
//! (Shape → Gather → Concat → Reshape) are evaluated as small int64 tensors, which folds them,
//! and an `If` runs the branch its (usually shape-derived) condition picks. Ops without a
//! lowering are refused when the executor is built, naming the first such node and its op.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::model::proto::{GraphProto, NodeProto, TensorProto};
use crate::model::tensor::{DataType, to_f32, to_i64};
use crate::model::{GraphIndex, Model};
use crate::ops::quant::lowering::{fake_quant, fake_quant_weight, quantize_weight};
use crate::ops::torch::ints_of;

/// Why a model cannot be run on libtorch.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("node '{node}' ({op}): no libtorch lowering for {op}{detail}")]
    Unsupported {
        node: String,
        op: String,
        detail: String,
    },
    #[error("node '{node}' ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    #[error(transparent)]
    Model(#[from] crate::PareError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// A model ready to run on libtorch. `params` are the float initializers, by name.
pub struct TorchGraph {
    graph: GraphProto,
    topo: Vec<usize>,
    pub params: HashMap<String, Tensor>,
    /// Other initializers (integer shapes, indices, quantized weights).
    consts: HashMap<String, Tensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub device: Device,
    /// QAT: output name of a DequantizeLinear whose integer weight is now a float parameter →
    /// (that weight's name, its stored integer kind).
    qat: HashMap<String, (String, Kind)>,
}

/// An ONNX tensor as a libtorch tensor: float types as f32, 8-bit integers keep their kind
/// (a QuantizeLinear zero point's type is its integer range), other integers as i64.
pub fn tensor_of(t: &TensorProto) -> Result<Tensor, ExecError> {
    let dims: Vec<i64> = t.dims.clone();
    let dt = DataType(t.data_type.unwrap_or(0));
    let ints =
        || -> Result<Tensor, ExecError> { Ok(Tensor::from_slice(&to_i64(t)?).reshape(&dims)) };
    let out = if dt.is_float() {
        Tensor::from_slice(&to_f32(t)?).reshape(&dims)
    } else if dt == DataType::BOOL {
        ints()?.to_kind(Kind::Bool)
    } else if dt == DataType::INT8 {
        ints()?.to_kind(Kind::Int8)
    } else if dt == DataType::UINT8 {
        ints()?.to_kind(Kind::Uint8)
    } else {
        ints()?
    };
    Ok(out)
}

/// The op table's lowering of a default-domain node (`If` is run by the executor itself).
fn lowering(n: &NodeProto) -> Option<crate::ops::LowerFn> {
    crate::ops::lookup(n.op_type()).and_then(|d| d.lower)
}

/// The first node of `graph` (or of a branch nested in it) that has no lowering.
fn check_lowerable(graph: &GraphProto) -> Result<(), ExecError> {
    for n in &graph.node {
        if !n.op_domain().is_empty() || lowering(n).is_none() && n.op_type() != "If" {
            return Err(ExecError::Unsupported {
                node: n.display_name(),
                op: n.op_type().to_string(),
                detail: if n.op_domain().is_empty() {
                    String::new()
                } else {
                    format!(" (domain {})", n.op_domain())
                },
            });
        }
        for (_, g) in n.subgraphs() {
            check_lowerable(g)?;
        }
    }
    Ok(())
}

impl TorchGraph {
    /// True once [`Self::enable_qat`] made integer weights trainable (a QDQ model).
    pub fn is_qat(&self) -> bool {
        !self.qat.is_empty()
    }

    /// Checks every node has a lowering and moves the initializers to `device`.
    pub fn new(model: &Model, device: Device) -> Result<Self, ExecError> {
        let graph = model
            .proto
            .graph
            .clone()
            .ok_or_else(|| crate::PareError::InvalidModel("model has no graph".into()))?;
        let index = GraphIndex::build(&graph)?;
        check_lowerable(&graph)?;
        let mut params = HashMap::new();
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            let v = tensor_of(t)?.to_device(device);
            if DataType(t.data_type.unwrap_or(0)).is_float() {
                params.insert(t.name().to_string(), v);
            } else {
                consts.insert(t.name().to_string(), v);
            }
        }
        Ok(Self {
            topo: index.topo.clone(),
            inputs: index.inputs.clone(),
            outputs: index.outputs.clone(),
            graph,
            params,
            consts,
            device,
            qat: HashMap::new(),
        })
    }

    /// Quantization-aware training: integer initializers read by a DequantizeLinear (INT8
    /// weights, INT32 biases) become float parameters holding their dequantized values, and
    /// those DequantizeLinear nodes fake-quantize them with the stored scale and zero point
    /// (straight-through gradient). Returns the weights turned into parameters.
    pub fn enable_qat(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        for n in &self.graph.node {
            let (Some(w), Some(out)) = (n.input.first(), n.output.first()) else {
                continue;
            };
            if n.op_type() != "DequantizeLinear" || self.qat.contains_key(out) {
                continue;
            }
            let Some(q) = self.consts.get(w).map(Tensor::shallow_clone) else {
                continue;
            };
            let ins: Vec<Option<Tensor>> = n
                .input
                .iter()
                .map(|i| self.value(&HashMap::new(), i))
                .collect();
            let Ok(mut v) = fake_quant(n, &ins) else {
                continue;
            };
            let kind = if q.kind() == Kind::Int64 {
                Kind::Int
            } else {
                q.kind()
            };
            self.consts.remove(w);
            self.params.insert(w.clone(), v.remove(0).detach());
            self.qat.insert(out.clone(), (w.clone(), kind));
            names.push(w.clone());
        }
        names
    }

    /// QAT write-back: every weight `enable_qat` turned float, quantized again with its
    /// DequantizeLinear's scale and zero point.
    pub fn quantized_weights(&self) -> Result<HashMap<String, Vec<i64>>, ExecError> {
        let mut out = HashMap::new();
        for n in &self.graph.node {
            let Some((w, kind)) = n.output.first().and_then(|o| self.qat.get(o)) else {
                continue;
            };
            let ins: Vec<Option<Tensor>> = n
                .input
                .iter()
                .map(|i| self.value(&HashMap::new(), i))
                .collect();
            let q = quantize_weight(n, &ins, *kind).map_err(|message| ExecError::Node {
                node: n.display_name(),
                op: n.op_type().to_string(),
                message,
            })?;
            out.insert(w.clone(), q);
        }
        Ok(out)
    }

    /// Runs the graph on `inputs` (in the model's input order); the graph outputs in order.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ExecError> {
        Ok(self.forward_named(inputs, &[])?.0)
    }

    /// Like [`Self::forward`], and also returns the intermediate tensors named in `taps` (in
    /// that order), for distillation on features as well as outputs.
    pub fn forward_named(
        &self,
        inputs: &[Tensor],
        taps: &[String],
    ) -> Result<(Vec<Tensor>, Vec<Tensor>), ExecError> {
        let mut env: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in self.inputs.iter().zip(inputs) {
            env.insert(name.clone(), t.shallow_clone());
        }
        let nodes = self.topo.iter().map(|&i| &self.graph.node[i]);
        self.run_nodes(nodes, &mut env)?;
        let get = |o: &String| {
            self.value(&env, o).ok_or_else(|| {
                ExecError::Model(crate::PareError::InvalidModel(format!(
                    "tensor '{o}' was not computed"
                )))
            })
        };
        let outs = self.outputs.iter().map(get).collect::<Result<_, _>>()?;
        let tapped = taps.iter().map(get).collect::<Result<_, _>>()?;
        Ok((outs, tapped))
    }

    /// Names of the tensors the graph's top-level nodes produce, with the producing op.
    pub fn node_outputs(&self) -> Vec<(String, String)> {
        self.graph
            .node
            .iter()
            .flat_map(|n| {
                n.output
                    .iter()
                    .filter(|o| !o.is_empty())
                    .map(move |o| (o.clone(), n.op_type().to_string()))
            })
            .collect()
    }

    fn value(&self, env: &HashMap<String, Tensor>, name: &str) -> Option<Tensor> {
        env.get(name)
            .or_else(|| self.params.get(name))
            .or_else(|| self.consts.get(name))
            .map(Tensor::shallow_clone)
    }

    fn run_nodes<'a>(
        &self,
        nodes: impl Iterator<Item = &'a NodeProto>,
        env: &mut HashMap<String, Tensor>,
    ) -> Result<(), ExecError> {
        for node in nodes {
            let ins: Vec<Option<Tensor>> = node
                .input
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        None
                    } else {
                        self.value(env, n)
                    }
                })
                .collect();
            let qat = node.output.first().and_then(|o| self.qat.get(o));
            let outs = if node.op_type() == "If" {
                self.run_if(node, &ins, env)
            } else if let Some((_, kind)) = qat {
                fake_quant_weight(node, &ins, *kind)
            } else {
                match lowering(node) {
                    Some(f) => f(node, &ins, self.device),
                    None => Err(format!("no libtorch lowering for {}", node.op_type())),
                }
            }
            .map_err(|message| ExecError::Node {
                node: node.display_name(),
                op: node.op_type().to_string(),
                message,
            })?;
            for (name, t) in node.output.iter().zip(outs) {
                env.insert(name.clone(), t);
            }
        }
        Ok(())
    }

    /// Runs the branch the condition picks, in a scope that sees every outer value.
    fn run_if(
        &self,
        node: &NodeProto,
        ins: &[Option<Tensor>],
        env: &HashMap<String, Tensor>,
    ) -> Result<Vec<Tensor>, String> {
        let cond = ins
            .first()
            .and_then(Option::as_ref)
            .ok_or("input 0 is missing")?;
        let take_then = ints_of(cond)?.first().is_some_and(|&c| c != 0);
        let key = if take_then {
            "then_branch"
        } else {
            "else_branch"
        };
        let branch = node
            .attr(key)
            .and_then(|a| a.g.as_deref())
            .ok_or_else(|| format!("no {key}"))?;
        let mut inner: HashMap<String, Tensor> = env
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        for t in &branch.initializer {
            let v = tensor_of(t).map_err(|e| e.to_string())?;
            inner.insert(t.name().to_string(), v.to_device(self.device));
        }
        self.run_nodes(branch.node.iter(), &mut inner)
            .map_err(|e| format!("{key}: {e}"))?;
        branch
            .output
            .iter()
            .map(|o| {
                self.value(&inner, o.name())
                    .ok_or_else(|| format!("{key} output '{}' was not computed", o.name()))
            })
            .collect()
    }
}
