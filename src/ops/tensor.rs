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
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Reshape")
        .same_since(5)
        .shape(reshape)
        .channels(ChannelRule::Reshape)
        .flow(ShapeFlow::Derived)
        .consts(shape_input)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Flatten")
        .same_since(1)
        .shape(flatten)
        .channels(ChannelRule::Flatten)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Transpose")
        .same_since(1)
        .shape(transpose)
        .channels(ChannelRule::Transpose)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Squeeze")
        .shape(squeeze)
        .channels(ChannelRule::Squeeze)
        .flow(ShapeFlow::Derived)
        .consts(axes_from_13)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Unsqueeze")
        .shape(unsqueeze)
        .channels(ChannelRule::Squeeze)
        .flow(ShapeFlow::SameEntries)
        .consts(axes_from_13)
        .trt_consts(unsqueeze_trt)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Concat")
        .same_since(4)
        .shape(concat)
        .channels(ChannelRule::Concat)
        .flow(ShapeFlow::Concat)
        .index(IndexFlow::AllInputs)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Split")
        .shape(split)
        .channels(ChannelRule::Split)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Slice")
        .shape(slice)
        .channels(ChannelRule::Slice)
        .flow(ShapeFlow::Derived)
        .consts(slice_consts)
        .trt_consts(slice_trt)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Gather")
        .shape(gather)
        .channels(ChannelRule::Gather)
        .flow(ShapeFlow::Derived)
        .index(PRESERVES)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("GatherElements")
        .shape(gather_elements)
        .index(PRESERVES)
        .dedicated()
        .trt(702)
        .lower(lowering::LOWER),
    OpDef::new("GatherND")
        .shape(gather_nd)
        .trt(802)
        .lower(lowering::LOWER),
    OpDef::new("Pad")
        .shape(pad)
        .channels(ChannelRule::Pad)
        .consts(pad_consts)
        .trt_consts(pad_trt)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("Shape")
        .shape(shape)
        .channels(ChannelRule::None)
        .flow(ShapeFlow::Source)
        .index(IndexFlow::NonNegative)
        .trt(600)
        .lower(lowering::LOWER),
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
        .trt(700)
        .lower(lowering::LOWER),
    OpDef::new("Range")
        .shape(range)
        .channels(ChannelRule::None)
        .trt(700),
    OpDef::new("Expand")
        .shape(expand)
        .channels(ChannelRule::Expand)
        .consts(shape_input)
        .index(PRESERVES)
        .trt(700)
        .lower(lowering::LOWER),
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

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Kind, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, axis, floats_of, input, ints_of};
    use crate::model::proto::NodeProto;
    use crate::torch::exec::tensor_of;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, device: Device) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Flatten" => {
                let x = x()?;
                let a = axis(node.attr_i("axis").unwrap_or(1), x.dim());
                let size = x.size();
                let lead: i64 = size[..a as usize].iter().product();
                one(x.reshape([lead, -1]))
            }
            "Reshape" => {
                let x = x()?;
                let mut shape = ints_of(input(ins, 1)?)?;
                let allow_zero = node.attr_i("allowzero").unwrap_or(0) == 1;
                let size = x.size();
                for (i, s) in shape.iter_mut().enumerate() {
                    if *s == 0 && !allow_zero {
                        *s = *size.get(i).ok_or("Reshape copies a dim the input lacks")?;
                    }
                }
                one(x.reshape(shape))
            }
            "Transpose" => {
                let x = x()?;
                let perm = node
                    .attr_ints("perm")
                    .map_or_else(|| (0..x.dim() as i64).rev().collect(), <[i64]>::to_vec);
                one(x.permute(perm))
            }
            "Concat" => {
                let ts: Vec<Tensor> = ins.iter().flatten().map(Tensor::shallow_clone).collect();
                let rank = ts.first().map_or(1, Tensor::dim);
                one(Tensor::cat(
                    &ts,
                    axis(node.attr_i("axis").unwrap_or(0), rank),
                ))
            }
            "Shape" => one(Tensor::from_slice(&x()?.size()).to_device(device)),
            "Constant" => {
                let t = node
                    .attr_t("value")
                    .ok_or("Constant without a tensor value")?;
                one(tensor_of(t).map_err(|e| e.to_string())?.to_device(device))
            }
            "ConstantOfShape" => {
                let shape = ints_of(x()?)?;
                let v = match node.attr_t("value") {
                    Some(t) => tensor_of(t).map_err(|e| e.to_string())?,
                    None => Tensor::from_slice(&[0f32]),
                };
                one(v
                    .reshape([-1])
                    .expand(shape, false)
                    .contiguous()
                    .to_device(device))
            }
            "Expand" => {
                let x = x()?;
                let shape = ints_of(input(ins, 1)?)?;
                let ones = Tensor::ones(shape, (x.kind(), device));
                one(x * ones)
            }
            "GatherElements" => {
                let (x, idx) = (x()?, input(ins, 1)?);
                let a = axis(node.attr_i("axis").unwrap_or(0), x.dim());
                let n = x.size()[a as usize];
                let idx = idx.to_kind(Kind::Int64);
                let idx = idx.where_self(&idx.ge(0), &(&idx + n));
                one(x.gather(a, &idx, false))
            }
            "GatherND" => gather_nd(node, ins),
            "Split" => split(node, ins),
            "Pad" => pad(node, ins),
            "Slice" => slice(ins),
            "Squeeze" | "Unsqueeze" | "Gather" => lower_index(node, ins),
            other => Err(format!("no libtorch lowering for {other}")),
        }
    }

    /// Squeeze, Unsqueeze and Gather: axes from input 1 or the `axes` attribute.
    fn lower_index(node: &NodeProto, ins: Ins) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        let axes_of = |pos: usize| -> Result<Option<Vec<i64>>, String> {
            match ins.get(pos).and_then(Option::as_ref) {
                Some(t) => Ok(Some(ints_of(t)?)),
                None => Ok(node.attr_ints("axes").map(<[i64]>::to_vec)),
            }
        };
        match node.op_type() {
            "Squeeze" => {
                let x = x()?;
                let mut size = x.size();
                match axes_of(1)? {
                    Some(axes) => {
                        let mut axes: Vec<usize> =
                            axes.iter().map(|&a| axis(a, size.len()) as usize).collect();
                        axes.sort_unstable_by(|a, b| b.cmp(a));
                        for a in axes {
                            size.remove(a);
                        }
                    }
                    None => size.retain(|&d| d != 1),
                }
                one(x.reshape(size))
            }
            "Unsqueeze" => {
                let x = x()?;
                let axes = axes_of(1)?.ok_or("Unsqueeze without axes")?;
                let rank = x.dim() + axes.len();
                let mut axes: Vec<i64> = axes.iter().map(|&a| axis(a, rank)).collect();
                axes.sort_unstable();
                let mut y = x.shallow_clone();
                for a in axes {
                    y = y.unsqueeze(a);
                }
                one(y)
            }
            _ => {
                let (x, idx) = (x()?, input(ins, 1)?);
                let a = axis(node.attr_i("axis").unwrap_or(0), x.dim());
                let n = x.size()[a as usize];
                let idx = idx.to_kind(Kind::Int64);
                let idx = idx.where_self(&idx.ge(0), &(&idx + n));
                let flat = x.index_select(a, &idx.flatten(0, -1).to_device(x.device()));
                let mut shape = x.size()[..a as usize].to_vec();
                shape.extend(idx.size());
                shape.extend(&x.size()[a as usize + 1..]);
                one(flat.reshape(shape))
            }
        }
    }

    /// GatherND with `batch_dims = 0`: the last index axis addresses the leading data axes, turned
    /// into one linear index over them.
    fn gather_nd(node: &NodeProto, ins: Ins) -> Lowered {
        if node.attr_i("batch_dims").unwrap_or(0) != 0 {
            return Err("GatherND with batch_dims > 0 is not lowered".into());
        }
        let (x, idx) = (input(ins, 0)?, input(ins, 1)?.to_kind(Kind::Int64));
        let size = x.size();
        let isize = idx.size();
        let m = *isize.last().ok_or("GatherND indices of rank 0")? as usize;
        if m > size.len() {
            return Err("GatherND index longer than the data rank".into());
        }
        let lead: i64 = size[..m].iter().product();
        let mut lin = Tensor::zeros(&isize[..isize.len() - 1], (Kind::Int64, x.device()));
        for (j, &n) in size[..m].iter().enumerate() {
            let c = idx.select(-1, j as i64);
            let c = c.where_self(&c.ge(0), &(&c + n));
            lin = lin * n + c;
        }
        let mut flat_shape = vec![lead];
        flat_shape.extend(&size[m..]);
        let picked = x.reshape(flat_shape).index_select(0, &lin.flatten(0, -1));
        let mut out = isize[..isize.len() - 1].to_vec();
        out.extend(&size[m..]);
        Ok(vec![picked.reshape(out)])
    }

    fn split(node: &NodeProto, ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let a = axis(node.attr_i("axis").unwrap_or(0), x.dim());
        let n = x.size()[a as usize];
        let parts = node.output.len().max(1) as i64;
        let sizes = match ins.get(1).and_then(Option::as_ref) {
            Some(t) => ints_of(t)?,
            None => match node.attr_ints("split") {
                Some(s) => s.to_vec(),
                None => {
                    let chunk = (n + parts - 1) / parts;
                    (0..parts)
                        .map(|i| chunk.min(n - i * chunk).max(0))
                        .collect()
                }
            },
        };
        Ok(x.split_with_sizes(sizes, a))
    }

    fn slice(ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let starts = ints_of(input(ins, 1)?)?;
        let ends = ints_of(input(ins, 2)?)?;
        let axes = match ins.get(3).and_then(Option::as_ref) {
            Some(t) => ints_of(t)?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match ins.get(4).and_then(Option::as_ref) {
            Some(t) => ints_of(t)?,
            None => vec![1; starts.len()],
        };
        let mut y = x.shallow_clone();
        for (((&s, &e), &a), &st) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
            let a = axis(a, x.dim());
            let n = y.size()[a as usize];
            let clampi = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
            if st < 0 {
                // Negative steps: flip, then slice forward.
                let (s2, e2) = (clampi(s).min(n - 1), if e < -n { -1 } else { clampi(e) });
                let len = ((s2 - e2) + (-st) - 1) / (-st);
                let idx: Vec<i64> = (0..len.max(0)).map(|i| s2 + i * st).collect();
                y = y.index_select(a, &Tensor::from_slice(&idx).to_device(y.device()));
            } else {
                y = y.slice(a, clampi(s), clampi(e).max(clampi(s)), st);
            }
        }
        Ok(vec![y])
    }

    fn pad(node: &NodeProto, ins: Ins) -> Lowered {
        let x = input(ins, 0)?;
        let pads = match ins.get(1).and_then(Option::as_ref) {
            Some(t) => ints_of(t)?,
            None => node.attr_ints("pads").ok_or("Pad without pads")?.to_vec(),
        };
        let r = x.dim();
        let mut spec = Vec::new();
        for d in (0..r).rev() {
            spec.extend([pads[d], pads[r + d]]);
        }
        let mode = node.attr_s("mode").unwrap_or_else(|| "constant".into());
        let value = match ins.get(2).and_then(Option::as_ref) {
            Some(t) => floats_of(t)?.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        let y = match mode.as_str() {
            "constant" if value == 0.0 => x.constant_pad_nd(spec),
            "constant" => x.pad(spec, "constant", value),
            "reflect" => x.pad(spec, "reflect", None::<f64>),
            "edge" => x.pad(spec, "replicate", None::<f64>),
            other => return Err(format!("Pad mode {other} is not lowered")),
        };
        Ok(vec![y])
    }
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}
