//! Quantizing models of opset 9–12 (tf2onnx and old PyTorch exports): the opset is raised to
//! 13 when every node means the same there, so weights get per-channel scales; a node that may
//! not (Clip's bounds became inputs at 11) blocks it, and is named.

mod common;

use pare::jobs::NoProgress;
use pare::model::builder::{D, GraphBuilder, attr_f};
use pare::model::proto::ModelProto;
use pare::model::{Analysis, InputPins};
use pare::quant::{QuantOptions, quantize};

/// Conv → ReLU → depthwise conv → ReLU → pooling → Gemm → `head` (a rank-2 Softmax, or a Clip
/// with opset-9 attribute bounds).
fn classifier(opset: i64, head: &str) -> ModelProto {
    let mut b = GraphBuilder::new("old").with_opset(opset).with_seed(3);
    b.input("input", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    let x = b.conv("input", 3, 8, 3, 1, 1, 1);
    let x = b.relu(&x);
    let x = b.conv(&x, 8, 8, 3, 1, 1, 8);
    let x = b.relu(&x);
    let x = b.op("GlobalAveragePool", &[&x], vec![]);
    let x = b.op("Flatten", &[&x], vec![]);
    let x = b.gemm(&x, 8, 4);
    let attrs = match head {
        "Clip" => vec![attr_f("min", 0.0), attr_f("max", 6.0)],
        _ => vec![],
    };
    b.node_named("head", head, &[&x], &["y"], attrs);
    b.output("y", &[D::N(1), D::N(4)]);
    b.model()
}

fn opts() -> QuantOptions {
    common::quant_opts()
}

#[test]
fn an_opset_9_model_is_raised_to_13_and_gets_per_channel_weights() {
    let m = classifier(9, "Softmax");
    let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    assert_eq!(q.model.opset(""), Some(13));
    assert_eq!(
        a.model.proto.opset(""),
        Some(9),
        "the input is not modified"
    );
    assert!(
        q.report
            .notes
            .iter()
            .any(|n| n.contains("opset raised from 9 to 13")),
        "{:?}",
        q.report.notes
    );
    // The depthwise conv's weight scale has one value per output channel.
    let g = q.model.graph.as_ref().expect("graph");
    let per_channel = g
        .node
        .iter()
        .filter(|n| n.op_type() == "DequantizeLinear" && n.input[0].ends_with("_quantized"))
        .filter_map(|n| g.initializer.iter().find(|i| i.name() == n.input[1]))
        .any(|s| s.dims == vec![8]);
    assert!(per_channel, "no per-channel weight scale");
    let sqnr = q.report.output_sqnr_db.expect("output SQNR");
    assert!(sqnr > 20.0, "output SQNR {sqnr:.1} dB");
}

#[test]
fn an_opset_9_clip_blocks_the_upgrade_and_is_named_with_exit_2() {
    let dir = common::tempdir();
    let model = common::write(dir.path(), "old.onnx", &classifier(9, "Clip"));
    let out = dir.path().join("q.onnx");
    let (code, _, err) = common::pare(&[
        "quantize",
        model.to_str().expect("path"),
        "--data",
        "random",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'head' (Clip)") && err.contains("opset 9"),
        "{err}"
    );
    assert!(!out.exists(), "no output is written");
}

#[test]
fn opset_11_with_a_blocking_node_keeps_per_tensor_weights_and_says_why() {
    let mut m = classifier(11, "Softmax");
    // A Clip with input bounds (opset 11 form) after the first ReLU: valid at 11, but Clip is
    // not known to mean the same at 13, so the model stays at 11.
    let g = m.graph.as_mut().expect("graph");
    g.node[1].op_type = Some("Clip".into());
    let a = Analysis::new(common::model(m), &InputPins::new()).expect("analysis");
    let q = quantize(&a, &opts(), &NoProgress).expect("quantize");
    assert_eq!(q.model.opset(""), Some(11));
    assert!(
        q.report
            .notes
            .iter()
            .any(|n| n.contains("opset 11 kept") && n.contains("(Clip)")),
        "{:?}",
        q.report.notes
    );
}

/// A stride-2 ConvTranspose (what CenterFace's opset-9 decoder upsamples with) and `attrs`.
fn upsampler(attrs: Vec<pare::model::proto::AttributeProto>) -> ModelProto {
    let mut b = GraphBuilder::new("up").with_opset(9).with_seed(4);
    b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
    let w = b.init_f32("w", &[4, 4, 2, 2], &[0.1; 64]);
    let mut all = vec![
        pare::model::builder::attr_ints("kernel_shape", &[2, 2]),
        pare::model::builder::attr_ints("strides", &[2, 2]),
    ];
    all.extend(attrs);
    b.node_named("up", "ConvTranspose", &["x", &w], &["y"], all);
    b.output("y", &[D::N(1), D::N(4), D::N(16), D::N(16)]);
    b.model()
}

#[test]
fn conv_transpose_with_explicit_pads_upgrades_and_with_output_shape_does_not() {
    use pare::model::opset::upgrade;
    let pads = pare::model::builder::attr_ints("pads", &[0, 0, 0, 0]);
    let a = Analysis::new(common::model(upsampler(vec![pads])), &InputPins::new()).expect("a");
    let m = upgrade(&a).expect("upgradable").expect("raised");
    assert_eq!(m.opset(""), Some(13));
    let shape = pare::model::builder::attr_ints("output_shape", &[16, 16]);
    let a = Analysis::new(common::model(upsampler(vec![shape])), &InputPins::new()).expect("a");
    let b = upgrade(&a).expect_err("output_shape blocks it");
    assert_eq!(b.node, "up");
}
