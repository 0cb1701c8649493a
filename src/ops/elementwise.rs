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
        .trt(600)
        .flow(ShapeFlow::Derived)
        .quant(QuantRole::ResidualAdd),
    bin("Sub", BinOp::Sub).trt(600).flow(ShapeFlow::Derived),
    bin("Mul", BinOp::Mul).trt(600).flow(ShapeFlow::Derived),
    bin("Div", BinOp::Div).trt(600).flow(ShapeFlow::Derived),
    bin("Pow", BinOp::Pow).trt(600),
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
    bin("Max", BinOp::Max).trt(600),
    bin("Min", BinOp::Min).trt(600),
    cmp("Equal", BinOp::Equal).trt(700),
    cmp("Less", BinOp::Less).trt(700),
    cmp("Greater", BinOp::Greater).trt(700),
    cmp("LessOrEqual", BinOp::LessOrEqual).trt(702),
    cmp("GreaterOrEqual", BinOp::GreaterOrEqual).trt(702),
    cmp("And", BinOp::And).trt(700),
    cmp("Or", BinOp::Or).trt(700),
    cmp("Xor", BinOp::Xor).trt(804),
    OpDef::new("Not")
        .shape(not)
        .eval(Eval::Unary(UnOp::Not))
        .channels(CW)
        .trt(700),
    OpDef::new("Where")
        .shape(where_)
        .channels(Elementwise)
        .trt(700),
    OpDef::new("Clip").shape(clip).channels(CW).trt(600).fuses(),
    OpDef::new("Cast")
        .shape(cast)
        .channels(CW)
        .trt(600)
        .flow(ShapeFlow::SameEntries)
        .index(IndexFlow::Preserves),
    OpDef::new("CastLike").shape(cast).channels(CW).trt(903),
    OpDef::new("PRelu")
        .shape(prelu)
        .channels(Channelwise(Slope))
        .trt(600),
    OpDef::new("Dropout")
        .shape(dropout)
        .channels(CW)
        .trt(600)
        .trt_gaps(&[(700, 799)]),
    OpDef::new("IsNaN").shape(is_special).channels(CW).trt(802),
    OpDef::new("IsInf").shape(is_special).channels(CW).trt(806),
];
