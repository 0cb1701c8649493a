//! Model-core benchmarks: load + index + shape inference of a ResNet-50-sized file (~100 MB),
//! and the same on a 10,000-node graph.
//!
//! Compare with Python on the same file: `python benches/compare_load.py target/bench/resnet50.onnx`.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pare::model::builder::zoo;
use pare::model::{Analysis, InputPins, io};

fn bench_file(name: &str, make: impl FnOnce() -> pare::model::proto::ModelProto) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(name);
    if !path.exists() {
        io::write_atomic(&path, &io::encode_model(&make())).expect("write bench model");
    }
    path
}

fn load_index_infer(c: &mut Criterion) {
    let r50 = bench_file("resnet50.onnx", zoo::resnet50);
    let big = bench_file("deep10k.onnx", || zoo::deep_narrow(10_000));
    let pins = InputPins::new();
    let mut g = c.benchmark_group("model_core");
    g.sample_size(20);
    g.bench_function("resnet50_100MB_load_index_infer", |b| {
        b.iter(|| Analysis::open(&r50, &pins).expect("analyse"))
    });
    g.bench_function("deep10k_load_index_infer", |b| {
        b.iter(|| Analysis::open(&big, &pins).expect("analyse"))
    });
    let proto = io::load_model(&big).expect("load").proto;
    let graph = proto.graph.clone().expect("graph");
    g.bench_function("deep10k_index_only", |b| {
        b.iter(|| pare::model::GraphIndex::build(&graph).expect("index"))
    });
    g.finish();
}

criterion_group!(benches, load_index_infer);
criterion_main!(benches);
