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
        .trt(700)
        .lower(lowering::LOWER),
    OpDef::new("DequantizeLinear")
        .shape(dequantize)
        .channels(CW)
        .consts(qdq_params)
        .trt(700)
        .lower(lowering::LOWER),
    OpDef::new("DynamicQuantizeLinear")
        .shape(dynamic_quantize)
        .dedicated()
        .qoperator(),
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
        match node.op_type() {
            "QuantizeLinear" | "DequantizeLinear" => fake_quant(node, ins),
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }

    /// A per-axis scale or zero point shaped to broadcast against a rank-`rank` tensor.
    fn per_axis(node: &NodeProto, t: &Tensor, rank: usize) -> Tensor {
        if t.dim() == 1 && t.numel() > 1 && rank > 1 {
            let a = axis(node.attr_i("axis").unwrap_or(1), rank) as usize;
            let mut shape = vec![1i64; rank];
            shape[a] = -1;
            t.reshape(shape)
        } else {
            t.shallow_clone()
        }
    }

    /// Scale, zero point (as float) and integer range of a Q/DQ node; `kind` is the quantized
    /// type when there is no zero point to tell it.
    fn qparams(
        node: &NodeProto,
        ins: Ins,
        rank: usize,
        kind: Kind,
    ) -> Result<(Tensor, Tensor, (f64, f64)), String> {
        let s = per_axis(node, input(ins, 1)?, rank);
        Ok(match ins.get(2).and_then(Option::as_ref) {
            Some(z) => (
                s,
                per_axis(node, &z.to_kind(Kind::Float), rank),
                range_of(z.kind()),
            ),
            None => (
                s,
                Tensor::zeros([1], (Kind::Float, input(ins, 1)?.device())),
                range_of(kind),
            ),
        })
    }

    /// `clamp(round(x / s) + zp)` in float with a straight-through gradient.
    fn fake_round(x: &Tensor, s: &Tensor, z: &Tensor, (lo, hi): (f64, f64)) -> Tensor {
        let v = x / s + z;
        let q = v.round().clamp(lo, hi);
        &v + (q - &v).detach()
    }

    /// QuantizeLinear as fake quantization: `clamp(round(x / s) + zp)` kept in float, with a
    /// straight-through gradient, so training sees the rounding but still moves the weights;
    /// DequantizeLinear maps the integer grid back. The zero point's type gives the range
    /// (uint8 without one, as ONNX says).
    pub(crate) fn fake_quant(node: &NodeProto, ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let (s, z, range) = qparams(node, ins, x.dim(), Kind::Uint8)?;
        let y = if node.op_type() == "QuantizeLinear" {
            fake_round(x, &s, &z, range)
        } else {
            (x.to_kind(Kind::Float) - z) * s
        };
        Ok(vec![y])
    }

    /// QAT: a DequantizeLinear whose quantized weight became a float parameter re-quantizes it
    /// on the fly (same scale and zero point; `kind` is the stored integer type).
    pub(crate) fn fake_quant_weight(node: &NodeProto, ins: Ins, kind: Kind) -> Lowered {
        let w = input(ins, 0)?;
        let (s, z, range) = qparams(node, ins, w.dim(), kind)?;
        Ok(vec![(fake_round(w, &s, &z, range) - &z) * s])
    }

    /// QAT write-back: the integer values a float weight quantizes to.
    pub(crate) fn quantize_weight(
        node: &NodeProto,
        ins: Ins,
        kind: Kind,
    ) -> Result<Vec<i64>, String> {
        let w = input(ins, 0)?;
        let (s, z, (lo, hi)) = qparams(node, ins, w.dim(), kind)?;
        let q = (w / s + z).round().clamp(lo, hi);
        ints_of(&q.detach())
    }

    fn range_of(kind: Kind) -> (f64, f64) {
        match kind {
            Kind::Int8 => (-128.0, 127.0),
            Kind::Uint8 => (0.0, 255.0),
            Kind::Int16 => (-32768.0, 32767.0),
            Kind::Int => (f64::from(i32::MIN), f64::from(i32::MAX)),
            _ => (f64::from(i32::MIN), f64::from(i32::MAX)),
        }
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
