//! The ONNX → libtorch executor (feature `torch`) against tract on pare's fixture models, and
//! its error for an op without a lowering. With `PARE_DEV_MODELS=DIR` it also compares every
//! model in DIR against onnxruntime (or tract) and prints which ones it cannot lower.
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

use pare::model::builder::{D, GraphBuilder, attr_g, attr_i, attr_ints};
use pare::model::proto::{Dimension, ModelProto, TypeValue};
use pare::model::{DataType, load_model};
use pare::rng::Rng;
use pare::runtime::{EngineKind, HostData, HostTensor, InputSpec, Runner};
use pare::torch::exec::{ExecError, TorchGraph};
use tch::{Device, Tensor};

/// Input shapes: declared dims, dynamic batch 1, other dynamic dims 64.
fn input_specs(m: &ModelProto) -> Vec<InputSpec> {
    let g = m.graph.as_ref().expect("graph");
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.input
        .iter()
        .filter(|vi| !inits.contains(&vi.name()))
        .map(|vi| {
            let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(TypeValue::TensorType(tt)) => tt.clone(),
                _ => panic!("input {} is not a tensor", vi.name()),
            };
            let dims = tt.shape.map(|s| s.dim).unwrap_or_default();
            let shape = dims
                .iter()
                .enumerate()
                .map(|(i, d)| match &d.value {
                    Some(Dimension::DimValue(v)) if *v > 0 => *v as usize,
                    _ if i == 0 => 1,
                    _ => 64,
                })
                .collect();
            InputSpec {
                name: vi.name().to_string(),
                dtype: DataType(tt.elem_type.unwrap_or(1)),
                shape,
            }
        })
        .collect()
}

/// Largest output difference relative to the reference output's largest magnitude.
fn compare(m: &ModelProto, engine: EngineKind) -> Result<f64, ExecError> {
    let specs = input_specs(m);
    let mut rng = Rng::new(7);
    let host: Vec<HostTensor> = specs
        .iter()
        .map(|s| HostTensor::random(s.dtype, &s.shape, &mut rng).expect("random input"))
        .collect();
    let tg = TorchGraph::new(&common::model(m.clone()), Device::Cpu)?;
    let ins: Vec<Tensor> = host
        .iter()
        .map(|h| {
            let dims: Vec<i64> = h.shape.iter().map(|&d| d as i64).collect();
            match &h.data {
                HostData::F32(v) => Tensor::from_slice(v).reshape(dims),
                HostData::I64(v) => Tensor::from_slice(v).reshape(dims),
                other => panic!("input type {other:?}"),
            }
        })
        .collect();
    let got = tch::no_grad(|| tg.forward(&ins))?;
    let want = Runner::new(engine, m, &specs)
        .expect("reference runner")
        .run(&host)
        .expect("reference run");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(&want) {
        let w = w.to_f64();
        let g = Vec::<f64>::try_from(&g.to_kind(tch::Kind::Double).flatten(0, -1)).expect("f64");
        assert_eq!(g.len(), w.len(), "output sizes differ");
        let scale = w.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(&w) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    Ok(worst)
}

#[test]
fn fixture_models_match_tract() {
    for (name, m) in [
        ("resnet_like", common::resnet_like()),
        ("seg_head", common::seg_head()),
        ("aspp", common::aspp()),
        ("psp", common::psp()),
        ("same_pad_dw_se", common::same_pad_dw_se()),
        ("flatten_view", common::flatten_view()),
        ("matmul_block", common::matmul_block()),
        ("shape_if", shape_if()),
        ("argmax_head", common::argmax_head()),
        ("dynamic_hw", common::dynamic_hw()),
        ("select_ops", select_ops()),
        ("qdq_block", qdq_block()),
        ("pools_1d_3d", pools_1d_3d()),
    ] {
        let rel = compare(&m, EngineKind::Tract).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(rel < 1e-4, "{name}: relative difference {rel}");
    }
}

#[test]
fn an_op_without_lowering_is_one_error_naming_node_and_op() {
    let m = common::custom_op();
    let e = TorchGraph::new(&common::model(m), Device::Cpu)
        .err()
        .expect("custom op refused");
    let s = e.to_string();
    assert!(
        s.contains("/act/MemoryEfficientSwish") && s.contains("MemoryEfficientSwish"),
        "{s}"
    );
}

/// Opt-in measurement over a directory of models (e.g. the dev corpus).
#[test]
fn dev_corpus_when_given() {
    let Ok(dir) = std::env::var("PARE_DEV_MODELS") else {
        eprintln!("PARE_DEV_MODELS not set: dev corpus comparison skipped");
        return;
    };
    let engine = if pare::runtime::ort_available().is_ok() {
        EngineKind::OnnxRuntime
    } else {
        EngineKind::Tract
    };
    let mut paths: Vec<_> = std::fs::read_dir(Path::new(&dir))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    paths.sort();
    let mut bad = Vec::new();
    for p in paths {
        let m = load_model(&p).expect("model").proto;
        match compare(&m, engine) {
            Ok(rel) => {
                println!(
                    "{}: lowered, max relative difference vs {engine} {rel:.2e}",
                    p.display()
                );
                if rel >= 1e-4 {
                    bad.push(p.display().to_string());
                }
            }
            Err(e) => println!("{}: NOT LOWERED: {e}", p.display()),
        }
    }
    assert!(bad.is_empty(), "differ from {engine}: {bad:?}");
}

/// TopK, GatherElements, GatherND, Split, ArgMax with select_last_index, Max and an
/// asymmetric MaxPool: the corpus's selection ops.
fn select_ops() -> ModelProto {
    let mut b = GraphBuilder::new("select_ops");
    b.input("x", &[D::N(1), D::N(4), D::N(6), D::N(6)]);
    let c = b.conv("x", 4, 8, 3, 1, 1, 1);
    let p = b.op(
        "MaxPool",
        &[&c],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[0, 0, 1, 1]),
        ],
    ); // [1,8,3,3]
    let sizes = b.init_i64("split", &[2], &[3, 5]);
    let parts = b.node("Split", &[&p, &sizes], 2, vec![attr_i("axis", 1)]);
    let m = b.op("Max", &[&parts[0], &parts[0]], vec![]);
    let flat_shape = b.init_i64("flat", &[2], &[1, -1]);
    let flat = b.op("Reshape", &[&parts[1], &flat_shape], vec![]); // [1,45]
    let k = b.init_i64("k", &[1], &[5]);
    let tk = b.node("TopK", &[&flat, &k], 2, vec![attr_i("axis", 1)]);
    let picked = b.op("GatherElements", &[&flat, &tk[1]], vec![attr_i("axis", 1)]);
    let am = b.op(
        "ArgMax",
        &[&m],
        vec![
            attr_i("axis", 1),
            attr_i("keepdims", 0),
            attr_i("select_last_index", 1),
        ],
    ); // [1,3,3]
    let amf = b.op("Cast", &[&am], vec![attr_i("to", 1)]);
    let idx = b.init_i64("nd", &[2, 2], &[0, 1, 0, 2]);
    let nd = b.op("GatherND", &[&m, &idx], vec![]); // [2,3,3]
    let ndf = b.op("Flatten", &[&nd], vec![attr_i("axis", 0)]);
    let amff = b.op("Flatten", &[&amf], vec![attr_i("axis", 0)]);
    let out = b.concat(&[&picked, &ndf, &amff], 1);
    b.node_named("/out", "Identity", &[&out], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(32)]);
    b.model()
}

/// A QDQ block as `pare quantize` writes it: activations through QuantizeLinear →
/// DequantizeLinear (uint8), an INT8 per-channel weight with its DequantizeLinear.
fn qdq_block() -> ModelProto {
    let mut b = GraphBuilder::new("qdq_block");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let s = b.init_f32("x.scale", &[], &[0.02]);
    let z = add_init(
        &mut b,
        pare::model::proto::TensorProto {
            name: Some("x.zp".into()),
            dims: vec![],
            data_type: Some(2),
            raw_data: Some(vec![128u8].into()),
            ..Default::default()
        },
    );
    let q = b.op("QuantizeLinear", &["x", &s, &z], vec![]);
    let dq = b.op("DequantizeLinear", &[&q, &s, &z], vec![]);
    let wq: Vec<u8> = (0..4 * 3 * 9)
        .map(|i| (i * 37 % 255 - 127) as i8 as u8)
        .collect();
    let w = add_init(
        &mut b,
        pare::model::proto::TensorProto {
            name: Some("w.q".into()),
            dims: vec![4, 3, 3, 3],
            data_type: Some(3),
            raw_data: Some(wq.into()),
            ..Default::default()
        },
    );
    let ws = b.init_f32("w.scale", &[4], &[0.01, 0.02, 0.005, 0.03]);
    let wz = add_init(
        &mut b,
        pare::model::proto::TensorProto {
            name: Some("w.zp".into()),
            dims: vec![4],
            data_type: Some(3),
            raw_data: Some(vec![0u8; 4].into()),
            ..Default::default()
        },
    );
    let wdq = b.op("DequantizeLinear", &[&w, &ws, &wz], vec![attr_i("axis", 0)]);
    let y = b.op(
        "Conv",
        &[&dq, &wdq],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.model()
}

/// 1-D and 3-D convolution and pooling.
fn pools_1d_3d() -> ModelProto {
    let mut b = GraphBuilder::new("pools_1d_3d");
    b.input("a", &[D::N(1), D::N(2), D::N(16)]);
    b.input("v", &[D::N(1), D::N(2), D::N(4), D::N(6), D::N(6)]);
    let a = b.conv_nd("a", 2, 4, &[3], 1, 1, 1, true);
    let a = b.op(
        "AveragePool",
        &[&a],
        vec![attr_ints("kernel_shape", &[2]), attr_ints("strides", &[2])],
    );
    let v = b.conv_nd("v", 2, 4, &[3, 3, 3], 1, 1, 1, true);
    let v = b.op(
        "MaxPool",
        &[&v],
        vec![
            attr_ints("kernel_shape", &[2, 2, 2]),
            attr_ints("strides", &[2, 2, 2]),
        ],
    );
    let v = b.op("GlobalAveragePool", &[&v], vec![]);
    let v = b.op("Flatten", &[&v], vec![attr_i("axis", 1)]);
    let a = b.op("Flatten", &[&a], vec![attr_i("axis", 1)]);
    let y = b.concat(&[&a, &v], 1);
    b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(36)]);
    b.model()
}

/// Fake quantization rounds (ties to even) and clamps to the zero point's range, and its
/// gradient passes straight through: hand-computed values.
#[test]
fn quantize_linear_is_fake_quant_with_a_straight_through_gradient() {
    let mut b = GraphBuilder::new("fq");
    b.input("x", &[D::N(5)]);
    let s = b.init_f32("s", &[], &[0.5]);
    let z = add_init(
        &mut b,
        pare::model::proto::TensorProto {
            name: Some("z".into()),
            dims: vec![],
            data_type: Some(3),
            raw_data: Some(vec![0u8].into()),
            ..Default::default()
        },
    );
    let q = b.op("QuantizeLinear", &["x", &s, &z], vec![]);
    b.node_named("/dq", "DequantizeLinear", &[&q, &s, &z], &["y"], vec![]);
    b.output("y", &[D::N(5)]);
    let g = TorchGraph::new(&common::model(b.model()), Device::Cpu).expect("lowered");
    let x = Tensor::from_slice(&[0.25f32, 0.75, -0.3, 100.0, -100.0]).set_requires_grad(true);
    let y = g.forward(std::slice::from_ref(&x)).expect("run").remove(0);
    let got = Vec::<f32>::try_from(&y.detach()).expect("values");
    // 0.25/0.5 = 0.5 -> 0 (ties to even); 1.5 -> 2 -> 1.0; -0.6 -> -1 -> -0.5; clamps 127, -128.
    assert_eq!(got, vec![0.0, 1.0, -0.5, 63.5, -64.0]);
    y.sum(tch::Kind::Float).backward();
    let grad = Vec::<f32>::try_from(&x.grad()).expect("grad");
    assert_eq!(grad, vec![1.0; 5], "straight-through gradient");
}

/// An If whose branch reads a nested op without a lowering is refused up front, naming it.
#[test]
fn an_unlowerable_op_inside_an_if_branch_is_named() {
    let mut b = GraphBuilder::new("if_custom");
    b.input("x", &[D::N(1), D::N(2)]);
    let c = b.init_i64("c", &[], &[1]);
    let cond = b.op("Cast", &[&c], vec![attr_i("to", 9)]);
    let mut t = GraphBuilder::new("then");
    t.node_named("/then/Det", "Det", &["x"], &["d"], vec![]);
    t.output("d", &[D::N(1)]);
    let mut e = GraphBuilder::new("else");
    e.node_named("/else/Id", "Identity", &["x"], &["d2"], vec![]);
    e.output("d2", &[D::N(1), D::N(2)]);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", t.graph()),
            attr_g("else_branch", e.graph()),
        ],
    );
    b.output("y", &[D::N(1)]);
    let e = TorchGraph::new(&common::model(b.model()), Device::Cpu)
        .err()
        .expect("Det refused");
    assert!(matches!(e, ExecError::Unsupported { .. }), "{e}");
    assert!(
        e.to_string().contains("/then/Det") && e.to_string().contains("Det"),
        "{e}"
    );
}

fn add_init(b: &mut GraphBuilder, t: pare::model::proto::TensorProto) -> String {
    let name = t.name().to_string();
    b.initializers.push(t);
    name
}

/// An If on a shape-derived condition (as exporters write for `squeeze(dim)`), whose branches
/// read outer-scope tensors and have initializers of their own.
fn shape_if() -> ModelProto {
    let mut b = GraphBuilder::new("shape_if");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let c = b.conv("x", 3, 4, 3, 1, 1, 1);
    let shape = b.op("Shape", &[&c], vec![]);
    let idx = b.init_i64("dim_index", &[], &[1]);
    let dim = b.op("Gather", &[&shape, &idx], vec![attr_i("axis", 0)]);
    let four = b.init_i64("four", &[], &[4]);
    let cond = b.op("Equal", &[&dim, &four], vec![]);
    let mut t = GraphBuilder::new("then");
    let k = t.init_f32("then.k", &[], &[2.0]);
    t.node_named("/then/Mul", "Mul", &[&c, &k], &["t_out"], vec![]);
    t.output("t_out", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let mut e = GraphBuilder::new("else");
    e.node_named("/else/Neg", "Neg", &[&c], &["e_out"], vec![]);
    e.output("e_out", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", t.graph()),
            attr_g("else_branch", e.graph()),
        ],
    );
    b.output("y", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    b.model()
}
