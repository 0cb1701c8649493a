//! Normalisations.

use super::ChannelRule::{Channelwise, Reduce};
use super::PerChannel::{Guard, Params};
use super::ReduceAxes::Axis;
use super::{OpDef, QuantRole, static_dims};
use crate::analysis::channels::Role;
use crate::model::proto::NodeProto;
use crate::model::shape::ShapeInfo;
use crate::model::shape::rules::{batch_norm, layer_norm, unary, unary_axis};

/// RMSNormalization normalises over axes `axis..rank`. A channel axis before them passes
/// through (each channel is scaled by statistics of its own positions); a channel axis among
/// them locks, since removing a channel would change the others' values.
fn rms_channels(node: &NodeProto, channel_axis: usize, rank: Option<usize>) -> Option<String> {
    let axis = node.attr_i("axis").unwrap_or(-1);
    let start = if axis < 0 {
        rank.map(|r| r as i64 + axis)
    } else {
        Some(axis)
    };
    match start {
        Some(s) if (channel_axis as i64) < s => None,
        Some(_) => Some("normalises over the channel axis".into()),
        None => Some("input rank unknown, so the normalised axes are unknown".into()),
    }
}

/// One multiply by the scale per output element: the weight uses pare counts.
fn rms_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let out = static_dims(shapes, node.output.first()?)?;
    Some(out.iter().product())
}

pub const OPS: &[OpDef] = &[
    OpDef::new("BatchNormalization")
        .same_since(9)
        .shape(batch_norm)
        .channels(Channelwise(Params(&[
            (1, Role::NormScale),
            (2, Role::NormBias),
            (3, Role::NormStat),
            (4, Role::NormStat),
        ])))
        .fuses()
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("InstanceNormalization")
        .shape(unary)
        .channels(Channelwise(Params(&[
            (1, Role::NormScale),
            (2, Role::NormBias),
        ])))
        .trt(600),
    OpDef::new("LayerNormalization")
        .shape(layer_norm)
        .channels(super::ChannelRule::LayerNorm)
        .trt(806)
        .lower(lowering::LOWER),
    // RMSNormalization (opset 23): y = x / sqrt(mean(x², axes axis..rank) + eps) * scale.
    // TensorRT: none of the operator matrices pare encodes (up to 10.1, opset ≤ 20) lists it.
    // Quantization: left float, as ModelOpt leaves normalisations; the Q/DQ pairs go on the
    // weighted layers around it.
    OpDef::new("RMSNormalization")
        .shape(unary_axis)
        .channels(Channelwise(Guard(rms_channels)))
        .macs(rms_macs)
        .quant(QuantRole::None),
    OpDef::new("GroupNormalization").shape(unary).trt(806),
    OpDef::new("MeanVarianceNormalization")
        .shape(unary)
        .trt(805),
    OpDef::new("LRN").shape(unary).trt(600),
    OpDef::new("LpNormalization")
        .shape(unary)
        .channels(Reduce(Axis(-1)))
        .trt(702),
];

#[cfg(test)]
mod tests {
    use crate::analysis::channels::analyze_channels;
    use crate::lint::{LintOptions, Target, lint};
    use crate::model::Analysis;
    use crate::model::builder::{D, GraphBuilder, attr_i};
    use crate::model::stats::node_macs;
    use crate::quant::placement::{Kind, PlacementOptions, plan};

    /// Conv(16→32) → RMSNormalization(axis) → Conv(32→32), opset 23.
    fn model(axis: i64) -> (Analysis, String, String) {
        let mut b = GraphBuilder::new("rms").with_opset(23);
        let x = b.input("x", &[D::N(1), D::N(16), D::N(8), D::N(8)]);
        let c1 = b.conv(&x, 16, 32, 3, 1, 1, 1);
        let scale = b.init_randn("scale", &[8], 0.1);
        let r = b.op(
            "RMSNormalization",
            &[&c1, &scale],
            vec![attr_i("axis", axis)],
        );
        let y = b.conv(&r, 32, 32, 3, 1, 1, 1);
        b.output(&y, &[D::N(1), D::N(32), D::N(8), D::N(8)]);
        let a = Analysis::new(b.build(), &Default::default()).expect("valid model");
        (a, c1, r)
    }

    #[test]
    fn rms_normalization_end_to_end() {
        let (a, c1, r) = model(-1);
        let node = a
            .graph()
            .node
            .iter()
            .find(|n| n.op_type() == "RMSNormalization")
            .expect("node");
        // Shapes.
        assert_eq!(a.shapes.static_shape(&r), Some(vec![1, 32, 8, 8]));
        assert!(
            a.shapes.diagnostics.is_empty(),
            "{:?}",
            a.shapes.diagnostics
        );
        // Channel flow: the first conv's group passes through to the second conv.
        let ca = analyze_channels(&a);
        let g = ca
            .groups
            .iter()
            .find(|g| g.tensors.contains(&c1))
            .expect("group of the first conv");
        assert!(g.tensors.contains(&r), "{g:?}");
        assert!(g.prunable(), "{:?}", g.locks);
        // MACs: one scale multiply per element.
        assert_eq!(node_macs(node, &a.shapes), Some(32 * 8 * 8));
        // Lint: no TensorRT matrix lists it; onnxruntime runs it.
        let trt = lint(&a, &LintOptions::default());
        assert!(
            trt.diagnostics
                .iter()
                .any(|d| d.rule == "G1" && d.message.contains("RMSNormalization")),
            "{:?}",
            trt.diagnostics
        );
        let ort = lint(
            &a,
            &LintOptions {
                target: Target::OnnxRuntime,
                ..Default::default()
            },
        );
        assert!(!ort.diagnostics.iter().any(|d| d.rule == "G1"));
        // Quantization: it stays float; its output is the quantized input of the next conv.
        let p = plan(&a, &PlacementOptions::default());
        assert!(p.candidates.iter().all(|c| c.op != "RMSNormalization"));
        let weighted = p.candidates.iter().filter(|c| c.kind == Kind::Weighted);
        assert_eq!(weighted.clone().filter(|c| c.quantized).count(), 2);
        assert!(p.act_tensors().contains(&r));
    }

    #[test]
    fn rms_normalization_over_channels_locks() {
        let (a, c1, _) = model(1);
        let ca = analyze_channels(&a);
        let g = ca
            .groups
            .iter()
            .find(|g| g.tensors.contains(&c1))
            .expect("group of the first conv");
        assert!(
            g.locks
                .iter()
                .any(|l| l.contains("normalises over the channel axis")),
            "{:?}",
            g.locks
        );
    }
}

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, axis, input};
    use crate::model::proto::NodeProto;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "BatchNormalization" => one(x()?.batch_norm(
                Some(input(ins, 1)?),
                Some(input(ins, 2)?),
                Some(input(ins, 3)?),
                Some(input(ins, 4)?),
                node.attr_i("training_mode").unwrap_or(0) == 1,
                f64::from(1.0 - node.attr_f("momentum").unwrap_or(0.9)),
                f64::from(node.attr_f("epsilon").unwrap_or(1e-5)),
                false,
            )),
            "LayerNormalization" => {
                let x = x()?;
                let a = axis(node.attr_i("axis").unwrap_or(-1), x.dim()) as usize;
                let shape = x.size()[a..].to_vec();
                let eps = f64::from(node.attr_f("epsilon").unwrap_or(1e-5));
                let b = ins.get(2).and_then(Option::as_ref);
                one(x.layer_norm(shape, Some(input(ins, 1)?), b, eps, false))
            }
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
