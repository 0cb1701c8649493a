//! Fixture models for the lint and fix tests, written with pare's builder (no Python needed).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pare::lint::{Diagnostic, LintOptions, Severity, Target, lint};
use pare::model::builder::{
    D, GraphBuilder, attr_f, attr_g, attr_i, attr_ints, attr_s, attr_t, value_info,
};
use pare::model::proto::{ModelProto, NodeProto, OperatorSetIdProto};
use pare::model::tensor::{f32_tensor, i64_tensor};
use pare::model::{Analysis, DataType, InputPins, Model};

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pare::model::io::encode_model(m)).expect("write fixture");
    p
}

pub fn analysis(m: &ModelProto, pins: &[(&str, &[i64])]) -> Analysis {
    let mut p = InputPins::new();
    for (n, d) in pins {
        p.insert(n.to_string(), d.to_vec());
    }
    let model = Model::in_memory(m.clone());
    Analysis::new(model, &p).expect("analysis")
}

pub fn t(s: &str) -> Target {
    Target::parse(s).expect("target")
}

/// Lint findings of one rule.
pub fn findings(
    m: &ModelProto,
    target: &str,
    pins: &[(&str, &[i64])],
    rule: &str,
) -> Vec<Diagnostic> {
    let a = analysis(m, pins);
    lint(
        &a,
        &LintOptions {
            target: t(target),
            rules: Vec::new(),
        },
    )
    .diagnostics
    .into_iter()
    .filter(|d| d.rule == rule)
    .collect()
}

/// The worst severity of a rule's findings, if any.
pub fn worst(m: &ModelProto, target: &str, rule: &str) -> Option<Severity> {
    findings(m, target, &[], rule)
        .iter()
        .map(|d| d.severity)
        .min()
}

/// Gives graph outputs declared without a shape the shape pare infers (the ONNX checker
/// requires one).
pub fn shaped(mut m: ModelProto) -> ModelProto {
    use pare::model::proto::{Dimension, TensorShapeDimension, TensorShapeProto, TypeValue};
    use pare::model::shape::Dim;
    let a = analysis(&m, &[]);
    for o in &mut m.graph.as_mut().expect("graph").output {
        let Some(shape) = a.shapes.shape(o.name()) else {
            continue;
        };
        if let Some(TypeValue::TensorType(tt)) = o.r#type.as_mut().and_then(|t| t.value.as_mut())
            && tt.shape.is_none()
        {
            tt.shape = Some(TensorShapeProto {
                dim: shape
                    .iter()
                    .map(|d| TensorShapeDimension {
                        value: match d {
                            Dim::Known(v) => Some(Dimension::DimValue(*v)),
                            Dim::Sym(s) if !s.contains(['+', '-', '*', '/', '(']) => {
                                Some(Dimension::DimParam(s.clone()))
                            }
                            _ => None,
                        },
                        denotation: None,
                    })
                    .collect(),
            });
        }
    }
    m
}

/// A graph with input `x` of `dims`, built by `f` (which returns the output tensor), finished
/// with an Identity to `y`.
pub fn model(opset: i64, dims: &[D], f: impl FnOnce(&mut GraphBuilder) -> String) -> ModelProto {
    let mut b = GraphBuilder::new("lint_fixture")
        .with_opset(opset)
        .with_seed(11);
    b.input("x", dims);
    let out = f(&mut b);
    b.node_named("/out/Identity", "Identity", &[&out], &["y"], vec![]);
    b.output_typed("y", DataType::FLOAT, None);
    shaped(b.model())
}

pub fn img(c: i64, h: i64, w: i64) -> Vec<D> {
    vec![D::N(1), D::N(c), D::N(h), D::N(w)]
}

/// A plain conv + relu, valid for every target.
pub fn clean(opset: i64) -> ModelProto {
    model(opset, &img(3, 8, 8), |b| {
        let c = b.conv("x", 3, 4, 3, 1, 1, 1);
        b.relu(&c)
    })
}

/// A Constant node holding an int64 vector.
pub fn constant_i64(b: &mut GraphBuilder, name: &str, v: &[i64]) -> String {
    let out = format!("{name}_output_0");
    b.node_named(
        name,
        "Constant",
        &[],
        &[&out],
        vec![attr_t("value", i64_tensor("", &[v.len() as i64], v))],
    );
    out
}

/// A Constant node holding a float scalar.
pub fn constant_f32(b: &mut GraphBuilder, name: &str, v: f32) -> String {
    let out = format!("{name}_output_0");
    b.node_named(
        name,
        "Constant",
        &[],
        &[&out],
        vec![attr_t("value", f32_tensor("", &[], &[v]))],
    );
    out
}

/// torch.squeeze(x, 1) exported on a dim that is dynamic at export: If(Equal(Shape(x)[1], 1),
/// Squeeze, Identity). The conv has one output channel, so the condition is always true.
pub fn squeeze_if(dynamic: bool) -> ModelProto {
    let dims: Vec<D> = if dynamic {
        vec![D::S("batch"), D::N(3), D::S("height"), D::S("width")]
    } else {
        img(3, 16, 16)
    };
    let mut b = GraphBuilder::new("squeeze_if").with_seed(3);
    b.input("x", &dims);
    let c = b.conv("x", 3, 1, 3, 1, 1, 1);
    let shape = b.op("Shape", &[&c], vec![]);
    let idx = b.init_i64("dim_index", &[], &[1]);
    let dim = b.op("Gather", &[&shape, &idx], vec![attr_i("axis", 0)]);
    let one = b.init_i64("one", &[], &[1]);
    let cond = b.op("Equal", &[&dim, &one], vec![]);
    let mut tb = GraphBuilder::new("then");
    let axes = constant_i64(&mut tb, "/Constant_axes", &[1]);
    tb.node_named("/Squeeze", "Squeeze", &[&c, &axes], &["squeezed"], vec![]);
    tb.output_typed("squeezed", DataType::FLOAT, None);
    let mut eb = GraphBuilder::new("else");
    eb.node_named("/Identity", "Identity", &[&c], &["kept"], vec![]);
    eb.output_typed("kept", DataType::FLOAT, None);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["if_out"],
        vec![
            attr_g("then_branch", tb.graph()),
            attr_g("else_branch", eb.graph()),
        ],
    );
    b.node_named("/Sigmoid", "Sigmoid", &["if_out"], &["y"], vec![]);
    b.output_typed("y", DataType::FLOAT, None);
    shaped(b.model())
}

/// An If on a run-time condition (sum of the input > 0); branches of rank `then_rank_drop`
/// apart (0: Relu vs Neg, same shapes; 1: Squeeze vs Identity).
pub fn data_if(rank_differs: bool) -> ModelProto {
    let mut b = GraphBuilder::new("data_if");
    b.input("x", &[D::N(1), D::N(1), D::N(4), D::N(4)]);
    let s = b.op("ReduceSum", &["x"], vec![attr_i("keepdims", 0)]);
    let zero = b.init_f32("zero", &[], &[0.0]);
    let cond = b.op("Greater", &[&s, &zero], vec![]);
    let mut tb = GraphBuilder::new("then");
    if rank_differs {
        let axes = constant_i64(&mut tb, "/then/axes", &[1]);
        tb.node_named(
            "/then/Squeeze",
            "Squeeze",
            &["x", &axes],
            &["t_out"],
            vec![],
        );
    } else {
        tb.node_named("/then/Relu", "Relu", &["x"], &["t_out"], vec![]);
    }
    tb.output_typed("t_out", DataType::FLOAT, None);
    let mut eb = GraphBuilder::new("else");
    eb.node_named("/else/Neg", "Neg", &["x"], &["e_out"], vec![]);
    eb.output_typed("e_out", DataType::FLOAT, None);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", tb.graph()),
            attr_g("else_branch", eb.graph()),
        ],
    );
    b.output_typed("y", DataType::FLOAT, None);
    shaped(b.model())
}

/// F.interpolate(size=x.shape[2:]*2) with dynamic H/W: Resize sizes computed from Shape.
pub fn shape_resize(dynamic: bool) -> ModelProto {
    let dims: Vec<D> = if dynamic {
        vec![D::N(1), D::N(3), D::S("h"), D::S("w")]
    } else {
        img(3, 8, 8)
    };
    let mut b = GraphBuilder::new("shape_resize").with_seed(5);
    b.input("x", &dims);
    let c = b.conv("x", 3, 2, 3, 1, 1, 1);
    let shape = b.op("Shape", &["x"], vec![]);
    let starts = b.init_i64("s_starts", &[1], &[2]);
    let ends = b.init_i64("s_ends", &[1], &[4]);
    let hw = b.op("Slice", &[&shape, &starts, &ends], vec![]);
    let two = b.init_i64("two", &[1], &[2]);
    let hw2 = b.op("Mul", &[&hw, &two], vec![]);
    let nc = b.init_i64("nc", &[2], &[1, 2]);
    let sizes = b.concat(&[&nc, &hw2], 0);
    let r = b.op(
        "Resize",
        &[&c, "", "", &sizes],
        vec![
            attr_s("mode", "linear"),
            attr_s("coordinate_transformation_mode", "half_pixel"),
        ],
    );
    b.node_named("/out/Identity", "Identity", &[&r], &["y"], vec![]);
    b.output_typed("y", DataType::FLOAT, None);
    shaped(b.model())
}

/// torch.clamp(x, min=0) and torch.clamp(x, max=6): Clip(x, Constant, "") and Clip(x, "", Constant).
pub fn clamp() -> ModelProto {
    model(17, &img(3, 8, 8), |b| {
        let c = b.conv("x", 3, 4, 3, 1, 1, 1);
        let lo = constant_f32(b, "/Constant_min", 0.0);
        let x1 = b.op("Clip", &[&c, &lo, ""], vec![]);
        let hi = constant_f32(b, "/Constant_max", 0.5);
        b.op("Clip", &[&x1, "", &hi], vec![])
    })
}

/// ConvTranspose with the given geometry on an input of `spatial` dims of size 5.
pub fn deconv(
    spatial: usize,
    attrs: Vec<pare::model::proto::AttributeProto>,
    bias: bool,
    cin: i64,
    cout: i64,
) -> ModelProto {
    let mut dims = vec![D::N(1), D::N(cin)];
    dims.extend(std::iter::repeat_n(D::N(5), spatial));
    model(17, &dims, |b| {
        let mut wd = vec![cin, cout];
        wd.extend(std::iter::repeat_n(3, spatial));
        let w = b.init_randn("deconv.weight", &wd, 0.3);
        let mut ins = vec!["x".to_string(), w];
        if bias {
            ins.push(b.init_randn("deconv.bias", &[cout], 0.5));
        }
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        let mut a = vec![
            attr_ints("kernel_shape", &vec![3; spatial]),
            attr_ints("strides", &vec![2; spatial]),
        ];
        a.extend(attrs);
        b.node_named("/up/ConvTranspose", "ConvTranspose", &ins, &["up"], a);
        "up".to_string()
    })
}

/// ConvTranspose3d(k=3, s=2, p=1, output_padding=1), the seed Q3 layer.
pub fn deconv3d_q3() -> ModelProto {
    deconv(
        3,
        vec![
            attr_ints("pads", &[1; 6]),
            attr_ints("output_padding", &[1, 1, 1]),
        ],
        true,
        4,
        2,
    )
}

/// Resize with scales on a static input.
pub fn resize_scales(scales: &[f32], h: i64) -> ModelProto {
    model(17, &img(2, h, h), |b| {
        let s = b.init_f32("scales", &[4], scales);
        b.op("Resize", &["x", "", &s], vec![attr_s("mode", "linear")])
    })
}

/// GatherElements with constant negative indices (axis 2 of a [1,4,6] input).
pub fn gather_const_negative() -> ModelProto {
    model(17, &[D::N(1), D::N(4), D::N(6)], |b| {
        let idx = b.init_i64("indices", &[1, 4, 2], &[-1, 0, -6, 5, 2, -3, 1, -2]);
        b.op("GatherElements", &["x", &idx], vec![attr_i("axis", 2)])
    })
}

/// GatherElements whose indices are computed at run time and partly negative:
/// ArgMax(x) - 5 picks from the back.
pub fn gather_runtime_negative() -> ModelProto {
    model(17, &[D::N(1), D::N(4), D::N(6)], |b| {
        let am = b.op(
            "ArgMax",
            &["x"],
            vec![attr_i("axis", 2), attr_i("keepdims", 1)],
        );
        let five = b.init_i64("five", &[], &[5]);
        let idx = b.op("Sub", &[&am, &five], vec![]);
        b.op("GatherElements", &["x", &idx], vec![attr_i("axis", 2)])
    })
}

/// GatherElements with ArgMax indices (never negative): torch.gather(x, 1, x.argmax(1)).
pub fn gather_argmax() -> ModelProto {
    model(17, &[D::N(1), D::N(4), D::N(6)], |b| {
        let am = b.op(
            "ArgMax",
            &["x"],
            vec![attr_i("axis", 1), attr_i("keepdims", 1)],
        );
        b.op("GatherElements", &["x", &am], vec![attr_i("axis", 1)])
    })
}

/// Options for [`qdq`].
#[derive(Clone, Copy, Default)]
pub struct Qdq {
    pub zero_point: i64,
    pub uint8: bool,
    pub scale: f32,
    pub per_axis_activation: bool,
    pub per_tensor_weight: bool,
    pub no_input_qdq: bool,
    pub q_after_conv: bool,
    pub small: bool,
}

/// A QDQ conv in TensorRT's preferred form unless told otherwise.
pub fn qdq(o: Qdq) -> ModelProto {
    let c: i64 = if o.small { 4 } else { 16 };
    let mut b = GraphBuilder::new("qdq").with_seed(9);
    b.input("x", &[D::N(1), D::N(c), D::N(8), D::N(8)]);
    let zdt = if o.uint8 {
        DataType::UINT8
    } else {
        DataType::INT8
    };
    let zp = |b: &mut GraphBuilder, name: &str, n: usize, v: i64| -> String {
        let mut t = i64_tensor(name, &[], &[v]);
        t.data_type = Some(zdt.0);
        t.raw_data = Some(bytes::Bytes::from(vec![v as u8; n]));
        if n > 1 {
            t.dims = vec![n as i64];
        }
        b.initializers.push(t);
        name.to_string()
    };
    let scale = if o.scale == 0.0 { 0.02 } else { o.scale };
    let xin = if o.no_input_qdq {
        "x".to_string()
    } else {
        let (s, z) = if o.per_axis_activation {
            (
                b.init_f32("x_scale", &[c], &vec![scale; c as usize]),
                zp(&mut b, "x_zp", c as usize, o.zero_point),
            )
        } else {
            (
                b.init_f32("x_scale", &[], &[scale]),
                zp(&mut b, "x_zp", 1, o.zero_point),
            )
        };
        let mut attrs = Vec::new();
        if o.per_axis_activation {
            attrs.push(attr_i("axis", 1));
        }
        let q = b.op("QuantizeLinear", &["x", &s, &z], attrs.clone());
        b.op("DequantizeLinear", &[&q, &s, &z], attrs)
    };
    // int8 weights through a DequantizeLinear.
    let mut w = i64_tensor("w_q", &[c, c, 3, 3], &vec![1; (c * c * 9) as usize]);
    w.data_type = Some(DataType::INT8.0);
    w.raw_data = Some(bytes::Bytes::from(vec![1u8; (c * c * 9) as usize]));
    b.initializers.push(w);
    let (ws, wz, wattrs) = if o.per_tensor_weight {
        (
            b.init_f32("w_scale", &[], &[0.01]),
            zp(&mut b, "w_zp", 1, 0),
            vec![],
        )
    } else {
        (
            b.init_f32("w_scale", &[c], &vec![0.01; c as usize]),
            zp(&mut b, "w_zp", c as usize, 0),
            vec![attr_i("axis", 0)],
        )
    };
    let wd = b.op("DequantizeLinear", &["w_q", &ws, &wz], wattrs);
    let conv = b.op(
        "Conv",
        &[&xin, &wd],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let pre = if o.q_after_conv {
        let s = b.init_f32("c_scale", &[], &[0.05]);
        let z = zp(&mut b, "c_zp", 1, 0);
        let q = b.op("QuantizeLinear", &[&conv, &s, &z], vec![]);
        b.op("DequantizeLinear", &[&q, &s, &z], vec![])
    } else {
        conv
    };
    let r = b.relu(&pre);
    b.node_named("/out/Identity", "Identity", &[&r], &["y"], vec![]);
    b.output_typed("y", DataType::FLOAT, None);
    shaped(b.model())
}

/// A node of a custom domain between two convs.
pub fn custom_op(domain: &str) -> ModelProto {
    let mut m = model(17, &img(3, 8, 8), |b| {
        let c = b.conv("x", 3, 4, 3, 1, 1, 1);
        b.nodes.push(NodeProto {
            name: Some("/act/Swish".into()),
            op_type: Some("MemoryEfficientSwish".into()),
            domain: Some(domain.into()),
            input: vec![c],
            output: vec!["swish".into()],
            ..Default::default()
        });
        b.conv("swish", 4, 4, 3, 1, 1, 1)
    });
    m.opset_import.push(OperatorSetIdProto {
        domain: Some(domain.into()),
        version: Some(1),
    });
    m
}

/// One node of `op` on `x` with extra inputs and attributes (not necessarily runnable).
pub fn one_op(
    opset: i64,
    dims: &[D],
    op: &str,
    extra: &[(&str, Option<Vec<i64>>)],
    attrs: Vec<pare::model::proto::AttributeProto>,
) -> ModelProto {
    model(opset, dims, |b| {
        let mut ins = vec!["x".to_string()];
        for (name, v) in extra {
            match v {
                Some(v) => ins.push(b.init_i64(name, &[v.len() as i64], v)),
                None => ins.push(name.to_string()),
            }
        }
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        b.op(op, &ins, attrs)
    })
}

pub fn vi(name: &str, dims: &[D]) -> pare::model::proto::ValueInfoProto {
    value_info(name, DataType::FLOAT, Some(dims))
}

pub fn f(name: &str, v: f32) -> pare::model::proto::AttributeProto {
    attr_f(name, v)
}
