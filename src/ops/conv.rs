//! Convolutions and pools.

use super::ChannelRule::{self, Channelwise, Lock};
use super::PerChannel::Plain;
use super::{OpDef, QuantRole, WeightAxis, static_dims};
use crate::model::proto::NodeProto;
use crate::model::shape::ShapeInfo;
use crate::model::shape::rules::{conv, conv_transpose, global_pool, pool};

const CW: ChannelRule = Channelwise(Plain);

/// Conv: out numel × (Cin/group × kernel) = out numel × prod(w[1..]).
fn conv_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let w = static_dims(shapes, node.input.get(1)?)?;
    let out = static_dims(shapes, node.output.first()?)?;
    Some(out.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
}

/// ConvTranspose: every input element is multiplied into (Cout/group × kernel) outputs.
fn conv_transpose_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let w = static_dims(shapes, node.input.get(1)?)?;
    let x = static_dims(shapes, node.input.first()?)?;
    Some(x.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
}

pub const OPS: &[OpDef] = &[
    OpDef::new("Conv")
        .shape(conv)
        .channels(ChannelRule::Conv { transpose: false })
        .macs(conv_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Fixed(0),
        })
        .trt(600),
    OpDef::new("ConvTranspose")
        .shape(conv_transpose)
        .channels(ChannelRule::Conv { transpose: true })
        .macs(conv_transpose_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Fixed(1),
        })
        .trt(600),
    OpDef::new("ConvInteger")
        .shape(conv)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("QLinearConv")
        .shape(conv)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("DeformConv").trt(1001),
    OpDef::new("MaxPool")
        .shape(pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600),
    OpDef::new("AveragePool")
        .shape(pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600),
    OpDef::new("LpPool").shape(pool).channels(CW).trt(702),
    OpDef::new("GlobalAveragePool")
        .shape(global_pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600),
    OpDef::new("GlobalMaxPool")
        .shape(global_pool)
        .channels(CW)
        .trt(600),
    OpDef::new("GlobalLpPool")
        .shape(global_pool)
        .channels(CW)
        .trt(702),
];
