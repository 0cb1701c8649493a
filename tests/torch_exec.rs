//! The ONNX → libtorch executor (feature `torch`) against tract on pare's fixture models, and
//! its error for an op without a lowering. With `PARE_DEV_MODELS=DIR` it also compares every
//! model in DIR against onnxruntime (or tract) and prints which ones it cannot lower.
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

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
