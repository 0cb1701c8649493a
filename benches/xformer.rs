//! Transformer pruning at ViT-B/16 size (12 blocks, width 768, 12 heads, MLP 3072, 197
//! tokens; zero weights): channel-group analysis (issue 17 anchor: < 100 ms) and the rewrite
//! of a plan removing half of every head and MLP group (anchor: < 1 s).

use criterion::{Criterion, criterion_group, criterion_main};
use pare::analysis::channels::analyze_channels;
use pare::jobs::NoProgress;
use pare::model::builder::zoo;
use pare::model::{Analysis, InputPins, Model};
use pare::prune::{PruneOptions, apply_plan, make_plan};

fn xformer_benches(c: &mut Criterion) {
    let proto = zoo::vit(12, 197, 768, 12, 3072, 0.0);
    let model = Model::in_memory(proto);
    let a = Analysis::new(model, &InputPins::new()).expect("vit-b analysis");
    let ca = analyze_channels(&a);
    let plan = make_plan(&a, &ca, &PruneOptions::default(), &NoProgress).expect("plan");
    assert_eq!(plan.pruned_groups(), 24, "12 head groups and 12 MLP groups");
    let mut g = c.benchmark_group("xformer");
    g.sample_size(10);
    g.bench_function("groups_vit_b16", |b| b.iter(|| analyze_channels(&a)));
    g.bench_function("rewrite_vit_b16", |b| {
        b.iter(|| apply_plan(&a, &ca, &plan).expect("rewrite"))
    });
    g.finish();
}

criterion_group!(benches, xformer_benches);
criterion_main!(benches);
