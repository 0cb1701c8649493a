//! Pruning benchmarks: channel-group analysis of a 10,000-node graph, and plan + rewrite of a
//! ResNet-50-sized (~100 MB) model.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pare::analysis::channels::analyze_channels;
use pare::jobs::NoProgress;
use pare::model::builder::zoo;
use pare::model::{Analysis, InputPins, io};
use pare::prune::{PruneOptions, apply_plan, make_plan};

fn bench_file(name: &str, make: impl FnOnce() -> pare::model::proto::ModelProto) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(name);
    if !path.exists() {
        io::write_atomic(&path, &io::encode_model(&make())).expect("write bench model");
    }
    path
}

fn prune_benches(c: &mut Criterion) {
    let pins = InputPins::new();
    let big = Analysis::open(
        &bench_file("deep10k.onnx", || zoo::deep_narrow(10_000)),
        &pins,
    )
    .expect("deep10k");
    let r50 = Analysis::open(&bench_file("resnet50.onnx", zoo::resnet50), &pins).expect("resnet50");
    let mut g = c.benchmark_group("prune");
    g.sample_size(10);
    g.bench_function("groups_10k_nodes", |b| b.iter(|| analyze_channels(&big)));
    let ca = analyze_channels(&r50);
    let plan = make_plan(&r50, &ca, &PruneOptions::default(), &NoProgress).expect("plan");
    g.bench_function("plan_resnet50_l1", |b| {
        b.iter(|| make_plan(&r50, &ca, &PruneOptions::default(), &NoProgress).expect("plan"))
    });
    g.bench_function("rewrite_resnet50_100MB", |b| {
        b.iter(|| apply_plan(&r50, &ca, &plan).expect("rewrite"))
    });
    g.finish();
}

criterion_group!(benches, prune_benches);
criterion_main!(benches);
