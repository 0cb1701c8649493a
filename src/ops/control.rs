//! Control flow: shapes come from the nested graphs; channel analysis locks everything a
//! nested graph reads (it cannot follow channels into a body).

use super::{ControlFlow, OpDef, ShapeKind};

const fn control(name: &'static str, c: ControlFlow) -> OpDef {
    let mut d = OpDef::new(name);
    d.shape = ShapeKind::Control(c);
    d
}

pub const OPS: &[OpDef] = &[
    control("If", ControlFlow::If).dedicated().trt(800),
    control("Loop", ControlFlow::Loop).trt(700),
    control("Scan", ControlFlow::Scan).trt(700),
];
