//! INT8 quantization: arithmetic, calibrators on known distributions, Q/DQ placement
//! (residual blocks, ASPP concat, pooling), exclusions, calibration inputs and their checks
//! (seed Q8, Q11), bounded memory, live events, fallback to a target SQNR, and quantized
//! models running in tract with the SQNR the report claims.

mod common;

use common::pare;

use std::collections::HashMap;
use std::path::Path;

use pare::data::{self, DataSource as CalibSource, Preprocess};
use pare::jobs::{JobEvent, LayerLabel, NoProgress, RecordProgress};
use pare::model::proto::{GraphProto, ModelProto, NodeProto};
use pare::model::{Analysis, InputPins};
use pare::quant::calibrators::{self, CalibConfig, Method};
use pare::quant::histogram::{Hist, HistMode, TensorStats};
use pare::quant::qparams::{self, QParams, QType, WeightMethod};
use pare::quant::{Format, QuantOptions, quantize};
use pare::rng::Rng;
use pare::runtime::{
    EngineChoice, EngineKind, HostTensor, InputSpec, Runner, sqnr_db, with_outputs,
};
use pare::tags::Tags;

fn analysis(m: ModelProto) -> Analysis {
    Analysis::new(common::model(m), &InputPins::new()).expect("analysis")
}

fn opts() -> QuantOptions {
    common::quant_opts()
}

fn graph(m: &ModelProto) -> &GraphProto {
    m.graph.as_ref().expect("graph")
}

fn node<'a>(g: &'a GraphProto, name: &str) -> &'a NodeProto {
    g.node
        .iter()
        .find(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn producer<'a>(g: &'a GraphProto, t: &str) -> Option<&'a NodeProto> {
    g.node.iter().find(|n| n.output.iter().any(|o| o == t))
}

/// True when tensor `t` comes straight out of a DequantizeLinear.
fn is_dq(g: &GraphProto, t: &str) -> bool {
    producer(g, t).is_some_and(|n| n.op_type() == "DequantizeLinear")
}

fn count(g: &GraphProto, op: &str) -> usize {
    g.node.iter().filter(|n| n.op_type() == op).count()
}

// ---- arithmetic ----

#[test]
fn quantize_dequantize_rounds_half_to_even_and_saturates() {
    let q = QParams::symmetric(127.0 * 0.25); // scale exactly 0.25
    assert_eq!(q.scale, 0.25);
    assert_eq!(q.zero_point, 0);
    assert_eq!(q.quantize(0.125), 0); // 0.5 → 0
    assert_eq!(q.quantize(0.375), 2); // 1.5 → 2
    assert_eq!(q.quantize(0.625), 2); // 2.5 → 2
    assert_eq!(q.quantize(-0.375), -2);
    assert_eq!(q.quantize(-0.625), -2);
    assert_eq!(q.quantize(1000.0), 127);
    assert_eq!(q.quantize(-1000.0), -128);
    assert_eq!(q.dequantize(127), 31.75);
    // In range, a Q/DQ pair moves a value by at most half a step.
    let mut rng = Rng::new(3);
    for _ in 0..1000 {
        let x = rng.range(-31.0, 31.0);
        assert!((q.fake(x) - x).abs() <= 0.125 + 1e-6, "{x}");
    }
    let u = QParams::asymmetric_u8(-1.0, 3.0);
    assert_eq!(u.qtype, QType::Uint8);
    assert_eq!(u.quantize(-10.0), 0);
    assert_eq!(u.quantize(10.0), 255);
    assert_eq!(u.fake(0.0), 0.0, "zero is exact");
    let (lo, hi) = u.real_range();
    assert!(
        (lo + 1.0).abs() < u.scale && (hi - 3.0).abs() < u.scale,
        "{lo} {hi}"
    );
    // ReLU-like ranges use the full 8 bits from zero.
    let r = QParams::asymmetric_u8(0.0, 5.1);
    assert_eq!(r.zero_point, 0);
    assert!((r.scale - 0.02).abs() < 1e-6);
    assert_eq!(qparams::round_half_even(-2.5), -2.0);
}

#[test]
fn weights_get_one_scale_per_output_channel() {
    // Conv weight [4, 2, 1, 1]: channel c holds ±(c+1).
    let w: Vec<f32> = (0..4)
        .flat_map(|c| [(c + 1) as f32, -((c + 1) as f32) * 0.5])
        .collect();
    let q = qparams::quantize_weight(&w, &[4, 2, 1, 1], 0, WeightMethod::Minmax, true);
    assert_eq!(q.scales.len(), 4);
    for (c, s) in q.scales.iter().enumerate() {
        assert!(
            (s - (c + 1) as f32 / 127.0).abs() < 1e-7,
            "channel {c}: {s}"
        );
    }
    assert_eq!(&q.values[..2], &[127, -64]);
    let dq = q.dequantized();
    for (a, b) in w.iter().zip(&dq) {
        assert!((a - b).abs() <= 0.5 * 4.0 / 127.0 + 1e-6);
    }
    // ConvTranspose weight [in=2, out=3, 1, 1]: channels along axis 1.
    let w: Vec<f32> = vec![1.0, 10.0, 100.0, -2.0, -20.0, -200.0];
    let q = qparams::quantize_weight(&w, &[2, 3, 1, 1], 1, WeightMethod::Minmax, true);
    assert_eq!(q.scales.len(), 3);
    assert!((q.scales[0] - 2.0 / 127.0).abs() < 1e-7);
    assert!((q.scales[2] - 200.0 / 127.0).abs() < 1e-5);
    assert_eq!(q.values[3], -127);
    // Per-tensor: one scale repeated.
    let q = qparams::quantize_weight(&w, &[2, 3, 1, 1], 1, WeightMethod::Minmax, false);
    assert!(q.scales.iter().all(|&s| s == q.scales[0]));
    // MSE clips one outlier in favour of everything else.
    let mut v: Vec<f32> = Rng::new(1).normal_vec(4096, 1.0);
    v[0] = 40.0;
    let mm = qparams::quantize_weight(&v, &[1, 4096], 0, WeightMethod::Minmax, true);
    let ms = qparams::quantize_weight(&v, &[1, 4096], 0, WeightMethod::Mse, true);
    assert!(ms.scales[0] < mm.scales[0]);
    let err = |q: &qparams::QuantizedWeight| -> f64 {
        v.iter()
            .zip(q.dequantized())
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    assert!(err(&ms) < err(&mm));
}

// ---- calibrators ----

fn stats_of(values: &[f32]) -> TensorStats {
    let mut s = TensorStats::new(HistMode::Streaming);
    // In chunks, as samples would arrive.
    for c in values.chunks(10_000) {
        s.observe(c);
    }
    s
}

fn gaussian_with_outliers(n: usize) -> Vec<f32> {
    let mut v = Rng::new(7).normal_vec(n, 1.0);
    for k in 0..8 {
        v[k * 1000] = if k % 2 == 0 { 60.0 } else { -60.0 };
    }
    v
}

#[test]
fn minmax_and_percentile_on_known_distributions() {
    let mut rng = Rng::new(11);
    let u: Vec<f32> = (0..400_000).map(|_| rng.range(-3.0, 2.0)).collect();
    let s = stats_of(&u);
    let q = calibrators::symmetric_params(
        &s,
        &CalibConfig {
            method: Method::Minmax,
            percentile: 99.99,
        },
    );
    assert!((q.scale * 127.0 - 3.0).abs() < 1e-3, "{}", q.scale * 127.0);
    // |x| of U(-3, 2) has 99% of its mass below 2.95 (|x| > t: (3-t)/5 above 2, 2(... ) below).
    let uu: Vec<f32> = (0..400_000).map(|_| rng.range(0.0, 1.0)).collect();
    let s = stats_of(&uu);
    let h = s.abs_hist().expect("hist");
    let t = calibrators::percentile_threshold(&h, 99.0);
    assert!((t - 0.99).abs() < 0.005, "{t}");
    let t = calibrators::threshold(&h, s.amax(), Method::Percentile, 50.0, 127);
    assert!((t - 0.5).abs() < 0.005, "{t}");
    // Percentile ignores a handful of outliers.
    let s = stats_of(&gaussian_with_outliers(200_000));
    let t = calibrators::threshold(
        &s.abs_hist().expect("hist"),
        s.amax(),
        Method::Percentile,
        99.99,
        127,
    );
    assert!(t > 3.0 && t < 5.0, "{t}");
    // Asymmetric minmax keeps the exact range.
    let q = calibrators::asymmetric_params(
        &stats_of(&u),
        &CalibConfig {
            method: Method::Minmax,
            percentile: 99.99,
        },
    );
    let (lo, hi) = q.real_range();
    assert!(
        (lo + 3.0).abs() < 0.02 && (hi - 2.0).abs() < 0.02,
        "{lo} {hi}"
    );
}

#[test]
fn entropy_threshold_on_a_gaussian_with_outliers() {
    let s = stats_of(&gaussian_with_outliers(400_000));
    assert!(s.amax() >= 60.0);
    let h = s.abs_hist().expect("hist");
    let t = calibrators::entropy_threshold(&h, 128);
    // TensorRT's KL calibration clips a unit Gaussian at a few sigma, ignoring the outliers.
    assert!(t > 2.0 && t < 8.0, "entropy threshold {t}");
    let q = calibrators::symmetric_params(
        &s,
        &CalibConfig {
            method: Method::Entropy,
            percentile: 99.99,
        },
    );
    assert!((q.scale * 127.0) as f64 - t < 1e-3);
    // Without outliers a uniform distribution keeps (almost) its whole range.
    let mut rng = Rng::new(5);
    let u: Vec<f32> = (0..400_000).map(|_| rng.range(-1.0, 1.0)).collect();
    let s = stats_of(&u);
    let t = calibrators::entropy_threshold(&s.abs_hist().expect("hist"), 128);
    assert!(t > 0.9, "uniform entropy threshold {t}");
}

#[test]
fn mse_threshold_balances_clipping_and_rounding() {
    // Eight outliers at 60 among 400k unit Gaussians still weigh more in the squared error
    // than the rounding they would cost: MSE keeps most of the range.
    let s = stats_of(&gaussian_with_outliers(400_000));
    let t = calibrators::mse_threshold(&s.abs_hist().expect("hist"), s.amax(), 127);
    assert!(t > 30.0 && t < 60.0, "mse threshold {t}");
    // Milder outliers (at 12) are clipped, though not to the Gaussian's bulk: their squared
    // error still counts.
    let mut v = Rng::new(7).normal_vec(400_000, 1.0);
    for k in 0..8 {
        v[k * 1000] = 12.0;
    }
    let s = stats_of(&v);
    let h = s.abs_hist().expect("hist");
    let t = calibrators::mse_threshold(&h, s.amax(), 127);
    assert!(t > 4.0 && t < 11.5, "mse threshold {t}");
    // It is a minimum: the expected error at t beats the error at max and at t/2.
    let q = QParams::symmetric(t);
    let qmax = QParams::symmetric(s.amax());
    let est = |q: &QParams| calibrators::estimated_sqnr_db(&s, q).expect("estimate");
    assert!(est(&q) > est(&qmax), "{} vs {}", est(&q), est(&qmax));
    assert!(est(&q) > est(&QParams::symmetric(t / 2.0)));
    // Uniform data: nothing to clip.
    let mut rng = Rng::new(9);
    let u: Vec<f32> = (0..400_000).map(|_| rng.range(-1.0, 1.0)).collect();
    let s = stats_of(&u);
    let t = calibrators::mse_threshold(&s.abs_hist().expect("hist"), s.amax(), 127);
    assert!(t > 0.95, "uniform mse threshold {t}");
    // Asymmetric MSE on ReLU-like data keeps zero point 0.
    let r: Vec<f32> = Rng::new(2)
        .normal_vec(100_000, 1.0)
        .into_iter()
        .map(|x| x.max(0.0))
        .collect();
    let q = calibrators::asymmetric_params(
        &stats_of(&r),
        &CalibConfig {
            method: Method::Mse,
            percentile: 99.99,
        },
    );
    assert_eq!(q.zero_point, 0);
}

#[test]
fn histograms_do_not_depend_on_sample_order_or_size() {
    // The first sample having a small range must not cap the histogram (ModelOpt#619).
    let small: Vec<f32> = Rng::new(1).normal_vec(10_000, 0.01);
    let big: Vec<f32> = Rng::new(2).normal_vec(10_000, 5.0);
    let mut a = TensorStats::new(HistMode::Streaming);
    a.observe(&small);
    a.observe(&big);
    let mut b = TensorStats::new(HistMode::Streaming);
    b.observe(&big);
    b.observe(&small);
    assert_eq!(a, b);
    let h = a.abs_hist().expect("hist");
    assert!(h.range >= a.amax() && h.range < 2.0 * a.amax() + 1e-9);
    // State size is fixed.
    let before = a.state_bytes();
    for k in 0..50 {
        a.observe(&Rng::new(k).normal_vec(1000, 3.0));
    }
    assert_eq!(a.state_bytes(), before);
    let mut fixed = Hist::fixed(4.0, 8);
    fixed.add_all([0.1f32, 3.9, 2.0].into_iter());
    assert_eq!(fixed.counts, vec![1, 0, 0, 0, 1, 0, 0, 1]);
}

// ---- placement ----

#[test]
fn residual_blocks_get_qdq_on_the_skip_input_only() {
    let a = analysis(common::resnet_like());
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    let g = graph(&q.model);
    let adds: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type() == "Add").collect();
    assert_eq!(adds.len(), 2);
    for add in &adds {
        let dq: Vec<bool> = add.input.iter().map(|t| is_dq(g, t)).collect();
        assert_eq!(
            dq.iter().filter(|&&d| d).count(),
            1,
            "{}: exactly one input quantized: {dq:?}",
            add.name()
        );
        // The unquantized input is the fused convolution's output.
        let other = add
            .input
            .iter()
            .find(|t| !is_dq(g, t))
            .expect("fused input");
        assert_eq!(
            producer(g, other).map(|n| n.op_type()),
            Some("Conv"),
            "{}",
            add.name()
        );
    }
    // First block: the skip input is the block input (a Relu), which also feeds the branch conv
    // through the same Q/DQ pair.
    let skip0 = adds[0].input.iter().find(|t| is_dq(g, t)).expect("skip");
    let readers = g
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == skip0))
        .count();
    assert!(
        readers >= 2,
        "one shared Q/DQ pair for the conv and the add"
    );
    // Second block: the skip is the strided 1x1 shortcut conv (the shorter path).
    let skip1 = adds[1].input.iter().find(|t| is_dq(g, t)).expect("skip");
    let q_in = &producer(g, skip1).expect("dq").input[0];
    let qn = producer(g, q_in).expect("q");
    assert_eq!(qn.op_type(), "QuantizeLinear");
    let shortcut = producer(g, &qn.input[0]).expect("shortcut");
    assert_eq!(shortcut.op_type(), "Conv");
    let wdq = producer(g, &shortcut.input[1]).expect("weight dq");
    let w = g
        .initializer
        .iter()
        .find(|t| t.name() == wdq.input[0])
        .expect("int8 weight");
    assert_eq!(w.dims[2], 1, "shortcut is the 1x1 conv");
    // Every conv reads a dequantized activation and a dequantized per-channel weight.
    for c in g.node.iter().filter(|n| n.op_type() == "Conv") {
        assert!(
            is_dq(g, &c.input[0]) && is_dq(g, &c.input[1]),
            "{}",
            c.name()
        );
        let wdq = producer(g, &c.input[1]).expect("dq");
        assert_eq!(wdq.attr_i("axis"), Some(0));
        let scale = g
            .initializer
            .iter()
            .find(|t| t.name() == wdq.input[1])
            .expect("scale");
        let oc = g
            .initializer
            .iter()
            .find(|t| t.name() == wdq.input[0])
            .expect("w")
            .dims[0];
        assert_eq!(scale.dims, vec![oc]);
        // Bias stays float.
        if let Some(b) = c.input.get(2) {
            assert!(!is_dq(g, b));
        }
    }
    // MaxPool-free model: no pooling Q/DQ except the GlobalAveragePool input.
    let gap = g
        .node
        .iter()
        .find(|n| n.op_type() == "GlobalAveragePool")
        .expect("gap");
    assert!(is_dq(g, &gap.input[0]));
    // TensorRT: every zero point is int8 0.
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type().ends_with("QuantizeLinear"))
    {
        let zp = g
            .initializer
            .iter()
            .find(|t| t.name() == n.input[2])
            .expect("zp");
        assert_eq!(zp.data_type(), 3, "int8");
        assert!(zp.raw_data.as_ref().expect("raw").iter().all(|&b| b == 0));
    }
    // No float conv weights left behind.
    let before = common::resnet_like();
    for c in graph(&before).node.iter().filter(|n| n.op_type() == "Conv") {
        assert!(
            g.initializer.iter().all(|t| t.name() != c.input[1]),
            "float weight {} dropped",
            c.input[1]
        );
    }
}

#[test]
fn aspp_concat_is_quantized_after_the_concat_not_on_its_branches() {
    let a = analysis(common::aspp());
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    let g = graph(&q.model);
    let cat = g
        .node
        .iter()
        .find(|n| n.op_type() == "Concat")
        .expect("concat");
    for t in &cat.input {
        assert!(
            !is_dq(g, t),
            "no Q/DQ between a branch and the concat ({t})"
        );
    }
    // The projection conv reads the concat through one Q/DQ pair.
    let proj = g
        .node
        .iter()
        .find(|n| {
            n.op_type() == "Conv"
                && producer(g, &n.input[0]).is_some_and(|d| {
                    d.op_type() == "DequantizeLinear"
                        && producer(g, &d.input[0]).is_some_and(|q| q.input[0] == cat.output[0])
                })
        })
        .expect("projection conv fed by Q/DQ(concat)");
    assert!(is_dq(g, &proj.input[1]));
    // The four branches read the shared backbone tensor through a single Q/DQ pair.
    let branch_inputs: Vec<&String> = g
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "Conv" | "GlobalAveragePool"))
        .map(|n| &n.input[0])
        .collect();
    let mut dq_sources: HashMap<String, usize> = HashMap::new();
    for t in branch_inputs {
        if let Some(d) = producer(g, t).filter(|d| d.op_type() == "DequantizeLinear") {
            let q = producer(g, &d.input[0]).expect("q");
            *dq_sources.entry(q.input[0].clone()).or_default() += 1;
        }
    }
    assert!(
        dq_sources.values().any(|&k| k >= 4),
        "three convs and the pooling share one pair: {dq_sources:?}"
    );
    assert_eq!(
        count(g, "QuantizeLinear"),
        dq_sources.len(),
        "one Q per quantized tensor"
    );
}

#[test]
fn small_layers_and_gemv_stay_float_by_default() {
    let a = analysis(common::resnet_like());
    let q = quantize(
        &a,
        &QuantOptions {
            quantize_small: false,
            samples: 4,
            eval_samples: 2,
            ..Default::default()
        },
        &NoProgress,
    )
    .expect("quantize");
    let r = &q.report;
    let fc = r.layers.iter().find(|l| l.op == "Gemm").expect("gemm");
    assert!(!fc.quantized);
    assert!(
        fc.reason
            .as_deref()
            .is_some_and(|s| s.contains("GEMM") || s.contains("GEMV")),
        "{:?}",
        fc.reason
    );
    // 8→8 convs are small; the first conv (3→8) is kept as ModelOpt keeps aligned first layers.
    let small = r
        .layers
        .iter()
        .filter(|l| {
            l.reason
                .as_deref()
                .is_some_and(|s| s.contains("small layer"))
        })
        .count();
    assert!(small >= 2, "{:#?}", r.layers);
    assert!(r.layers.iter().any(|l| l.op == "Conv" && l.quantized));
    // Float layers still get a would-be SQNR.
    assert!(
        r.layers
            .iter()
            .filter(|l| !l.quantized && l.op == "Conv")
            .all(|l| l.sqnr_db.is_some())
    );
}

#[test]
fn skip_tags_and_excludes_keep_layers_float() {
    let m = common::resnet_like();
    let a = analysis(m.clone());
    let first_conv = graph(&m)
        .node
        .iter()
        .find(|n| n.op_type() == "Conv")
        .expect("conv")
        .name()
        .to_string();
    let tags = Tags {
        skip: vec![first_conv.clone()],
        ..Default::default()
    };
    let q = quantize(
        &a,
        &QuantOptions {
            tags,
            exclude: vec!["Gemm".into(), "*conv_1[0-9]*".into()],
            ..opts()
        },
        &NoProgress,
    );
    // A glob that matches nothing is an error naming it.
    let e = q.err().expect("bad glob").to_string();
    assert!(e.contains("*conv_1[0-9]*"), "{e}");
    let tags = Tags {
        skip: vec![first_conv.clone()],
        ..Default::default()
    };
    let q = quantize(
        &a,
        &QuantOptions {
            tags,
            exclude: vec!["Gemm".into()],
            ..opts()
        },
        &NoProgress,
    )
    .expect("quantize");
    let g = graph(&q.model);
    let c = node(g, &first_conv);
    assert!(
        !is_dq(g, &c.input[0]) && !is_dq(g, &c.input[1]),
        "skip-tagged conv stays float"
    );
    let fc = g.node.iter().find(|n| n.op_type() == "Gemm").expect("gemm");
    assert!(!is_dq(g, &fc.input[0]) && !is_dq(g, &fc.input[1]));
    let l = q
        .report
        .layers
        .iter()
        .find(|l| l.node == first_conv)
        .expect("layer");
    assert_eq!(
        (l.quantized, l.reason.as_deref()),
        (false, Some("skip tag"))
    );
    let l = q
        .report
        .layers
        .iter()
        .find(|l| l.op == "Gemm")
        .expect("gemm");
    assert_eq!(l.reason.as_deref(), Some("--exclude Gemm"));
    // A tag naming no layer is an error.
    let tags = Tags {
        skip: vec!["/nope/Conv".into()],
        ..Default::default()
    };
    assert!(quantize(&a, &QuantOptions { tags, ..opts() }, &NoProgress).is_err());
}

#[test]
fn matmuls_weights_per_output_feature_and_activation_pairs() {
    let a = analysis(common::matmul_block());
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    let g = graph(&q.model);
    let mms: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type() == "MatMul").collect();
    assert_eq!(mms.len(), 3);
    // Constant weight: per-channel along the last axis (output features).
    let wdq = producer(g, &mms[0].input[1]).expect("weight dq");
    assert_eq!(wdq.attr_i("axis"), Some(1));
    // Activation × activation: both inputs per-tensor.
    for mm in &mms[1..] {
        assert!(
            is_dq(g, &mm.input[0]) && is_dq(g, &mm.input[1]),
            "{}",
            mm.name()
        );
    }
    let gemm = g.node.iter().find(|n| n.op_type() == "Gemm").expect("gemm");
    assert_eq!(
        producer(g, &gemm.input[1]).and_then(|d| d.attr_i("axis")),
        Some(0),
        "transB weight: axis 0"
    );
    assert!(
        q.report.output_sqnr_db.is_some_and(|v| v > 20.0),
        "{:?}",
        q.report.output_sqnr_db
    );
}

#[test]
fn conv_transpose_weights_are_per_channel_on_axis_1() {
    let a = analysis(common::stereo3d());
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    let g = graph(&q.model);
    let ct = g
        .node
        .iter()
        .find(|n| n.op_type() == "ConvTranspose")
        .expect("deconv");
    let dq = producer(g, &ct.input[1]).expect("dq");
    assert_eq!(dq.op_type(), "DequantizeLinear");
    assert_eq!(dq.attr_i("axis"), Some(1));
    let scale = g
        .initializer
        .iter()
        .find(|t| t.name() == dq.input[1])
        .expect("scale");
    let m = common::stereo3d();
    let w = graph(&m)
        .initializer
        .iter()
        .find(|t| t.name() == "deconv.weight")
        .expect("weight");
    assert_eq!(
        scale.dims,
        vec![w.dims[1]],
        "ConvTranspose weight [in, out, ...]: one scale per output channel"
    );
    // Multi-input model: both inputs calibrated from random data.
    assert_eq!(q.report.input_shapes.len(), 1);
    assert_eq!(q.report.input_shapes[0].shapes.len(), 2);
}

// ---- calibration inputs ----

fn write_npy(path: &Path, shape: &[usize], seed: u64) {
    let n: usize = shape.iter().product();
    data::write_npy_f32(path, shape, &Rng::new(seed).normal_vec(n, 1.0)).expect("npy");
}

#[test]
fn a_sample_that_does_not_fit_the_model_is_one_clear_error_before_anything_runs() {
    // Seed Q8.
    let dir = common::tempdir();
    for k in 0..3 {
        write_npy(&dir.path().join(format!("s{k}.npy")), &[1, 3, 32, 32], k);
    }
    write_npy(&dir.path().join("s3.npy"), &[1, 3, 30, 32], 3);
    let a = analysis(common::resnet_like());
    let rec = RecordProgress::default();
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    let e = quantize(&a, &o, &rec).err().expect("mismatch").to_string();
    assert!(e.contains("input 'input'"), "{e}");
    assert!(e.contains("float32 [1, 3, 32, 32]"), "{e}");
    assert!(e.contains("[1, 3, 30, 32]"), "{e}");
    assert!(e.contains("dim 2 is 30, not 32"), "{e}");
    assert!(e.contains("s3.npy"), "{e}");
    assert!(!e.contains('\n'));
    assert!(
        !rec.events()
            .iter()
            .any(|ev| matches!(ev, JobEvent::Phase { name, .. } if name == "calibrating")),
        "nothing ran"
    );
    // Wrong dtype and wrong rank are named too.
    let dir = common::tempdir();
    std::fs::write(dir.path().join("x.npy"), {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 3, 32, 32), }";
        let mut h = h.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(h.as_bytes());
        v.extend(vec![0u8; 3 * 32 * 32 * 8]);
        v
    })
    .expect("write");
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    let e = quantize(&a, &o, &NoProgress)
        .err()
        .expect("dtype")
        .to_string();
    assert!(e.contains("expects float32") && e.contains("int64"), "{e}");
    let dir = common::tempdir();
    write_npy(&dir.path().join("x.npy"), &[3, 32], 0);
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    let e = quantize(&a, &o, &NoProgress)
        .err()
        .expect("rank")
        .to_string();
    assert!(e.contains("rank 2 instead of 4"), "{e}");
}

#[test]
fn dynamic_inputs_calibrate_over_several_shapes_and_say_what_tensorrt_needs() {
    // Seed Q11.
    let dir = common::tempdir();
    let sizes = [(24, 32), (32, 48), (24, 32), (40, 40)];
    for (k, (h, w)) in sizes.iter().enumerate() {
        write_npy(
            &dir.path().join(format!("{k}.npy")),
            &[1, 3, *h, *w],
            k as u64,
        );
    }
    let a = analysis(common::dynamic_hw());
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize");
    let r = &q.report;
    assert_eq!(r.samples, 4);
    assert_eq!(r.input_shapes.len(), 3, "{:?}", r.input_shapes);
    assert_eq!(r.input_shapes.iter().map(|s| s.samples).sum::<usize>(), 4);
    let note = r
        .notes
        .iter()
        .find(|n| n.contains("dynamic dims"))
        .expect("dynamic note");
    assert!(
        note.contains("height") && note.contains("3 shapes"),
        "{note}"
    );
    assert!(
        note.contains("--minShapes=image:1x3x24x32")
            && note.contains("--maxShapes=image:1x3x40x48"),
        "{note}"
    );
    assert!(r.output_sqnr_db.is_some_and(|v| v > 15.0));
    // Symbolic dims shared by two inputs must agree within a sample.
    let decls = vec![
        data::InputDecl {
            name: "l".into(),
            dtype: pare::model::DataType::FLOAT,
            dims: vec![data::DeclDim::Sym("h".into())],
        },
        data::InputDecl {
            name: "r".into(),
            dtype: pare::model::DataType::FLOAT,
            dims: vec![data::DeclDim::Sym("h".into())],
        },
    ];
    let dir = common::tempdir();
    for (n, len) in [("l", 5), ("r", 6)] {
        std::fs::create_dir(dir.path().join(n)).expect("mkdir");
        write_npy(&dir.path().join(n).join("0.npy"), &[len], 1);
    }
    let e = data::SampleSet::open(
        decls,
        &CalibSource::Path(dir.path().to_path_buf()),
        8,
        Preprocess::default(),
    )
    .expect_err("inconsistent")
    .to_string();
    assert!(e.contains("input 'l' has h = 5"), "{e}");
    // Random data for a dynamic non-batch dim needs a size.
    let e = quantize(&a, &opts(), &NoProgress)
        .err()
        .expect("needs pin")
        .to_string();
    assert!(e.contains("--input-shape image:1x3xNxN"), "{e}");
    let mut pins = InputPins::new();
    pins.insert("image".into(), vec![1, 3, 16, 16]);
    let a = Analysis::new(common::model(common::dynamic_hw()), &pins).expect("pinned");
    assert!(quantize(&a, &opts(), &NoProgress).is_ok());
}

#[test]
fn images_are_decoded_resized_and_normalised() {
    let dir = common::tempdir();
    // A red 40x20 PNG, a gray 16x16 PNG, a 50x50 JPEG.
    let red = image::RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]));
    red.save(dir.path().join("a_red.png")).expect("png");
    let gray = image::GrayImage::from_pixel(16, 16, image::Luma([128]));
    gray.save(dir.path().join("b_gray.png")).expect("png");
    let mut rng = Rng::new(4);
    let noise = image::RgbImage::from_fn(50, 50, |_, _| {
        image::Rgb([
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ])
    });
    noise.save(dir.path().join("c_noise.jpg")).expect("jpeg");
    std::fs::write(dir.path().join("README.txt"), "not a sample").expect("txt");
    let m = common::resnet_like();
    let decls = data::input_decls(graph(&m), &InputPins::new()).expect("decls");
    let pp = Preprocess {
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.5, 0.5, 0.5],
        ..Default::default()
    };
    let set = data::SampleSet::open(
        decls.clone(),
        &CalibSource::Path(dir.path().to_path_buf()),
        10,
        pp.clone(),
    )
    .expect("set");
    assert_eq!(set.len(), 3);
    assert!(
        set.shapes.iter().all(|s| s[0] == vec![1, 3, 32, 32]),
        "resized to the declared 32x32"
    );
    let s = set.load(0).expect("red");
    let v = s.tensors[0].to_f64();
    let px = 32 * 32;
    // Red: R = (1 - 0.5) / 0.5 = 1, G = B = -1, everywhere (uniform image survives resizing).
    assert!(
        (v[0] - 1.0).abs() < 1e-5 && (v[px] + 1.0).abs() < 1e-5 && (v[2 * px] + 1.0).abs() < 1e-5
    );
    drop(s);
    let s = set.load(1).expect("gray");
    let v = s.tensors[0].to_f64();
    assert!(
        v.iter()
            .all(|x| (x - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-4),
        "gray replicated"
    );
    drop(s);
    // BGR swaps the channel order; NHWC puts channels last.
    let bgr = Preprocess {
        bgr: true,
        ..pp.clone()
    };
    let set = data::SampleSet::open(
        decls.clone(),
        &CalibSource::Path(dir.path().join("a_red.png")),
        10,
        bgr,
    )
    .expect("bgr");
    let v = set.load(0).expect("load").tensors[0].to_f64();
    assert!(
        (v[0] + 1.0).abs() < 1e-5 && (v[2 * px] - 1.0).abs() < 1e-5,
        "B first, R last"
    );
    let nhwc = data::InputDecl {
        name: "input".into(),
        dtype: pare::model::DataType::FLOAT,
        dims: vec![
            data::DeclDim::Known(1),
            data::DeclDim::Known(8),
            data::DeclDim::Known(8),
            data::DeclDim::Known(3),
        ],
    };
    let set = data::SampleSet::open(
        vec![nhwc],
        &CalibSource::Path(dir.path().join("a_red.png")),
        10,
        pp,
    )
    .expect("nhwc");
    assert_eq!(set.shapes[0][0], vec![1, 8, 8, 3]);
    let v = set.load(0).expect("load").tensors[0].to_f64();
    assert!((v[0] - 1.0).abs() < 1e-5 && (v[1] + 1.0).abs() < 1e-5 && (v[3] - 1.0).abs() < 1e-5);
    // And the whole pipeline calibrates on them.
    let a = analysis(m);
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    let q = quantize(&a, &o, &NoProgress).expect("quantize on images");
    assert_eq!(q.report.samples, 3);
}

#[test]
fn multi_input_folders_npy_batches_and_onnx_test_data() {
    let m = common::stereo3d();
    let a = analysis(m.clone());
    // left/ and right/ subfolders, paired in sorted order.
    let dir = common::tempdir();
    for side in ["left", "right"] {
        std::fs::create_dir(dir.path().join(side)).expect("mkdir");
        for k in 0..3 {
            write_npy(
                &dir.path().join(side).join(format!("{k:03}.npy")),
                &[1, 3, 16, 16],
                k,
            );
        }
    }
    let o = QuantOptions {
        source: CalibSource::Path(dir.path().to_path_buf()),
        ..opts()
    };
    assert_eq!(
        quantize(&a, &o, &NoProgress)
            .expect("stereo")
            .report
            .samples,
        3
    );
    // NAME=DIR form.
    let src = CalibSource::parse(
        &[
            format!("left={}", dir.path().join("left").display()),
            format!("right={}", dir.path().join("right").display()),
        ],
        0,
    )
    .expect("parse");
    let decls = data::input_decls(graph(&m), &InputPins::new()).expect("decls");
    assert_eq!(
        data::SampleSet::open(decls.clone(), &src, 10, Preprocess::default())
            .expect("set")
            .len(),
        3
    );
    // Unequal counts are an error naming both.
    write_npy(
        &dir.path().join("right").join("003.npy"),
        &[1, 3, 16, 16],
        9,
    );
    let e = data::SampleSet::open(
        decls.clone(),
        &CalibSource::Path(dir.path().to_path_buf()),
        10,
        Preprocess::default(),
    )
    .expect_err("unpaired")
    .to_string();
    assert!(
        e.contains("'left' has 3") && e.contains("'right' has 4"),
        "{e}"
    );
    // A flat folder for a two-input model says how to lay it out.
    let flat = common::tempdir();
    write_npy(&flat.path().join("x.npy"), &[1, 3, 16, 16], 1);
    let e = data::SampleSet::open(
        decls.clone(),
        &CalibSource::Path(flat.path().to_path_buf()),
        10,
        Preprocess::default(),
    )
    .expect_err("flat")
    .to_string();
    assert!(e.contains("left/, right/"), "{e}");
    // A batch-of-5 .npy for a batch-1 input reads as 5 samples; a missing batch dim is added.
    let one = common::model(common::resnet_like());
    let decls = data::input_decls(graph(&one.proto), &InputPins::new()).expect("decls");
    let d = common::tempdir();
    write_npy(&d.path().join("batch.npy"), &[5, 3, 32, 32], 1);
    write_npy(&d.path().join("chw.npy"), &[3, 32, 32], 2);
    let set = data::SampleSet::open(
        decls.clone(),
        &CalibSource::Path(d.path().to_path_buf()),
        100,
        Preprocess::default(),
    )
    .expect("set");
    assert_eq!(set.len(), 6);
    let s2 = set.load(2).expect("row 2").tensors[0].to_f64();
    let all = Rng::new(1).normal_vec(5 * 3 * 32 * 32, 1.0);
    assert_eq!(s2[0] as f32, all[2 * 3 * 32 * 32]);
    assert_eq!(
        set.load(5).expect("chw").tensors[0].shape,
        vec![1, 3, 32, 32]
    );
    // ONNX test-data folders of TensorProto .pb files.
    let td = common::tempdir();
    for k in 0..2 {
        let sd = td.path().join(format!("test_data_set_{k}"));
        std::fs::create_dir(&sd).expect("mkdir");
        let t = pare::model::tensor::f32_tensor(
            "input",
            &[1, 3, 32, 32],
            &Rng::new(k).normal_vec(3 * 32 * 32, 1.0),
        );
        std::fs::write(sd.join("input_0.pb"), prost::Message::encode_to_vec(&t)).expect("pb");
    }
    let set = data::SampleSet::open(
        decls,
        &CalibSource::Path(td.path().to_path_buf()),
        10,
        Preprocess::default(),
    )
    .expect("pb set");
    assert_eq!(set.len(), 2);
    assert_eq!(
        set.load(1).expect("pb").tensors[0].to_f64()[0] as f32,
        Rng::new(1).normal_vec(1, 1.0)[0]
    );
}

// ---- bounded memory, events, determinism ----

#[test]
fn memory_does_not_grow_with_the_number_of_samples() {
    let a = analysis(common::resnet_like());
    let small = quantize(
        &a,
        &QuantOptions {
            samples: 4,
            eval_samples: 1,
            ..opts()
        },
        &NoProgress,
    )
    .expect("4");
    let large = quantize(
        &a,
        &QuantOptions {
            samples: 40,
            eval_samples: 1,
            ..opts()
        },
        &NoProgress,
    )
    .expect("40");
    assert_eq!(large.report.samples, 40);
    assert_eq!(
        small.report.calibration_state_bytes,
        large.report.calibration_state_bytes
    );
    assert!(
        large.report.peak_samples_in_memory <= 2,
        "never more samples than workers: {}",
        large.report.peak_samples_in_memory
    );
    // The state is the histograms, a few tens of KiB per tensor.
    let tensors = large.report.ranges.len();
    assert!(large.report.calibration_state_bytes < tensors * 2 * (4096 * 8 + 256) + 4096);
}

#[test]
fn threads_do_not_change_the_result_and_events_arrive_live() {
    let a = analysis(common::psp());
    let one = quantize(
        &a,
        &QuantOptions {
            threads: 1,
            ..opts()
        },
        &NoProgress,
    )
    .expect("1 thread");
    let rec = RecordProgress::default();
    let two = quantize(
        &a,
        &QuantOptions {
            threads: 2,
            ..opts()
        },
        &rec,
    )
    .expect("2 threads");
    assert_eq!(
        one.report.ranges, two.report.ranges,
        "exact merging: same scales whatever the order"
    );
    assert_eq!(
        pare::model::io::encode_model(&one.model),
        pare::model::io::encode_model(&two.model)
    );
    let ev = rec.events();
    let phase = |p: &str| {
        ev.iter()
            .position(|e| matches!(e, JobEvent::Phase { name, .. } if name == p))
    };
    let (cal, diag) = (
        phase("calibrating").expect("calibrating"),
        phase("diagnosing").expect("diagnosing"),
    );
    let layer_at = |label: LayerLabel| {
        ev.iter()
            .position(|e| matches!(e, JobEvent::Layer { label: l, .. } if *l == label))
    };
    let est = layer_at(LayerLabel::Estimate).expect("estimates while calibrating");
    assert!(est > cal && est < diag);
    let live = layer_at(LayerLabel::SqnrDb).expect("per-layer SQNR while diagnosing");
    assert!(live > diag);
    assert!(ev.iter().any(|e| matches!(e, JobEvent::Progress { .. })));
}

// ---- engines ----

#[test]
fn tract_is_the_engine_without_onnxruntime_and_ort_on_request_fails_clearly() {
    let a = analysis(common::psp());
    let q = quantize(&a, &opts(), &NoProgress).expect("tract");
    assert_eq!(q.report.engine, EngineKind::Tract);
    if pare::runtime::ort_available().is_ok() {
        return; // built with `ort` and the library is here: covered below
    }
    let auto = quantize(
        &a,
        &QuantOptions {
            engine: EngineChoice::Auto,
            ..opts()
        },
        &NoProgress,
    )
    .expect("auto falls back to tract");
    assert_eq!(auto.report.engine, EngineKind::Tract);
    let err = quantize(
        &a,
        &QuantOptions {
            engine: EngineChoice::Ort,
            ..opts()
        },
        &NoProgress,
    )
    .err()
    .expect("--engine ort without onnxruntime is an error");
    let msg = err.to_string();
    assert!(msg.contains("--engine ort"), "{msg}");
    assert!(matches!(err, pare::PareError::Usage(_)), "{err:?}");
}

/// With `--features ort` and a loadable libonnxruntime: calibration on onnxruntime finds the
/// same ranges as on tract (float rounding apart) and gives the same quantized model.
#[cfg(feature = "ort")]
#[test]
fn onnxruntime_calibration_matches_tract() {
    if !common::with_onnxruntime("onnxruntime_calibration_matches_tract") {
        return; // ran in a child process that loads the library
    }
    for (name, m) in [
        ("psp", common::psp()),
        ("resnet", common::resnet_like()),
        ("aspp", common::aspp()),
    ] {
        let a = analysis(m);
        let t = quantize(&a, &opts(), &NoProgress).expect("tract");
        let o = quantize(
            &a,
            &QuantOptions {
                engine: EngineChoice::Ort,
                ..opts()
            },
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("{name}: onnxruntime: {e}"));
        assert_eq!(o.report.engine, EngineKind::OnnxRuntime);
        assert_eq!(t.report.ranges.len(), o.report.ranges.len(), "{name}");
        for (x, y) in t.report.ranges.iter().zip(&o.report.ranges) {
            assert_eq!(x.tensor, y.tensor);
            let tol = 1e-4 * x.max.abs().max(x.min.abs()).max(1.0);
            assert!(
                (x.min - y.min).abs() <= tol && (x.max - y.max).abs() <= tol,
                "{name} {}: tract [{}, {}] vs onnxruntime [{}, {}]",
                x.tensor,
                x.min,
                x.max,
                y.min,
                y.max
            );
            assert!(
                (x.scale - y.scale).abs() <= 1e-3 * x.scale.abs(),
                "{name} {}",
                x.tensor
            );
        }
        let (ts, os) = (t.report.output_sqnr_db, o.report.output_sqnr_db);
        assert!(
            matches!((ts, os), (Some(a), Some(b)) if (a - b).abs() < 0.5),
            "{name}: {ts:?} vs {os:?}"
        );
    }
    common::ran_against_onnxruntime("onnxruntime_calibration_matches_tract");
}

// ---- end to end ----

/// Output SQNR of `q` vs `m` measured independently in tract on `inputs`.
fn measured_sqnr(
    m: &ModelProto,
    q: &ModelProto,
    inputs: &[Vec<HostTensor>],
    outputs: &[String],
) -> f64 {
    let (m, q) = (&with_outputs(m, outputs), &with_outputs(q, outputs));
    let specs: Vec<InputSpec> = graph(m)
        .input
        .iter()
        .zip(&inputs[0])
        .map(|(i, t)| InputSpec {
            name: i.name().to_string(),
            dtype: t.dtype(),
            shape: t.shape.clone(),
        })
        .collect();
    let ef = Runner::tract(m, &specs).expect("float engine");
    let eq = Runner::tract(q, &specs).expect("quantized model loads in tract");
    let (mut r, mut g) = (Vec::new(), Vec::new());
    for x in inputs {
        let a = ef.run(x).expect("float run");
        let b = eq.run(x).expect("quantized run");
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.shape, q.shape);
            let qv = q.to_f64();
            assert!(qv.iter().all(|v| v.is_finite()));
            r.extend(p.to_f64());
            g.extend(qv);
        }
    }
    sqnr_db(&r, &g)
}

#[test]
fn quantized_fixtures_run_in_tract_with_the_sqnr_the_report_claims() {
    for (name, m) in [
        ("resnet_like", common::resnet_like()),
        ("aspp", common::aspp()),
        ("psp", common::psp()),
        ("seg_head", common::seg_head()),
        ("same_pad_dw_se", common::same_pad_dw_se()),
        ("stereo3d", common::stereo3d()),
        ("flatten_view", common::flatten_view()),
        ("demo", pare::demo::build_demo()),
    ] {
        let a = analysis(m.clone());
        for format in [Format::Trt, Format::Ort] {
            let o = QuantOptions {
                format,
                samples: 6,
                eval_samples: 6,
                ..opts()
            };
            let q = quantize(&a, &o, &NoProgress).unwrap_or_else(|e| panic!("{name}: {e}"));
            let claimed = q
                .report
                .output_sqnr_db
                .unwrap_or_else(|| panic!("{name}: no SQNR"));
            assert!(
                claimed > 12.0,
                "{name} {format:?}: output SQNR {claimed:.1} dB"
            );
            // The report's inputs are the first eval samples of `--calib random` (seed 0).
            let decls = data::input_decls(graph(&m), &InputPins::new()).expect("decls");
            let set = data::SampleSet::open(
                decls,
                &CalibSource::Random { seed: 0 },
                6,
                Preprocess::default(),
            )
            .expect("set");
            let inputs: Vec<Vec<HostTensor>> = (0..6)
                .map(|k| set.load(k).expect("sample").tensors.clone())
                .collect();
            // The demo's `If` is beyond tract: the report measures the outputs tract can run.
            let outs: Vec<String> = q.report.outputs.iter().map(|o| o.name.clone()).collect();
            if name == "demo" {
                assert_eq!(outs, vec!["logits".to_string()]);
                assert!(
                    q.report
                        .notes
                        .iter()
                        .any(|n| n.contains("'confidence' cannot be evaluated")),
                    "{:?}",
                    q.report.notes
                );
            }
            let measured = measured_sqnr(&m, &q.model, &inputs, &outs);
            assert!(
                (measured - claimed).abs() < 0.5,
                "{name} {format:?}: report says {claimed:.2} dB, tract measures {measured:.2} dB"
            );
            let g = graph(&q.model);
            let zps: Vec<i32> = g
                .node
                .iter()
                .filter(|n| n.op_type() == "QuantizeLinear")
                .map(|n| {
                    g.initializer
                        .iter()
                        .find(|t| t.name() == n.input[2])
                        .expect("zp")
                        .data_type()
                })
                .collect();
            let want = if format == Format::Trt { 3 } else { 2 };
            assert!(
                !zps.is_empty() && zps.iter().all(|&d| d == want),
                "{name} {format:?}: zero point types {zps:?}"
            );
            // Layers are ranked worst first.
            let dbs: Vec<f64> = q
                .report
                .layers
                .iter()
                .filter(|l| l.quantized)
                .filter_map(|l| l.sqnr_db)
                .collect();
            assert!(
                dbs.windows(2).all(|w| w[0] <= w[1]),
                "{name}: ranking {dbs:?}"
            );
        }
    }
}

#[test]
fn target_sqnr_returns_the_worst_layers_to_float_until_reached() {
    let a = analysis(common::resnet_like());
    let base = quantize(&a, &opts(), &NoProgress).expect("base");
    let start = base.report.output_sqnr_db.expect("sqnr");
    let target = start + 6.0;
    let rec = RecordProgress::default();
    let q = quantize(
        &a,
        &QuantOptions {
            target_sqnr: Some(target),
            ..opts()
        },
        &rec,
    )
    .expect("fallback");
    let r = &q.report;
    assert!(!r.fallback.is_empty());
    assert_eq!(r.target_reached, Some(true));
    assert!(
        r.output_sqnr_db.is_some_and(|v| v >= target),
        "{:?} < {target}",
        r.output_sqnr_db
    );
    // One layer at a time, each the worst isolated one left, and each step improves on the start.
    let worst = base
        .report
        .layers
        .iter()
        .find(|l| l.quantized)
        .expect("worst")
        .node
        .clone();
    assert_eq!(r.fallback[0].node, worst);
    assert!(
        r.fallback
            .last()
            .and_then(|s| s.output_sqnr_db)
            .is_some_and(|v| v >= target)
    );
    assert!(r.quantized_layers < base.report.quantized_layers);
    for s in &r.fallback {
        let l = r.layers.iter().find(|l| l.node == s.node).expect("layer");
        assert!(
            !l.quantized
                && l.reason
                    .as_deref()
                    .is_some_and(|x| x.contains("target-sqnr"))
        );
    }
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, JobEvent::Layer { label, .. } if *label == LayerLabel::Fallback))
    );
    // The written model agrees: fewer Q/DQ.
    assert!(
        count(graph(&q.model), "DequantizeLinear") < count(graph(&base.model), "DequantizeLinear")
    );
}

#[test]
fn every_method_and_two_pass_give_usable_models() {
    let a = analysis(common::aspp());
    let mut seen = Vec::new();
    for method in [
        Method::Minmax,
        Method::Percentile,
        Method::Entropy,
        Method::Mse,
    ] {
        for two_pass in [false, true] {
            let o = QuantOptions {
                calib: CalibConfig {
                    method,
                    percentile: 99.9,
                },
                two_pass,
                ..opts()
            };
            let q = quantize(&a, &o, &NoProgress).unwrap_or_else(|e| panic!("{method:?}: {e}"));
            let v = q.report.output_sqnr_db.expect("sqnr");
            assert!(v > 12.0, "{method:?} two_pass={two_pass}: {v}");
            seen.push((method, two_pass, v));
        }
    }
    // Minmax never clips: its ranges are the largest.
    let o = QuantOptions {
        calib: CalibConfig {
            method: Method::Minmax,
            percentile: 99.9,
        },
        ..opts()
    };
    let mm = quantize(&a, &o, &NoProgress).expect("minmax");
    let ms = quantize(&a, &opts(), &NoProgress).expect("mse");
    for (x, y) in mm.report.ranges.iter().zip(&ms.report.ranges) {
        assert!(
            x.scale >= y.scale * 0.999,
            "{}: minmax {} < mse {}",
            x.tensor,
            x.scale,
            y.scale
        );
    }
}

// ---- CLI ----

#[test]
fn cli_json_report_and_exit_codes() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "r.onnx", &common::resnet_like());
    let out = dir.path().join("r.int8.onnx");
    let (code, stdout, err) = pare(&[
        "quantize",
        p.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--calib",
        "random",
        "--samples",
        "6",
        "--quantize-small",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(j["output"], out.to_str().expect("utf8"));
    assert!(j["output_sqnr_db"].as_f64().is_some_and(|v| v > 15.0));
    assert!(j["calibration_seconds"].as_f64().is_some());
    let layers = j["layers"].as_array().expect("layers");
    assert!(layers.len() >= 8);
    for l in layers {
        assert!(
            l["node"].is_string()
                && l["quantized"].is_boolean()
                && (l["sqnr_db"].is_number() || l["sqnr_db"].is_null())
        );
    }
    assert!(out.exists());
    let reloaded = pare::model::io::load_model(&out).expect("written model loads");
    assert!(count(graph(&reloaded.proto), "DequantizeLinear") > 0);
    // Text report names the worst layers.
    let out2 = dir.path().join("r2.onnx");
    let (code, text, err) = pare(&[
        "quantize",
        p.to_str().expect("utf8"),
        "-o",
        out2.to_str().expect("utf8"),
        "--calib",
        "random",
        "--samples",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("worst layers") && text.contains("SQNR") && text.contains("wrote"),
        "{text}"
    );
    // Q8 through the CLI: exit 2, one line naming the input.
    let bad = common::tempdir();
    write_npy(&bad.path().join("0.npy"), &[1, 3, 31, 32], 0);
    let (code, _, err) = pare(&[
        "quantize",
        p.to_str().expect("utf8"),
        "-o",
        out2.to_str().expect("utf8"),
        "--calib",
        bad.path().to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("input 'input'") && err.contains("dim 2 is 31, not 32"),
        "{err}"
    );
    // Overwriting the input is refused before any work.
    let (code, _, err) = pare(&[
        "quantize",
        p.to_str().expect("utf8"),
        "-o",
        p.to_str().expect("utf8"),
        "--calib",
        "random",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_loss_after_the_quantized_layers_is_pinned_on_the_ops_that_cause_it() {
    // Seed Q9: the quantized layers are fine; the ArgMax after them flips labels.
    let a = analysis(common::argmax_head());
    let q = quantize(
        &a,
        &QuantOptions {
            samples: 8,
            eval_samples: 8,
            ..opts()
        },
        &NoProgress,
    )
    .expect("quantize");
    let r = &q.report;
    let worst = r
        .layers
        .iter()
        .filter(|l| l.quantized)
        .filter_map(|l| l.cumulative_sqnr_db)
        .fold(f64::INFINITY, f64::min);
    let out = r.output_sqnr_db.expect("sqnr");
    assert!(worst > 30.0, "layers are fine: {worst}");
    assert!(out < worst - 10.0, "the label map is not: {out} vs {worst}");
    let note = r
        .notes
        .iter()
        .find(|n| n.contains("value-dependent"))
        .expect("note");
    assert!(note.contains("ArgMax"), "{note}");
}
