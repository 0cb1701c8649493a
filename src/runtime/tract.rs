//! tract, the embedded engine: always there, pure Rust, and the one whose refusals (with the
//! node they name) pare's lint and fix reason about.
//!
//! A plan can *watch* tensors (calibration): they are marked as outputs only while tract
//! optimizes (so they survive fusion as tensors of their own), then the plan is built with as
//! few outputs as possible and each watched tensor is seen from inside the evaluation loop the
//! moment its node has computed it. tract then frees it as soon as its consumers are done, so
//! a run holds a few live activations, not all of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, OutletId, TValue, TVec,
    Tensor, TractError, TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_core::plan::SimpleState;

use super::{HostData, HostTensor, InputSpec, with_outputs};
use crate::error::{PareError, Result};
use crate::model::DataType;
use crate::model::proto::ModelProto;

fn terr(e: impl std::fmt::Display) -> PareError {
    PareError::Runtime(format!("tract: {e}"))
}

/// `{e:#}`: tract's errors with their whole context chain, which usually names the node.
fn terr_chain(e: TractError) -> PareError {
    terr(format!("{e:#}"))
}

/// Runs `f`, turning a panic inside tract (it has some on malformed models, e.g. a node
/// naming an input no one produces) into an error: bad input must never crash pare.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into());
        Err(terr(format!(
            "failed on this model (internal error: {msg})"
        )))
    })
}

/// A model prepared in tract for fixed input shapes.
pub struct TractPlan {
    plan: Arc<TypedRunnableModel>,
    /// `(node, slot)` of the optimized model → indices of the watched tensors (empty: the plan
    /// returns its outputs).
    watch: HashMap<(usize, usize), Vec<usize>>,
    outputs: Vec<String>,
}

/// The model parsed and optimized for `inputs`.
fn optimized(model: &ModelProto, inputs: &[InputSpec]) -> Result<TypedModel> {
    refuse_invalid_axes(model, inputs)?;
    // Value infos describing intermediate tensors can contradict what tract infers on edited
    // models; outputs keep only their names so tract decides their facts.
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        g.value_info.clear();
        for o in &mut g.output {
            o.r#type = None;
        }
    }
    let bytes = crate::model::io::encode_model(&m);
    drop(m);
    let mut im = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(terr_chain)?;
    drop(bytes);
    for (i, spec) in inputs.iter().enumerate() {
        let fact = InferenceFact::dt_shape(datum_type(spec.dtype)?, spec.shape.clone());
        im = im.with_input_fact(i, fact).map_err(terr_chain)?;
    }
    im.into_optimized().map_err(terr_chain)
}

/// Refuses a node whose axis attribute is out of range for its input's rank (pare's own shape
/// inference at these input shapes decides): tract's inference rules do not all check it and
/// some never return (LayerNormalization with `axis=-1` on a rank-0 input counts up to
/// `usize::MAX`), so such a model must not reach tract. Every tract plan is made through
/// [`optimized`], so this one check covers prune's validation, extract, quantization and the
/// rest. A time limit on tract instead was not taken: a spinning thread cannot be stopped, and
/// large models legitimately take long to optimize.
fn refuse_invalid_axes(model: &ModelProto, inputs: &[InputSpec]) -> Result<()> {
    let pins = inputs
        .iter()
        .map(|s| (s.name.clone(), s.shape.iter().map(|&d| d as i64).collect()))
        .collect();
    match crate::model::shape::invalid_axes(model, &pins) {
        Some(d) => Err(PareError::InvalidModel(format!(
            "node '{}' ({}): {} (invalid ONNX; tract cannot run it)",
            d.node, d.op_type, d.message
        ))),
        None => Ok(()),
    }
}

fn output_names(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
        .unwrap_or_default()
}

impl TractPlan {
    /// Prepares the model's outputs. `depth_first`: evaluate in plain depth-first order from
    /// the outputs instead of tract's memory-optimising order. The diagnostic models list their
    /// outputs layer by layer, so that order finishes each layer's comparisons before moving on
    /// and frees its tensors; tract's order keeps them all (5x the RAM there).
    pub fn new(model: &ModelProto, inputs: &[InputSpec], depth_first: bool) -> Result<Self> {
        guarded(|| Self::new_unguarded(model, inputs, depth_first))
    }

    fn new_unguarded(model: &ModelProto, inputs: &[InputSpec], depth_first: bool) -> Result<Self> {
        let o = tract_onnx::tract_core::runtime::RunOptions {
            skip_order_opt_ram: depth_first,
            ..Default::default()
        };
        let plan = optimized(model, inputs)?
            .into_runnable_with_options(&o)
            .map_err(terr_chain)?;
        Ok(TractPlan {
            plan,
            watch: HashMap::new(),
            outputs: output_names(model),
        })
    }

    /// A plan that shows `tensors` (names of the ONNX graph) to [`TractPlan::run_f32`] as
    /// they are computed.
    pub fn watching(model: &ModelProto, tensors: &[String], inputs: &[InputSpec]) -> Result<Self> {
        guarded(|| Self::watching_unguarded(model, tensors, inputs))
    }

    fn watching_unguarded(
        model: &ModelProto,
        tensors: &[String],
        inputs: &[InputSpec],
    ) -> Result<Self> {
        let mut typed = optimized(&with_outputs(model, tensors), inputs)?;
        let watched: Vec<OutletId> = typed.output_outlets().map_err(terr)?.to_vec();
        // Outputs: as few watched tensors as keep every watched node in the plan.
        let mut outs: Vec<OutletId> = Vec::new();
        loop {
            typed.select_output_outlets(&outs).map_err(terr)?;
            let needed: HashSet<usize> = if outs.is_empty() {
                HashSet::new()
            } else {
                typed.eval_order().map_err(terr)?.into_iter().collect()
            };
            match watched
                .iter()
                .filter(|o| !needed.contains(&o.node))
                .max_by_key(|o| o.node)
            {
                Some(o) => outs.push(*o),
                None => break,
            }
        }
        // Several watched tensors can be one outlet: tract merges nodes that compute the same
        // value (two convs of one input sharing a weight), and a name may be watched twice.
        let mut watch: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        for (k, o) in watched.iter().enumerate() {
            watch.entry((o.node, o.slot)).or_default().push(k);
        }
        let plan = typed.into_runnable().map_err(terr_chain)?;
        Ok(TractPlan {
            plan,
            watch,
            outputs: tensors.to_vec(),
        })
    }

    /// Names of the tensors a run hands over, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// The outputs (watching: the watched tensors) as host tensors.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        guarded(|| self.run_unguarded(inputs))
    }

    fn run_unguarded(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        if self.watch.is_empty() {
            let outs = self.plan.run(feeds(inputs)?).map_err(terr_chain)?;
            return outs.iter().map(|v| from_tract(v)).collect();
        }
        let mut got: Vec<Option<HostTensor>> = vec![None; self.outputs.len()];
        self.eval_watched(inputs, &mut |k, v| {
            got[k] = Some(from_tract(v)?);
            Ok(())
        })?;
        got.into_iter()
            .zip(&self.outputs)
            .map(|(h, name)| h.ok_or_else(|| terr(format!("tensor '{name}' was not computed"))))
            .collect()
    }

    /// Runs; `f(k, values)` sees tensor `k` once as f32 (watching: when its node computed it).
    pub fn run_f32(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        guarded(|| self.run_f32_unguarded(inputs, f))
    }

    fn run_f32_unguarded(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let mut see = |k: usize, v: &Tensor| -> Result<()> {
            let c = v.cast_to::<f32>().map_err(terr)?;
            let view = c.try_as_plain_ram().map_err(terr)?;
            f(k, view.as_slice::<f32>().map_err(terr)?)
        };
        if self.watch.is_empty() {
            let outs = self.plan.run(feeds(inputs)?).map_err(terr_chain)?;
            for (k, v) in outs.iter().enumerate() {
                see(k, v)?;
            }
            return Ok(());
        }
        self.eval_watched(inputs, &mut see)
    }

    /// Runs the plan node by node, showing each watched tensor to `see` when computed.
    fn eval_watched(
        &self,
        inputs: &[HostTensor],
        see: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let mut state = SimpleState::new(&self.plan).map_err(terr)?;
        let mut failure: Option<PareError> = None;
        let watch = &self.watch;
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        let r = state.run_plan_with_eval(
            feeds(inputs)?,
            |ctx, st, node, ins| -> std::result::Result<TVec<TValue>, TractError> {
                let outs = tract_onnx::tract_core::plan::eval(ctx, st, node, ins)?;
                for (slot, v) in outs.iter().enumerate() {
                    seen.insert((node.id, slot));
                    for &k in watch.get(&(node.id, slot)).into_iter().flatten() {
                        if let Err(e) = see(k, v) {
                            failure = Some(e);
                            return Err(TractError::msg("stopped"));
                        }
                    }
                }
                Ok(outs)
            },
        );
        if let Some(e) = failure {
            return Err(e);
        }
        r.map_err(terr_chain)?;
        // A watched tensor tract folded into a constant (a `Constant` node's output) is never
        // evaluated by the plan: hand its value over as it is.
        let model = self.plan.model();
        for (&(node, slot), ks) in watch.iter().filter(|(key, _)| !seen.contains(key)) {
            let konst = model
                .nodes
                .get(node)
                .and_then(|n| n.op_as::<tract_onnx::tract_core::ops::konst::Const>());
            if let (Some(c), 0) = (konst, slot) {
                for &k in ks {
                    see(k, c.val())?;
                }
            }
        }
        Ok(())
    }
}

fn datum_type(dt: DataType) -> Result<DatumType> {
    use DatumType as T;
    Ok(match dt {
        DataType::FLOAT => T::F32,
        DataType::DOUBLE => T::F64,
        DataType::INT64 => T::I64,
        DataType::INT32 => T::I32,
        DataType::INT8 => T::I8,
        DataType::UINT8 => T::U8,
        DataType::BOOL => T::Bool,
        DataType::FLOAT16 => T::F16,
        other => {
            return Err(PareError::Runtime(format!(
                "inputs of type {other} are not supported by tract"
            )));
        }
    })
}

fn feeds(inputs: &[HostTensor]) -> Result<TVec<TValue>> {
    inputs
        .iter()
        .map(|t| to_tract(t).map(TValue::from))
        .collect()
}

fn to_tract(t: &HostTensor) -> Result<Tensor> {
    let r = match &t.data {
        HostData::F32(v) => Tensor::from_shape(&t.shape, v),
        HostData::F64(v) => Tensor::from_shape(&t.shape, v),
        HostData::I64(v) => Tensor::from_shape(&t.shape, v),
        HostData::I32(v) => Tensor::from_shape(&t.shape, v),
        HostData::I8(v) => Tensor::from_shape(&t.shape, v),
        HostData::U8(v) => Tensor::from_shape(&t.shape, v),
        HostData::Bool(v) => Tensor::from_shape(&t.shape, v),
    };
    r.map_err(|e| terr(format!("input: {e:#}")))
}

fn from_tract(t: &Tensor) -> Result<HostTensor> {
    use DatumType as T;
    let shape = t.shape().to_vec();
    let e = |e: TractError| terr(format!("output: {e:#}"));
    macro_rules! take {
        ($ty:ty) => {
            t.to_plain_array_view::<$ty>()
                .map_err(e)?
                .iter()
                .copied()
                .collect()
        };
    }
    let data = match t.datum_type() {
        T::F32 => HostData::F32(take!(f32)),
        T::F64 => HostData::F64(take!(f64)),
        T::I64 => HostData::I64(take!(i64)),
        T::I32 => HostData::I32(take!(i32)),
        T::I8 => HostData::I8(take!(i8)),
        T::U8 => HostData::U8(take!(u8)),
        T::Bool => HostData::Bool(take!(bool)),
        _ => {
            let c = t.cast_to::<f32>().map_err(e)?;
            HostData::F32(
                c.to_plain_array_view::<f32>()
                    .map_err(e)?
                    .iter()
                    .copied()
                    .collect(),
            )
        }
    };
    Ok(HostTensor { shape, data })
}
