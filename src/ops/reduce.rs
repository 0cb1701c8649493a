//! Reductions and ops that work along one axis (ArgMax, TopK, Softmax, CumSum).

use super::ChannelRule::Reduce;
use super::ReduceAxes::{Axes, Axis, AxisInput};
use super::{Eval, IndexFlow, OpDef, RedOp};
use crate::model::shape::rules::{arg, reduce, topk, unary, unary_axis};

fn sum_axes(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 13 { &[(1, "axes")] } else { &[] }
}

fn axes_from_18(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 18 { &[(1, "axes")] } else { &[] }
}

/// TensorRT 10.15 wants ReduceSum's axes constant.
fn sum_axes_trt(opset: i64, v: u16) -> &'static [(usize, &'static str)] {
    if v >= 1015 { sum_axes(opset) } else { &[] }
}

fn axes_from_18_trt(opset: i64, v: u16) -> &'static [(usize, &'static str)] {
    if v >= 1015 { axes_from_18(opset) } else { &[] }
}

fn topk_k(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 10 { &[(1, "k")] } else { &[] }
}

/// TensorRT 8.2–8.4 need TopK's K constant.
fn topk_trt(opset: i64, v: u16) -> &'static [(usize, &'static str)] {
    if opset >= 10 && (802..=804).contains(&v) {
        &[(1, "K")]
    } else {
        &[]
    }
}

fn cumsum_axis(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "axis")]
}

fn cumsum_trt(_: i64, v: u16) -> &'static [(usize, &'static str)] {
    if v >= 1015 { &[(1, "axis")] } else { &[] }
}

/// A Reduce* op (axes from opset 18 on as input 1).
const fn red(name: &'static str) -> OpDef {
    OpDef::new(name)
        .shape(reduce)
        .channels(Reduce(Axes))
        .consts(axes_from_18)
        .trt_consts(axes_from_18_trt)
        .trt(600)
}

pub const OPS: &[OpDef] = &[
    red("ReduceMean"),
    red("ReduceSum")
        .eval(Eval::Reduce(RedOp::Sum))
        .consts(sum_axes)
        .trt_consts(sum_axes_trt),
    red("ReduceMax").eval(Eval::Reduce(RedOp::Max)),
    red("ReduceMin").eval(Eval::Reduce(RedOp::Min)),
    red("ReduceProd").eval(Eval::Reduce(RedOp::Prod)),
    red("ReduceL1"),
    red("ReduceL2"),
    red("ReduceSumSquare"),
    red("ReduceLogSum"),
    red("ReduceLogSumExp"),
    OpDef::new("ArgMax")
        .shape(arg)
        .channels(Reduce(Axis(0)))
        .index(IndexFlow::NonNegative)
        .trt(600),
    OpDef::new("ArgMin")
        .shape(arg)
        .channels(Reduce(Axis(0)))
        .index(IndexFlow::NonNegative)
        .trt(600),
    OpDef::new("TopK")
        .shape(topk)
        .channels(Reduce(Axis(-1)))
        .consts(topk_k)
        .trt_consts(topk_trt)
        .index(IndexFlow::NonNegativeSecond)
        .trt(600),
    OpDef::new("Softmax")
        .shape(unary_axis)
        .channels(Reduce(Axis(-1)))
        .trt(600),
    OpDef::new("LogSoftmax")
        .shape(unary_axis)
        .channels(Reduce(Axis(-1)))
        .trt(600),
    OpDef::new("Hardmax")
        .shape(unary_axis)
        .channels(Reduce(Axis(-1)))
        .trt(903),
    OpDef::new("CumSum")
        .shape(unary)
        .channels(Reduce(AxisInput))
        .consts(cumsum_axis)
        .trt_consts(cumsum_trt)
        .trt(702),
];
