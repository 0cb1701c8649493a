//! Activations and other elementwise unary ops: output 0 has input 0's shape and dtype.

use super::ChannelRule::{self, Channelwise, Lock};
use super::PerChannel::Plain;
use super::{Eval, IndexFlow, OpDef, ShapeFlow, UnOp};
use crate::model::shape::rules::unary;

const CW: ChannelRule = Channelwise(Plain);

/// A unary op that acts on each channel independently.
const fn act(name: &'static str) -> OpDef {
    OpDef::new(name).shape(unary).channels(CW)
}

/// A unary op pare does not follow channels through (it would, but none is needed yet).
const fn opaque(name: &'static str) -> OpDef {
    OpDef::new(name).shape(unary).channels(Lock)
}

const fn ev(d: OpDef, u: UnOp) -> OpDef {
    d.eval(Eval::Unary(u))
}

pub const OPS: &[OpDef] = &[
    ev(act("Relu"), UnOp::Relu)
        .same_since(6)
        .trt(600)
        .fuses()
        .index(IndexFlow::Preserves)
        .lower(lowering::LOWER),
    act("LeakyRelu")
        .same_since(6)
        .trt(600)
        .fuses()
        .lower(lowering::LOWER),
    act("Elu").trt(600),
    act("Selu").trt(600),
    act("Celu").trt(702),
    act("Sigmoid")
        .same_since(6)
        .trt(600)
        .fuses()
        .lower(lowering::LOWER),
    act("HardSigmoid")
        .same_since(6)
        .trt(600)
        .fuses()
        .lower(lowering::LOWER),
    act("HardSwish").trt(804).fuses().lower(lowering::LOWER),
    act("Swish").trt(1100),
    act("Mish").trt(1000),
    act("Gelu").trt(1000),
    act("Tanh").same_since(6).trt(600).lower(lowering::LOWER),
    act("Softplus").trt(600),
    act("Softsign").trt(600),
    ev(act("Exp"), UnOp::Exp).trt(600).lower(lowering::LOWER),
    ev(act("Log"), UnOp::Log).trt(600).lower(lowering::LOWER),
    ev(act("Sqrt"), UnOp::Sqrt).trt(600).lower(lowering::LOWER),
    ev(act("Reciprocal"), UnOp::Reciprocal)
        .trt(600)
        .trt_gaps(&[(700, 803)])
        .lower(lowering::LOWER),
    ev(act("Neg"), UnOp::Neg).trt(600).lower(lowering::LOWER),
    ev(act("Abs"), UnOp::Abs).trt(600).lower(lowering::LOWER),
    ev(act("Ceil"), UnOp::Ceil)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .lower(lowering::LOWER),
    ev(act("Floor"), UnOp::Floor)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .lower(lowering::LOWER),
    ev(act("Round"), UnOp::Round).trt(802),
    ev(act("Sign"), UnOp::Sign).trt(802),
    act("Erf").trt(700).lower(lowering::LOWER),
    act("Sin").trt(600),
    act("Cos").trt(600),
    opaque("Tan").trt(600),
    opaque("Asin").trt(600),
    opaque("Acos").trt(600),
    opaque("Atan").trt(600),
    opaque("Sinh").trt(600),
    opaque("Cosh").trt(600),
    opaque("Asinh").trt(600),
    opaque("Acosh").trt(600),
    opaque("Atanh").trt(600),
    ev(act("Identity"), UnOp::Identity)
        .same_since(1)
        .trt(600)
        .flow(ShapeFlow::SameEntries)
        .index(IndexFlow::Preserves)
        .lower(lowering::LOWER),
    act("ThresholdedRelu").trt(600),
    act("Shrink").trt(804),
    opaque("BitwiseNot"),
    // Experimental ops of old opsets: TensorRT imports them, pare has no rules.
    OpDef::new("ImageScaler").trt(700),
    OpDef::new("ParametricSoftplus").trt(700),
    OpDef::new("ScaledTanh").trt(700),
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
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Relu" => one(x()?.relu()),
            "Sigmoid" => one(x()?.sigmoid()),
            "Tanh" => one(x()?.tanh()),
            "Erf" => one(x()?.erf()),
            "Sqrt" => one(x()?.sqrt()),
            "Identity" => one(x()?.shallow_clone()),
            "Neg" => one(x()?.neg()),
            "Abs" => one(x()?.abs()),
            "Exp" => one(x()?.exp()),
            "Log" => one(x()?.log()),
            "Reciprocal" => one(x()?.reciprocal()),
            "Floor" => one(x()?.floor()),
            "Ceil" => one(x()?.ceil()),
            "HardSwish" => one(x()?.hardswish()),
            "HardSigmoid" => {
                let a = f64::from(node.attr_f("alpha").unwrap_or(0.2));
                let b = f64::from(node.attr_f("beta").unwrap_or(0.5));
                one((x()? * a + b).clamp(0.0, 1.0))
            }
            "LeakyRelu" => {
                let a = f64::from(node.attr_f("alpha").unwrap_or(0.01));
                let x = x()?;
                one(x.maximum(&(x * a)))
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
