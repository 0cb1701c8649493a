//! Per-tensor calibrator choice, judged by the error a range causes downstream.
//!
//! One calibrator for every activation is a compromise: the tensor's own MSE weighs every
//! channel alike, but the consuming convolution does not. On trained MobileNetV2 the first
//! ReLU6 output has channels whose values never exceed 0.03 next to channels reaching 4; the
//! depthwise filters reading the small channels are large (BatchNorm folding), so rounding
//! those channels to zero costs the logits far more than clipping the few large values. The
//! MSE calibrator chose 3.1 there; the range the downstream error prefers was 1.3.
//!
//! For each calibrated tensor, candidate ranges (minmax, percentiles, MSE, and a grid of
//! fractions of the observed range; entropy is left out: its search is the costliest, a
//! thousand KL evaluations per tensor, and it won 1 to 3 of MobileNetV2's 64 tensors) are scored on a few calibration samples by the squared
//! quantization error of each element weighted by its channel's downstream gain: for a tensor
//! read by convolutions, `g_c = Σ_{o,k} W[o,c,k]²` summed over the readers, which is the
//! expected output error of the convolution per unit of independent input error in channel
//! `c`. Tensors without a convolution reader weigh every element alike (their own MSE). The
//! candidate with the smallest weighted error wins.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::calibrate::{CalibrateOptions, Calibration, params_for};
use super::calibrators::{CalibConfig, Method};
use super::placement::{Kind, Plan, const_tensor};
use super::qparams::QParams;
use crate::data::SampleSet;
use crate::error::Result;
use crate::jobs::Progress;
use crate::model::proto::ModelProto;
use crate::model::tensor::to_f32;
use crate::runtime::HostData;
use crate::runtime::pool::{RunnerCache, for_each_sample};

/// Calibration samples the candidates are scored on, by activation format (measured, not
/// derived). Asymmetric UINT8 (onnxruntime): 16, where 4 chose clipped ranges that other
/// samples needed (trained MobileNetV2 +0.7 / +1.3 dB logit SQNR on two held-out crop sets,
/// open_nsfw +3.1 dB). Symmetric INT8 (TensorRT): 4; with 16, MobileNetV2's late residual
/// streams got 1.25–1.6× wider ranges and lost 1.3 dB end to end, likely because the linear
/// downstream gain does not see the next ReLU6 saturate on the outliers it keeps, although
/// open_nsfw gained 2.5 dB.
pub fn choice_samples(symmetric: bool) -> usize {
    if symmetric { 4 } else { 16 }
}

/// Calibration samples activation equalization measures per-channel ranges on.
pub const EQUALIZE_SAMPLES: usize = 8;

/// Elements per tensor and sample the candidates are scored on (a strided subset beyond).
const MAX_SCORED: usize = 16384;

/// Fractions of the observed range tried besides the named calibrators.
const FRACTIONS: [f64; 11] = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// What the choice did (for the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChoiceReport {
    /// Samples the candidates were scored on.
    pub samples: usize,
    pub seconds: f64,
    /// Per winning candidate (`"mse"`, `"percentile-99.99"`, `"range-0.3"`, …), how many tensors.
    pub chosen: Vec<(String, usize)>,
    /// Mean over the tensors of the downstream-weighted error of the default calibrator over the
    /// chosen one's, in dB (0 when the default won everywhere).
    pub mean_gain_db: f64,
}

/// One candidate range of a tensor.
#[derive(Clone, Debug)]
struct Candidate {
    label: String,
    params: QParams,
}

/// The candidates for one tensor: the named calibrators and fractions of the observed range.
fn candidates(stats: &super::histogram::TensorStats, opts: &CalibrateOptions) -> Vec<Candidate> {
    let named = [
        ("minmax", Method::Minmax, 0.0),
        ("percentile-99.99", Method::Percentile, 99.99),
        ("percentile-99.999", Method::Percentile, 99.999),
        ("mse", Method::Mse, 0.0),
    ];
    let entropy = [("entropy", Method::Entropy, 0.0)];
    let asked = if opts.config.method == Method::Entropy {
        &entropy[..]
    } else {
        &[]
    };
    let mut v: Vec<Candidate> = named
        .iter()
        .chain(asked)
        .map(|&(label, method, percentile)| {
            let mut o = opts.clone();
            o.config = CalibConfig { method, percentile };
            Candidate {
                label: label.to_string(),
                params: params_for(stats, &o),
            }
        })
        .collect();
    let (lo, hi) = (stats.min.min(0.0) as f64, stats.max.max(0.0) as f64);
    for f in FRACTIONS {
        let params = if opts.symmetric {
            QParams::symmetric(stats.amax() * f)
        } else {
            QParams::asymmetric_u8(lo * f, hi * f)
        };
        v.push(Candidate {
            label: format!("range-{f}"),
            params,
        });
    }
    v
}

/// Per input channel of `tensor`, the summed squared weights of the convolutions reading it
/// (their downstream gain); `None` when no quantized convolution with a constant weight reads it.
fn channel_gains(model: &ModelProto, plan: &Plan, tensor: &str) -> Option<Vec<f64>> {
    let g = model.graph.as_ref()?;
    let mut gains: Option<Vec<f64>> = None;
    for c in &plan.candidates {
        if c.kind != Kind::Weighted
            || c.op != "Conv"
            || !c.acts.iter().any(|(s, t)| *s == 0 && t == tensor)
        {
            continue;
        }
        let w = c.weight.as_ref()?;
        let t = const_tensor(g, &w.source)?;
        let vals = to_f32(t).ok()?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims.len() < 2 || dims[0] == 0 || dims[1] == 0 {
            return None;
        }
        let group = g.node.get(c.node)?.attr_i("group").unwrap_or(1).max(1) as usize;
        let (o_n, c_per) = (dims[0], dims[1]);
        let k: usize = dims[2..].iter().product::<usize>().max(1);
        let per_group_out = (o_n / group).max(1);
        let cin = c_per * group;
        let acc = gains.get_or_insert_with(|| vec![0.0; cin]);
        if acc.len() != cin {
            return None;
        }
        for o in 0..o_n {
            let gi = (o / per_group_out).min(group - 1);
            for j in 0..c_per {
                let base = (o * c_per + j) * k;
                let s: f64 = vals[base..base + k]
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum();
                acc[gi * c_per + j] += s;
            }
        }
    }
    gains
}

/// Weighted squared error of each candidate on `v` (layout `[N, C, spatial…]` when `gains`
/// has `C` entries and the sizes agree; otherwise unweighted).
fn score(v: &[f32], batch: usize, gains: Option<&[f64]>, cands: &[Candidate], out: &mut [f64]) {
    let c = gains.map_or(1, <[f64]>::len);
    let hw = if c > 0 && batch > 0 && v.len().is_multiple_of(batch * c) {
        v.len() / (batch * c)
    } else {
        0
    };
    let fakes: Vec<(f32, f32, f32, f32, f32)> = cands
        .iter()
        .map(|k| {
            let (lo, hi) = k.params.qtype.range();
            let s = k.params.scale;
            (1.0 / s, s, k.params.zero_point as f32, lo as f32, hi as f32)
        })
        .collect();
    // A strided subset of at most MAX_SCORED elements: the comparison between candidates
    // needs the error's distribution, not every element.
    let stride = (v.len() / MAX_SCORED).max(1);
    let weight = |i: usize| match gains {
        Some(g) if hw > 0 => g[(i / hw) % c],
        _ => 1.0,
    };
    let mut sums = vec![0.0f64; cands.len()];
    for i in (0..v.len()).step_by(stride) {
        let x = v[i];
        if x == 0.0 {
            continue;
        }
        let w = weight(i);
        for (sum, &(inv, s, zp, lo, hi)) in sums.iter_mut().zip(&fakes) {
            let q = ((x * inv).round() + zp).clamp(lo, hi);
            let d = (q - zp) * s - x;
            *sum += w * (d * d) as f64;
        }
    }
    for (o, s) in out.iter_mut().zip(sums) {
        *o += s;
    }
}

/// Replaces each calibrated tensor's range by the candidate with the smallest downstream error
/// on the first [`choice_samples`] fitting samples, and returns what it chose.
pub fn choose(
    model: &ModelProto,
    plan: &Plan,
    set: &SampleSet,
    opts: &CalibrateOptions,
    cal: &mut Calibration,
    progress: &dyn Progress,
) -> Result<ChoiceReport> {
    let start = std::time::Instant::now();
    let mut tensors: Vec<String> = cal.stats.keys().cloned().collect();
    tensors.sort();
    let cands: Vec<Vec<Candidate>> = tensors
        .iter()
        .map(|t| candidates(&cal.stats[t], opts))
        .collect();
    let gains: Vec<Option<Vec<f64>>> = tensors
        .iter()
        .map(|t| channel_gains(model, plan, t))
        .collect();
    let fit: Vec<usize> = if opts.fit.is_empty() {
        (0..set.len()).collect()
    } else {
        opts.fit.clone()
    };
    let indices: Vec<usize> = fit
        .into_iter()
        .take(choice_samples(opts.symmetric))
        .collect();
    let inputs: HashMap<&str, usize> = set
        .inputs
        .iter()
        .enumerate()
        .map(|(j, i)| (i.name.as_str(), j))
        .collect();
    let exposed: Vec<usize> = (0..tensors.len())
        .filter(|&k| !inputs.contains_key(tensors[k].as_str()))
        .collect();
    let errors: Vec<Mutex<Vec<f64>>> = cands
        .iter()
        .map(|c| Mutex::new(vec![0.0; c.len()]))
        .collect();
    let add = |k: usize, v: &[f32], batch: usize| {
        let mut local = vec![0.0; cands[k].len()];
        score(v, batch, gains[k].as_deref(), &cands[k], &mut local);
        if let Ok(mut e) = errors[k].lock() {
            e.iter_mut().zip(local).for_each(|(a, b)| *a += b);
        }
    };
    let runners = RunnerCache::watching(
        model.clone(),
        exposed.iter().map(|&k| tensors[k].clone()).collect(),
        "calibrator choice",
    )
    .on(opts.engine, opts.threads);
    progress.phase("choosing calibrators", Some(indices.len() as u64));
    for_each_sample(
        &runners,
        set,
        &indices,
        opts.threads,
        progress,
        0,
        |sample, runner| {
            let batch = sample
                .tensors
                .first()
                .and_then(|t| t.shape.first().copied())
                .unwrap_or(1);
            for (k, t) in tensors.iter().enumerate() {
                if let Some(&j) = inputs.get(t.as_str())
                    && let HostData::F32(v) = &sample.tensors[j].data
                {
                    add(k, v, batch);
                }
            }
            runner.run_f32(&sample.tensors, &mut |o, v| {
                if let Some(&k) = exposed.get(o) {
                    add(k, v, batch);
                }
                Ok(())
            })
        },
    )?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut gain_sum = 0.0;
    let default_label = match opts.config.method {
        Method::Minmax => "minmax",
        Method::Percentile => "percentile-99.99",
        Method::Entropy => "entropy",
        Method::Mse => "mse",
    };
    for (k, t) in tensors.iter().enumerate() {
        let e = errors[k].lock().map(|e| e.clone()).unwrap_or_default();
        let Some((best, &be)) = e
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
        else {
            continue;
        };
        let def = cands[k].iter().position(|c| c.label == default_label);
        // Keep the configured calibrator unless another is strictly better.
        let (pick, pe) = match def.map(|d| (d, e[d])) {
            Some((d, de)) if de <= be => (d, de),
            _ => (best, be),
        };
        if let Some(de) = def.map(|d| e[d])
            && pe > 0.0
            && de > 0.0
        {
            gain_sum += 10.0 * (de / pe).log10();
        }
        *counts.entry(cands[k][pick].label.clone()).or_default() += 1;
        cal.params.insert(t.clone(), cands[k][pick].params);
    }
    for (t, src) in &plan.shared {
        if let Some(p) = cal.params.get(src).copied() {
            cal.params.insert(t.clone(), p);
        }
    }
    let mut chosen: Vec<(String, usize)> = counts.into_iter().collect();
    chosen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(ChoiceReport {
        samples: indices.len(),
        seconds: start.elapsed().as_secs_f64(),
        chosen,
        mean_gain_db: gain_sum / tensors.len().max(1) as f64,
    })
}

/// Per channel (axis 1, `tensors` gives the channel count) of each tensor, the largest |value| over samples `indices` of
/// the float model: what activation equalization evens out.
pub fn channel_amax(
    model: &ModelProto,
    tensors: &[(String, usize)],
    set: &SampleSet,
    indices: &[usize],
    engine: crate::runtime::EngineKind,
    threads: usize,
    progress: &dyn Progress,
) -> Result<HashMap<String, Vec<f32>>> {
    let channels: Vec<usize> = tensors.iter().map(|t| t.1).collect();
    let acc: Vec<Mutex<Vec<f32>>> = channels.iter().map(|&c| Mutex::new(vec![0.0; c])).collect();
    let runners = RunnerCache::watching(
        model.clone(),
        tensors.iter().map(|t| t.0.clone()).collect(),
        "activation ranges",
    )
    .on(engine, threads);
    progress.phase("measuring channel ranges", Some(indices.len() as u64));
    for_each_sample(
        &runners,
        set,
        indices,
        threads,
        progress,
        0,
        |sample, runner| {
            let batch = sample
                .tensors
                .first()
                .and_then(|t| t.shape.first().copied())
                .unwrap_or(1);
            runner.run_f32(&sample.tensors, &mut |o, v| {
                let Some(c) = channels.get(o).copied().filter(|&c| c > 0) else {
                    return Ok(());
                };
                if batch == 0 || !v.len().is_multiple_of(batch * c) {
                    return Ok(());
                }
                let hw = (v.len() / (batch * c)).max(1);
                let mut local = vec![0.0f32; c];
                for (i, chunk) in v.chunks(hw).enumerate() {
                    let m = chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    local[i % c] = local[i % c].max(m);
                }
                if let Ok(mut a) = acc[o].lock() {
                    a.iter_mut().zip(local).for_each(|(a, l)| *a = a.max(l));
                }
                Ok(())
            })
        },
    )?;
    Ok(tensors
        .iter()
        .zip(acc)
        .filter_map(|(t, a)| {
            let a = a.into_inner().ok()?;
            (!a.is_empty()).then(|| (t.0.clone(), a))
        })
        .collect())
}
