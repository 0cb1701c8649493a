//! Bias correction (Nagel et al., "Data-Free Quantization", 2019, §4.2, empirical form):
//! rounding a layer's weights shifts the mean of its output channels, and the shift is
//! systematic — every sample sees it — so it compounds through the network instead of averaging
//! out. On trained MobileNetV2 one depthwise channel whose nine taps sum to almost zero (an
//! edge filter) changed its DC response by a quarter after rounding, and that alone cost the
//! logits 11 dB. The shift is `E[conv(x, W_q) - conv(x, W)] = E[conv(x, W_q - W)]` per output
//! channel; it is measured on the calibration samples (float activations) and subtracted from
//! the bias, which is exact in expectation.
//!
//! The measurement rides along with calibration: [`probes`] adds to the float model, per
//! corrected layer, `ReduceMean(Conv(x, W_q - W))` over every axis but the channel (a vector of
//! C numbers per sample, so it costs no memory), and calibration averages those outputs.

use std::collections::HashMap;

use serde::Serialize;

use super::calibrate::MeanSums;
use super::placement::{Plan, const_tensor};
use super::qparams::QuantizedWeight;
use crate::data::SampleSet;
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::builder::{attr_i, attr_ints};
use crate::model::proto::{ModelProto, NodeProto, ValueInfoProto};
use crate::model::tensor::{DataType, f32_tensor, i64_tensor, to_f32};
use crate::runtime::EngineKind;
use crate::runtime::pool::{RunnerCache, for_each_sample};

/// One layer whose mean output shift is measured.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Index of the layer's node in the float graph.
    pub node: usize,
    /// Its weight tensor (key of the quantized weights).
    pub weight: String,
    /// The probe's output: the per-channel mean of `Conv(x, W_q - W)` for one sample.
    pub output: String,
    /// The layer's float bias.
    pub bias: Vec<f32>,
}

/// What bias correction did to one layer (for the report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BiasCorrection {
    pub node: String,
    /// Largest per-channel shift removed from the bias.
    pub max_abs_shift: f32,
    /// Output channels corrected.
    pub channels: usize,
}

/// The float model with a mean-shift probe per correctable layer, and the probes. A layer is
/// correctable when it is a quantized `Conv` whose weight has this one reader and whose bias is
/// a float initializer with one value per output channel (ONNX exports of BN-folded convs all
/// are; a conv without bias stays uncorrected rather than grow an input).
pub fn probes(
    model: &ModelProto,
    plan: &Plan,
    weights: &HashMap<String, QuantizedWeight>,
) -> Result<(ModelProto, Vec<Probe>)> {
    let mut m = model.clone();
    let g0 = model
        .graph
        .as_ref()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let new_axes_input = model.opset("").unwrap_or(0) >= 18;
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for c in plan.candidates.iter().filter(|c| c.quantized) {
        if let Some(w) = &c.weight {
            *readers.entry(w.tensor.as_str()).or_default() += 1;
        }
    }
    let mut probes = Vec::new();
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for c in plan
        .candidates
        .iter()
        .filter(|c| c.quantized && c.op == "Conv")
    {
        let Some(w) = &c.weight else { continue };
        let (Some(qw), Some(n)) = (weights.get(&w.tensor), g0.node.get(c.node)) else {
            continue;
        };
        if readers.get(w.tensor.as_str()) != Some(&1) || w.slot != 1 || w.axis != 0 {
            continue;
        }
        let Some(bias) = n
            .input
            .get(2)
            .and_then(|b| g0.initializer.iter().find(|i| i.name() == b))
            .filter(|b| DataType(b.data_type()) == DataType::FLOAT)
            .map(to_f32)
            .transpose()?
        else {
            continue;
        };
        let Some(tp) = const_tensor(g0, &w.source) else {
            continue;
        };
        let float = to_f32(tp)?;
        let deq = qw.dequantized();
        if float.len() != deq.len() || bias.len() != qw.scales.len() {
            continue;
        }
        let delta: Vec<f32> = deq.iter().zip(&float).map(|(q, f)| q - f).collect();
        let base = format!("{}__pare_bc{}", w.tensor, probes.len());
        inits.push(f32_tensor(&format!("{base}_dw"), &tp.dims, &delta));
        let mut conv = n.clone();
        conv.name = Some(format!("{base}_conv"));
        conv.input = vec![n.input[0].clone(), format!("{base}_dw")];
        conv.output = vec![format!("{base}_y")];
        nodes.push(conv);
        // Every axis but the channel (1): batch and the spatial ones.
        let axes: Vec<i64> = std::iter::once(0).chain(2..tp.dims.len() as i64).collect();
        let mut mean = NodeProto {
            name: Some(format!("{base}_mean")),
            op_type: Some("ReduceMean".into()),
            input: vec![format!("{base}_y")],
            output: vec![format!("{base}_m")],
            attribute: vec![attr_i("keepdims", 0)],
            ..Default::default()
        };
        if new_axes_input {
            inits.push(i64_tensor(
                &format!("{base}_axes"),
                &[axes.len() as i64],
                &axes,
            ));
            mean.input.push(format!("{base}_axes"));
        } else {
            mean.attribute.push(attr_ints("axes", &axes));
        }
        nodes.push(mean);
        probes.push(Probe {
            node: c.node,
            weight: w.tensor.clone(),
            output: format!("{base}_m"),
            bias,
        });
    }
    if let Some(g) = m.graph.as_mut() {
        g.node.extend(nodes);
        g.initializer.extend(inits);
        g.output.extend(probes.iter().map(|p| ValueInfoProto {
            name: Some(p.output.clone()),
            ..Default::default()
        }));
    }
    Ok((m, probes))
}

/// Folds the measured shifts (`means`: per probe output, the per-channel mean over samples)
/// into the quantized weights' `corrected_bias`. Returns what changed, per layer.
pub fn apply(
    model: &ModelProto,
    probes: &[Probe],
    means: &HashMap<String, Vec<f64>>,
    weights: &mut HashMap<String, QuantizedWeight>,
) -> Vec<BiasCorrection> {
    let g = model.graph.as_ref();
    let mut done = Vec::new();
    for p in probes {
        let (Some(shift), Some(qw)) = (means.get(&p.output), weights.get_mut(&p.weight)) else {
            continue;
        };
        if shift.len() != p.bias.len() || shift.iter().any(|s| !s.is_finite()) {
            continue;
        }
        qw.corrected_bias = Some(correct(&p.bias, shift));
        done.push(BiasCorrection {
            node: g
                .and_then(|g| g.node.get(p.node))
                .map(|n| n.display_name())
                .unwrap_or_default(),
            max_abs_shift: shift.iter().fold(0.0f64, |m, s| m.max(s.abs())) as f32,
            channels: shift.len(),
        });
    }
    done
}

/// Measures every correctable layer's mean output shift for the weights as they are *now* and
/// folds it into `corrected_bias` (replacing an earlier correction): learned rounding changes
/// the weights after calibration measured nearest rounding's shift, and its centered loss
/// leaves the mean to this correction. One float pass over the `fit` samples (all when empty).
#[allow(clippy::too_many_arguments)]
pub fn remeasure(
    model: &ModelProto,
    plan: &Plan,
    weights: &mut HashMap<String, QuantizedWeight>,
    set: &SampleSet,
    fit: &[usize],
    engine: EngineKind,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<BiasCorrection>> {
    let (probed, probes) = probes(model, plan, weights)?;
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = probes.iter().map(|p| p.output.clone()).collect();
    let runners =
        RunnerCache::watching(probed, names.clone(), "bias correction").on(engine, threads);
    let indices: Vec<usize> = if fit.is_empty() {
        (0..set.len()).collect()
    } else {
        fit.to_vec()
    };
    progress.phase("correcting biases", Some(indices.len() as u64));
    let sums = MeanSums::new(names.len());
    for_each_sample(&runners, set, &indices, threads, progress, 0, |s, r| {
        r.run_f32(&s.tensors, &mut |k, v| {
            sums.add(k, v);
            Ok(())
        })
    })?;
    Ok(apply(model, &probes, &sums.finish(&names), weights))
}

/// `bias - shift`: the bias that gives the quantized layer the float layer's mean output.
pub fn correct(bias: &[f32], shift: &[f64]) -> Vec<f32> {
    bias.iter()
        .zip(shift)
        .map(|(&b, &s)| (b as f64 - s) as f32)
        .collect()
}
