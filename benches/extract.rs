//! Extraction benchmark: cut one node out of a ~300 MB model (a Wide-ResNet-50-2-shaped
//! classifier built with pare's builder, cached as target/bench/wide_resnet_300mb.onnx). The
//! measured work is everything `pare extract --node` does: load, index, shape inference,
//! selection, extraction and writing the piece. Target: under 1 s.
//!
//! Python baseline on the same file and tensors (`onnx.utils.extract_model`):
//! `python benches/compare_extract.py target/bench/wide_resnet_300mb.onnx --node NAME --pare target/release/pare`
//! (the bench prints NAME).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pare::extract::{Selector, extract_selection};
use pare::model::io::{self, SaveOptions, save_model};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};

/// Wide ResNet-50-2 layout (bottleneck width doubled), BatchNorm unfused, and a 2048x4000
/// classifier: about 77M parameters, ~310 MB.
fn wide_resnet() -> ModelProto {
    pare::model::builder::zoo::resnet50_family("wide_resnet50_2", 502, 2, 4000)
}

fn bench_file() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("wide_resnet_300mb.onnx");
    if !path.exists() {
        io::write_atomic(&path, &io::encode_model(&wide_resnet())).expect("write bench model");
    }
    path
}

/// The 3x3 conv of the middle block of layer3 (2.4 MB of weights).
fn target_node(a: &Analysis) -> String {
    a.graph()
        .node
        .iter()
        .find(|n| {
            n.op_type() == "Conv"
                && n.name().starts_with("/layer3/3/")
                && n.attr_ints("kernel_shape") == Some(&[3, 3][..])
        })
        .expect("layer3 3x3 conv")
        .name()
        .to_string()
}

fn extract_one_node(c: &mut Criterion) {
    let path = bench_file();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let pins = InputPins::new();
    let node = target_node(&Analysis::open(&path, &pins).expect("open"));
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("piece.onnx");
    eprintln!(
        "extract bench: {} ({:.0} MB), node {node}",
        path.display(),
        size as f64 / 1e6
    );
    let mut g = c.benchmark_group("extract");
    g.sample_size(10);
    g.bench_function("one_node_of_300MB_open_extract_save", |b| {
        b.iter(|| {
            let a = Analysis::open(&path, &pins).expect("open");
            let (_, piece) = extract_selection(&a, &Selector::Node(node.clone())).expect("extract");
            save_model(&piece.model, &out, &SaveOptions::default()).expect("save");
            piece.nodes.len()
        })
    });
    let a = Analysis::open(&path, &pins).expect("open");
    g.bench_function("one_node_of_300MB_extract_only", |b| {
        b.iter(|| {
            extract_selection(&a, &Selector::Node(node.clone()))
                .expect("extract")
                .1
                .nodes
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, extract_one_node);
criterion_main!(benches);
