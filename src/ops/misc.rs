//! Resampling, detection, generators and the rest.

use super::ChannelRule::{self, Channelwise};
use super::OpDef;
use super::PerChannel::Resize;
use crate::model::shape::rules::{
    concat_from_sequence, grid_sample, like, nms, optional, optional_get, optional_has, random,
    resize, roi, sequence_at, sequence_construct, sequence_empty, sequence_erase, sequence_insert,
    sequence_length, split_to_sequence, string_normalizer,
};

fn resize_consts(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 11 {
        &[(1, "roi"), (2, "scales"), (3, "sizes")]
    } else {
        &[(1, "scales")]
    }
}

fn upsample_consts(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "scales")]
}

pub const OPS: &[OpDef] = &[
    OpDef::new("Resize")
        .shape(resize)
        .channels(Channelwise(Resize { scales: 2 }))
        .consts(resize_consts)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Upsample")
        .shape(resize)
        .channels(Channelwise(Resize { scales: 1 }))
        .consts(upsample_consts)
        .trt(600),
    OpDef::new("NonMaxSuppression").shape(nms).trt(800),
    OpDef::new("RoiAlign").shape(roi).trt(805),
    OpDef::new("MaxRoiPool").shape(roi),
    OpDef::new("GridSample").shape(grid_sample).trt(805),
    // TensorRT 11.2 imports DFT through its built-in plugin.
    OpDef::new("DFT").trt(1102),
    OpDef::new("EyeLike")
        .shape(like)
        .channels(ChannelRule::None)
        .trt(702),
    OpDef::new("RandomNormalLike")
        .shape(like)
        .channels(ChannelRule::None)
        .nondeterministic()
        .trt(804),
    OpDef::new("RandomUniformLike")
        .shape(like)
        .channels(ChannelRule::None)
        .nondeterministic()
        .trt(700),
    OpDef::new("Bernoulli").shape(like).nondeterministic(),
    OpDef::new("RandomNormal")
        .shape(random)
        .channels(ChannelRule::None)
        .nondeterministic()
        .trt(804),
    OpDef::new("RandomUniform")
        .shape(random)
        .channels(ChannelRule::None)
        .nondeterministic()
        .trt(700),
    OpDef::new("Multinomial").nondeterministic(),
    OpDef::new("Optional").shape(optional),
    OpDef::new("OptionalGetElement").shape(optional_get),
    OpDef::new("OptionalHasElement").shape(optional_has),
    OpDef::new("SequenceEmpty").shape(sequence_empty),
    OpDef::new("SequenceConstruct").shape(sequence_construct),
    OpDef::new("SequenceInsert").shape(sequence_insert),
    OpDef::new("SequenceErase").shape(sequence_erase),
    OpDef::new("SequenceAt").shape(sequence_at),
    OpDef::new("SequenceLength").shape(sequence_length),
    OpDef::new("SplitToSequence").shape(split_to_sequence),
    OpDef::new("ConcatFromSequence").shape(concat_from_sequence),
    OpDef::new("StringNormalizer").shape(string_normalizer),
    OpDef::new("SoftmaxCrossEntropyLoss")
        .trt(702)
        .trt_gaps(&[(800, u16::MAX)]),
];

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::Device;

    use super::super::torch::{Ins, LowerFn, Lowered, floats_of, input, ints_of};
    use crate::model::proto::NodeProto;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        match node.op_type() {
            "Resize" => resize(node, ins),
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }

    /// Resize of the spatial dims: nearest (asymmetric, floor — what torch exports) and linear
    /// (half_pixel / pytorch_half_pixel / align_corners), by scales or sizes.
    fn resize(node: &NodeProto, ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let size = x.size();
        let sp = &size[2..];
        let out: Vec<i64> = match (
            ins.get(3).and_then(Option::as_ref),
            ins.get(2).and_then(Option::as_ref),
        ) {
            (Some(sizes), _) if sizes.numel() > 0 => ints_of(sizes)?[2..].to_vec(),
            (_, Some(scales)) if scales.numel() > 0 => {
                let s = floats_of(scales)?;
                sp.iter()
                    .zip(&s[2..])
                    .map(|(&d, &f)| (d as f64 * f).floor() as i64)
                    .collect()
            }
            _ => return Err("Resize without scales or sizes".into()),
        };
        let mode = node.attr_s("mode").unwrap_or_else(|| "nearest".into());
        let ctm = node
            .attr_s("coordinate_transformation_mode")
            .unwrap_or_else(|| "half_pixel".into());
        let align = ctm == "align_corners";
        let half = ctm == "half_pixel" || ctm == "pytorch_half_pixel";
        let y = match (mode.as_str(), out.len()) {
            ("nearest", 1) if ctm == "asymmetric" => x.upsample_nearest1d(&out, None::<f64>),
            ("nearest", 2) if ctm == "asymmetric" => {
                x.upsample_nearest2d(&out, None::<f64>, None::<f64>)
            }
            ("nearest", 3) if ctm == "asymmetric" => {
                x.upsample_nearest3d(&out, None::<f64>, None::<f64>, None::<f64>)
            }
            ("nearest", 2) => x.internal_upsample_nearest_exact2d(&out, None::<f64>, None::<f64>),
            ("linear", 1) if align || half => x.upsample_linear1d(&out, align, None::<f64>),
            ("linear", 2) if align || half => {
                x.upsample_bilinear2d(&out, align, None::<f64>, None::<f64>)
            }
            ("linear", 3) if align || half => {
                x.upsample_trilinear3d(&out, align, None::<f64>, None::<f64>, None::<f64>)
            }
            _ => {
                return Err(format!(
                    "Resize mode {mode} / {ctm} on {} dims is not lowered",
                    out.len()
                ));
            }
        };
        Ok(vec![y])
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
