//! Resampling, detection, generators and the rest.

use super::ChannelRule::{self, Channelwise};
use super::OpDef;
use super::PerChannel::Resize;
use crate::model::shape::rules::{grid_sample, like, nms, passthrough, random, resize, roi};

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
    OpDef::new("Optional").shape(passthrough),
    OpDef::new("OptionalGetElement").shape(passthrough),
    OpDef::new("SoftmaxCrossEntropyLoss")
        .trt(702)
        .trt_gaps(&[(800, u16::MAX)]),
];
