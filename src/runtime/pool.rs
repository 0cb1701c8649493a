//! Running a model over samples on all cores: samples are handed out one at a time to worker
//! threads that share one prepared [`Runner`] per input shape. Each worker holds one sample
//! and its outputs, never more, so memory stays at the model plus a few activations whatever
//! the number of samples.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{EngineKind, InputSpec, Runner, RunnerOptions};
use crate::data::{Sample, SampleSet};
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::proto::ModelProto;

/// Runners of one model prepared on first use, one per distinct set of input shapes (dynamic
/// inputs).
pub struct RunnerCache {
    model: ModelProto,
    /// Tensors to watch (calibration) instead of outputs to return.
    watch: Vec<String>,
    runners: Mutex<HashMap<Vec<Vec<usize>>, Arc<Runner>>>,
    /// What the runners are for, in errors ("calibration model", …).
    what: String,
    engine: EngineKind,
    /// Worker threads the runners serve.
    threads: usize,
}

impl RunnerCache {
    /// Runners that return the model's outputs (evaluated depth-first on tract, see
    /// [`RunnerOptions::depth_first`]).
    pub fn new(model: ModelProto, what: &str) -> Self {
        Self::watching(model, Vec::new(), what)
    }

    /// Runners that watch `tensors` of `model` (see [`Runner::watching`]).
    pub fn watching(model: ModelProto, tensors: Vec<String>, what: &str) -> Self {
        RunnerCache {
            model,
            watch: tensors,
            runners: Mutex::new(HashMap::new()),
            what: what.to_string(),
            engine: EngineKind::Tract,
            threads: 1,
        }
    }

    /// Runs on `engine` for `threads` workers.
    pub fn on(mut self, engine: EngineKind, threads: usize) -> Self {
        self.engine = engine;
        self.threads = threads.max(1);
        self
    }

    /// Adds a runner prepared elsewhere for `shapes`.
    pub fn insert(&self, shapes: Vec<Vec<usize>>, runner: Runner) {
        if let Ok(mut m) = self.runners.lock() {
            m.insert(shapes, Arc::new(runner));
        }
    }

    /// Options for the workers: onnxruntime runs one sample at a time in one session on all
    /// `threads` (its outputs come all at once at the end of a run, so one session bounds
    /// memory: DeepLabV3 at 512x512, 0.63 GB peak); `PARE_ORT_SESSIONS=N` runs N
    /// single-threaded sessions side by side instead.
    fn options(&self) -> RunnerOptions {
        let sessions = std::env::var("PARE_ORT_SESSIONS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0);
        RunnerOptions {
            threads: if sessions.is_some() { 1 } else { self.threads },
            sessions: sessions.unwrap_or(1),
            depth_first: true,
        }
    }

    /// The runner for `set`'s sample `k` shapes, prepared on first use.
    pub fn get(&self, set: &SampleSet, k: usize) -> Result<Arc<Runner>> {
        let shapes = set.shapes[k].clone();
        let mut map = self
            .runners
            .lock()
            .map_err(|_| PareError::Runtime("runner cache poisoned".into()))?;
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
        let opts = self.options();
        let r = if self.watch.is_empty() {
            Runner::or_tract(self.engine, &self.model, &specs, &opts)
        } else {
            Runner::watching(self.engine, &self.model, &self.watch, &specs, &opts)
        };
        let r = r.map_err(|e| {
            PareError::Runtime(format!(
                "{}: {} cannot prepare the model for inputs {}: {e}",
                self.what,
                self.engine,
                specs
                    .iter()
                    .map(|s| format!("{}{:?}", s.name, s.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let r = Arc::new(r);
        // Dynamic inputs with many sizes: keep a few runners, not one per sample.
        if map.len() >= 4 {
            map.clear();
        }
        map.insert(shapes, r.clone());
        Ok(r)
    }
}

/// Runs `f` on samples `indices` with `threads` workers; `f` gets each sample and the
/// runner prepared for its shapes (samples come in any order). Stops at the first error or on cancel.
pub fn for_each_sample<F>(
    runners: &RunnerCache,
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
                        let runner = runners.get(set, k)?;
                        f(&sample, &runner).map_err(|e| match e {
                            PareError::Runtime(m) => PareError::Runtime(format!(
                                "{}: sample {}: {m}",
                                runners.what,
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
