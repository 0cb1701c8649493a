//! Quantization benchmarks: histogram updates (the per-value cost of streaming calibration),
//! the entropy and MSE calibrators on a full histogram, per-channel weight quantization and
//! Q/DQ placement + insertion on a ResNet-50-sized model, and a whole small calibration run.

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pare::jobs::NoProgress;
use pare::model::builder::zoo;
use pare::model::{Analysis, InputPins};
use pare::quant::calibrators::{entropy_threshold, mse_threshold};
use pare::quant::histogram::{HistMode, TensorStats};
use pare::quant::qparams::{QParams, WeightMethod, quantize_weight};
use pare::quant::{QuantOptions, placement, qdq, quantize};
use pare::rng::Rng;

fn model(m: pare::model::proto::ModelProto) -> Analysis {
    let model = pare::model::Model::in_memory(m);
    Analysis::new(model, &InputPins::new()).expect("analysis")
}

fn quant_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("quant");
    g.sample_size(10);

    // 1M activations: ReLU-like (half zeros) and Gaussian.
    let mut rng = Rng::new(1);
    let gauss: Vec<f32> = rng.normal_vec(1 << 20, 1.0);
    let relu: Vec<f32> = gauss.iter().map(|x| x.max(0.0)).collect();
    g.throughput(Throughput::Elements(gauss.len() as u64));
    g.bench_function("observe_1M_gaussian", |b| {
        b.iter(|| {
            let mut s = TensorStats::new(HistMode::Streaming);
            s.observe(&gauss);
            s
        })
    });
    g.bench_function("observe_1M_relu", |b| {
        b.iter(|| {
            let mut s = TensorStats::new(HistMode::Streaming);
            s.observe(&relu);
            s
        })
    });
    let mut s = TensorStats::new(HistMode::Streaming);
    for k in 0..16 {
        s.observe(&Rng::new(k).normal_vec(1 << 16, 1.0));
    }
    let h = s.abs_hist().expect("hist");
    g.throughput(Throughput::Elements(1));
    g.bench_function("entropy_threshold_4096_bins", |b| {
        b.iter(|| entropy_threshold(&h, 128))
    });
    g.bench_function("mse_threshold_4096_bins", |b| {
        b.iter(|| mse_threshold(&h, s.amax(), 127))
    });

    // A 512x512x3x3 conv weight (2.4M values).
    let w = Rng::new(2).normal_vec(512 * 512 * 9, 0.05);
    g.throughput(Throughput::Elements(w.len() as u64));
    g.bench_function("weights_per_channel_minmax_2.4M", |b| {
        b.iter(|| quantize_weight(&w, &[512, 512, 3, 3], 0, WeightMethod::Minmax, true))
    });
    g.bench_function("weights_per_channel_mse_2.4M", |b| {
        b.iter(|| quantize_weight(&w, &[512, 512, 3, 3], 0, WeightMethod::Mse, true))
    });

    // Placement and Q/DQ insertion on ResNet-50 (~100 MB), ranges given.
    let r50 = model(zoo::resnet50());
    let plan = placement::plan(
        &r50,
        &placement::PlacementOptions {
            quantize_small: true,
            ..Default::default()
        },
    );
    let params: HashMap<String, QParams> = plan
        .calib_tensors()
        .into_iter()
        .map(|t| (t, QParams::symmetric(4.0)))
        .collect();
    let weights = qdq::quantize_weights(r50.graph(), &plan, WeightMethod::Minmax).expect("weights");
    let layers: Vec<usize> = (0..plan.candidates.len()).collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("placement_resnet50", |b| {
        b.iter(|| placement::plan(&r50, &Default::default()))
    });
    g.bench_function("insert_qdq_resnet50", |b| {
        b.iter(|| {
            let mut m = r50.model.proto.clone();
            let ins = qdq::Insert {
                act_params: &params,
                weights: &weights,
                per_channel: true,
                suffix: "",
            };
            qdq::insert(
                m.graph.as_mut().expect("graph"),
                &r50.index,
                &plan,
                &layers,
                &ins,
            )
            .expect("insert");
            m
        })
    });

    // End to end on a small residual net: 8 random samples, diagnostics on 2.
    let small = model(small_resnet());
    let opts = QuantOptions {
        samples: 8,
        eval_samples: 2,
        ..Default::default()
    };
    g.bench_function("quantize_small_resnet_8_samples", |b| {
        b.iter(|| quantize(&small, &opts, &NoProgress).expect("quantize"))
    });
    g.finish();
}

/// Two residual blocks at 64x64 with 32 channels.
fn small_resnet() -> pare::model::proto::ModelProto {
    use pare::model::builder::{D, GraphBuilder};
    let mut b = GraphBuilder::new("small_resnet");
    b.input("image", &[D::N(1), D::N(3), D::N(64), D::N(64)]);
    let mut x = b.conv("image", 3, 32, 3, 1, 1, 1);
    x = b.relu(&x);
    for _ in 0..2 {
        let y = b.conv(&x, 32, 32, 3, 1, 1, 1);
        let y = b.relu(&y);
        let y = b.conv(&y, 32, 32, 3, 1, 1, 1);
        let s = b.add(&y, &x);
        x = b.relu(&s);
    }
    let z = b.conv(&x, 32, 8, 1, 1, 0, 1);
    b.node_named("/out", "Identity", &[&z], &["out"], vec![]);
    b.output("out", &[D::N(1), D::N(8), D::N(64), D::N(64)]);
    b.model()
}

criterion_group!(benches, quant_benches);
criterion_main!(benches);
