//! Streaming calibration: run the float model on each sample, fold every observed tensor into
//! its running statistics right away, drop the activations. One pass by default (growing
//! power-of-two histograms, exact to merge); `two_pass` first collects ranges, then fills
//! fixed-range histograms (TensorRT's scheme), at twice the run time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::calibrators::{CalibConfig, asymmetric_params, estimated_sqnr_db, symmetric_params};
use super::data::SampleSet;
use super::histogram::{HistMode, TensorStats};
use super::placement::Plan;
use super::qparams::QParams;
use crate::error::Result;
use crate::jobs::{JobEvent, Progress};
use crate::model::proto::ModelProto;
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{HostData, HostTensor};

/// Calibration settings.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    pub config: CalibConfig,
    pub two_pass: bool,
    pub threads: usize,
    /// Symmetric INT8 (TensorRT) or asymmetric UINT8 activations (onnxruntime).
    pub symmetric: bool,
    /// Engine that runs the float model over the samples.
    pub engine: crate::runtime::EngineKind,
    /// Samples to calibrate on (indices into the set); empty means all of them.
    pub fit: Vec<usize>,
    /// Model outputs (besides the calibrated tensors) whose element-wise mean over the samples
    /// calibration also returns: bias correction's probes ride along this way.
    pub means: Vec<String>,
}

/// What calibration found.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub stats: HashMap<String, TensorStats>,
    pub params: HashMap<String, QParams>,
    pub seconds: f64,
    pub samples: usize,
    /// Bytes of calibrator state (bounded: independent of the number of samples).
    pub state_bytes: usize,
    /// Per `CalibrateOptions::means` output, its element-wise mean over the samples.
    pub means: HashMap<String, Vec<f64>>,
}

/// Running element-wise sums of the `means` outputs.
pub(super) struct MeanSums(Vec<Mutex<(Vec<f64>, usize)>>);

impl MeanSums {
    pub(super) fn new(n: usize) -> Self {
        MeanSums((0..n).map(|_| Mutex::new((Vec::new(), 0))).collect())
    }
    pub(super) fn add(&self, k: usize, v: &[f32]) {
        if let Some(Ok(mut s)) = self.0.get(k).map(|m| m.lock()) {
            if s.0.len() != v.len() {
                if s.1 > 0 {
                    return; // a shape change: keep the first shape's mean
                }
                s.0 = vec![0.0; v.len()];
            }
            for (a, &x) in s.0.iter_mut().zip(v) {
                *a += x as f64;
            }
            s.1 += 1;
        }
    }
    pub(super) fn finish(self, names: &[String]) -> HashMap<String, Vec<f64>> {
        names
            .iter()
            .zip(self.0)
            .filter_map(|(n, m)| {
                let (sum, count) = m.into_inner().ok()?;
                (count > 0).then(|| (n.clone(), sum.iter().map(|s| s / count as f64).collect()))
            })
            .collect()
    }
}

/// Quantization parameters of one tensor.
pub fn params_for(stats: &TensorStats, opts: &CalibrateOptions) -> QParams {
    if opts.symmetric {
        symmetric_params(stats, &opts.config)
    } else {
        asymmetric_params(stats, &opts.config)
    }
}

fn f32_values(t: &HostTensor) -> Option<std::borrow::Cow<'_, [f32]>> {
    match &t.data {
        HostData::F32(v) => Some(std::borrow::Cow::Borrowed(v)),
        HostData::F64(v) => Some(std::borrow::Cow::Owned(
            v.iter().map(|&x| x as f32).collect(),
        )),
        _ => None,
    }
}

/// Calibrates the plan's tensors on `set`. Emits `JobEvent::Layer` estimates (label
/// `"estimate"`: the SQNR of each layer's quantized input from the statistics so far) a few
/// times while it runs.
pub fn calibrate(
    model: &ModelProto,
    plan: &Plan,
    set: &SampleSet,
    opts: &CalibrateOptions,
    progress: &dyn Progress,
) -> Result<Calibration> {
    let start = Instant::now();
    let tensors: Vec<String> = plan.calib_tensors().into_iter().collect();
    let graph_inputs: BTreeSet<&str> = set.inputs.iter().map(|i| i.name.as_str()).collect();
    // Graph inputs are observed straight from the sample; the rest become model outputs.
    let exposed: Vec<String> = tensors
        .iter()
        .filter(|t| !graph_inputs.contains(t.as_str()))
        .cloned()
        .collect();
    let watched: Vec<String> = exposed.iter().chain(&opts.means).cloned().collect();
    let runners =
        RunnerCache::watching(model.clone(), watched, "calibration").on(opts.engine, opts.threads);
    let slot: HashMap<&str, usize> = tensors
        .iter()
        .enumerate()
        .map(|(k, t)| (t.as_str(), k))
        .collect();
    let input_slots: Vec<(usize, usize)> = set
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(j, i)| slot.get(i.name.as_str()).map(|&k| (j, k)))
        .collect();
    let exposed_slots: Vec<usize> = exposed.iter().map(|t| slot[t.as_str()]).collect();
    let indices: Vec<usize> = if opts.fit.is_empty() {
        (0..set.len()).collect()
    } else {
        opts.fit.clone()
    };
    let n_samples = indices.len();
    let sums = MeanSums::new(opts.means.len());
    let needs_hist = opts.config.method.needs_histogram();
    let passes = if opts.two_pass && needs_hist { 2 } else { 1 };
    progress.phase("calibrating", Some((n_samples * passes) as u64));

    let run_pass = |mode: HistMode,
                    modes: Option<&Vec<HistMode>>,
                    pass: usize,
                    live: bool|
     -> Result<Vec<TensorStats>> {
        let shared: Vec<Mutex<TensorStats>> = (0..tensors.len())
            .map(|k| Mutex::new(TensorStats::new(modes.map_or(mode, |m| m[k]))))
            .collect();
        let done = AtomicUsize::new(0);
        let checkpoint = (n_samples / 4).max(1);
        let observe = |k: usize, v: &[f32]| {
            let mut scratch = TensorStats::new(modes.map_or(mode, |m| m[k]));
            scratch.observe(v);
            if let Ok(mut s) = shared[k].lock() {
                s.merge(&scratch);
            }
        };
        for_each_sample(
            &runners,
            set,
            &indices,
            opts.threads,
            progress,
            (pass * n_samples) as u64,
            |sample, runner| {
                for &(j, k) in &input_slots {
                    if let Some(v) = f32_values(&sample.tensors[j]) {
                        observe(k, &v);
                    }
                }
                if !exposed_slots.is_empty() || !opts.means.is_empty() {
                    runner.run_f32(&sample.tensors, &mut |o, v| {
                        match exposed_slots.get(o) {
                            Some(&k) => observe(k, v),
                            None if pass == 0 => sums.add(o - exposed_slots.len(), v),
                            None => {}
                        }
                        Ok(())
                    })?;
                }
                let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                if live && (d.is_multiple_of(checkpoint) || d == n_samples) {
                    emit_estimates(plan, &tensors, &shared, opts, progress);
                }
                Ok(())
            },
        )?;
        Ok(shared
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect())
    };

    let stats: Vec<TensorStats> = if passes == 2 {
        let ranges = run_pass(HistMode::None, None, 0, false)?;
        let modes: Vec<HistMode> = ranges
            .iter()
            .map(|s| HistMode::Fixed {
                pos_range: (s.max.max(0.0) as f64).max(f64::MIN_POSITIVE),
                neg_range: ((-s.min).max(0.0) as f64).max(f64::MIN_POSITIVE),
            })
            .collect();
        run_pass(HistMode::None, Some(&modes), 1, true)?
    } else {
        // Histograms even for minmax: they cost little and drive the live estimates.
        run_pass(HistMode::Streaming, None, 0, true)?
    };
    let state_bytes = stats.iter().map(TensorStats::state_bytes).sum();
    let mut params = HashMap::new();
    let mut by_name = HashMap::new();
    for (t, s) in tensors.iter().zip(stats) {
        params.insert(t.clone(), params_for(&s, opts));
        by_name.insert(t.clone(), s);
    }
    for (t, src) in &plan.shared {
        if let Some(p) = params.get(src).copied() {
            params.insert(t.clone(), p);
        }
    }
    Ok(Calibration {
        stats: by_name,
        params,
        seconds: start.elapsed().as_secs_f64(),
        samples: n_samples,
        state_bytes,
        means: sums.finish(&opts.means),
    })
}

/// Per layer, the estimated SQNR of its quantized input(s) given the statistics so far.
fn emit_estimates(
    plan: &Plan,
    tensors: &[String],
    shared: &[Mutex<TensorStats>],
    opts: &CalibrateOptions,
    progress: &dyn Progress,
) {
    let mut cache: HashMap<&str, Option<f64>> = HashMap::new();
    for c in &plan.candidates {
        let mut worst: Option<f64> = None;
        for (_, t) in &c.acts {
            let key = plan.shared.get(t).unwrap_or(t);
            let est = *cache.entry(key.as_str()).or_insert_with(|| {
                let k = tensors.iter().position(|x| x == key)?;
                let s = shared[k].lock().ok()?.clone();
                if s.count == 0 {
                    return None;
                }
                let q = params_for(&s, opts);
                estimated_sqnr_db(&s, &q)
            });
            if let Some(e) = est {
                worst = Some(worst.map_or(e, |w: f64| w.min(e)));
            }
        }
        if let Some(v) = worst {
            progress.event(JobEvent::Layer {
                node: c.name.clone(),
                value: v,
                label: crate::jobs::LayerLabel::Estimate,
            });
        }
    }
}
