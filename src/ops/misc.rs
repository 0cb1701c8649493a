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
        .trt(600),
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
