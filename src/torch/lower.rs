//! One ONNX node as libtorch ops (feature `torch`), for [`super::exec::TorchGraph`].
//!
//! Lowerings follow the ONNX operator definitions (opset 13+), checked against onnxruntime on
//! the dev corpus and against tract in `tests/torch_exec.rs`. QuantizeLinear/DequantizeLinear
//! are fake quantization with a straight-through estimator, so a QDQ graph can be trained.

use tch::{Device, Kind, Tensor};

use super::exec::tensor_of;
use crate::model::proto::NodeProto;
use crate::model::tensor::DataType;

/// The ops this executor lowers (plus `If`, run by the executor itself).
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "PRelu",
    "Tanh",
    "Softmax",
    "Erf",
    "Sqrt",
    "Identity",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Not",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Equal",
    "Less",
    "Greater",
    "Where",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "MaxPool",
    "AveragePool",
    "Flatten",
    "Gemm",
    "MatMul",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Shape",
    "Gather",
    "GatherElements",
    "GatherND",
    "Cast",
    "ConstantOfShape",
    "Constant",
    "Resize",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ArgMax",
    "ArgMin",
    "TopK",
    "Pad",
    "Expand",
    "LayerNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "If",
];

type Ins<'a> = &'a [Option<Tensor>];
type Lowered = Result<Vec<Tensor>, String>;

fn input<'a>(ins: Ins<'a>, i: usize) -> Result<&'a Tensor, String> {
    ins.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| format!("input {i} is missing"))
}

pub(super) fn ints_of(t: &Tensor) -> Result<Vec<i64>, String> {
    Vec::<i64>::try_from(&t.to_kind(Kind::Int64).flatten(0, -1).to_device(Device::Cpu))
        .map_err(|e| e.to_string())
}

fn floats_of(t: &Tensor) -> Result<Vec<f64>, String> {
    Vec::<f64>::try_from(
        &t.to_kind(Kind::Double)
            .flatten(0, -1)
            .to_device(Device::Cpu),
    )
    .map_err(|e| e.to_string())
}

fn axis(a: i64, rank: usize) -> i64 {
    if a < 0 { a + rank as i64 } else { a }
}

/// One node as libtorch ops.
pub(super) fn lower(node: &NodeProto, ins: Ins, device: Device) -> Lowered {
    let x = || input(ins, 0);
    let one = |t: Tensor| Ok(vec![t]);
    match node.op_type() {
        "Conv" | "ConvTranspose" => one(conv(node, ins)?),
        "BatchNormalization" => one(x()?.batch_norm(
            Some(input(ins, 1)?),
            Some(input(ins, 2)?),
            Some(input(ins, 3)?),
            Some(input(ins, 4)?),
            node.attr_i("training_mode").unwrap_or(0) == 1,
            f64::from(1.0 - node.attr_f("momentum").unwrap_or(0.9)),
            f64::from(node.attr_f("epsilon").unwrap_or(1e-5)),
            false,
        )),
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
        "Not" => one(x()?.logical_not()),
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
        "PRelu" => {
            let (x, s) = (x()?, input(ins, 1)?);
            one(x.relu() - (-x).relu() * s)
        }
        "Clip" => clip(node, ins),
        "Softmax" => {
            let x = x()?;
            let a = axis(node.attr_i("axis").unwrap_or(-1), x.dim());
            one(x.softmax(a, None::<Kind>))
        }
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
        _ => lower_shape(node, ins, device),
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

/// Conv/ConvTranspose, 1-D to 3-D, explicit or SAME auto-padding (asymmetric pads applied
/// as a separate pad).
fn conv(node: &NodeProto, ins: Ins) -> Result<Tensor, String> {
    let (x, w) = (input(ins, 0)?, input(ins, 1)?);
    let b = ins.get(2).and_then(Option::as_ref);
    let k = w.dim() - 2;
    let ones = vec![1i64; k];
    let strides = node
        .attr_ints("strides")
        .map_or(ones.clone(), <[i64]>::to_vec);
    let dil = node
        .attr_ints("dilations")
        .map_or(ones.clone(), <[i64]>::to_vec);
    let groups = node.attr_i("group").unwrap_or(1);
    let transposed = node.op_type() == "ConvTranspose";
    let mut pads = node
        .attr_ints("pads")
        .map_or(vec![0; 2 * k], <[i64]>::to_vec);
    let auto = node.attr_s("auto_pad").unwrap_or_default();
    if auto.starts_with("SAME") && !transposed {
        let size = x.size();
        let ks = w.size();
        for d in 0..k {
            let inp = size[2 + d];
            let out = (inp + strides[d] - 1) / strides[d];
            let eff = (ks[2 + d] - 1) * dil[d] + 1;
            let total = ((out - 1) * strides[d] + eff - inp).max(0);
            let (lo, hi) = if auto == "SAME_UPPER" {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            };
            pads[d] = lo;
            pads[k + d] = hi;
        }
    } else if auto == "VALID" {
        pads = vec![0; 2 * k];
    }
    let sym = (0..k).all(|d| pads[d] == pads[k + d]);
    let mut input_t = x.shallow_clone();
    let mut pad = pads[..k].to_vec();
    if !sym && !transposed {
        // constant_pad_nd takes pairs from the last dim backwards.
        let mut spec = Vec::new();
        for d in (0..k).rev() {
            spec.extend([pads[d], pads[k + d]]);
        }
        input_t = input_t.constant_pad_nd(spec);
        pad = vec![0; k];
    }
    let out_pad = node
        .attr_ints("output_padding")
        .map_or(vec![0; k], <[i64]>::to_vec);
    Ok(input_t.convolution(w, b, strides, pad, dil, transposed, out_pad, groups))
}

fn lower_shape(node: &NodeProto, ins: Ins, device: Device) -> Lowered {
    let x = || input(ins, 0);
    let one = |t: Tensor| Ok(vec![t]);
    match node.op_type() {
        "GlobalAveragePool" => {
            let x = x()?;
            let dims: Vec<i64> = (2..x.dim() as i64).collect();
            one(x.mean_dim(dims.as_slice(), true, None::<Kind>))
        }
        "GlobalMaxPool" => {
            let x = x()?;
            let dims: Vec<i64> = (2..x.dim() as i64).collect();
            one(x.amax(dims.as_slice(), true))
        }
        "MaxPool" | "AveragePool" => pool(node, x()?),
        "Flatten" => {
            let x = x()?;
            let a = axis(node.attr_i("axis").unwrap_or(1), x.dim());
            let size = x.size();
            let lead: i64 = size[..a as usize].iter().product();
            one(x.reshape([lead, -1]))
        }
        "Gemm" => gemm(node, ins),
        "MatMul" => one(input(ins, 0)?.matmul(input(ins, 1)?)),
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
        _ => lower_index(node, ins, device),
    }
}

fn lower_index(node: &NodeProto, ins: Ins, device: Device) -> Lowered {
    let x = || input(ins, 0);
    let one = |t: Tensor| Ok(vec![t]);
    let axes_of = |pos: usize| -> Result<Option<Vec<i64>>, String> {
        match ins.get(pos).and_then(Option::as_ref) {
            Some(t) => Ok(Some(ints_of(t)?)),
            None => Ok(node.attr_ints("axes").map(<[i64]>::to_vec)),
        }
    };
    match node.op_type() {
        "Slice" => slice(ins),
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
        "Gather" => {
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
        "ReduceMean" | "ReduceSum" | "ReduceMax" => {
            let x = x()?;
            let keep = node.attr_i("keepdims").unwrap_or(1) == 1;
            let axes = axes_of(1)?.unwrap_or_else(|| (0..x.dim() as i64).collect());
            let axes: Vec<i64> = axes.iter().map(|&a| axis(a, x.dim())).collect();
            if node.op_type() == "ReduceMean" {
                one(x.mean_dim(axes.as_slice(), keep, None::<Kind>))
            } else if node.op_type() == "ReduceMax" {
                one(x.amax(axes.as_slice(), keep))
            } else {
                one(x.sum_dim_intlist(axes.as_slice(), keep, None::<Kind>))
            }
        }
        "Expand" => {
            let x = x()?;
            let shape = ints_of(input(ins, 1)?)?;
            let ones = Tensor::ones(shape, (x.kind(), device));
            one(x * ones)
        }
        "Pad" => pad(node, ins),
        "Resize" => resize(node, ins),
        "LayerNormalization" => {
            let x = x()?;
            let a = axis(node.attr_i("axis").unwrap_or(-1), x.dim()) as usize;
            let shape = x.size()[a..].to_vec();
            let eps = f64::from(node.attr_f("epsilon").unwrap_or(1e-5));
            let b = ins.get(2).and_then(Option::as_ref);
            one(x.layer_norm(shape, Some(input(ins, 1)?), b, eps, false))
        }
        _ => lower_select(node, ins),
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

/// MaxPool/AveragePool, 1-D to 3-D; asymmetric pads of a max pool are an explicit −∞ pad.
fn pool(node: &NodeProto, x: &Tensor) -> Lowered {
    let kernel = node
        .attr_ints("kernel_shape")
        .ok_or("no kernel_shape")?
        .to_vec();
    let k = kernel.len();
    let strides = node
        .attr_ints("strides")
        .map_or(vec![1; k], <[i64]>::to_vec);
    let mut pads = node
        .attr_ints("pads")
        .map_or(vec![0; 2 * k], <[i64]>::to_vec);
    let auto = node.attr_s("auto_pad").unwrap_or_default();
    if auto.starts_with("SAME") {
        return Err(format!("auto_pad {auto} on a pool is not lowered"));
    }
    let is_max = node.op_type() == "MaxPool";
    let mut x = x.shallow_clone();
    if (0..k).any(|d| pads[d] != pads[k + d]) {
        if !is_max {
            return Err("asymmetric pads on AveragePool are not lowered".into());
        }
        let mut spec = Vec::new();
        for d in (0..k).rev() {
            spec.extend([pads[d], pads[k + d]]);
        }
        x = x.pad(spec, "constant", f64::NEG_INFINITY);
        pads = vec![0; 2 * k];
    }
    let ceil = node.attr_i("ceil_mode").unwrap_or(0) == 1;
    let p = pads[..k].to_vec();
    let dil = node
        .attr_ints("dilations")
        .map_or(vec![1; k], <[i64]>::to_vec);
    let cip = node.attr_i("count_include_pad").unwrap_or(0) == 1;
    let y = match (is_max, k) {
        (true, 1) => x.max_pool1d(kernel, strides, p, dil, ceil),
        (true, 2) => x.max_pool2d(kernel, strides, p, dil, ceil),
        (true, 3) => x.max_pool3d(kernel, strides, p, dil, ceil),
        (false, 1) => x.avg_pool1d(kernel, strides, p, ceil, cip),
        (false, 2) => x.avg_pool2d(kernel, strides, p, ceil, cip, None::<i64>),
        (false, 3) => x.avg_pool3d(kernel, strides, p, ceil, cip, None::<i64>),
        _ => return Err(format!("{k}-D pooling is not lowered")),
    };
    Ok(vec![y])
}

/// Arg-max/min, top-k, gathers, Split and fake-quantization.
fn lower_select(node: &NodeProto, ins: Ins) -> Lowered {
    let x = || input(ins, 0);
    let one = |t: Tensor| Ok(vec![t]);
    match node.op_type() {
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
        "QuantizeLinear" | "DequantizeLinear" => fake_quant(node, ins),
        other => Err(format!("no libtorch lowering for {other}")),
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
pub(super) fn fake_quant(node: &NodeProto, ins: Ins) -> Lowered {
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
pub(super) fn fake_quant_weight(node: &NodeProto, ins: Ins, kind: Kind) -> Lowered {
    let w = input(ins, 0)?;
    let (s, z, range) = qparams(node, ins, w.dim(), kind)?;
    Ok(vec![(fake_round(w, &s, &z, range) - &z) * s])
}

/// QAT write-back: the integer values a float weight quantizes to.
pub(super) fn quantize_weight(node: &NodeProto, ins: Ins, kind: Kind) -> Result<Vec<i64>, String> {
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

/// Resize of the spatial dims: nearest (asymmetric, floor — what torch exports) and linear
/// (half_pixel / pytorch_half_pixel / align_corners), by scales or sizes.
fn resize(node: &NodeProto, ins: Ins) -> Lowered {
    let x = input(ins, 0)?;
    let size = x.size();
    let sp = &size[2..];
    let out: Vec<i64> = match (
        ins.get(3).and_then(Option::as_ref),
        ins.get(2).and_then(Option::as_ref),
    ) {
        (Some(sizes), _) if sizes.numel() > 0 => ints_of(sizes)?[2..].to_vec(),
        (_, Some(scales)) if scales.numel() > 0 => {
            let s = floats_of(scales)?;
            sp.iter()
                .zip(&s[2..])
                .map(|(&d, &f)| (d as f64 * f).floor() as i64)
                .collect()
        }
        _ => return Err("Resize without scales or sizes".into()),
    };
    let mode = node.attr_s("mode").unwrap_or_else(|| "nearest".into());
    let ctm = node
        .attr_s("coordinate_transformation_mode")
        .unwrap_or_else(|| "half_pixel".into());
    let align = ctm == "align_corners";
    let half = ctm == "half_pixel" || ctm == "pytorch_half_pixel";
    let y = match (mode.as_str(), out.len()) {
        ("nearest", 1) if ctm == "asymmetric" => x.upsample_nearest1d(&out, None::<f64>),
        ("nearest", 2) if ctm == "asymmetric" => {
            x.upsample_nearest2d(&out, None::<f64>, None::<f64>)
        }
        ("nearest", 3) if ctm == "asymmetric" => {
            x.upsample_nearest3d(&out, None::<f64>, None::<f64>, None::<f64>)
        }
        ("nearest", 2) => x.internal_upsample_nearest_exact2d(&out, None::<f64>, None::<f64>),
        ("linear", 1) if align || half => x.upsample_linear1d(&out, align, None::<f64>),
        ("linear", 2) if align || half => {
            x.upsample_bilinear2d(&out, align, None::<f64>, None::<f64>)
        }
        ("linear", 3) if align || half => {
            x.upsample_trilinear3d(&out, align, None::<f64>, None::<f64>, None::<f64>)
        }
        _ => {
            return Err(format!(
                "Resize mode {mode} / {ctm} on {} dims is not lowered",
                out.len()
            ));
        }
    };
    Ok(vec![y])
}
