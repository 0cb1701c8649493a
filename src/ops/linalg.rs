//! Matrix products.

use super::ChannelRule::{self, Lock};
use super::{OpDef, QuantRole, WeightAxis, static_dims};
use crate::model::proto::NodeProto;
use crate::model::shape::rules::{einsum, gemm, matmul};
use crate::model::shape::{Dim, OpCtx, ShapeInfo, TensorInfo};

/// LSTM / GRU / RNN outputs: Y `[T, D, B, H]` (layout 0) or `[B, T, D, H]` (layout 1), then
/// Y_h and Y_c `[D, B, H]` (`[B, D, H]` with layout 1). The hidden size is the attribute, or
/// R's last dim; D is 2 for bidirectional.
fn recurrent(cx: &mut OpCtx) -> Vec<TensorInfo> {
    let d = if cx.attr_s("direction").as_deref() == Some("bidirectional") {
        2
    } else {
        1
    };
    let hidden = match cx.attr_i("hidden_size", 0) {
        h if h > 0 => Dim::Known(h),
        _ => cx
            .shape(2)
            .and_then(|r| r.last().cloned())
            .unwrap_or(Dim::Unknown),
    };
    let Some(x) = cx.shape(0).filter(|x| x.len() == 3) else {
        let n = if cx.op == "LSTM" { 3 } else { 2 };
        return vec![cx.like_first(None); n];
    };
    let d = Dim::Known(d);
    let (y, state) = if cx.attr_i("layout", 0) == 0 {
        (
            vec![x[0].clone(), d.clone(), x[1].clone(), hidden.clone()],
            vec![d, x[1].clone(), hidden],
        )
    } else {
        (
            vec![x[0].clone(), x[1].clone(), d.clone(), hidden.clone()],
            vec![x[0].clone(), d, hidden],
        )
    };
    let mut out = vec![cx.like_first(Some(y)), cx.like_first(Some(state.clone()))];
    if cx.op == "LSTM" {
        out.push(cx.like_first(Some(state)));
    }
    out
}

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
        .same_since(7)
        .shape(gemm)
        .channels(ChannelRule::Gemm)
        .macs(gemm_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::GemmB,
        })
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("MatMul")
        .same_since(1)
        .shape(matmul)
        .channels(ChannelRule::MatMul)
        .macs(matmul_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Last,
        })
        .trt(600)
        .lower(lowering::LOWER),
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
    // Recurrent layers: gates i, o, f, c (LSTM), z, r, h (GRU), one (RNN) stacked in W/R/B.
    OpDef::new("GRU")
        .shape(recurrent)
        .channels(ChannelRule::Recurrent { gates: 3 })
        .trt(700),
    OpDef::new("LSTM")
        .shape(recurrent)
        .channels(ChannelRule::Recurrent { gates: 4 })
        .trt(700),
    OpDef::new("RNN")
        .shape(recurrent)
        .channels(ChannelRule::Recurrent { gates: 1 })
        .trt(700),
];

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, input};
    use crate::model::proto::NodeProto;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Gemm" => gemm(node, ins),
            "MatMul" => one(input(ins, 0)?.matmul(input(ins, 1)?)),
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }

    fn gemm(node: &NodeProto, ins: Ins) -> Lowered {
        let mut a = input(ins, 0)?.shallow_clone();
        let mut b = input(ins, 1)?.shallow_clone();
        if node.attr_i("transA").unwrap_or(0) == 1 {
            a = a.transpose(0, 1);
        }
        if node.attr_i("transB").unwrap_or(0) == 1 {
            b = b.transpose(0, 1);
        }
        let alpha = f64::from(node.attr_f("alpha").unwrap_or(1.0));
        let beta = f64::from(node.attr_f("beta").unwrap_or(1.0));
        let mut y = a.matmul(&b) * alpha;
        if let Some(c) = ins.get(2).and_then(Option::as_ref) {
            y += c * beta;
        }
        Ok(vec![y])
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
