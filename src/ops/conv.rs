//! Convolutions and pools.

use super::ChannelRule::{self, Channelwise, Lock};
use super::PerChannel::Plain;
use super::{OpDef, QuantRole, WeightAxis, static_dims};
use crate::model::proto::NodeProto;
use crate::model::shape::ShapeInfo;
use crate::model::shape::rules::{conv, conv_transpose, global_pool, pool};

const CW: ChannelRule = Channelwise(Plain);

/// Conv: out numel × (Cin/group × kernel) = out numel × prod(w[1..]).
fn conv_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let w = static_dims(shapes, node.input.get(1)?)?;
    let out = static_dims(shapes, node.output.first()?)?;
    Some(out.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
}

/// ConvTranspose: every input element is multiplied into (Cout/group × kernel) outputs.
fn conv_transpose_macs(node: &NodeProto, shapes: &ShapeInfo) -> Option<u64> {
    let w = static_dims(shapes, node.input.get(1)?)?;
    let x = static_dims(shapes, node.input.first()?)?;
    Some(x.iter().product::<u64>() * w.iter().skip(1).product::<u64>())
}

pub const OPS: &[OpDef] = &[
    OpDef::new("Conv")
        .same_since(1)
        .shape(conv)
        .channels(ChannelRule::Conv { transpose: false })
        .macs(conv_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Fixed(0),
        })
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("ConvTranspose")
        .same_since_if(1, explicit_geometry)
        .shape(conv_transpose)
        .channels(ChannelRule::Conv { transpose: true })
        .macs(conv_transpose_macs)
        .quant(QuantRole::Weighted {
            slot: 1,
            axis: WeightAxis::Fixed(1),
        })
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("ConvInteger")
        .shape(conv)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("QLinearConv")
        .shape(conv)
        .channels(Lock)
        .dedicated()
        .qoperator(),
    OpDef::new("DeformConv").trt(1001),
    OpDef::new("MaxPool")
        .same_since(8)
        .shape(pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("AveragePool")
        .same_since(7)
        .shape(pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("LpPool").shape(pool).channels(CW).trt(702),
    OpDef::new("GlobalAveragePool")
        .same_since(1)
        .shape(global_pool)
        .channels(CW)
        .quant(QuantRole::Pool)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("GlobalMaxPool")
        .same_since(1)
        .shape(global_pool)
        .channels(CW)
        .trt(600)
        .lower(lowering::LOWER),
    OpDef::new("GlobalLpPool")
        .shape(global_pool)
        .channels(CW)
        .trt(702),
];

/// libtorch lowerings of this family (feature `torch`) for the ONNX → libtorch executor.
#[cfg(feature = "torch")]
pub(crate) mod lowering {
    use tch::{Device, Kind, Tensor};

    use super::super::torch::{Ins, LowerFn, Lowered, input};
    use crate::model::proto::NodeProto;

    /// This family's lowering, for the entries marked with it.
    pub const LOWER: LowerFn = lower;

    fn lower(node: &NodeProto, ins: Ins, _device: Device) -> Lowered {
        let x = || input(ins, 0);
        let one = |t: Tensor| Ok(vec![t]);
        match node.op_type() {
            "Conv" | "ConvTranspose" => one(conv(node, ins)?),
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
            other => Err(format!("no libtorch lowering for {other}")),
        }
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
}

#[cfg(not(feature = "torch"))]
pub(crate) mod lowering {
    /// Without the `torch` feature there is nothing to lower to.
    pub const LOWER: super::super::LowerFn = ();
}

/// ConvTranspose-11 redefined how `output_shape` and `auto_pad` SAME derive the padding; with
/// explicit `pads` (what PyTorch exports) and neither of those, opsets 1 and 13 agree.
fn explicit_geometry(node: &NodeProto, _rank: Option<usize>) -> bool {
    node.attr("output_shape").is_none() && node.attr_s("auto_pad").is_none_or(|s| s == "NOTSET")
}
