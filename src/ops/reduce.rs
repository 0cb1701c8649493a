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
    red("ReduceMean").lower(lowering::LOWER),
    red("ReduceSum")
        .eval(Eval::Reduce(RedOp::Sum))
        .consts(sum_axes)
        .trt_consts(sum_axes_trt)
        .lower(lowering::LOWER),
    red("ReduceMax")
        .eval(Eval::Reduce(RedOp::Max))
        .lower(lowering::LOWER),
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
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("ArgMin")
        .shape(arg)
        .channels(Reduce(Axis(0)))
        .index(IndexFlow::NonNegative)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("TopK")
        .shape(topk)
        .channels(Reduce(Axis(-1)))
        .consts(topk_k)
        .trt_consts(topk_trt)
        .index(IndexFlow::NonNegativeSecond)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Softmax")
        .same_since_if(1, softmax_on_last_axis)
        .shape(unary_axis)
        .channels(Reduce(Axis(-1)))
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("LogSoftmax")
        .same_since_if(1, softmax_on_last_axis)
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

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Kind, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, axis, input, ints_of};
    use crate::model::proto::NodeProto;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Softmax" => {
                let x = x()?;
                let a = axis(node.attr_i("axis").unwrap_or(-1), x.dim());
                one(x.softmax(a, None::<Kind>))
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" => {
                let x = x()?;
                let keep = node.attr_i("keepdims").unwrap_or(1) == 1;
                let axes = match ins.get(1).and_then(Option::as_ref) {
                    Some(t) => Some(ints_of(t)?),
                    None => node.attr_ints("axes").map(<[i64]>::to_vec),
                };
                let axes = axes.unwrap_or_else(|| (0..x.dim() as i64).collect());
                let axes: Vec<i64> = axes.iter().map(|&a| axis(a, x.dim())).collect();
                if node.op_type() == "ReduceMean" {
                    one(x.mean_dim(axes.as_slice(), keep, None::<Kind>))
                } else if node.op_type() == "ReduceMax" {
                    one(x.amax(axes.as_slice(), keep))
                } else {
                    one(x.sum_dim_intlist(axes.as_slice(), keep, None::<Kind>))
                }
            }
            "ArgMax" | "ArgMin" => {
                let x = x()?;
                let a = axis(node.attr_i("axis").unwrap_or(0), x.dim());
                let keep = node.attr_i("keepdims").unwrap_or(1) == 1;
                let last = node.attr_i("select_last_index").unwrap_or(0) == 1;
                let src = if last { x.flip([a]) } else { x.shallow_clone() };
                let mut i = if node.op_type() == "ArgMax" {
                    src.argmax(a, keep)
                } else {
                    src.argmin(a, keep)
                };
                if last {
                    i = (x.size()[a as usize] - 1) - i;
                }
                one(i)
            }
            "TopK" => {
                let x = x()?;
                let k = *ints_of(input(ins, 1)?)?.first().ok_or("TopK without k")?;
                let a = axis(node.attr_i("axis").unwrap_or(-1), x.dim());
                let largest = node.attr_i("largest").unwrap_or(1) == 1;
                let (v, i) = x.topk(k, a, largest, true);
                Ok(vec![v, i])
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

/// Before opset 13 Softmax/LogSoftmax flatten the input to 2-D at `axis` (default 1); from 13
/// they work along `axis` (default −1). The two agree when the old axis is the last one.
fn softmax_on_last_axis(node: &crate::model::proto::NodeProto, rank: Option<usize>) -> bool {
    let Some(rank) = rank else { return false };
    let axis = node.attr_i("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    axis == rank as i64 - 1
}
