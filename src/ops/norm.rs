//! Normalisations.

use super::ChannelRule::{Channelwise, Reduce};
use super::OpDef;
use super::PerChannel::Params;
use super::ReduceAxes::Axis;
use crate::analysis::channels::Role;
use crate::model::shape::rules::{batch_norm, layer_norm, unary};

pub const OPS: &[OpDef] = &[
    OpDef::new("BatchNormalization")
        .shape(batch_norm)
        .channels(Channelwise(Params(&[
            (1, Role::NormScale),
            (2, Role::NormBias),
            (3, Role::NormStat),
            (4, Role::NormStat),
        ])))
        .fuses()
        .trt(600),
    OpDef::new("InstanceNormalization")
        .shape(unary)
        .channels(Channelwise(Params(&[
            (1, Role::NormScale),
            (2, Role::NormBias),
        ])))
        .trt(600),
    OpDef::new("LayerNormalization").shape(layer_norm).trt(806),
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
