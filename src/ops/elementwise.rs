//! Broadcasting ops (arithmetic, comparisons, logic, `Where`) and the elementwise ops with
//! their own shape rule (`Clip`, `Cast`, `PRelu`, `Dropout`, `IsNaN`, `Not`).

use super::ChannelRule::{self, Channelwise, Elementwise};
use super::PerChannel::{Plain, Slope};
use super::{BinOp, Eval, IndexFlow, OpDef, QuantRole, ShapeFlow, UnOp};
use crate::model::shape::rules::{
    binary, cast, clip, compare, dropout, is_special, mean, not, prelu, where_,
};

const CW: ChannelRule = Channelwise(Plain);

/// A broadcasting op with the inputs' dtype, evaluated on small values with `op`.
const fn bin(name: &'static str, op: BinOp) -> OpDef {
    OpDef::new(name)
        .shape(binary)
        .eval(Eval::Binary(op))
        .channels(Elementwise)
}

/// A broadcasting op with a BOOL output.
const fn cmp(name: &'static str, op: BinOp) -> OpDef {
    OpDef::new(name)
        .shape(compare)
        .eval(Eval::Binary(op))
        .channels(Elementwise)
}

pub const OPS: &[OpDef] = &[
    bin("Add", BinOp::Add)
        .same_since(7)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .quant(QuantRole::ResidualAdd)
        .lower(lowering::LOWER),
    bin("Sub", BinOp::Sub)
        .same_since(7)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .lower(lowering::LOWER),
    bin("Mul", BinOp::Mul)
        .same_since(7)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .lower(lowering::LOWER),
    bin("Div", BinOp::Div)
        .same_since(7)
        .trt(600)
        .flow(ShapeFlow::Derived)
        .lower(lowering::LOWER),
    bin("Pow", BinOp::Pow).trt(600).lower(lowering::LOWER),
    bin("Mod", BinOp::Mod).trt(805),
    OpDef::new("BitShift").shape(binary).channels(Elementwise),
    OpDef::new("BitwiseAnd").shape(binary),
    OpDef::new("BitwiseOr").shape(binary),
    OpDef::new("BitwiseXor").shape(binary),
    bin("Sum", BinOp::Add).trt(600),
    OpDef::new("Mean")
        .shape(mean)
        .channels(Elementwise)
        .trt(600),
    bin("Max", BinOp::Max).trt(600).lower(lowering::LOWER),
    bin("Min", BinOp::Min).trt(600).lower(lowering::LOWER),
    cmp("Equal", BinOp::Equal).trt(700).lower(lowering::LOWER),
    cmp("Less", BinOp::Less).trt(700).lower(lowering::LOWER),
    cmp("Greater", BinOp::Greater)
        .trt(700)
        .lower(lowering::LOWER),
    cmp("LessOrEqual", BinOp::LessOrEqual).trt(702),
    cmp("GreaterOrEqual", BinOp::GreaterOrEqual).trt(702),
    cmp("And", BinOp::And).trt(700),
    cmp("Or", BinOp::Or).trt(700),
    cmp("Xor", BinOp::Xor).trt(804),
    OpDef::new("Not")
        .shape(not)
        .eval(Eval::Unary(UnOp::Not))
        .channels(CW)
        .trt(700)
        .lower(lowering::LOWER),
    OpDef::new("Where")
        .shape(where_)
        .channels(Elementwise)
        .trt(700)
        .lower(lowering::LOWER),
    OpDef::new("Clip")
        .shape(clip)
        .channels(CW)
        .trt(600)
        .fuses()
        .lower(lowering::LOWER),
    OpDef::new("Cast")
        .shape(cast)
        .channels(CW)
        .trt(600)
        .flow(ShapeFlow::SameEntries)
        .index(IndexFlow::Preserves)
        .lower(lowering::LOWER),
    OpDef::new("CastLike").shape(cast).channels(CW).trt(903),
    OpDef::new("PRelu")
        .shape(prelu)
        .channels(Channelwise(Slope))
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Dropout")
        .shape(dropout)
        .channels(CW)
        .trt(600)
        .trt_gaps(&[(700, 799)]),
    OpDef::new("IsNaN").shape(is_special).channels(CW).trt(802),
    OpDef::new("IsInf").shape(is_special).channels(CW).trt(806),
];

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Kind, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, floats_of, input};
    use crate::model::proto::NodeProto;
    use crate::model::tensor::DataType;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Not" => one(x()?.logical_not()),
            "PRelu" => {
                let (x, s) = (x()?, input(ins, 1)?);
                one(x.relu() - (-x).relu() * s)
            }
            "Clip" => clip(node, ins),
            "Add" => one(input(ins, 0)? + input(ins, 1)?),
            "Sub" => one(input(ins, 0)? - input(ins, 1)?),
            "Mul" => one(input(ins, 0)? * input(ins, 1)?),
            "Div" => {
                let (a, b) = (input(ins, 0)?, input(ins, 1)?);
                if a.kind() == Kind::Int64 && b.kind() == Kind::Int64 {
                    one(a.floor_divide(b))
                } else {
                    one(a / b)
                }
            }
            "Pow" => one(input(ins, 0)?.pow(input(ins, 1)?)),
            "Equal" => one(input(ins, 0)?.eq_tensor(input(ins, 1)?)),
            "Less" => one(input(ins, 0)?.lt_tensor(input(ins, 1)?)),
            "Greater" => one(input(ins, 0)?.gt_tensor(input(ins, 1)?)),
            "Max" | "Min" => {
                let mut it = ins.iter().flatten();
                let mut y = it.next().ok_or("no inputs")?.shallow_clone();
                for t in it {
                    y = if node.op_type() == "Max" {
                        y.maximum(t)
                    } else {
                        y.minimum(t)
                    };
                }
                one(y)
            }
            "Where" => one(input(ins, 1)?.where_self(input(ins, 0)?, input(ins, 2)?)),
            "Cast" => {
                let to = DataType(node.attr_i("to").unwrap_or(1) as i32);
                let kind = if to.is_float() {
                    Kind::Float
                } else if to == DataType::BOOL {
                    Kind::Bool
                } else {
                    Kind::Int64
                };
                one(x()?.to_kind(kind))
            }
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }

    fn clip(node: &NodeProto, ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let bound = |i: usize, attr: &str| -> Result<Option<f64>, String> {
            match ins.get(i).and_then(Option::as_ref) {
                Some(t) => Ok(floats_of(t)?.first().copied()),
                None => Ok(node.attr_f(attr).map(f64::from)),
            }
        };
        let mut y = x.shallow_clone();
        if let Some(lo) = bound(1, "min")? {
            y = y.clamp_min(lo);
        }
        if let Some(hi) = bound(2, "max")? {
            y = y.clamp_max(hi);
        }
        Ok(vec![y])
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
