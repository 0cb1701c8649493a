//! The one way pare runs a model: a [`Runner`] is a model prepared on one engine for fixed
//! input shapes. Callers choose the engine ([`EngineKind`]) and read back which one runs, so
//! every report can say it.

use super::tract::TractPlan;
use super::{EngineKind, HostTensor, InputSpec, with_outputs};
use crate::error::{PareError, Result};
use crate::model::proto::ModelProto;

/// How to prepare a [`Runner`] beyond the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerOptions {
    /// onnxruntime: intra-op threads per session.
    pub threads: usize,
    /// onnxruntime: sessions side by side (one per worker thread calling `run` at once).
    pub sessions: usize,
    /// tract: evaluate depth-first from the outputs (see [`TractPlan::new`]).
    pub depth_first: bool,
}

impl Default for RunnerOptions {
    /// One session on all cores; tract's own evaluation order.
    fn default() -> Self {
        RunnerOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sessions: 1,
            depth_first: false,
        }
    }
}

enum Plan {
    Tract(TractPlan),
    #[cfg(feature = "ort")]
    Ort(super::ort::OrtPlan),
}

/// A model prepared on one engine for fixed input shapes.
pub struct Runner {
    plan: Plan,
}

impl Runner {
    /// The model's outputs on `engine`, with default options.
    pub fn new(engine: EngineKind, model: &ModelProto, inputs: &[InputSpec]) -> Result<Self> {
        Self::with_options(engine, model, inputs, &RunnerOptions::default())
    }

    /// The model's outputs on tract (verification, which reasons about what tract refuses).
    pub fn tract(model: &ModelProto, inputs: &[InputSpec]) -> Result<Self> {
        Self::new(EngineKind::Tract, model, inputs)
    }

    /// The model's outputs on `engine`. onnxruntime takes the shapes from the inputs it is
    /// given at run time.
    pub fn with_options(
        engine: EngineKind,
        model: &ModelProto,
        inputs: &[InputSpec],
        opts: &RunnerOptions,
    ) -> Result<Self> {
        let plan = match engine {
            EngineKind::Tract => Plan::Tract(TractPlan::new(model, inputs, opts.depth_first)?),
            EngineKind::OnnxRuntime => ort_plan(&pinned(model, inputs), opts)?,
        };
        Ok(Runner { plan })
    }

    /// [`Runner::with_options`], on tract when onnxruntime cannot take the model (an op it
    /// lacks): the caller reads [`Runner::engine`] to report what ran.
    pub fn or_tract(
        engine: EngineKind,
        model: &ModelProto,
        inputs: &[InputSpec],
        opts: &RunnerOptions,
    ) -> Result<Self> {
        match Self::with_options(engine, model, inputs, opts) {
            Err(_) if engine != EngineKind::Tract => {
                Self::with_options(EngineKind::Tract, model, inputs, opts)
            }
            r => r,
        }
    }

    /// A runner whose runs hand over `tensors` (any tensors of the graph) instead of the
    /// outputs. tract shows each to [`Runner::run_f32`] the moment it is computed and frees
    /// it after its consumers; onnxruntime returns them all at the end of the run.
    pub fn watching(
        engine: EngineKind,
        model: &ModelProto,
        tensors: &[String],
        inputs: &[InputSpec],
        opts: &RunnerOptions,
    ) -> Result<Self> {
        let plan = match engine {
            EngineKind::Tract => Plan::Tract(TractPlan::watching(model, tensors, inputs)?),
            EngineKind::OnnxRuntime => {
                let plan = ort_plan(&pinned(&with_outputs(model, tensors), inputs), opts)?;
                let runner = Runner { plan };
                if runner.output_names() != tensors {
                    return Err(PareError::Runtime(
                        "onnxruntime reordered the watched outputs".into(),
                    ));
                }
                return Ok(runner);
            }
        };
        Ok(Runner { plan })
    }

    /// The engine that runs this model.
    pub fn engine(&self) -> EngineKind {
        match &self.plan {
            Plan::Tract(_) => EngineKind::Tract,
            #[cfg(feature = "ort")]
            Plan::Ort(_) => EngineKind::OnnxRuntime,
        }
    }

    /// Names of the tensors a run hands over, in order.
    pub fn output_names(&self) -> &[String] {
        match &self.plan {
            Plan::Tract(p) => p.output_names(),
            #[cfg(feature = "ort")]
            Plan::Ort(p) => p.output_names(),
        }
    }

    /// Runs the model on inputs given in the model's input order; the outputs (or watched
    /// tensors) with their own types and shapes.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        match &self.plan {
            Plan::Tract(p) => p.run(inputs),
            #[cfg(feature = "ort")]
            Plan::Ort(p) => p.run(inputs),
        }
    }

    /// Runs the model; `f(k, values)` sees output (or watched tensor) `k` once, cast to f32,
    /// without the copy into a [`HostTensor`] (calibration folds activations straight into
    /// its statistics).
    pub fn run_f32(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        match &self.plan {
            Plan::Tract(p) => p.run_f32(inputs, f),
            #[cfg(feature = "ort")]
            Plan::Ort(p) => p.run_f32(inputs, f),
        }
    }
}

/// The dims a value info declares, to edit.
fn dims_mut(
    vi: &mut crate::model::proto::ValueInfoProto,
) -> Option<&mut Vec<crate::model::proto::TensorShapeDimension>> {
    match vi.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(crate::model::proto::TypeValue::TensorType(t)) => t.shape.as_mut().map(|s| &mut s.dim),
        _ => None,
    }
}

/// The model with its graph inputs declared at the sizes it will run at, where a declared size
/// contradicts them (`--input-shape` over a file that declares 10×3×32×32): onnxruntime checks
/// inputs against the declaration, tract takes the given facts. Fixed output sizes, which may
/// follow the input's, are left unknown then.
fn pinned<'a>(model: &'a ModelProto, inputs: &[InputSpec]) -> std::borrow::Cow<'a, ModelProto> {
    use crate::model::proto::{Dimension, TypeValue};
    let contradicts = |vi: &crate::model::proto::ValueInfoProto, shape: &[usize]| {
        let Some(Some(TypeValue::TensorType(t))) = vi.r#type.as_ref().map(|t| t.value.as_ref())
        else {
            return false;
        };
        t.shape.as_ref().is_some_and(|s| {
            s.dim.len() != shape.len()
                || s.dim
                    .iter()
                    .zip(shape)
                    .any(|(d, &n)| matches!(d.value, Some(Dimension::DimValue(v)) if v != n as i64))
        })
    };
    let Some(g) = model.graph.as_ref() else {
        return std::borrow::Cow::Borrowed(model);
    };
    let spec = |name: &str| inputs.iter().find(|s| s.name == name);
    if !g
        .input
        .iter()
        .any(|vi| spec(vi.name()).is_some_and(|s| contradicts(vi, &s.shape)))
    {
        return std::borrow::Cow::Borrowed(model);
    }
    let mut m = model.clone();
    let Some(g) = m.graph.as_mut() else {
        return std::borrow::Cow::Borrowed(model);
    };
    for vi in &mut g.input {
        let Some(s) = inputs.iter().find(|s| s.name == vi.name()) else {
            continue;
        };
        if let Some(dims) = dims_mut(vi) {
            dims.clear();
            dims.extend(
                s.shape
                    .iter()
                    .map(|&n| crate::model::proto::TensorShapeDimension {
                        value: Some(Dimension::DimValue(n as i64)),
                        denotation: None,
                    }),
            );
        }
    }
    for vi in &mut g.output {
        for d in dims_mut(vi).into_iter().flatten() {
            d.value = None;
        }
    }
    std::borrow::Cow::Owned(m)
}

#[cfg(feature = "ort")]
fn ort_plan(model: &ModelProto, opts: &RunnerOptions) -> Result<Plan> {
    Ok(Plan::Ort(super::ort::OrtPlan::new(
        model,
        opts.sessions,
        opts.threads,
    )?))
}

#[cfg(not(feature = "ort"))]
fn ort_plan(_: &ModelProto, _: &RunnerOptions) -> Result<Plan> {
    Err(PareError::Runtime(
        super::ort_available().err().unwrap_or_default(),
    ))
}
