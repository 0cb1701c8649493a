//! Calibrators: from a tensor's statistics to its quantization range.
//!
//! - `minmax`: the largest magnitude seen (onnxruntime MinMax, ModelOpt "max").
//! - `percentile`: the magnitude below which `p`% of the non-zero values lie (default 99.99).
//! - `entropy`: TensorRT's KL-divergence calibration (Migacz, GTC 2017; TensorRT's
//!   `IInt8EntropyCalibrator2`): the threshold whose 128-level quantized distribution is
//!   closest to the reference distribution, outliers folded into the last bin.
//! - `mse`: the threshold minimising the expected squared quantization error (rounding inside
//!   the range plus clipping outside), computed from the histogram.
//!
//! Exact zeros are counted apart: they are exact in every quantizer.

use serde::Serialize;

use super::histogram::{Hist, TensorStats};
use super::qparams::QParams;

/// A calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Minmax,
    Percentile,
    Entropy,
    #[default]
    Mse,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Minmax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
            Method::Mse => "mse",
        }
    }
    /// Whether the method needs histograms (minmax needs only the range).
    pub fn needs_histogram(self) -> bool {
        self != Method::Minmax
    }
}

/// Calibrator settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CalibConfig {
    pub method: Method,
    /// For `percentile`, in percent.
    pub percentile: f64,
}

impl Default for CalibConfig {
    fn default() -> Self {
        CalibConfig {
            method: Method::default(),
            percentile: 99.99,
        }
    }
}

/// Symmetric INT8 parameters for a tensor (TensorRT).
pub fn symmetric_params(stats: &TensorStats, cfg: &CalibConfig) -> QParams {
    let amax = stats.amax();
    let t = match (cfg.method, stats.abs_hist()) {
        (Method::Minmax, _) | (_, None) => amax,
        (m, Some(h)) => threshold(
            &h,
            amax,
            m,
            cfg.percentile,
            if m == Method::Entropy { 128 } else { 127 },
        ),
    };
    QParams::symmetric(t.min(amax).max(0.0))
}

/// Asymmetric UINT8 parameters for a tensor (onnxruntime).
pub fn asymmetric_params(stats: &TensorStats, cfg: &CalibConfig) -> QParams {
    if stats.count == 0 {
        return QParams::asymmetric_u8(0.0, 0.0);
    }
    let (lo, hi) = (stats.min.min(0.0) as f64, stats.max.max(0.0) as f64);
    match (cfg.method, &stats.pos, &stats.neg) {
        (Method::Minmax, _, _) | (_, None, _) | (_, _, None) => QParams::asymmetric_u8(lo, hi),
        (Method::Mse, Some(p), Some(n)) => {
            let (l, h) = mse_asymmetric(p, n, -lo, hi);
            QParams::asymmetric_u8(-l, h)
        }
        (m, Some(p), Some(n)) => {
            // Levels are shared out in proportion to each side's extent.
            let share = |side: f64| {
                ((255.0 * side / (hi - lo).max(f64::MIN_POSITIVE)).round() as usize).max(1)
            };
            let h = if p.total() > 0 {
                threshold(p, hi, m, cfg.percentile, share(hi))
            } else {
                0.0
            };
            let l = if n.total() > 0 {
                threshold(n, -lo, m, cfg.percentile, share(-lo))
            } else {
                0.0
            };
            QParams::asymmetric_u8(-l.min(-lo), h.min(hi))
        }
    }
}

/// The clipping threshold of a magnitude histogram under `method`, for a quantizer with
/// `levels` steps on this side. Never above `amax`.
pub fn threshold(h: &Hist, amax: f64, method: Method, percentile: f64, levels: usize) -> f64 {
    if h.total() == 0 || amax <= 0.0 {
        return amax;
    }
    let t = match method {
        Method::Minmax => amax,
        Method::Percentile => percentile_threshold(h, percentile),
        Method::Entropy => entropy_threshold(h, levels.clamp(1, 128)),
        Method::Mse => mse_threshold(h, amax, levels),
    };
    t.min(amax).max(0.0)
}

/// Index one past the last non-empty bin.
fn used_bins(h: &Hist) -> usize {
    h.counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1)
}

/// The value below which `p`% of the histogram's mass lies (linear inside a bin).
pub fn percentile_threshold(h: &Hist, p: f64) -> f64 {
    let total = h.total() as f64;
    let target = total * (p / 100.0).clamp(0.0, 1.0);
    let mut cum = 0.0;
    for (i, &c) in h.counts.iter().enumerate() {
        let next = cum + c as f64;
        if next >= target && c > 0 {
            let frac = ((target - cum) / c as f64).clamp(0.0, 1.0);
            return (i as f64 + frac) * h.width();
        }
        cum = next;
    }
    used_bins(h) as f64 * h.width()
}

/// TensorRT's entropy calibration: for each candidate cut `i` (in bins), the reference
/// distribution `P` is the histogram up to `i` with everything beyond folded into bin `i-1`;
/// the candidate `Q` merges those `i` bins into `levels` groups and spreads each group's mass
/// evenly over its non-empty bins. The cut with the smallest KL(P‖Q) wins; the threshold is
/// the cut's upper edge.
pub fn entropy_threshold(h: &Hist, levels: usize) -> f64 {
    let n = used_bins(h);
    if n <= levels {
        return n as f64 * h.width();
    }
    let counts: Vec<f64> = h.counts[..n].iter().map(|&c| c as f64).collect();
    let mut suffix = vec![0.0; n + 1];
    for i in (0..n).rev() {
        suffix[i] = suffix[i + 1] + counts[i];
    }
    // About 1000 candidates whatever the bin count; TensorRT steps one bin at a time over
    // 2048 bins, which this matches for the usual fill of half to all of 4096 bins.
    let stride = ((n - levels) / 1024).max(1);
    let mut best = (f64::INFINITY, n);
    let mut p = vec![0.0f64; n];
    let mut q = vec![0.0f64; n];
    let mut i = levels;
    while i <= n {
        p[..i].copy_from_slice(&counts[..i]);
        p[i - 1] += suffix[i];
        // Quantize counts[..i] into `levels` groups.
        let per = i as f64 / levels as f64;
        for j in 0..levels {
            let start = (j as f64 * per).floor() as usize;
            let end = if j == levels - 1 {
                i
            } else {
                ((j + 1) as f64 * per).floor() as usize
            };
            let end = end.max(start + 1).min(i);
            let mass: f64 = counts[start..end].iter().sum();
            let nonzero = counts[start..end].iter().filter(|&&c| c > 0.0).count();
            let share = if nonzero > 0 {
                mass / nonzero as f64
            } else {
                0.0
            };
            for k in start..end {
                q[k] = if counts[k] > 0.0 { share } else { 0.0 };
            }
        }
        let kl = kl_divergence(&p[..i], &q[..i]);
        if kl < best.0 {
            best = (kl, i);
        }
        i += stride;
    }
    best.1 as f64 * h.width()
}

/// KL(P‖Q) of two unnormalised distributions; bins where `P > 0` but `Q = 0` are smoothed
/// with a tiny epsilon, as TensorRT's implementation does.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    if ps <= 0.0 || qs <= 0.0 {
        return f64::INFINITY;
    }
    let eps = 1e-12;
    let mut kl = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            let pa = a / ps;
            let qb = (b / qs).max(eps);
            kl += pa * (pa / qb).ln();
        }
    }
    kl
}

/// Expected squared error of quantizing the histogram's mass with step `s` and `levels`
/// positive levels (values above `levels * s` clip). Bins narrower than a step use the exact
/// error at the bin centre plus the in-bin spread.
fn side_error(h: &Hist, s: f64, levels: usize) -> f64 {
    let w = h.width();
    let top = levels as f64 * s;
    let spread = w * w / 12.0;
    let mut err = 0.0;
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = (i as f64 + 0.5) * w;
        let e = if x >= top {
            let d = x - top;
            d * d
        } else if s > 0.0 {
            let r = x - s * (x / s).round();
            // A bin wider than a step spreads over many rounding errors: their mean is s²/12.
            if w > s { s * s / 12.0 } else { r * r + spread }
        } else {
            x * x
        };
        err += c as f64 * e;
    }
    err
}

/// The symmetric threshold with the smallest expected squared error.
pub fn mse_threshold(h: &Hist, amax: f64, levels: usize) -> f64 {
    let levels = levels.max(1);
    let hi = (used_bins(h) as f64 * h.width()).min(amax.max(h.width()));
    let err = |t: f64| side_error(h, t / levels as f64, levels);
    // Coarse grid over (0, hi], then refine around the best.
    let coarse = 256;
    let mut best = (err(hi), hi);
    for k in 1..coarse {
        let t = hi * k as f64 / coarse as f64;
        let e = err(t);
        if e < best.0 {
            best = (e, t);
        }
    }
    let step = hi / coarse as f64;
    for k in -32..=32 {
        let t = best.1 + step * k as f64 / 32.0;
        if t > 0.0 && t <= hi {
            let e = err(t);
            if e < best.0 {
                best = (e, t);
            }
        }
    }
    best.1
}

/// Asymmetric (UINT8) MSE search: coordinate descent over the negative and positive
/// thresholds. Returns `(neg, pos)` magnitudes.
pub fn mse_asymmetric(pos: &Hist, neg: &Hist, neg_max: f64, pos_max: f64) -> (f64, f64) {
    let total_err = |l: f64, h: f64| -> f64 {
        let q = QParams::asymmetric_u8(-l, h);
        let s = q.scale as f64;
        let up = (255 - q.zero_point).max(0) as usize;
        let down = q.zero_point.max(0) as usize;
        let mut e = 0.0;
        if pos.total() > 0 {
            e += side_error(pos, s, up);
        }
        if neg.total() > 0 {
            e += side_error(neg, s, down);
        }
        e
    };
    let (mut l, mut h) = (neg_max.max(0.0), pos_max.max(0.0));
    if l + h <= 0.0 {
        return (0.0, 0.0);
    }
    for _ in 0..3 {
        if pos.total() > 0 && pos_max > 0.0 {
            let mut best = (total_err(l, h), h);
            for k in 1..=128 {
                let t = pos_max * k as f64 / 128.0;
                let e = total_err(l, t);
                if e < best.0 {
                    best = (e, t);
                }
            }
            h = best.1;
        }
        if neg.total() > 0 && neg_max > 0.0 {
            let mut best = (total_err(l, h), l);
            for k in 1..=128 {
                let t = neg_max * k as f64 / 128.0;
                let e = total_err(t, h);
                if e < best.0 {
                    best = (e, t);
                }
            }
            l = best.1;
        }
    }
    (l, h)
}

/// Estimated SQNR (dB) of quantizing a tensor with `q`, from its statistics: the noise a Q/DQ
/// pair adds to this tensor alone. `None` without histograms.
pub fn estimated_sqnr_db(stats: &TensorStats, q: &QParams) -> Option<f64> {
    let (pos, neg) = (stats.pos.as_ref()?, stats.neg.as_ref()?);
    let s = q.scale as f64;
    let (up, down) = match q.qtype {
        super::qparams::QType::Int8 => (127usize, 127usize),
        super::qparams::QType::Uint8 => (
            (255 - q.zero_point).max(0) as usize,
            q.zero_point.max(0) as usize,
        ),
    };
    let signal = |h: &Hist| -> f64 {
        h.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f64 * h.centre(i).powi(2))
            .sum()
    };
    let sig = signal(pos) + signal(neg);
    let noise = side_error(pos, s, up) + side_error(neg, s, down);
    if sig <= 0.0 {
        return None;
    }
    Some(10.0 * (sig / noise.max(1e-30)).log10())
}
