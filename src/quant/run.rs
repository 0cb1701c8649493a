//! Running a model over calibration samples on both cores: samples are handed out one at a
//! time to worker threads that share one prepared tract plan per input shape. Each worker
//! holds one sample and its outputs, never more, so memory stays at the model plus a few
//! activations whatever the number of samples.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::HashSet;

use tract_onnx::prelude::{
    Datum, Framework, InferenceFact, InferenceModelExt, IntoRunnable, OutletId, TValue, TVec,
    Tensor, TractError, TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_core::plan::SimpleState;

use super::data::{Sample, SampleSet};
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::DataType;
use crate::model::proto::ModelProto;
use crate::runtime::{HostData, HostTensor, InputSpec, with_outputs};

/// A tract plan that hands tensors over as plain `f32` slices, without the copy into host
/// tensors the generic engine makes.
///
/// In *watching* mode (calibration) the tensors to observe are not model outputs at run time:
/// they are marked as outputs only while tract optimizes (so they survive fusion as tensors of
/// their own), then the plan is built with as few outputs as possible and each watched tensor
/// is seen from inside the evaluation loop the moment its node has computed it. tract then
/// frees it as soon as its consumers are done, so a worker holds a few live activations, not
/// all of them.
pub struct Runner {
    kind: RunnerKind,
}

enum RunnerKind {
    Tract {
        plan: Arc<TypedRunnableModel>,
        /// `(node, slot)` of the optimized model → index of the watched tensor.
        watch: HashMap<(usize, usize), usize>,
    },
    /// onnxruntime (feature `ort`): watched tensors are plain outputs, handed over in order
    /// once the run is done.
    #[cfg(feature = "ort")]
    Ort(crate::runtime::ort::OrtRunner),
}

fn terr(e: impl std::fmt::Display) -> PareError {
    PareError::Runtime(format!("tract: {e}"))
}

fn optimized(model: &ModelProto, inputs: &[InputSpec]) -> Result<TypedModel> {
    // As `TractEngine::new`: intermediate value infos and output types are dropped so tract
    // infers them itself (they can contradict edited graphs).
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
        .map_err(|e| terr(format!("{e:#}")))?;
    drop(bytes);
    for (i, spec) in inputs.iter().enumerate() {
        let dt = match spec.dtype {
            DataType::FLOAT => f32::datum_type(),
            DataType::DOUBLE => f64::datum_type(),
            DataType::INT64 => i64::datum_type(),
            DataType::INT32 => i32::datum_type(),
            DataType::INT8 => i8::datum_type(),
            DataType::UINT8 => u8::datum_type(),
            DataType::BOOL => bool::datum_type(),
            other => {
                return Err(PareError::Runtime(format!(
                    "inputs of type {other} are not supported by tract"
                )));
            }
        };
        im = im
            .with_input_fact(i, InferenceFact::dt_shape(dt, spec.shape.clone()))
            .map_err(|e| terr(format!("{e:#}")))?;
    }
    im.into_optimized().map_err(|e| terr(format!("{e:#}")))
}

impl Runner {
    /// A plan computing the model's outputs.
    pub fn new(model: &ModelProto, inputs: &[InputSpec]) -> Result<Self> {
        // Plain depth-first order from the outputs: the diagnostic models list their outputs
        // layer by layer, so this order finishes each layer's comparisons before moving on and
        // frees its tensors; tract's memory-optimising order keeps them all (5x the RAM there).
        let o = tract_onnx::tract_core::runtime::RunOptions {
            skip_order_opt_ram: true,
            ..Default::default()
        };
        let plan = optimized(model, inputs)?
            .into_runnable_with_options(&o)
            .map_err(|e| terr(format!("{e:#}")))?;
        Ok(Runner {
            kind: RunnerKind::Tract {
                plan,
                watch: HashMap::new(),
            },
        })
    }

    /// A plan that shows `tensors` (names of the ONNX graph) to [`Runner::run`] as they are
    /// computed.
    pub fn watching(model: &ModelProto, tensors: &[String], inputs: &[InputSpec]) -> Result<Self> {
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
        let watch = watched
            .iter()
            .enumerate()
            .map(|(k, o)| ((o.node, o.slot), k))
            .collect();
        let plan = typed.into_runnable().map_err(|e| terr(format!("{e:#}")))?;
        Ok(Runner {
            kind: RunnerKind::Tract { plan, watch },
        })
    }

    /// Watching on onnxruntime: every watched tensor is a model output. onnxruntime hands
    /// over all of a sample's outputs at once, so by default one session with `threads`
    /// intra-op threads runs one sample at a time (DeepLabV3 at 512x512: 0.63 GB peak, 15 s
    /// for 64 samples); `PARE_ORT_SESSIONS=N` runs N single-threaded sessions side by side
    /// instead (2: 13 s, 0.70–0.76 GB).
    #[cfg(feature = "ort")]
    pub fn ort_watching(model: &ModelProto, tensors: &[String], threads: usize) -> Result<Self> {
        use crate::runtime::ort::OrtRunner;
        let m = with_outputs(model, tensors);
        let sessions = std::env::var("PARE_ORT_SESSIONS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0);
        let r = match sessions {
            Some(n) => OrtRunner::new(&m, n, 1)?,
            None => OrtRunner::new(&m, 1, threads)?,
        };
        if r.output_names() != tensors {
            return Err(PareError::Runtime(
                "onnxruntime reordered the watched outputs".into(),
            ));
        }
        Ok(Runner {
            kind: RunnerKind::Ort(r),
        })
    }

    /// The model's outputs on onnxruntime: one session with `threads` intra-op threads
    /// (these models are large, their outputs small: one sample's intermediates at a time).
    #[cfg(feature = "ort")]
    pub fn ort_new(model: &ModelProto, threads: usize) -> Result<Self> {
        Ok(Runner {
            kind: RunnerKind::Ort(crate::runtime::ort::OrtRunner::new(model, 1, threads)?),
        })
    }

    /// Prepares the model's outputs on `backend`; onnxruntime falls back to tract when it
    /// cannot take the model.
    pub fn prepare(
        model: &ModelProto,
        inputs: &[InputSpec],
        backend: crate::runtime::Backend,
        sessions: usize,
    ) -> Result<Self> {
        #[cfg(feature = "ort")]
        if backend == crate::runtime::Backend::Ort
            && let Ok(r) = Runner::ort_new(model, sessions)
        {
            return Ok(r);
        }
        let _ = (backend, sessions);
        Runner::new(model, inputs)
    }

    /// Which engine runs this plan.
    pub fn backend(&self) -> &'static str {
        match &self.kind {
            RunnerKind::Tract { .. } => "tract",
            #[cfg(feature = "ort")]
            RunnerKind::Ort(_) => "onnxruntime",
        }
    }

    /// Runs the model. Watching: `f(k, values)` sees watched tensor `k` once, when computed.
    /// Otherwise: `f(k, values)` sees output `k`, in order. Values are cast to f32 if needed.
    pub fn run(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let (plan, watch) = match &self.kind {
            RunnerKind::Tract { plan, watch } => (plan, watch),
            #[cfg(feature = "ort")]
            RunnerKind::Ort(r) => return r.run(inputs, f),
        };
        let tv: TVec<TValue> = inputs
            .iter()
            .map(|t| to_tract(t).map(TValue::from))
            .collect::<Result<_>>()?;
        let mut see = |k: usize, v: &Tensor| -> Result<()> {
            let c = v.cast_to::<f32>().map_err(terr)?;
            let view = c.try_as_plain_ram().map_err(terr)?;
            f(k, view.as_slice::<f32>().map_err(terr)?)
        };
        if watch.is_empty() {
            let outs = plan.run(tv).map_err(|e| terr(format!("{e:#}")))?;
            for (k, v) in outs.into_iter().enumerate() {
                see(k, &v)?;
            }
            return Ok(());
        }
        let mut state = SimpleState::new(plan).map_err(terr)?;
        let mut failure: Option<PareError> = None;
        let r = state.run_plan_with_eval(
            tv,
            |ctx, st, node, ins| -> std::result::Result<TVec<TValue>, TractError> {
                let outs = tract_onnx::tract_core::plan::eval(ctx, st, node, ins)?;
                for (slot, v) in outs.iter().enumerate() {
                    if let Some(&k) = watch.get(&(node.id, slot))
                        && let Err(e) = see(k, v)
                    {
                        failure = Some(e);
                        return Err(TractError::msg("stopped"));
                    }
                }
                Ok(outs)
            },
        );
        if let Some(e) = failure {
            return Err(e);
        }
        r.map_err(|e| terr(format!("{e:#}")))?;
        Ok(())
    }
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

/// Prepared engines of one model, one per distinct set of input shapes (dynamic inputs).
pub struct Engines {
    model: ModelProto,
    /// Tensors to watch (calibration) instead of outputs to return.
    watch: Vec<String>,
    engines: Mutex<HashMap<Vec<Vec<usize>>, Arc<Runner>>>,
    /// What the engines are for, in errors ("calibration model", …).
    what: String,
    /// Engine for watching plans (calibration); tract unless onnxruntime was chosen.
    backend: crate::runtime::Backend,
    /// Worker threads the plans serve (onnxruntime: one session each).
    threads: usize,
}

impl Engines {
    pub fn new(model: ModelProto, what: &str) -> Self {
        Engines {
            model,
            watch: Vec::new(),
            engines: Mutex::new(HashMap::new()),
            what: what.to_string(),
            backend: crate::runtime::Backend::Tract,
            threads: 1,
        }
    }

    /// Engines that watch `tensors` of `model` (see [`Runner::watching`]).
    pub fn watching(model: ModelProto, tensors: Vec<String>, what: &str) -> Self {
        Engines {
            model,
            watch: tensors,
            engines: Mutex::new(HashMap::new()),
            what: what.to_string(),
            backend: crate::runtime::Backend::Tract,
            threads: 1,
        }
    }

    /// Runs the watching plans on `backend` for `threads` workers.
    pub fn on(mut self, backend: crate::runtime::Backend, threads: usize) -> Self {
        self.backend = backend;
        self.threads = threads.max(1);
        self
    }

    /// The engine the plans run on.
    pub fn backend(&self) -> crate::runtime::Backend {
        self.backend
    }

    /// Adds an engine prepared elsewhere for `shapes`.
    pub fn insert(&self, shapes: Vec<Vec<usize>>, engine: Runner) {
        if let Ok(mut m) = self.engines.lock() {
            m.insert(shapes, Arc::new(engine));
        }
    }

    /// The engine for `set`'s sample `k` shapes, prepared on first use.
    pub fn get(&self, set: &SampleSet, k: usize) -> Result<Arc<Runner>> {
        let shapes = set.shapes[k].clone();
        let mut map = self
            .engines
            .lock()
            .map_err(|_| PareError::Runtime("engine cache poisoned".into()))?;
        if let Some(e) = map.get(&shapes) {
            return Ok(e.clone());
        }
        let specs: Vec<InputSpec> = set
            .inputs
            .iter()
            .zip(&shapes)
            .map(|(d, s)| InputSpec {
                name: d.name.clone(),
                dtype: d.dtype,
                shape: s.clone(),
            })
            .collect();
        let e = match self.backend {
            #[cfg(feature = "ort")]
            crate::runtime::Backend::Ort if !self.watch.is_empty() => {
                Runner::ort_watching(&self.model, &self.watch, self.threads)
            }
            _ if self.watch.is_empty() => {
                Runner::prepare(&self.model, &specs, self.backend, self.threads)
            }
            _ => Runner::watching(&self.model, &self.watch, &specs),
        };
        let e = e.map_err(|e| {
            PareError::Runtime(format!(
                "{}: {} cannot prepare the model for inputs {}: {e}",
                self.what,
                self.backend.name(),
                specs
                    .iter()
                    .map(|s| format!("{}{:?}", s.name, s.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let e = Arc::new(e);
        // Dynamic inputs with many sizes: keep a few plans, not one per sample.
        if map.len() >= 4 {
            map.clear();
        }
        map.insert(shapes, e.clone());
        Ok(e)
    }
}

/// Runs `f` on samples `indices` with `threads` workers; `f` gets each sample and the
/// runner prepared for its shapes (samples come in any order). Stops at the first error or on cancel.
pub fn for_each_sample<F>(
    engines: &Engines,
    set: &SampleSet,
    indices: &[usize],
    threads: usize,
    progress: &dyn Progress,
    done_before: u64,
    f: F,
) -> Result<()>
where
    F: Fn(&Sample, &Runner) -> Result<()> + Sync,
{
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<PareError>> = Mutex::new(None);
    let threads = threads.clamp(1, indices.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if progress.cancelled() {
                        stop.store(true, Ordering::SeqCst);
                        let mut e = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        e.get_or_insert(PareError::Cancelled);
                        return;
                    }
                    let j = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&k) = indices.get(j) else { return };
                    let r = (|| -> Result<()> {
                        let sample = set.load(k)?;
                        let engine = engines.get(set, k)?;
                        f(&sample, &engine).map_err(|e| match e {
                            PareError::Runtime(m) => PareError::Runtime(format!(
                                "{}: sample {}: {m}",
                                engines.what,
                                set.label(k)
                            )),
                            other => other,
                        })
                    })();
                    match r {
                        Ok(()) => {
                            let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                            progress.step(done_before + d as u64, &set.label(k));
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
