//! Watching tensors on tract (calibration, recovery and diagnostics all do): every watched
//! tensor is handed over, also one named twice and ones tract computes in one node.

mod common;

use pare::model::builder::{D, GraphBuilder};
use pare::model::tensor::DataType;
use pare::rng::Rng;
use pare::runtime::{EngineKind, HostTensor, InputSpec, Runner, RunnerOptions};

#[test]
fn every_watched_tensor_is_handed_over_even_one_named_twice() {
    // Two convs read one tensor with one weight and bias: tract computes them once.
    let mut b = GraphBuilder::new("shared").with_seed(5);
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let mut rng = Rng::new(9);
    let w = b.init_f32("w", &[4, 3, 3, 3], &rng.normal_vec(108, 0.3));
    let bias = b.init_f32("b", &[4], &[0.1, -0.2, 0.3, 0.0]);
    let c1 = b.conv("x", 3, 3, 3, 1, 1, 1);
    b.node_named("conv_a", "Conv", &[&c1, &w, &bias], &["ya"], vec![]);
    b.node_named("conv_b", "Conv", &[&c1, &w, &bias], &["yb"], vec![]);
    b.node_named("sum", "Add", &["ya", "yb"], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4), D::N(6), D::N(6)]);
    let m = b.model();
    let specs = vec![InputSpec {
        name: "x".into(),
        dtype: DataType::FLOAT,
        shape: vec![1, 3, 8, 8],
    }];
    let x = vec![HostTensor::random(DataType::FLOAT, &[1, 3, 8, 8], &mut rng).expect("input")];
    // "ya" twice: a caller watching the union of two layers' inputs may name one tensor twice.
    let watched = [c1, "ya".to_string(), "yb".to_string(), "ya".to_string()];
    let r = Runner::watching(
        EngineKind::Tract,
        &m,
        &watched,
        &specs,
        &RunnerOptions::default(),
    )
    .expect("runner");
    let got = r.run(&x).expect("both watched tensors are computed");
    let y = Runner::tract(&m, &specs)
        .expect("plain")
        .run(&x)
        .expect("run")[0]
        .to_f64();
    assert_eq!(got[0].shape, vec![1, 3, 8, 8]);
    let (a, c) = (got[1].to_f64(), got[2].to_f64());
    assert_eq!(a, c);
    assert_eq!(got[3].to_f64(), a);
    for (s, t) in a.iter().zip(&y) {
        assert!((2.0 * s - t).abs() < 1e-4, "{s} vs {t}");
    }
}

/// A `Constant` node's output (PyTorch exports write Clip bounds that way) is folded by tract
/// and never evaluated: watching it still hands its value over (`pare diff` on MobileNetV2
/// stopped with "was not computed").
#[test]
fn a_watched_constant_is_handed_over() {
    let mut b = GraphBuilder::new("konst").with_seed(3);
    b.input("x", &[D::N(1), D::N(4)]);
    let t = pare::model::tensor::f32_tensor("k", &[], &[6.0]);
    b.node_named(
        "bound",
        "Constant",
        &[],
        &["k"],
        vec![pare::model::builder::attr_t("value", t)],
    );
    b.node_named("min", "Min", &["x", "k"], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(4)]);
    let m = b.model();
    let specs = vec![InputSpec {
        name: "x".into(),
        dtype: DataType::FLOAT,
        shape: vec![1, 4],
    }];
    let r = Runner::watching(
        EngineKind::Tract,
        &m,
        &["k".to_string(), "y".to_string()],
        &specs,
        &RunnerOptions::default(),
    )
    .expect("runner");
    let x = vec![HostTensor::f32(vec![1, 4], vec![1.0, 7.0, -2.0, 9.0])];
    let got = r.run(&x).expect("the constant is handed over");
    assert_eq!(got[0].to_f64(), vec![6.0]);
    assert_eq!(got[1].to_f64(), vec![1.0, 6.0, -2.0, 6.0]);
}

/// A prefix keeps only what computes the asked tensors (weight reconstruction runs one per
/// layer: onnxruntime builds every node of a session, needed or not) and computes them as
/// the whole model does.
#[test]
fn a_prefix_model_keeps_only_what_computes_the_asked_tensors() {
    let mut b = GraphBuilder::new("chain").with_seed(3);
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let c1 = b.conv("x", 3, 4, 3, 1, 1, 1);
    let r1 = b.relu(&c1);
    let c2 = b.conv(&r1, 4, 4, 3, 1, 1, 1);
    let r2 = b.relu(&c2);
    b.output(&r2, &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let m = b.model();
    let prefix = pare::model::graph::prefix(
        &m,
        std::slice::from_ref(&r1),
        pare::model::graph::PrefixInputs::All,
    )
    .expect("prefix");
    let g = prefix.graph.as_ref().expect("graph");
    assert_eq!(g.node.len(), 2, "the first conv and its relu only");
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name(), r1);
    let weights_kept: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let full = m.graph.as_ref().expect("graph");
    assert!(
        weights_kept.len() < full.initializer.len(),
        "{weights_kept:?}"
    );
    let specs = vec![InputSpec {
        name: "x".into(),
        dtype: DataType::FLOAT,
        shape: vec![1, 3, 8, 8],
    }];
    let mut rng = Rng::new(4);
    let x = vec![HostTensor::random(DataType::FLOAT, &[1, 3, 8, 8], &mut rng).expect("input")];
    let got = Runner::tract(&prefix, &specs)
        .expect("prefix runs")
        .run(&x)
        .expect("run");
    let want = Runner::watching(
        EngineKind::Tract,
        &m,
        std::slice::from_ref(&r1),
        &specs,
        &RunnerOptions::default(),
    )
    .expect("runner")
    .run(&x)
    .expect("run");
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}
