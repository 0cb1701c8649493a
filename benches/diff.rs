//! Structural diff speed: two 10,000-node models (the second with every seventh node
//! unnamed, so the topology matcher works too) must compare in well under 200 ms. The
//! analyses (load, index, shape inference) are built once outside the timing.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use pare::diff::structure::compare;
use pare::model::builder::zoo::deep_narrow;
use pare::model::{Analysis, InputPins, Model};

fn analysis(proto: pare::model::proto::ModelProto) -> Analysis {
    let model = Model::in_memory(proto);
    Analysis::new(model, &InputPins::new()).expect("analysis")
}

fn bench(c: &mut Criterion) {
    let pa = deep_narrow(10_000);
    let mut pb = pa.clone();
    if let Some(g) = pb.graph.as_mut() {
        for n in g.node.iter_mut().step_by(7) {
            n.name = None;
        }
    }
    let nodes = pa.graph.as_ref().map_or(0, |g| g.node.len());
    assert!(nodes >= 9_990, "deep_narrow(10000) has {nodes} nodes");
    let (a, b) = (analysis(pa), analysis(pb));
    let r = compare(&a, &b);
    assert_eq!(r.structure.matched, nodes, "every node matched");
    c.bench_function(&format!("diff_structure_{nodes}_nodes"), |bn| {
        bn.iter(|| black_box(compare(&a, &b).structure.matched))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
