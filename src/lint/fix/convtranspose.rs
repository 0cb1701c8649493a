//! ConvTranspose with asymmetric padding (seed Q3: ConvTranspose3d with output_padding=1)
//! rewritten as a ConvTranspose with symmetric padding, then a Slice that crops the extra
//! rows and, where output_padding reaches past the computed area, a Pad plus the bias.
//!
//! Per spatial axis a transposed convolution computes a "full" signal of length
//! `F = (in-1)*s + (k-1)*d + 1`; pads `(b, e)` and output_padding `op` select full
//! positions `[b, F - e + op)`, and positions at or beyond `F` hold only the bias. With
//! `e' = e - op`, a ConvTranspose with symmetric pads `p = max(0, min(b, e'))` covers
//! `[p, F - p)`, and the Slice/Pad after it adjusts both ends exactly.

use super::{FixAction, Pass, edit};
use crate::model::DataType;
use crate::model::builder::{attr_ints, attr_s};
use crate::model::proto::{GraphProto, NodeProto};

/// Padding of one ConvTranspose, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pub kernel: Vec<i64>,
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    pub out_pad: Vec<i64>,
    pub begin: Vec<i64>,
    pub end: Vec<i64>,
    /// Pads came from auto_pad or output_shape rather than explicit pads.
    pub derived: bool,
}

impl Geometry {
    /// End padding after output_padding: the deconvolution is symmetric when it equals begin.
    pub fn effective_end(&self) -> Vec<i64> {
        self.end
            .iter()
            .zip(&self.out_pad)
            .map(|(e, o)| e - o)
            .collect()
    }

    pub fn symmetric(&self) -> bool {
        self.begin == self.effective_end() && self.begin.iter().all(|&b| b >= 0)
    }

    pub fn pads_attr(&self) -> Vec<i64> {
        self.begin.iter().chain(&self.end).copied().collect()
    }
}

/// Resolves a ConvTranspose's padding; `x` and `w` are the static input and weight shapes
/// when known (needed for auto_pad and output_shape).
pub fn geometry(n: &NodeProto, x: Option<&[i64]>, w: Option<&[i64]>) -> Result<Geometry, String> {
    let kernel: Vec<i64> = match n.attr_ints("kernel_shape") {
        Some(k) => k.to_vec(),
        None => w
            .filter(|w| w.len() > 2)
            .map(|w| w[2..].to_vec())
            .ok_or("unknown kernel shape")?,
    };
    let r = kernel.len();
    if r == 0 {
        return Err("no spatial dims".into());
    }
    let get = |name: &str, default: i64| -> Result<Vec<i64>, String> {
        match n.attr_ints(name) {
            Some(v) if v.len() == r => Ok(v.to_vec()),
            Some([]) => Ok(vec![default; r]),
            Some(v) => Err(format!(
                "{name} has {} values for {r} spatial dims",
                v.len()
            )),
            None => Ok(vec![default; r]),
        }
    };
    let strides = get("strides", 1)?;
    let dilations = get("dilations", 1)?;
    let out_pad = get("output_padding", 0)?;
    let auto_pad = n.attr_s("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let output_shape = n
        .attr_ints("output_shape")
        .filter(|v| !v.is_empty())
        .map(<[i64]>::to_vec);
    let split = |total: &[i64], upper: bool| -> (Vec<i64>, Vec<i64>) {
        let b = total
            .iter()
            .map(|&t| if upper { t / 2 } else { t - t / 2 })
            .collect();
        let e = total
            .iter()
            .map(|&t| if upper { t - t / 2 } else { t / 2 })
            .collect();
        (b, e)
    };
    let spatial_in = || -> Result<Vec<i64>, String> {
        let x = x.ok_or("input spatial dims unknown")?;
        if x.len() != r + 2 {
            return Err("input rank does not match the kernel".into());
        }
        Ok(x[2..].to_vec())
    };
    let full = |inp: &[i64]| -> Vec<i64> {
        (0..r)
            .map(|i| (inp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1)
            .collect()
    };
    let (begin, end, derived) = if let Some(os) = output_shape {
        let os = if os.len() == r + 2 {
            os[2..].to_vec()
        } else {
            os
        };
        if os.len() != r {
            return Err("output_shape does not match the kernel".into());
        }
        let inp = spatial_in()?;
        let f = full(&inp);
        let total: Vec<i64> = (0..r).map(|i| f[i] + out_pad[i] - os[i]).collect();
        let (b, e) = split(&total, auto_pad == "SAME_UPPER");
        (b, e, true)
    } else if auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" {
        let inp = spatial_in()?;
        let f = full(&inp);
        let total: Vec<i64> = (0..r)
            .map(|i| f[i] + out_pad[i] - inp[i] * strides[i])
            .collect();
        let (b, e) = split(&total, auto_pad == "SAME_UPPER");
        (b, e, true)
    } else if auto_pad == "VALID" {
        (vec![0; r], vec![0; r], true)
    } else {
        let pads = get("pads", 0).or_else(|_| match n.attr_ints("pads") {
            Some(p) if p.len() == 2 * r => Ok(p.to_vec()),
            _ => Err("pads do not match the kernel".to_string()),
        })?;
        if pads.len() == 2 * r {
            (pads[..r].to_vec(), pads[r..].to_vec(), false)
        } else {
            (vec![0; r], vec![0; r], false)
        }
    };
    Ok(Geometry {
        kernel,
        strides,
        dilations,
        out_pad,
        begin,
        end,
        derived,
    })
}

pub fn convtranspose_pads(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let opset = p.cx.opset;
    let mut actions = Vec::new();
    let mut out_nodes = Vec::with_capacity(g.node.len());
    let mut inits = Vec::new();
    for n in std::mem::take(&mut g.node) {
        if n.op_type() != "ConvTranspose" || !n.op_domain().is_empty() {
            out_nodes.push(n);
            continue;
        }
        match rewrite(p, &n, opset) {
            Some((nodes, new_inits, desc)) => {
                actions.push(FixAction {
                    fix: String::new(),
                    rules: Vec::new(),
                    nodes: vec![n.display_name()],
                    description: desc,
                });
                out_nodes.extend(nodes);
                inits.extend(new_inits);
            }
            None => out_nodes.push(n),
        }
    }
    g.node = out_nodes;
    g.initializer.extend(inits);
    actions
}

type Rewrite = (
    Vec<NodeProto>,
    Vec<crate::model::proto::TensorProto>,
    String,
);

fn rewrite(p: &mut Pass, n: &NodeProto, opset: i64) -> Option<Rewrite> {
    let x = n.input.first()?.clone();
    let w = n.input.get(1)?.clone();
    let xs = p.cx.static_shape(&x);
    let ws = p.cx.static_shape(&w);
    let geo = geometry(n, xs.as_deref(), ws.as_deref()).ok()?;
    if !provable(n, &geo) {
        return None;
    }
    let plan = Crops::of(&geo);
    let (needs_pad, needs_crop) = (plan.needs_pad(), plan.needs_crop());
    let r = geo.kernel.len();
    let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
    let name = n.display_name();
    let out = n.output.first()?.clone();
    let mut st = Stages {
        name: name.clone(),
        out: out.clone(),
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    // Bias must follow a zero Pad; fetch it as a constant first.
    let bias_const = if needs_pad {
        match &bias {
            Some(b) => Some(bias_as_constant(p, b, &name, r)?),
            None => None,
        }
    } else {
        None
    };
    // 1. Symmetric ConvTranspose.
    let mut inputs: Vec<String> = vec![x.clone(), w.clone()];
    if let Some(b) = &bias
        && bias_const.is_none()
    {
        inputs.push(b.clone());
    }
    let last_stage = !needs_crop && !needs_pad && bias_const.is_none();
    let deconv_out = st.output(p, last_stage, "symmetric");
    st.nodes
        .push(symmetric_deconv(n, inputs, &deconv_out, &plan.sym));
    let mut cur = deconv_out;
    // 2. Crop.
    if needs_crop {
        let last = !needs_pad && bias_const.is_none();
        cur = st.crop(p, &cur, last, &plan, opset)?;
    }
    // 3. Extend with zeros, then add the bias.
    if needs_pad {
        cur = st.pad(p, &cur, bias_const.is_none(), &plan, opset)?;
        if let Some(b) = bias_const {
            let aname = p.names.fresh(&format!("{name}/bias_add"));
            st.nodes.push(edit::node(
                &aname,
                "Add",
                &[&cur, b.name()],
                &[&out],
                Vec::new(),
            ));
            st.inits.push(b);
        }
    }
    let desc = describe(&name, &geo, &plan);
    Some((st.nodes, st.inits, desc))
}

/// Whether a rewrite of `n` can be proven equal to it (and is needed at all).
fn provable(n: &NodeProto, geo: &Geometry) -> bool {
    if geo.symmetric() && !geo.derived {
        return false;
    }
    // Negative padding from output_shape: runtimes disagree on what it means (onnxruntime
    // rejects it), so there is nothing to be equal to.
    if geo.begin.iter().chain(&geo.end).any(|&v| v < 0) {
        return false;
    }
    // output_shape: tract (the verifier) crops at the end where onnxruntime and the ONNX spec
    // split the padding over both ends, so no rewrite can be proven equal to the original.
    if n.attr_ints("output_shape").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    // Likewise auto_pad SAME_* with output_padding: tract and onnxruntime disagree.
    !(n.attr_s("auto_pad").is_some_and(|a| a.starts_with("SAME"))
        && geo.out_pad.iter().any(|&o| o != 0))
}

/// Per spatial axis: the symmetric pads, and what to crop or zero-extend at each end after it.
struct Crops {
    eff_end: Vec<i64>,
    sym: Vec<i64>,
    crop_begin: Vec<i64>,
    crop_end: Vec<i64>,
    pad_begin: Vec<i64>,
    pad_end: Vec<i64>,
}

impl Crops {
    fn of(geo: &Geometry) -> Self {
        let r = geo.kernel.len();
        let eff_end = geo.effective_end();
        let sym: Vec<i64> = (0..r)
            .map(|i| geo.begin[i].min(eff_end[i]).max(0))
            .collect();
        let crop_begin: Vec<i64> = (0..r).map(|i| (geo.begin[i] - sym[i]).max(0)).collect();
        let crop_end: Vec<i64> = (0..r).map(|i| (eff_end[i] - sym[i]).max(0)).collect();
        let pad_begin: Vec<i64> = (0..r).map(|i| (sym[i] - geo.begin[i]).max(0)).collect();
        let pad_end: Vec<i64> = (0..r).map(|i| (sym[i] - eff_end[i]).max(0)).collect();
        Crops {
            eff_end,
            sym,
            crop_begin,
            crop_end,
            pad_begin,
            pad_end,
        }
    }

    fn needs_pad(&self) -> bool {
        self.pad_begin.iter().chain(&self.pad_end).any(|&v| v > 0)
    }

    fn needs_crop(&self) -> bool {
        self.crop_begin.iter().chain(&self.crop_end).any(|&v| v > 0)
    }
}

/// The bias `b` as a constant shaped `[C, 1, …]` to add after a zero Pad.
fn bias_as_constant(
    p: &mut Pass,
    b: &str,
    name: &str,
    r: usize,
) -> Option<crate::model::proto::TensorProto> {
    let t = p.cx.const_tensor(b)?;
    let c = *t.dims.first()?;
    let mut t = t.clone();
    t.name = Some(p.names.fresh(&format!("{name}/bias")));
    t.dims = std::iter::once(c)
        .chain(std::iter::repeat_n(1, r))
        .collect();
    Some(t)
}

/// `n` with symmetric pads `sym`, reading `inputs` and writing `out`.
fn symmetric_deconv(n: &NodeProto, inputs: Vec<String>, out: &str, sym: &[i64]) -> NodeProto {
    let mut attrs: Vec<_> = n
        .attribute
        .iter()
        .filter(|a| {
            !matches!(
                a.name(),
                "pads" | "output_padding" | "output_shape" | "auto_pad"
            )
        })
        .cloned()
        .collect();
    attrs.push(attr_ints(
        "pads",
        &sym.iter().chain(sym).copied().collect::<Vec<_>>(),
    ));
    let mut deconv = n.clone();
    deconv.input = inputs;
    deconv.output = vec![out.to_string()];
    deconv.attribute = attrs;
    deconv
}

/// The nodes and initializers replacing one ConvTranspose.
struct Stages {
    name: String,
    /// The original output, written by the last stage.
    out: String,
    nodes: Vec<crate::model::proto::NodeProto>,
    inits: Vec<crate::model::proto::TensorProto>,
}

impl Stages {
    /// The output of a stage: the original output when it is the last one, else a fresh name.
    fn output(&self, p: &mut Pass, last: bool, what: &str) -> String {
        if last {
            self.out.clone()
        } else {
            p.names.fresh(&format!("{}/{what}", self.name))
        }
    }

    /// Slices `plan.crop_begin`/`crop_end` off the spatial axes of `cur`.
    fn crop(
        &mut self,
        p: &mut Pass,
        cur: &str,
        last: bool,
        plan: &Crops,
        opset: i64,
    ) -> Option<String> {
        let name = self.name.clone();
        let r = plan.sym.len();
        let o = self.output(p, last, "cropped");
        let axes: Vec<i64> = (0..r).map(|i| i as i64 + 2).collect();
        let ends: Vec<i64> = (0..r)
            .map(|i| {
                if plan.crop_end[i] > 0 {
                    -plan.crop_end[i]
                } else {
                    i64::MAX
                }
            })
            .collect();
        let sname = p.names.fresh(&format!("{name}/crop"));
        if opset >= 10 {
            let names: Vec<String> = ["starts", "ends", "axes"]
                .iter()
                .map(|s| p.names.fresh(&format!("{name}/crop_{s}")))
                .collect();
            for (nm, vals) in names.iter().zip([&plan.crop_begin, &ends, &axes]) {
                self.inits
                    .push(edit::tensor_i64(nm, DataType::INT64, &[r as i64], vals)?);
            }
            self.nodes.push(edit::node(
                &sname,
                "Slice",
                &[cur, &names[0], &names[1], &names[2]],
                &[&o],
                Vec::new(),
            ));
        } else {
            self.nodes.push(edit::node(
                &sname,
                "Slice",
                &[cur],
                &[&o],
                vec![
                    attr_ints("starts", &plan.crop_begin),
                    attr_ints("ends", &ends),
                    attr_ints("axes", &axes),
                ],
            ));
        }
        Some(o)
    }

    /// Zero-extends the spatial axes of `cur` by `plan.pad_begin`/`pad_end`.
    fn pad(
        &mut self,
        p: &mut Pass,
        cur: &str,
        last: bool,
        plan: &Crops,
        opset: i64,
    ) -> Option<String> {
        let name = self.name.clone();
        let o = self.output(p, last, "padded");
        let pads: Vec<i64> = [0, 0]
            .iter()
            .chain(&plan.pad_begin)
            .chain(&[0, 0])
            .chain(&plan.pad_end)
            .copied()
            .collect();
        let pname = p.names.fresh(&format!("{name}/pad"));
        if opset >= 11 {
            let pads_name = p.names.fresh(&format!("{name}/pad_pads"));
            self.inits.push(edit::tensor_i64(
                &pads_name,
                DataType::INT64,
                &[pads.len() as i64],
                &pads,
            )?);
            self.nodes.push(edit::node(
                &pname,
                "Pad",
                &[cur, &pads_name],
                &[&o],
                vec![attr_s("mode", "constant")],
            ));
        } else {
            self.nodes.push(edit::node(
                &pname,
                "Pad",
                &[cur],
                &[&o],
                vec![attr_s("mode", "constant"), attr_ints("pads", &pads)],
            ));
        }
        Some(o)
    }
}

/// The fix's one-line description.
fn describe(name: &str, geo: &Geometry, plan: &Crops) -> String {
    let Crops {
        eff_end,
        sym,
        crop_begin,
        crop_end,
        pad_begin,
        pad_end,
    } = plan;
    format!(
        "ConvTranspose '{name}': pads {:?} + output_padding {:?} (effective {:?} / {:?}) → symmetric pads {sym:?}{}{}",
        geo.pads_attr(),
        geo.out_pad,
        geo.begin,
        eff_end,
        if plan.needs_crop() {
            format!(" + Slice cropping {crop_begin:?} at the start, {crop_end:?} at the end")
        } else {
            String::new()
        },
        if plan.needs_pad() {
            format!(" + Pad {pad_begin:?}/{pad_end:?} then bias")
        } else {
            String::new()
        },
    )
}
