//! Matrix products.

use super::ChannelRule::{self, Lock};
use super::{OpDef, QuantRole, WeightAxis, static_dims};
use crate::model::proto::NodeProto;
use crate::model::shape::ShapeInfo;
use crate::model::shape::rules::{einsum, gemm, matmul};

/// Gemm: out numel × K.
fn gemm_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let a = static_dims(shapes, node.input.first()?)?;
    let out = static_dims(shapes, node.output.first()?)?;
    let trans_a = node.attr_i("transA").unwrap_or(0) != 0;
    let k = if trans_a { *a.first()? } else { *a.get(1)? };
    Some(out.iter().product::<u64>() * k)
}

/// MatMul: out numel × K (the last axis of A).
fn matmul_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let a = static_dims(shapes, node.input.first()?)?;
    let out = static_dims(shapes, node.output.first()?)?;
    let k = *a.last()?;
    Some(out.iter().product::<u64>().max(1) * k)
}

pub const OPS: &[OpDef] = &[
    OpDef::new("Gemm")
        .shape(gemm)
        .channels(ChannelRule::Gemm)
        .macs(gemm_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::GemmB,
        })
        .trt(600),
    OpDef::new("MatMul")
        .shape(matmul)
        .channels(ChannelRule::MatMul)
        .macs(matmul_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Last,
        })
        .trt(600),
    OpDef::new("MatMulInteger")
        .shape(matmul)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("QLinearMatMul")
        .shape(matmul)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("Einsum").shape(einsum).dedicated().trt(802),
    // Recurrent layers: TensorRT imports them; pare has no rules.
    OpDef::new("GRU").trt(700),
    OpDef::new("LSTM").trt(700),
    OpDef::new("RNN").trt(700),
];
