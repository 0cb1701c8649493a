//! The embedded demo model: a small segmentation network that shows off what pare sees —
//! residual blocks with a strided 1x1 shortcut (seed P1/P4), an ASPP block (P5), a classifier
//! output (P3), a `Clip` without max (Q5) and a squeeze-style `If` (Q4).
//!
//! `assets/demo.onnx` is generated from [`build_demo`] by `cargo run --example make_demo`; a
//! test checks the committed file equals what the builder makes, so the two cannot drift.

use crate::model::builder::{
    D, GraphBuilder, attr_g, attr_i, attr_ints, attr_s, set_node_metadata, value_info,
};
use crate::model::proto::ModelProto;
use crate::model::tensor::DataType;

/// The committed demo model bytes.
pub const DEMO_ONNX: &[u8] = include_bytes!("../assets/demo.onnx");

fn conv_bn(
    b: &mut GraphBuilder,
    x: &str,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    relu: bool,
) -> String {
    let c = b.conv_nd(x, cin, cout, &[k, k], stride, k / 2, 1, false);
    let n = b.batchnorm(&c, cout);
    if relu { b.relu(&n) } else { n }
}

fn scoped<T>(b: &mut GraphBuilder, scope: &str, f: impl FnOnce(&mut GraphBuilder) -> T) -> T {
    let old = std::mem::replace(&mut b.scope, scope.to_string());
    let r = f(b);
    b.scope = old;
    r
}

/// Builds the demo model (deterministic).
pub fn build_demo() -> ModelProto {
    let mut b = GraphBuilder::new("pare_demo_segmenter").with_seed(2024);
    b.input("image", &[D::N(1), D::N(3), D::N(64), D::N(64)]);
    let x = scoped(&mut b, "/stem", |b| conv_bn(b, "image", 3, 16, 3, 2, true)); // 32x32
    // Residual block with identity shortcut.
    let x = scoped(&mut b, "/layer1/0", |b| {
        let y = conv_bn(b, &x, 16, 16, 3, 1, true);
        let y = conv_bn(b, &y, 16, 16, 3, 1, false);
        let s = b.add(&y, &x);
        b.relu(&s)
    });
    // Downsampling residual block: the 1x1 strided shortcut must prune with conv2 (seed P1).
    let x = scoped(&mut b, "/layer2/0", |b| {
        let y = conv_bn(b, &x, 16, 32, 3, 2, true);
        let y = conv_bn(b, &y, 32, 32, 3, 1, false);
        let s = scoped(b, "/layer2/0/downsample", |b| {
            conv_bn(b, &x, 16, 32, 1, 2, false)
        });
        let s = b.add(&y, &s);
        b.relu(&s)
    }); // 16x16
    // ASPP: three branches read the same tensor (seed P5) and are concatenated.
    let x = scoped(&mut b, "/aspp", |b| {
        let b1 = conv_bn(b, &x, 32, 16, 1, 1, true);
        let w = b.init_randn("/aspp/dilated.weight", &[16, 32, 3, 3], 0.08);
        let b2 = b.op(
            "Conv",
            &[&x, &w],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[2, 2, 2, 2]),
                attr_ints("dilations", &[2, 2]),
                attr_ints("strides", &[1, 1]),
                attr_i("group", 1),
            ],
        );
        let b2 = b.relu(&b2);
        let gp = b.op("GlobalAveragePool", &[&x], vec![]);
        let b3 = b.conv_nd(&gp, 32, 16, &[1, 1], 1, 0, 1, true);
        let b3 = b.relu(&b3);
        let sizes = b.init_i64("/aspp/pool_sizes", &[4], &[1, 16, 16, 16]);
        let b3 = b.op(
            "Resize",
            &[&b3, "", "", &sizes],
            vec![
                attr_s("mode", "linear"),
                attr_s("coordinate_transformation_mode", "half_pixel"),
            ],
        );
        let cat = b.concat(&[&b1, &b2, &b3], 1);
        let p = b.conv_nd(&cat, 48, 32, &[1, 1], 1, 0, 1, true);
        // torch.clamp(x, min=0) exports a Clip with no max (seed Q5).
        let zero = b.init_f32("/aspp/clamp_min", &[], &[0.0]);
        b.op("Clip", &[&p, &zero], vec![])
    });
    // Classifier: its 5 output channels are the classes and must never be pruned (seed P3).
    let logits = scoped(&mut b, "/classifier", |b| {
        b.conv_nd(&x, 32, 5, &[1, 1], 1, 0, 1, true)
    });
    let scales = b.init_f32("/upsample/scales", &[4], &[1.0, 1.0, 4.0, 4.0]);
    b.node_named(
        "/upsample/Resize",
        "Resize",
        &[&logits, "", &scales],
        &["logits"],
        vec![
            attr_s("mode", "linear"),
            attr_s("coordinate_transformation_mode", "pytorch_half_pixel"),
        ],
    );
    // confidence = torch.squeeze(logits.softmax(1).amax(1, keepdim=True), 1): the squeeze
    // exports as an If on "is dim 1 of size 1?" (seed Q4).
    let sm = b.op("Softmax", &[&logits], vec![attr_i("axis", 1)]);
    let mx = b.op(
        "ReduceMax",
        &[&sm],
        vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)],
    );
    let shape = b.op("Shape", &[&mx], vec![]);
    let one_idx = b.init_i64("/confidence/dim_index", &[], &[1]);
    let dim = b.op("Gather", &[&shape, &one_idx], vec![attr_i("axis", 0)]);
    let one = b.init_i64("/confidence/one", &[], &[1]);
    let cond = b.op("Equal", &[&dim, &one], vec![]);
    let mut then_b = GraphBuilder::new("then_branch");
    let axes = then_b.const_i64(&[1]);
    then_b.node_named(
        "/confidence/Squeeze",
        "Squeeze",
        &[&mx, &axes],
        &["squeezed"],
        vec![],
    );
    then_b.output("squeezed", &[D::N(1), D::N(16), D::N(16)]);
    let mut else_b = GraphBuilder::new("else_branch");
    else_b.node_named(
        "/confidence/Identity",
        "Identity",
        &[&mx],
        &["kept"],
        vec![],
    );
    else_b.output("kept", &[D::N(1), D::N(1), D::N(16), D::N(16)]);
    b.node_named(
        "/confidence/If",
        "If",
        &[&cond],
        &["confidence"],
        vec![
            attr_g("then_branch", then_b.graph()),
            attr_g("else_branch", else_b.graph()),
        ],
    );
    b.outputs.push(value_info(
        "logits",
        DataType::FLOAT,
        Some(&[D::N(1), D::N(5), D::N(64), D::N(64)]),
    ));
    b.output("confidence", &[D::N(1), D::N(16), D::N(16)]);
    // A little exporter-style metadata so the TUI has stack traces to show.
    for node in &mut b.nodes {
        let name = node.name().to_string();
        let scope = name
            .rsplit_once('/')
            .map(|(s, _)| s)
            .unwrap_or("")
            .to_string();
        set_node_metadata(node, "namespace", &scope);
        if node.op_type() == "If" {
            set_node_metadata(
                node,
                "pkg.torch.onnx.stack_trace",
                "File \"demo.py\", line 42, in forward\n    confidence = torch.squeeze(probs.amax(1, keepdim=True), 1)",
            );
        }
        if node.op_type() == "Clip" {
            set_node_metadata(
                node,
                "pkg.torch.onnx.stack_trace",
                "File \"demo.py\", line 31, in forward\n    x = torch.clamp(self.project(x), min=0)",
            );
        }
    }
    b.model()
}
