//! Lint speed: the whole rule set over a 1,000-node model must take well under 50 ms (the
//! analysis it starts from is measured separately), and `pare fix` is dominated by its
//! verification run.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use pare::jobs::NoProgress;
use pare::lint::fix::{FixOptions, fix_model};
use pare::lint::{LintOptions, Target, lint};
use pare::model::builder::zoo::deep_narrow;
use pare::model::{Analysis, InputPins, Model};

fn analysis(proto: pare::model::proto::ModelProto) -> Analysis {
    let model = Model::in_memory(proto);
    Analysis::new(model, &InputPins::new()).expect("analysis")
}

fn bench(c: &mut Criterion) {
    let proto = deep_narrow(1000);
    let nodes = proto.graph.as_ref().map_or(0, |g| g.node.len());
    assert!(nodes >= 990, "deep_narrow(1000) has {nodes} nodes");
    let a = analysis(proto.clone());
    for target in ["tensorrt-7.1", "tensorrt-10"] {
        let t = Target::parse(target).expect("target");
        c.bench_function(&format!("lint_{nodes}_nodes_{target}"), |b| {
            b.iter(|| {
                black_box(lint(
                    &a,
                    &LintOptions {
                        target: t,
                        rules: Vec::new(),
                    },
                ))
            })
        });
    }
    c.bench_function(&format!("analyse_and_lint_{nodes}_nodes"), |b| {
        b.iter(|| {
            let a = analysis(proto.clone());
            black_box(lint(&a, &LintOptions::default()))
        })
    });
    // A fix with nothing to verify (the rewrite alone) vs. one that is verified by running.
    let mut g = c.benchmark_group("fix");
    g.sample_size(10);
    g.bench_function(format!("fix_fold_if_{nodes}_nodes_nothing_to_do"), |b| {
        let opts = FixOptions {
            only: vec!["fold-if".into()],
            ..Default::default()
        };
        b.iter(|| black_box(fix_model(&a, &opts, &NoProgress).expect("fix")))
    });
    let mut unnamed = proto.clone();
    if let Some(gr) = unnamed.graph.as_mut() {
        gr.node[0].name = None;
    }
    let ua = analysis(unnamed);
    g.bench_function(format!("fix_and_verify_{nodes}_nodes"), |b| {
        let opts = FixOptions {
            only: vec!["names".into()],
            ..Default::default()
        };
        b.iter(|| black_box(fix_model(&ua, &opts, &NoProgress).expect("fix")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
