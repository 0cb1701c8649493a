//! Quantization arithmetic: scales and zero points, `QuantizeLinear`/`DequantizeLinear` exactly
//! as ONNX defines them (round half to even, saturate), and per-channel weight quantization.

use serde::Serialize;

/// The integer type of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    Int8,
    Uint8,
}

impl QType {
    pub fn range(self) -> (i32, i32) {
        match self {
            QType::Int8 => (-128, 127),
            QType::Uint8 => (0, 255),
        }
    }
}

/// Scale, zero point and integer type of one per-tensor quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
    pub qtype: QType,
}

/// Smallest scale pare emits: TensorRT rejects zero or negative scales, and a denormal one
/// overflows `x / scale`.
pub const MIN_SCALE: f32 = 1e-12;

impl QParams {
    /// Symmetric INT8 (zero point 0) covering `[-amax, amax]` with 127 steps each side, as
    /// TensorRT requires. `amax` of 0 (an all-zero tensor) gives scale 1.
    pub fn symmetric(amax: f64) -> Self {
        let scale = if amax > 0.0 && amax.is_finite() {
            (amax / 127.0) as f32
        } else {
            1.0
        };
        QParams {
            scale: scale.max(MIN_SCALE),
            zero_point: 0,
            qtype: QType::Int8,
        }
    }

    /// Asymmetric UINT8 covering `[lo, hi]` (widened to include 0, so 0 is exact), as
    /// onnxruntime uses for activations.
    pub fn asymmetric_u8(lo: f64, hi: f64) -> Self {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        if (hi - lo).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || !(hi - lo).is_finite()
        {
            return QParams {
                scale: 1.0,
                zero_point: 0,
                qtype: QType::Uint8,
            };
        }
        let scale = ((hi - lo) / 255.0) as f32;
        let scale = scale.max(MIN_SCALE);
        let zp = (-lo / scale as f64).round().clamp(0.0, 255.0) as i32;
        QParams {
            scale,
            zero_point: zp,
            qtype: QType::Uint8,
        }
    }

    /// `saturate(round_half_even(x / scale) + zero_point)`.
    pub fn quantize(&self, x: f32) -> i32 {
        let (lo, hi) = self.qtype.range();
        if x.is_nan() {
            return self.zero_point;
        }
        let q = round_half_even(x / self.scale) as i64 + self.zero_point as i64;
        q.clamp(lo as i64, hi as i64) as i32
    }

    /// `(q - zero_point) * scale`.
    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }

    /// Quantize then dequantize: what a Q/DQ pair does to a value.
    pub fn fake(&self, x: f32) -> f32 {
        self.dequantize(self.quantize(x))
    }

    /// The representable real range `[dequantize(qmin), dequantize(qmax)]`.
    pub fn real_range(&self) -> (f32, f32) {
        let (lo, hi) = self.qtype.range();
        (self.dequantize(lo), self.dequantize(hi))
    }
}

/// Round to nearest, ties to even (ONNX `QuantizeLinear` semantics).
pub fn round_half_even(x: f32) -> f32 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        // A tie: `round` went away from zero; step back to the even neighbour if it is odd.
        if r % 2.0 != 0.0 { r - x.signum() } else { r }
    } else {
        r
    }
}

/// How per-channel weight scales are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeightMethod {
    /// `scale = max|w| / 127` per channel (what onnxruntime and ModelOpt do).
    Minmax,
    /// Per channel, the clipping threshold that minimises the squared weight error.
    #[default]
    Mse,
}

/// A weight tensor quantized per channel along `axis`: INT8 values (symmetric, narrow range
/// -127..127) and one scale per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    pub dims: Vec<i64>,
    pub axis: usize,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
    /// Bias correction ([`super::bias_correct`]): the layer's bias with the mean output shift
    /// this weight's rounding causes removed. Q/DQ insertion points the layer's bias input at
    /// it; `None` keeps the float bias.
    pub corrected_bias: Option<Vec<f32>>,
}

impl QuantizedWeight {
    /// Dequantized values (what the DequantizeLinear node produces).
    pub fn dequantized(&self) -> Vec<f32> {
        let (outer, channels, inner) = split_dims(&self.dims, self.axis);
        let mut out = vec![0.0f32; self.values.len()];
        for o in 0..outer {
            for c in 0..channels {
                let s = self.scales[c];
                let base = (o * channels + c) * inner;
                for k in 0..inner {
                    out[base + k] = self.values[base + k] as f32 * s;
                }
            }
        }
        out
    }
}

/// `(product of dims before axis, dims[axis], product after)`.
fn split_dims(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let d: Vec<usize> = dims.iter().map(|&v| v.max(0) as usize).collect();
    let outer = d[..axis].iter().product();
    let channels = d.get(axis).copied().unwrap_or(1);
    let inner = d.get(axis + 1..).map(|s| s.iter().product()).unwrap_or(1);
    (outer, channels, inner)
}

/// Quantizes `w` (row-major, `dims`) per channel along `axis` with symmetric INT8 scales.
/// `per_channel = false` uses one scale for the whole tensor (stored once per channel so the
/// layout is the same).
pub fn quantize_weight(
    w: &[f32],
    dims: &[i64],
    axis: usize,
    method: WeightMethod,
    per_channel: bool,
) -> QuantizedWeight {
    let (outer, channels, inner) = split_dims(dims, axis);
    let channel_values = |c: usize| -> Vec<f32> {
        let mut v = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            let base = (o * channels + c) * inner;
            v.extend_from_slice(&w[base..base + inner]);
        }
        v
    };
    let mut scales = Vec::with_capacity(channels);
    if per_channel {
        for c in 0..channels {
            scales.push(weight_scale(&channel_values(c), method));
        }
    } else {
        let s = weight_scale(w, method);
        scales.resize(channels, s);
    }
    let mut values = vec![0i8; w.len()];
    for o in 0..outer {
        for (c, &s) in scales.iter().enumerate() {
            let base = (o * channels + c) * inner;
            for k in 0..inner {
                let q = round_half_even(w[base + k] / s).clamp(-127.0, 127.0);
                values[base + k] = if q.is_nan() { 0 } else { q as i8 };
            }
        }
    }
    QuantizedWeight {
        dims: dims.to_vec(),
        axis,
        values,
        scales,
        corrected_bias: None,
    }
}

/// Scale for one group of weights.
pub(crate) fn weight_scale(v: &[f32], method: WeightMethod) -> f32 {
    let amax = v.iter().fold(
        0.0f32,
        |m, x| if x.is_finite() { m.max(x.abs()) } else { m },
    );
    if amax == 0.0 {
        return 1.0;
    }
    let err = |t: f32| -> f64 {
        // Adding and subtracting 1.5 * 2^23 rounds half to even for |y| < 2^22, and
        // vectorises where `round` would not.
        const MAGIC: f32 = 12_582_912.0;
        let inv = 127.0 / t;
        let s = t / 127.0;
        let mut e = 0.0f32;
        for &x in v {
            let y = (x * inv).clamp(-127.0, 127.0);
            let q = ((y + MAGIC) - MAGIC) * s;
            let d = x - q;
            e += d * d;
        }
        e as f64
    };
    let best = match method {
        WeightMethod::Minmax => amax,
        WeightMethod::Mse => {
            // Clipping a few outliers buys resolution for every other weight: search the
            // threshold from 50% to 100% of the max, coarse then fine.
            let mut best = (err(amax), amax);
            for k in 0..20 {
                let t = amax * (0.5 + 0.025 * k as f32);
                let e = err(t);
                if e < best.0 {
                    best = (e, t);
                }
            }
            let centre = best.1;
            for k in -5..=5 {
                let t = (centre + amax * 0.0025 * k as f32).min(amax);
                if t > 0.0 && k != 0 {
                    let e = err(t);
                    if e < best.0 {
                        best = (e, t);
                    }
                }
            }
            best.1
        }
    };
    (best / 127.0).max(MIN_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-0.5), 0.0);
        assert_eq!(round_half_even(-1.5), -2.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(-2.6), -3.0);
    }

    #[test]
    fn asymmetric_keeps_zero_exact() {
        let q = QParams::asymmetric_u8(-1.0, 3.0);
        assert_eq!(q.fake(0.0), 0.0);
        let q = QParams::asymmetric_u8(0.5, 3.0); // widened to include 0
        assert_eq!(q.zero_point, 0);
        assert_eq!(q.fake(0.0), 0.0);
    }
}
