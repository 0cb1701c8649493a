//! Weight reconstruction on quantized inputs (on by default; `--no-reconstruct` turns it off),
//! after AdaQuant / BRECQ's layer-wise reconstruction and GPTQ's error feedback.
//!
//! Why: on trained MobileNetV2 the weights alone quantize well (INT8 weights, float
//! activations: 0.938 top-1 agreement); what costs agreement is activation rounding noise that
//! some layers amplify — a 1×1 projection whose small outputs are differences of large inputs
//! turns 28 dB at its input into 16.7 dB at its output. With per-tensor activation scales
//! (forced by TensorRT) the noise itself cannot be removed, but each layer can be refitted to
//! the input the quantized model really gives it: for one layer with float weights `W`, bias
//! `b`, float input patches `x` (float model) and `x̃` (the quantized model's input, upstream
//! layers already quantized and refitted, fake-quantized as its Q/DQ pair does), the fit is
//!
//! `min_{W', b'} Σ_p ‖W'x̃_p + b' − (W x_p + b)‖² + λ‖W' − W‖²`
//!
//! — least squares over the sampled positions, one system per group. Input noise adds its
//! covariance to `x̃x̃ᵀ`, so the fit shrinks exactly the weights that amplify noise, and it
//! absorbs the error upstream layers left (which also covers bias correction's mean shift).
//! The fitted weights are then rounded to INT8 with GPTQ's error feedback (Frantar et al.,
//! 2022): column by column, each rounding error is spread over the columns not yet rounded
//! through the inverse Hessian's Cholesky factor, and the bias is re-solved for the rounded
//! weights.
//!
//! Sequential, one layer at a time in graph order: each layer's statistics come from a run of
//! the float model and of the QDQ model with every earlier layer already refitted. Refitting
//! layers together (one pass for all, or for a block of them) lets each one correct the same
//! upstream error: on MobileNetV2 one pass for all took top-1 agreement to 0.000, 18 blocks
//! to 0.164. Bounded: [`ReconstructOptions::positions`] sampled positions
//! per layer, layers with more than [`ReconstructOptions::max_k`] inputs per output channel
//! keep their weights.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use faer::prelude::Solve;
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::Serialize;

use super::adaround::{Geometry, layer_rows, rows, weight_index};
use super::placement::{Candidate, Plan, WeightRef};
use super::qparams::{QuantizedWeight, WeightMethod, round_half_even, weight_scale};
use crate::data::SampleSet;
use crate::error::{PareError, Result};
use crate::jobs::{NoProgress, Progress};
use crate::model::Analysis;
use crate::model::graph::{PrefixInputs, prefix};
use crate::model::proto::ModelProto;
use crate::model::tensor::{DataType, to_f32};
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{EngineKind, HostTensor};

/// Bounds and knobs of the reconstruction.
#[derive(Clone, Debug)]
pub struct ReconstructOptions {
    /// Calibration samples whose activations are used (the first fitting ones).
    pub samples: usize,
    /// Output positions sampled per layer (over all samples). A layer is refitted only with
    /// [`REFIT_ROWS_PER_UNKNOWN`] rows per unknown, so this bounds the widest layer refitted:
    /// at 2048 every layer over 254 inputs per output was only GPTQ-rounded (a ResNet's 3×3
    /// convs over 32 channels or more, MobileNetV2's 384–960-wide projections under
    /// `--reconstruct`); 8192 refits layers up to 1023 inputs, and the narrow layers' fits
    /// generalise better with the extra rows. With the first 12 layers, over 2048: trained
    /// MobileNetV2 +0.1–0.3 dB (trt) and ±0 (ort), open_nsfw −2 dB (trt) and +4 dB (ort),
    /// CenterFace's heatmap +0.9 dB on one photo and ±0 on its mirror;
    /// the larger `G̃ᵀG̃` products cost ResNet-18 about 10 s more.
    pub positions: usize,
    /// Ridge toward the float weights, relative to the mean diagonal of `x̃x̃ᵀ`.
    pub ridge: f64,
    /// Layers with more inputs per output channel keep their weights.
    pub max_k: usize,
    pub threads: usize,
    pub engine: EngineKind,
    pub weight_method: WeightMethod,
    pub per_channel: bool,
    /// Only the first this many layers in graph order (`None`: all). The early layers are
    /// where activation noise enters and is amplified most, and their fits are the cheap
    /// ones: the runs that feed them compute only the graph before them.
    pub first_layers: Option<usize>,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        ReconstructOptions {
            samples: 8,
            positions: 8192,
            ridge: 1e-3,
            max_k: 2304,
            threads: 2,
            engine: EngineKind::Tract,
            weight_method: WeightMethod::default(),
            per_channel: true,
            first_layers: None,
        }
    }
}

/// Sampled positions per unknown (weights and bias of one output channel) below which a layer
/// keeps its float weights (GPTQ rounding and the bias re-solve only): with fewer, the
/// least-squares fit follows the calibration samples (MobileNetV2's classifier saw 16 rows
/// for 1281 unknowns and its weights grew 76-fold).
const REFIT_ROWS_PER_UNKNOWN: usize = 8;

/// One layer's fit, measured on its sampled calibration positions (quantized inputs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerFit {
    pub node: String,
    pub k: usize,
    pub positions: usize,
    /// Output SQNR against the float layer on float inputs, with the weights it had before.
    pub before_db: Option<f64>,
    /// The same with the refitted, GPTQ-rounded weights and re-solved bias.
    pub after_db: Option<f64>,
}

/// What the reconstruction did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReconstructReport {
    pub layers: Vec<LayerFit>,
    /// Layers left as they were, and why.
    pub skipped: Vec<String>,
    pub samples: usize,
    pub seconds: f64,
}

impl ReconstructReport {
    /// One summary line: layers, samples, the median layer-output SQNR gain.
    pub fn render_text(&self, s: &mut String) {
        use std::fmt::Write as _;
        let mut gains: Vec<f64> = self
            .layers
            .iter()
            .filter_map(|l| Some(l.after_db? - l.before_db?))
            .collect();
        gains.sort_by(f64::total_cmp);
        let median = gains.get(gains.len() / 2).copied().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "reconstruct {} layers refitted on quantized inputs ({} left, {} samples): layer output SQNR {median:+.1} dB median, {:.1} s",
            self.layers.len(),
            self.skipped.len(),
            self.samples,
            self.seconds
        );
    }
}

/// One layer being refitted and its statistics per group.
struct Fit {
    node: String,
    /// The layer's first output (names the node in the QDQ model).
    output: String,
    /// Its float input tensor.
    input: String,

    weight: String,
    geo: Geometry,
    m: usize,
    k: usize,
    groups: usize,
    /// Float weights as `[m][k]`.
    w: Vec<f32>,
    /// Float bias (zeros without one); `has_bias` says whether the layer has one to refit.
    bias: Vec<f32>,
    has_bias: bool,
    /// Per group: `G̃ᵀG̃` with `G̃ = [x̃ 1]` (`(k+1)²`) and `G̃ᵀY` (`(k+1)×m/groups`).
    h: Vec<Mat<f64>>,
    r: Vec<Mat<f64>>,
    /// Per output channel: Σ y².
    yty: Vec<f64>,
    positions: usize,
}

/// The layers reconstruction can serve, in graph order; says in `skipped` why others cannot.
fn fits(
    a: &Analysis,
    plan: &Plan,
    weights: &HashMap<String, QuantizedWeight>,
    opts: &ReconstructOptions,
    skipped: &mut Vec<String>,
) -> Result<Vec<Fit>> {
    let g = a.graph();
    let refuse = |c: &Candidate, wr: &WeightRef, _: &QuantizedWeight| {
        (wr.slot != 1 || wr.axis != 0 && c.op == "Conv")
            .then(|| "weight not per output channel".to_string())
    };
    let layers = layer_rows(a, plan, weights, opts.max_k, &refuse, skipped)?;
    let mut out = Vec::new();
    for l in layers {
        let (m, k, groups) = (l.m, l.k, l.groups);
        if l.qw.scales.len() != m {
            skipped.push(format!("{}: weight not per output channel", l.cand.name));
            continue;
        }
        let bias = l
            .node
            .input
            .get(2)
            .and_then(|b| g.initializer.iter().find(|i| i.name() == b))
            .filter(|b| DataType(b.data_type()) == DataType::FLOAT)
            .map(to_f32)
            .transpose()?
            .filter(|b| b.len() == m);
        let (Some(input), Some(output)) = (l.node.input.first(), l.node.output.first()) else {
            continue;
        };
        let mg = m / groups;
        out.push(Fit {
            node: l.cand.name.clone(),
            output: output.clone(),
            input: input.clone(),
            weight: l.weight.tensor.clone(),
            geo: l.geo,
            m,
            k,
            groups,
            w: l.w,
            has_bias: bias.is_some(),
            bias: bias.unwrap_or_else(|| vec![0.0; m]),
            h: (0..groups).map(|_| Mat::zeros(k + 1, k + 1)).collect(),
            r: (0..groups).map(|_| Mat::zeros(k + 1, mg)).collect(),
            yty: vec![0.0; m],
            positions: 0,
        });
    }
    Ok(out)
}

/// Refits the weights of every layer `plan` quantizes that it can serve (Conv 2-D, Gemm,
/// MatMul with a constant 2-D weight) on the quantized model's own inputs, in place in
/// `weights` (values, scales and `corrected_bias`). `build` writes the QDQ model for a set of
/// weights; `indices` are the fitting samples.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct(
    a: &Analysis,
    plan: &Plan,
    weights: &mut HashMap<String, QuantizedWeight>,
    set: &SampleSet,
    indices: &[usize],
    opts: &ReconstructOptions,
    build: &dyn Fn(&HashMap<String, QuantizedWeight>) -> Result<ModelProto>,
    progress: &dyn Progress,
) -> Result<ReconstructReport> {
    let start = Instant::now();
    let mut report = ReconstructReport::default();
    let mut all = fits(a, plan, weights, opts, &mut report.skipped)?;
    if let Some(n) = opts.first_layers {
        all.truncate(n);
    }
    let indices: Vec<usize> = indices.iter().copied().take(opts.samples.max(1)).collect();
    report.samples = indices.len();
    progress.phase("reconstructing weights", Some(all.len() as u64));
    let per_sample = opts.positions.div_ceil(indices.len().max(1));
    for (done, mut f) in all.into_iter().enumerate() {
        progress.check_cancel()?;
        // Refitting layers together would let each one correct the same upstream error.
        let qdq = build(weights)?;
        collect(
            a,
            &qdq,
            std::slice::from_mut(&mut f),
            set,
            &indices,
            per_sample,
            opts,
        )?;
        let node = f.node.clone();
        let (positions, k) = (f.positions, f.k);
        match solve(f, weights, opts) {
            Some(l) => report.layers.push(l),
            None => report.skipped.push(format!(
                "{node}: {positions} positions for {k} inputs per channel"
            )),
        }
        progress.step(done as u64 + 1, &node);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs the float and the QDQ model over `indices` and folds each layer's sampled float and
/// quantized input patches into its statistics.
fn collect(
    a: &Analysis,
    qdq: &ModelProto,
    stage: &mut [Fit],
    set: &SampleSet,
    indices: &[usize],
    per_sample: usize,
    opts: &ReconstructOptions,
) -> Result<()> {
    let float_in: Vec<String> = stage.iter().map(|f| f.input.clone()).collect();
    let qg = qdq
        .graph
        .as_ref()
        .ok_or_else(|| PareError::InvalidModel("QDQ model has no graph".into()))?;
    let quant_in: Vec<String> = stage
        .iter()
        .map(|f| {
            qg.node
                .iter()
                .find(|n| n.output.first() == Some(&f.output))
                .and_then(|n| n.input.first().cloned())
                .ok_or_else(|| {
                    PareError::Runtime(format!("reconstruction: '{}' not in the QDQ model", f.node))
                })
        })
        .collect::<Result<_>>()?;
    let threads = opts.threads.max(1);
    // Prefixes, not the whole models: one pair of sessions per layer, and onnxruntime builds
    // every node of a session (MobileNetV2's first 12 layers: 9.0 -> 4.1 s).
    let floats = RunnerCache::new(
        prefix(&a.model.proto, &float_in, PrefixInputs::All)?,
        "reconstruction (float)",
    )
    .on(opts.engine, threads);
    let quants = RunnerCache::new(
        prefix(qdq, &quant_in, PrefixInputs::All)?,
        "reconstruction (QDQ)",
    )
    .on(opts.engine, threads);
    let state = Mutex::new(stage);
    for_each_sample(&floats, set, indices, 1, &NoProgress, 0, |s, r| {
        let xf = r.run(&s.tensors)?;
        let xq = quants.get(set, s.index)?.run(&s.tensors)?;
        let mut st = state
            .lock()
            .map_err(|_| PareError::Runtime("reconstruction state poisoned".into()))?;
        let per = st.len().div_ceil(threads).max(1);
        std::thread::scope(|sc| {
            let hs: Vec<_> = st
                .chunks_mut(per)
                .enumerate()
                .map(|(ci, chunk)| {
                    let (xf, xq) = (&xf, &xq);
                    sc.spawn(move || -> Result<()> {
                        for (i, f) in chunk.iter_mut().enumerate() {
                            let t = ci * per + i;
                            let mut rng = crate::rng::Rng::new(0x7ec0 ^ s.index as u64);
                            f.add(&xf[t], &xq[t], per_sample, &mut rng)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| PareError::Runtime("reconstruction worker panicked".into()))?
            })
        })
    })
}

impl Fit {
    /// Folds `take` sampled positions of one sample's float input `xf` and quantized input
    /// `xq` into the statistics.
    fn add(
        &mut self,
        xf: &HostTensor,
        xq: &HostTensor,
        budget: usize,
        rng: &mut crate::rng::Rng,
    ) -> Result<()> {
        let bad = || {
            PareError::Runtime(format!(
                "reconstruction: input '{}' of '{}' has shape {:?} / {:?}",
                self.input, self.node, xf.shape, xq.shape
            ))
        };
        if xq.shape != xf.shape {
            return Err(bad());
        }
        let mut all = self.geo.positions(self.k, &xf.shape).ok_or_else(bad)?;
        let area = match self.geo {
            Geometry::Conv { kernel, .. } => kernel[0] * kernel[1],
            Geometry::Dense { .. } => 1,
        };
        if matches!(self.geo, Geometry::Conv { .. }) && xf.shape[1] != self.groups * (self.k / area)
        {
            return Err(bad());
        }
        let take = budget.min(all.len());
        for i in 0..take {
            let j = i + rng.below((all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        let vf: Vec<f32> = xf.to_f64().into_iter().map(|v| v as f32).collect();
        let vq: Vec<f32> = xq.to_f64().into_iter().map(|v| v as f32).collect();
        for gi in 0..self.groups {
            self.add_group(&vf, &vq, &xf.shape, gi, &all[..take]);
        }
        self.positions += take;
        Ok(())
    }

    /// `H += G̃ᵀG̃`, `R += G̃ᵀY` with `Y = X Wᵀ + b` for group `gi` at `positions`.
    fn add_group(
        &mut self,
        vf: &[f32],
        vq: &[f32],
        dims: &[usize],
        gi: usize,
        positions: &[[usize; 3]],
    ) {
        let (k, mg, n) = (self.k, self.m / self.groups, positions.len());
        let (mut pf, mut pq) = (vec![0.0f32; k], vec![0.0f32; k]);
        let mut g = Mat::<f64>::zeros(n, k + 1);
        let mut y = Mat::<f64>::zeros(n, mg);
        for (r, &p) in positions.iter().enumerate() {
            self.geo.patch(k, self.groups, vf, dims, gi, p, &mut pf);
            self.geo.patch(k, self.groups, vq, dims, gi, p, &mut pq);
            for (j, &v) in pq.iter().enumerate() {
                g[(r, j)] = v as f64;
            }
            g[(r, k)] = 1.0;
            for i in 0..mg {
                let o = gi * mg + i;
                let row = &self.w[o * k..(o + 1) * k];
                let v: f64 = row
                    .iter()
                    .zip(&pf)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    + self.bias[o] as f64;
                y[(r, i)] = v;
                self.yty[o] += v * v;
            }
        }
        let par = Par::Seq;
        faer::linalg::matmul::matmul(
            &mut self.h[gi],
            Accum::Add,
            g.transpose(),
            g.as_ref(),
            1.0,
            par,
        );
        faer::linalg::matmul::matmul(
            &mut self.r[gi],
            Accum::Add,
            g.transpose(),
            y.as_ref(),
            1.0,
            par,
        );
    }
}

/// `θᵀHθ − 2θᵀr + yᵀy` for one output channel: its summed squared output error.
fn sq_err(h: MatRef<'_, f64>, r: &[f64], theta: &[f64], yty: f64) -> f64 {
    let d = theta.len();
    let mut quad = 0.0;
    for i in 0..d {
        let mut hi = 0.0;
        for j in 0..d {
            hi += h[(i, j)] * theta[j];
        }
        quad += theta[i] * hi;
    }
    let lin: f64 = theta.iter().zip(r).map(|(t, v)| t * v).sum();
    (quad - 2.0 * lin + yty).max(0.0)
}

/// Refits one layer, rounds it with GPTQ, re-solves its bias and writes it into its quantized
/// weight when that lowers the layer's error on the sampled positions.
fn solve(
    f: Fit,
    weights: &mut HashMap<String, QuantizedWeight>,
    opts: &ReconstructOptions,
) -> Option<LayerFit> {
    let qw = weights.get_mut(&f.weight)?;
    if f.positions < 2 * (f.k + 1) {
        return None;
    }
    let (k, mg) = (f.k, f.m / f.groups);
    let d = if f.has_bias { k + 1 } else { k };
    let deq = qw.dequantized();
    let (_, _, wq0) = rows(&deq, &qw.dims, &f.geo);
    let old_bias = qw.corrected_bias.clone().unwrap_or_else(|| f.bias.clone());
    let (mut before, mut after, mut signal) = (0.0, 0.0, 0.0);
    let mut new_q: Vec<(usize, Vec<i32>, f32, f32)> = Vec::with_capacity(f.m);
    for gi in 0..f.groups {
        let h = f.h[gi].as_ref().submatrix(0, 0, d, d);
        let r = f.r[gi].as_ref().submatrix(0, 0, d, mg);
        let mut w0 = Mat::<f64>::zeros(d, mg);
        for i in 0..mg {
            let o = gi * mg + i;
            for j in 0..k {
                w0[(j, i)] = f.w[o * k + j] as f64;
            }
            if f.has_bias {
                w0[(k, i)] = f.bias[o] as f64;
            }
        }
        // Too few positions for the system: the fit would follow the samples' noise. Keep the
        // float weights then and let GPTQ and the bias re-solve do what they can.
        let theta = if f.positions >= REFIT_ROWS_PER_UNKNOWN * d {
            crate::prune::recover::ridge_solve(h, r, Some(w0.as_ref()), opts.ridge, f.has_bias)?
        } else {
            w0
        };
        let hk = h.submatrix(0, 0, k, k);
        let cols: Vec<Vec<f64>> = (0..mg)
            .map(|i| (0..k).map(|j| theta[(j, i)]).collect())
            .collect();
        let (q, scales) = gptq(hk, &cols, opts)?;
        for i in 0..mg {
            let o = gi * mg + i;
            let rc: Vec<f64> = (0..d).map(|j| r[(j, i)]).collect();
            let mut old: Vec<f64> = wq0[o * k..(o + 1) * k].iter().map(|&v| v as f64).collect();
            let mut new: Vec<f64> = q[i].iter().map(|&v| v as f64 * scales[i] as f64).collect();
            let mut b = f.bias[o];
            if f.has_bias {
                old.push(old_bias[o] as f64);
                // Least-squares bias for the rounded weights: (r_b − H_b,w·ŵ) / H_bb.
                let hw: f64 = (0..k).map(|j| h[(k, j)] * new[j]).sum();
                b = ((rc[k] - hw) / h[(k, k)].max(1e-30)) as f32;
                new.push(b as f64);
            }
            before += sq_err(h, &rc, &old, f.yty[o]);
            after += sq_err(h, &rc, &new, f.yty[o]);
            signal += f.yty[o];
            new_q.push((o, q[i].clone(), scales[i], b));
        }
    }
    let before_db = super::diag::db(signal, before);
    let after_db = super::diag::db(signal, after);
    if after < before {
        let mut bias = old_bias;
        for (o, q, s, b) in new_q {
            qw.scales[o] = s;
            for (j, &v) in q.iter().enumerate() {
                qw.values[weight_index(&f.geo, f.m, k, o, j)] = v as i8;
            }
            bias[o] = b;
        }
        if f.has_bias {
            qw.corrected_bias = Some(bias);
        }
    }
    Some(LayerFit {
        node: f.node,
        k,
        positions: f.positions,
        before_db,
        after_db: if after < before { after_db } else { before_db },
    })
}

/// GPTQ rounding of the rows `cols` (one per output channel, `k` weights each) sharing the
/// input Hessian `h` (`k×k`): per-channel scales from the refitted weights, then column by
/// column rounding with the error spread over later columns through the upper Cholesky factor
/// of `H⁻¹` (damped by 1% of its mean diagonal). Returns the INT8 values and scales.
fn gptq(
    h: MatRef<'_, f64>,
    cols: &[Vec<f64>],
    opts: &ReconstructOptions,
) -> Option<(Vec<Vec<i32>>, Vec<f32>)> {
    let k = h.nrows();
    let mut hd = h.to_owned();
    let mean = (0..k).map(|i| hd[(i, i)]).sum::<f64>() / k.max(1) as f64;
    for i in 0..k {
        if hd[(i, i)] <= 0.0 {
            hd[(i, i)] = 1.0;
        }
        hd[(i, i)] += 0.01 * mean.max(1e-12);
    }
    let llt = hd.as_ref().llt(Side::Lower).ok()?;
    let hinv: Mat<f64> = llt.solve(Mat::<f64>::identity(k, k));
    // H⁻¹ = L Lᵀ; GPTQ wants the upper factor U = Lᵀ with H⁻¹ = UᵀU.
    let l = hinv.as_ref().llt(Side::Lower).ok()?;
    let lf = l.L();
    let all: Vec<f32> = cols.iter().flatten().map(|&v| v as f32).collect();
    let scales: Vec<f32> = if opts.per_channel {
        cols.iter()
            .map(|c| {
                weight_scale(
                    &c.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    opts.weight_method,
                )
            })
            .collect()
    } else {
        vec![weight_scale(&all, opts.weight_method); cols.len()]
    };
    let mut q = vec![vec![0i32; k]; cols.len()];
    for (ci, c) in cols.iter().enumerate() {
        let mut w = c.clone();
        let s = scales[ci] as f64;
        for i in 0..k {
            let v = round_half_even((w[i] / s) as f32).clamp(-127.0, 127.0);
            let v = if v.is_nan() { 0.0 } else { v };
            q[ci][i] = v as i32;
            let e = (w[i] - v as f64 * s) / lf[(i, i)];
            for j in i + 1..k {
                w[j] -= e * lf[(j, i)];
            }
        }
    }
    Some((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of strongly correlated inputs: each column is a shared signal plus a little noise.
    fn correlated(n: usize, k: usize) -> Mat<f64> {
        let mut rng = crate::rng::Rng::new(5);
        let mut x = Mat::<f64>::zeros(n, k + 1);
        for r in 0..n {
            let shared = rng.range(-1.0, 1.0) as f64;
            for j in 0..k {
                x[(r, j)] = shared + 0.05 * rng.range(-1.0, 1.0) as f64;
            }
            x[(r, k)] = 1.0;
        }
        x
    }

    #[test]
    fn gptq_rounding_beats_nearest_on_correlated_inputs() {
        let (n, k) = (400, 8);
        let x = correlated(n, k);
        let g = x.as_ref().submatrix(0, 0, n, k);
        let h = g.transpose() * g;
        // Scale 1/127 (minmax on the first weight); the others sit 0.45 of a step above a grid
        // point, so nearest rounding errs the same way on every (correlated) input.
        let w: Vec<f64> = (0..k)
            .map(|j| {
                if j == 0 {
                    1.0
                } else {
                    (3.0 * j as f64 + 0.45) / 127.0
                }
            })
            .collect();
        let opts = ReconstructOptions {
            weight_method: WeightMethod::Minmax,
            ..Default::default()
        };
        let (q, s) = gptq(h.as_ref(), std::slice::from_ref(&w), &opts).expect("gptq");
        let s = s[0] as f64;
        let loss = |wq: &[f64]| {
            let d: Vec<f64> = wq.iter().zip(&w).map(|(a, b)| a - b).collect();
            let mut l = 0.0;
            for i in 0..k {
                for j in 0..k {
                    l += d[i] * h[(i, j)] * d[j];
                }
            }
            l
        };
        let gq: Vec<f64> = q[0].iter().map(|&v| v as f64 * s).collect();
        let nearest: Vec<f64> = w
            .iter()
            .map(|&v| round_half_even((v / s) as f32).clamp(-127.0, 127.0) as f64 * s)
            .collect();
        assert!(q[0].iter().all(|v| (-127..=127).contains(v)));
        assert!(
            loss(&gq) < 0.5 * loss(&nearest),
            "gptq {} nearest {}",
            loss(&gq),
            loss(&nearest)
        );
    }

    #[test]
    fn squared_error_from_the_statistics_matches_the_direct_sum() {
        let (n, k) = (50, 3);
        let g = correlated(n, k);
        let theta = [0.5, -0.25, 0.125, 0.3];
        let target = [0.4, -0.2, 0.2, 0.1];
        let y: Vec<f64> = (0..n)
            .map(|r| (0..=k).map(|j| g[(r, j)] * target[j]).sum::<f64>() + 0.01 * r as f64)
            .collect();
        let h = g.transpose() * g.as_ref();
        let r: Vec<f64> = (0..=k)
            .map(|j| (0..n).map(|p| g[(p, j)] * y[p]).sum())
            .collect();
        let yty: f64 = y.iter().map(|v| v * v).sum();
        let direct: f64 = (0..n)
            .map(|p| {
                let yh: f64 = (0..=k).map(|j| g[(p, j)] * theta[j]).sum();
                (yh - y[p]).powi(2)
            })
            .sum();
        let from_stats = sq_err(h.as_ref(), &r, &theta, yty);
        assert!(
            (direct - from_stats).abs() < 1e-9 * (1.0 + direct),
            "{direct} {from_stats}"
        );
    }
}
