//! Layout and indexing ops: Reshape, Transpose, Concat, Split, Slice, Gather, Pad, Shape, …

use super::ChannelRule::{self, Lock};
use super::{IndexFlow, OpDef, ShapeFlow};
use crate::model::shape::rules::{
    compress, concat, constant, constant_of_shape, depth_space, expand, flatten, gather,
    gather_elements, gather_nd, nonzero, one_hot, pad, range, reshape, shape, size, slice, split,
    squeeze, tile, transpose, unary, unsqueeze,
};

const PRESERVES: IndexFlow = IndexFlow::Preserves;

fn axes_from_13(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 13 { &[(1, "axes")] } else { &[] }
}

fn slice_consts(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 10 {
        &[(1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")]
    } else {
        &[]
    }
}

fn slice_trt(opset: i64, _v: u16) -> &'static [(usize, &'static str)] {
    if opset >= 10 { &[(3, "axes")] } else { &[] }
}

fn unsqueeze_trt(opset: i64, _v: u16) -> &'static [(usize, &'static str)] {
    axes_from_13(opset)
}

fn pad_consts(opset: i64) -> &'static [(usize, &'static str)] {
    if opset >= 11 {
        &[(1, "pads"), (2, "value"), (3, "axes")]
    } else {
        &[]
    }
}

/// TensorRT 10.0–10.14 need Pad's `axes` constant.
fn pad_trt(opset: i64, v: u16) -> &'static [(usize, &'static str)] {
    if opset >= 18 && (1000..=1014).contains(&v) {
        &[(3, "axes")]
    } else {
        &[]
    }
}

fn shape_input(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "shape")]
}

fn shape_first(_: i64) -> &'static [(usize, &'static str)] {
    &[(0, "shape")]
}

fn repeats(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "repeats")]
}

fn depth(_: i64) -> &'static [(usize, &'static str)] {
    &[(1, "depth")]
}

fn depth_trt(_: i64, v: u16) -> &'static [(usize, &'static str)] {
    if v >= 1015 { &[(1, "depth")] } else { &[] }
}

pub const OPS: &[OpDef] = &[
    OpDef::new("Constant")
        .shape(constant)
        .channels(ChannelRule::None)
        .trt(600),
    OpDef::new("Reshape")
        .shape(reshape)
        .channels(ChannelRule::Reshape)
        .flow(ShapeFlow::Derived)
        .consts(shape_input)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Flatten")
        .shape(flatten)
        .channels(ChannelRule::Flatten)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Transpose")
        .shape(transpose)
        .channels(ChannelRule::Transpose)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Squeeze")
        .shape(squeeze)
        .channels(ChannelRule::Squeeze)
        .flow(ShapeFlow::Derived)
        .consts(axes_from_13)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Unsqueeze")
        .shape(unsqueeze)
        .channels(ChannelRule::Squeeze)
        .flow(ShapeFlow::SameEntries)
        .consts(axes_from_13)
        .trt_consts(unsqueeze_trt)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Concat")
        .shape(concat)
        .channels(ChannelRule::Concat)
        .flow(ShapeFlow::Concat)
        .index(IndexFlow::AllInputs)
        .trt(600),
    OpDef::new("Split")
        .shape(split)
        .channels(ChannelRule::Split)
        .trt(600),
    OpDef::new("Slice")
        .shape(slice)
        .channels(ChannelRule::Slice)
        .flow(ShapeFlow::Derived)
        .consts(slice_consts)
        .trt_consts(slice_trt)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("Gather")
        .shape(gather)
        .channels(ChannelRule::Gather)
        .flow(ShapeFlow::Derived)
        .index(PRESERVES)
        .trt(600),
    OpDef::new("GatherElements")
        .shape(gather_elements)
        .index(PRESERVES)
        .dedicated()
        .trt(702),
    OpDef::new("GatherND").shape(gather_nd).trt(802),
    OpDef::new("Pad")
        .shape(pad)
        .channels(ChannelRule::Pad)
        .consts(pad_consts)
        .trt_consts(pad_trt)
        .trt(600),
    OpDef::new("Shape")
        .shape(shape)
        .channels(ChannelRule::None)
        .flow(ShapeFlow::Source)
        .index(IndexFlow::NonNegative)
        .trt(600),
    OpDef::new("Size")
        .shape(size)
        .channels(ChannelRule::None)
        .flow(ShapeFlow::Source)
        .index(IndexFlow::NonNegative)
        .trt(700),
    OpDef::new("ConstantOfShape")
        .shape(constant_of_shape)
        .channels(ChannelRule::None)
        .consts(shape_first)
        .trt(700),
    OpDef::new("Range")
        .shape(range)
        .channels(ChannelRule::None)
        .trt(700),
    OpDef::new("Expand")
        .shape(expand)
        .channels(ChannelRule::Expand)
        .consts(shape_input)
        .index(PRESERVES)
        .trt(700),
    OpDef::new("Tile")
        .shape(tile)
        .consts(repeats)
        .index(PRESERVES)
        .trt(700),
    OpDef::new("DepthToSpace").shape(depth_space).trt(600),
    OpDef::new("SpaceToDepth").shape(depth_space).trt(600),
    OpDef::new("OneHot")
        .shape(one_hot)
        .consts(depth)
        .trt_consts(depth_trt)
        .trt(805),
    OpDef::new("NonZero")
        .shape(nonzero)
        .index(IndexFlow::NonNegative)
        .dedicated()
        .trt(805),
    OpDef::new("Compress").shape(compress).channels(Lock),
    OpDef::new("Trilu").shape(unary).trt(805),
    OpDef::new("ScatterND").shape(unary).dedicated().trt(802),
    OpDef::new("ScatterElements").shape(unary).trt(802),
    OpDef::new("Scatter").shape(unary).trt(802),
    OpDef::new("ReverseSequence").shape(unary).trt(702),
];
