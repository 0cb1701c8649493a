//! Quantization ops (QDQ form; the QOperator convolutions and products live with their
//! families).

use super::ChannelRule::{self, Channelwise};
use super::OpDef;
use super::PerChannel::Plain;
use crate::model::shape::rules::{dequantize, dynamic_quantize, quantize};

const CW: ChannelRule = Channelwise(Plain);

fn qdq_params(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "scale"), (2, "zero_point")]
}

pub const OPS: &[OpDef] = &[
    OpDef::new("QuantizeLinear")
        .shape(quantize)
        .channels(CW)
        .consts(qdq_params)
        .trt(700),
    OpDef::new("DequantizeLinear")
        .shape(dequantize)
        .channels(CW)
        .consts(qdq_params)
        .trt(700),
    OpDef::new("DynamicQuantizeLinear")
        .shape(dynamic_quantize)
        .dedicated()
        .qoperator(),
];
