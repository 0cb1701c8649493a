//! What every family's libtorch lowering shares (feature `torch`): the lowering signature and
//! input access. Each family file keeps its own lowerings next to its op entries (its
//! `lowering` module), so adding an op with a lowering still touches one file.

use tch::{Device, Kind, Tensor};

use crate::model::proto::NodeProto;

/// A node's inputs as libtorch tensors (`None` for an omitted optional input).
pub type Ins<'a> = &'a [Option<Tensor>];
/// A node's outputs, or why it could not be lowered.
pub type Lowered = Result<Vec<Tensor>, String>;
/// One node as libtorch ops.
pub type LowerFn = fn(&NodeProto, Ins, Device) -> Lowered;

/// Input `i`, or an error naming the missing position.
pub fn input<'a>(ins: Ins<'a>, i: usize) -> Result<&'a Tensor, String> {
    ins.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| format!("input {i} is missing"))
}

/// A small integer tensor (shapes, axes, indices) as host values.
pub fn ints_of(t: &Tensor) -> Result<Vec<i64>, String> {
    Vec::<i64>::try_from(&t.to_kind(Kind::Int64).flatten(0, -1).to_device(Device::Cpu))
        .map_err(|e| e.to_string())
}

/// A small float tensor (bounds, scales) as host values.
pub fn floats_of(t: &Tensor) -> Result<Vec<f64>, String> {
    Vec::<f64>::try_from(
        &t.to_kind(Kind::Double)
            .flatten(0, -1)
            .to_device(Device::Cpu),
    )
    .map_err(|e| e.to_string())
}

/// A possibly negative ONNX axis as a non-negative one.
pub fn axis(a: i64, rank: usize) -> i64 {
    if a < 0 { a + rank as i64 } else { a }
}
