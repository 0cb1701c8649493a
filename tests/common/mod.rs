//! Fixture models shared by the integration tests, written with pare's own builder so the
//! tests need neither Python nor network access.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

mod python;
#[allow(unused_imports)] // each test binary uses its own part
pub use python::{
    ort_lib, python, ran_against_onnxruntime, test_venv, try_python, with_onnxruntime,
};

use pare::model::Model;
use pare::model::builder::{D, GraphBuilder, attr_g, attr_i, attr_ints, attr_s, set_node_metadata};
use pare::model::proto::ModelProto;

/// Runs the pare binary: exit code, stdout, stderr (the CLI tests' one way to call it).
pub fn pare(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .output()
        .expect("run pare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A same-padded k×k Conv node named `name` (output `{name}_y`) with `group` groups, over
/// `ins` (data, weight[, bias]); returns its output name.
pub fn named_conv(b: &mut GraphBuilder, name: &str, ins: &[&str], group: i64, k: i64) -> String {
    b.node_named(
        name,
        "Conv",
        ins,
        &[&format!("{name}_y")],
        vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("pads", &[k / 2; 4]),
            attr_i("group", group),
        ],
    )
    .remove(0)
}

/// A fresh temporary directory that lives as long as the returned guard.
/// resnet_like with the first conv weight's values replaced by `edit(values)`: a model that
/// differs from the fixture in exactly one layer (NaN planting, perturbation tests).
pub fn resnet_like_with_conv_weights(edit: impl FnOnce(Vec<f32>) -> Vec<f32>) -> ModelProto {
    let mut m = resnet_like();
    let g = m.graph.as_mut().expect("graph");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 4)
        .expect("a conv weight");
    let v = edit(pare::model::tensor::to_f32(t).expect("floats"));
    t.raw_data = Some(
        v.iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    );
    t.float_data.clear();
    m
}

/// Asserts that `a` and `b` compute the same function (relative 1e-5 of the largest output)
/// on three seeded normal inputs of `shape` fed to input `x`, on tract: the check for
/// rewrites that must not change the float model (equalization, folding).
pub fn assert_same_function(a: &ModelProto, b: &ModelProto, shape: &[usize]) {
    use pare::model::DataType;
    use pare::runtime::{HostTensor, InputSpec, Runner};
    let specs = [InputSpec {
        name: "x".into(),
        dtype: DataType::FLOAT,
        shape: shape.to_vec(),
    }];
    let ra = Runner::tract(a, &specs).expect("first model runs");
    let rb = Runner::tract(b, &specs).expect("second model runs");
    let mut rng = pare::rng::Rng::new(11);
    for _ in 0..3 {
        let x = HostTensor::f32(shape.to_vec(), rng.normal_vec(shape.iter().product(), 2.0));
        let p = ra.run(std::slice::from_ref(&x)).expect("run")[0].to_f64();
        let q = rb.run(&[x]).expect("run")[0].to_f64();
        let scale = p.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
        let worst = p
            .iter()
            .zip(&q)
            .fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
        assert!(worst / scale < 1e-5, "output moved by {worst}");
    }
}

/// Output SQNR (dB) of `q` against `m` on tract over `runs` seeded random inputs to input
/// `name` of `shape`, which no calibration saw: how the quantization tests score a model.
pub fn held_out_sqnr(
    m: &ModelProto,
    q: &ModelProto,
    name: &str,
    shape: &[usize],
    runs: usize,
    seed: u64,
) -> f64 {
    use pare::model::DataType;
    use pare::runtime::{HostTensor, InputSpec, Runner};
    let specs = [InputSpec {
        name: name.into(),
        dtype: DataType::FLOAT,
        shape: shape.to_vec(),
    }];
    let rf = Runner::tract(m, &specs).expect("float model runs");
    let rq = Runner::tract(q, &specs).expect("quantized model runs in tract");
    let mut rng = pare::rng::Rng::new(seed);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let x = vec![HostTensor::random(DataType::FLOAT, shape, &mut rng).expect("input")];
        a.extend(rf.run(&x).expect("float run")[0].to_f64());
        b.extend(rq.run(&x).expect("quantized run")[0].to_f64());
    }
    pare::runtime::sqnr_db(&a, &b)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pare::model::io::encode_model(m)).expect("write fixture");
    p
}

pub fn model(proto: ModelProto) -> Model {
    Model::in_memory(proto)
}

/// Quantization on tract over 8 random samples (4 diagnosed), small layers included: what the
/// quantization tests start from.
pub fn quant_opts() -> pare::quant::QuantOptions {
    pare::quant::QuantOptions {
        samples: 8,
        eval_samples: 4,
        quantize_small: true,
        engine: pare::runtime::EngineChoice::Tract,
        ..Default::default()
    }
}

/// Conv-BN-ReLU stem, an identity residual block and a downsampling block with a strided 1x1
/// shortcut, global pooling, flatten and a Gemm classifier (seed P1/P3/P4).
pub fn resnet_like() -> ModelProto {
    let mut b = GraphBuilder::new("resnet_like");
    b.input("input", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    let x = b.conv("input", 3, 8, 3, 2, 1, 1);
    let x = b.batchnorm(&x, 8);
    let x = b.relu(&x);
    let y = b.conv(&x, 8, 8, 3, 1, 1, 1);
    let y = b.relu(&y);
    let y = b.conv(&y, 8, 8, 3, 1, 1, 1);
    let x = b.add(&y, &x);
    let x = b.relu(&x);
    let y = b.conv(&x, 8, 16, 3, 2, 1, 1);
    let y = b.relu(&y);
    let y = b.conv(&y, 16, 16, 3, 1, 1, 1);
    let s = b.conv(&x, 8, 16, 1, 2, 0, 1);
    let x = b.add(&y, &s);
    let x = b.relu(&x);
    let x = b.op("GlobalAveragePool", &[&x], vec![]);
    let x = b.op("Flatten", &[&x], vec![attr_i("axis", 1)]);
    let x = b.gemm(&x, 16, 10);
    b.node_named("/head/Identity", "Identity", &[&x], &["logits"], vec![]);
    b.output("logits", &[D::N(1), D::N(10)]);
    let mut m = b.model();
    if let Some(g) = m.graph.as_mut() {
        for n in &mut g.node {
            let ns = format!("resnet_like/{}", n.name());
            set_node_metadata(n, "namespace", &ns);
            set_node_metadata(
                n,
                "pkg.torch.onnx.stack_trace",
                "File \"model.py\", line 1, in forward",
            );
        }
    }
    m
}

/// Two inputs with a symbolic batch, a squeeze-style If reading an outer-scope tensor
/// (seed Q4/P6).
pub fn stereo_if() -> ModelProto {
    let mut b = GraphBuilder::new("stereo_if");
    b.input("left", &[D::S("batch"), D::N(3), D::N(16), D::N(16)]);
    b.input("right", &[D::S("batch"), D::N(3), D::N(16), D::N(16)]);
    let l = b.conv("left", 3, 4, 3, 1, 1, 1);
    let r = b.conv("right", 3, 4, 3, 1, 1, 1);
    let d = b.op("Sub", &[&l, &r], vec![]);
    let m = b.op(
        "ReduceMean",
        &[&d],
        vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)],
    );
    let shape = b.op("Shape", &[&m], vec![]);
    let idx = b.init_i64("dim_index", &[], &[1]);
    let dim = b.op("Gather", &[&shape, &idx], vec![attr_i("axis", 0)]);
    let one = b.init_i64("one", &[], &[1]);
    let cond = b.op("Equal", &[&dim, &one], vec![]);
    let mut t = GraphBuilder::new("then");
    let axes = t.const_i64(&[1]);
    t.node_named("/Squeeze", "Squeeze", &[&m, &axes], &["sq"], vec![]);
    t.output("sq", &[D::S("batch"), D::N(16), D::N(16)]);
    let mut e = GraphBuilder::new("else");
    e.node_named("/Identity", "Identity", &[&m], &["id"], vec![]);
    e.output("id", &[D::S("batch"), D::N(1), D::N(16), D::N(16)]);
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["disparity"],
        vec![
            attr_g("then_branch", t.graph()),
            attr_g("else_branch", e.graph()),
        ],
    );
    b.output("disparity", &[D::S("batch"), D::N(16), D::N(16)]);
    b.model()
}

/// A small segmentation head with Resize and Concat.
pub fn seg_head() -> ModelProto {
    let mut b = GraphBuilder::new("seg_head");
    b.input("image", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    let x = b.conv("image", 3, 8, 3, 2, 1, 1);
    let a = b.conv(&x, 8, 4, 1, 1, 0, 1);
    let c = b.conv(&x, 8, 4, 3, 1, 1, 1);
    let cat = b.concat(&[&a, &c], 1);
    let y = b.conv(&cat, 8, 3, 1, 1, 0, 1);
    let scales = b.init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
    b.node_named(
        "/Resize",
        "Resize",
        &[&y, "", &scales],
        &["mask"],
        vec![attr_s("mode", "nearest")],
    );
    b.output("mask", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    b.model()
}

// ---- Pruning fixtures: one per seed case the channel analysis must get right. ----

fn conv_bn_relu(b: &mut GraphBuilder, x: &str, cin: i64, cout: i64, k: i64, s: i64) -> String {
    let c = b.conv(x, cin, cout, k, s, k / 2, 1);
    let n = b.batchnorm(&c, cout);
    b.relu(&n)
}

/// DeepLab-style ASPP: four branches read the same tensor and are concatenated (seed P5),
/// then a classifier conv whose class count must stay (seed P3).
pub fn aspp() -> ModelProto {
    let mut b = GraphBuilder::new("aspp");
    b.input("image", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 2);
    let x = conv_bn_relu(&mut b, &x, 16, 32, 3, 2);
    let b1 = conv_bn_relu(&mut b, &x, 32, 16, 1, 1);
    let w = b.init_randn("dil.weight", &[16, 32, 3, 3], 0.1);
    let b2 = b.op(
        "Conv",
        &[&x, &w],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[2, 2, 2, 2]),
            attr_ints("dilations", &[2, 2]),
        ],
    );
    let b2 = b.batchnorm(&b2, 16);
    let b2 = b.relu(&b2);
    let b3 = conv_bn_relu(&mut b, &x, 32, 16, 3, 1);
    let gp = b.op("GlobalAveragePool", &[&x], vec![]);
    let b4 = b.conv(&gp, 32, 16, 1, 1, 0, 1);
    let b4 = b.relu(&b4);
    let sizes = b.init_i64("pool_sizes", &[4], &[1, 16, 8, 8]);
    let b4 = b.op(
        "Resize",
        &[&b4, "", "", &sizes],
        vec![attr_s("mode", "nearest")],
    );
    let cat = b.concat(&[&b1, &b2, &b3, &b4], 1);
    let p = conv_bn_relu(&mut b, &cat, 64, 32, 1, 1);
    let cls = b.conv(&p, 32, 5, 1, 1, 0, 1);
    let scales = b.init_f32("up_scales", &[4], &[1.0, 1.0, 4.0, 4.0]);
    b.node_named(
        "/up/Resize",
        "Resize",
        &[&cls, "", &scales],
        &["logits"],
        vec![attr_s("mode", "linear")],
    );
    b.output("logits", &[D::N(1), D::N(5), D::N(32), D::N(32)]);
    b.model()
}

/// PSPNet-style pyramid pooling: AveragePool at several sizes, 1x1 convs, upsampling, concat.
pub fn psp() -> ModelProto {
    let mut b = GraphBuilder::new("psp");
    b.input("image", &[D::N(1), D::N(3), D::N(48), D::N(48)]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 2);
    let x = conv_bn_relu(&mut b, &x, 16, 24, 3, 2); // 12x12
    let mut pieces = vec![x.clone()];
    for (k, pool) in [12i64, 6, 4].iter().enumerate() {
        let p = b.op(
            "AveragePool",
            &[&x],
            vec![
                attr_ints("kernel_shape", &[*pool, *pool]),
                attr_ints("strides", &[*pool, *pool]),
            ],
        );
        let c = conv_bn_relu(&mut b, &p, 24, 8, 1, 1);
        let sizes = b.init_i64(&format!("psp_sizes_{k}"), &[4], &[1, 8, 12, 12]);
        pieces.push(b.op(
            "Resize",
            &[&c, "", "", &sizes],
            vec![attr_s("mode", "linear")],
        ));
    }
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let cat = b.concat(&refs, 1);
    let y = conv_bn_relu(&mut b, &cat, 48, 16, 3, 1);
    let w = b.init_randn("cls.w", &[4, 16, 1, 1], 0.2);
    b.node_named(
        "/cls/Conv",
        "Conv",
        &[&y, &w],
        &["mask"],
        vec![attr_ints("kernel_shape", &[1, 1])],
    );
    b.output("mask", &[D::N(1), D::N(4), D::N(12), D::N(12)]);
    b.model()
}

/// Two inputs (stereo), shared-weight-free 2-D feature convs, a cost volume via Unsqueeze +
/// Concat on a new disparity axis, Conv3d and ConvTranspose3d (seed P6/P10).
pub fn stereo3d() -> ModelProto {
    let mut b = GraphBuilder::new("stereo3d");
    b.input("left", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    b.input("right", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    let l = conv_bn_relu(&mut b, "left", 3, 16, 3, 2);
    let r = conv_bn_relu(&mut b, "right", 3, 16, 3, 2);
    let l = b.conv(&l, 16, 16, 3, 1, 1, 1);
    let r = b.conv(&r, 16, 16, 3, 1, 1, 1);
    let ax = b.init_i64("unsq_axes", &[1], &[2]);
    let l5 = b.op("Unsqueeze", &[&l, &ax], vec![]);
    let r5 = b.op("Unsqueeze", &[&r, &ax], vec![]);
    let vol = b.concat(&[&l5, &r5, &l5], 2); // [1,16,3,8,8]
    let c3 = b.conv_nd(&vol, 16, 16, &[3, 3, 3], 1, 1, 1, true);
    let c3 = b.relu(&c3);
    let c3 = b.conv_nd(&c3, 16, 16, &[3, 3, 3], 1, 1, 1, true);
    let c3 = b.relu(&c3);
    // ConvTranspose3d 16 -> 16, stride 2 with output_padding (seed Q3's layer).
    let wt = b.init_randn("deconv.weight", &[16, 16, 3, 3, 3], 0.1);
    let up = b.op(
        "ConvTranspose",
        &[&c3, &wt],
        vec![
            attr_ints("kernel_shape", &[3, 3, 3]),
            attr_ints("strides", &[2, 2, 2]),
            attr_ints("pads", &[1, 1, 1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 1, 1]),
        ],
    );
    let up = b.relu(&up);
    let head = b.conv_nd(&up, 16, 1, &[3, 3, 3], 1, 1, 1, true);
    let ax1 = b.init_i64("sq_axes", &[1], &[1]);
    b.node_named("/Squeeze", "Squeeze", &[&head, &ax1], &["cost"], vec![]);
    b.output("cost", &[D::N(1), D::N(6), D::N(16), D::N(16)]);
    b.model()
}

/// TF-"SAME" padding as EfficientNet ports export it: an explicit Pad before a conv (seed P14),
/// followed by a depthwise conv with squeeze-excitation gating (broadcast Mul) and decomposed
/// swish x*sigmoid(x).
pub fn same_pad_dw_se() -> ModelProto {
    let mut b = GraphBuilder::new("same_pad_dw_se");
    b.input("image", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    let pads = b.init_i64("same_pads", &[8], &[0, 0, 0, 0, 0, 0, 1, 1]);
    let p = b.op("Pad", &["image", &pads], vec![attr_s("mode", "constant")]);
    let x = b.conv(&p, 3, 16, 3, 2, 0, 1); // 15x15
    let x = b.batchnorm(&x, 16);
    let s = b.op("Sigmoid", &[&x], vec![]);
    let x = b.mul(&x, &s); // swish
    let pads2 = b.init_i64("same_pads2", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
    let p = b.op("Pad", &[&x, &pads2], vec![attr_s("mode", "constant")]);
    let dw = b.conv(&p, 16, 16, 3, 1, 0, 16); // depthwise
    let dw = b.batchnorm(&dw, 16);
    let dw = b.relu(&dw);
    // Squeeze-excitation.
    let gp = b.op("GlobalAveragePool", &[&dw], vec![]);
    let se = b.conv(&gp, 16, 8, 1, 1, 0, 1);
    let se = b.relu(&se);
    let se = b.conv(&se, 8, 16, 1, 1, 0, 1);
    let gate = b.op("Sigmoid", &[&se], vec![]);
    let x = b.mul(&dw, &gate);
    let y = b.conv(&x, 16, 24, 1, 1, 0, 1);
    let y = b.relu(&y);
    let gp = b.op("GlobalAveragePool", &[&y], vec![]);
    let f = b.op("Flatten", &[&gp], vec![attr_i("axis", 1)]);
    let logits = b.gemm(&f, 24, 7);
    b.node_named("/out", "Identity", &[&logits], &["logits"], vec![]);
    b.output("logits", &[D::N(1), D::N(7)]);
    b.model()
}

/// Flatten of a spatial map into a Gemm (each channel owns a block of features), and a
/// `view(b, 16, -1)`-style Reshape with a literal channel count (seed P7).
pub fn flatten_view() -> ModelProto {
    let mut b = GraphBuilder::new("flatten_view");
    b.input("image", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 2); // 16x4x4
    // view(1, 16, -1) then view back to (1, 16, 4, 4).
    let s1 = b.init_i64("view_shape", &[3], &[1, 16, -1]);
    let v = b.op("Reshape", &[&x, &s1], vec![]);
    let v = b.op("Relu", &[&v], vec![]);
    let s2 = b.const_i64(&[1, 16, 4, 4]);
    let x = b.op("Reshape", &[&v, &s2], vec![]);
    let x = b.conv(&x, 16, 16, 3, 1, 1, 1);
    let x = b.relu(&x);
    let f = b.op("Flatten", &[&x], vec![attr_i("axis", 1)]); // 256 features
    let h = b.gemm(&f, 256, 32);
    let h = b.relu(&h);
    let logits = b.gemm(&h, 32, 3);
    b.node_named("/out", "Identity", &[&logits], &["logits"], vec![]);
    b.output("logits", &[D::N(1), D::N(3)]);
    b.model()
}

/// A custom op (MemoryEfficientSwish-like, seed P12) between two convs.
pub fn custom_op() -> ModelProto {
    let mut b = GraphBuilder::new("custom_op");
    b.input("image", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 1);
    let sw = "/act/MemoryEfficientSwish_output_0";
    b.nodes.push(pare::model::proto::NodeProto {
        name: Some("/act/MemoryEfficientSwish".into()),
        op_type: Some("MemoryEfficientSwish".into()),
        domain: Some("com.acme".into()),
        input: vec![x.clone()],
        output: vec![sw.into()],
        ..Default::default()
    });
    let y = conv_bn_relu(&mut b, sw, 16, 16, 3, 1);
    let z = conv_bn_relu(&mut b, &y, 16, 8, 3, 1);
    b.node_named("/out", "Identity", &[&z], &["features"], vec![]);
    b.output("features", &[D::N(1), D::N(8), D::N(16), D::N(16)]);
    let mut m = b.model();
    m.opset_import.push(pare::model::proto::OperatorSetIdProto {
        domain: Some("com.acme".into()),
        version: Some(1),
    });
    m
}

/// SiLU as YOLOv8 exports it: `x * sigmoid(x)`.
fn silu(b: &mut GraphBuilder, x: &str) -> String {
    let s = b.op("Sigmoid", &[x], vec![]);
    b.mul(x, &s)
}

fn conv_silu(b: &mut GraphBuilder, x: &str, cin: i64, cout: i64, k: i64, s: i64) -> String {
    let c = b.conv(x, cin, cout, k, s, k / 2, 1);
    silu(b, &c)
}

/// How a C2f block cuts its `cv1` output in two along the channels.
#[derive(Clone, Copy)]
enum Chunk {
    /// `Split` whose sizes are computed from `Shape` at run time (PyTorch's opset-13 `chunk`).
    DynamicSplit,
    /// `Split` with a constant sizes initializer (shared between blocks of equal width).
    ConstSplit,
    /// Two `Slice`s on axis 1 (`x[:, :c]`, `x[:, c:]`).
    Slices,
}

/// One YOLOv8 C2f block: cv1 → chunk(2) → `n` bottlenecks (conv, conv, residual Add) on the
/// last piece → Concat of every piece → cv2.
fn c2f(b: &mut GraphBuilder, x: &str, c: i64, n: usize, chunk: Chunk) -> String {
    let h = c / 2;
    let y = conv_silu(b, x, c, c, 1, 1);
    let mut parts: Vec<String> = match chunk {
        Chunk::DynamicSplit => {
            let shape = b.op("Shape", &[&y], vec![]);
            let one = b.const_i64(&[1]);
            let dim = b.op("Gather", &[&shape, &one], vec![attr_i("axis", 0)]);
            let add = b.add(&dim, &one);
            let two = b.const_i64(&[2]);
            let half = b.op("Div", &[&add, &two], vec![]);
            let rest = b.op("Sub", &[&dim, &half], vec![]);
            let sizes = b.concat(&[&half, &rest], 0);
            b.node("Split", &[&y, &sizes], 2, vec![attr_i("axis", 1)])
        }
        Chunk::ConstSplit => {
            let name = format!("split_sizes_{c}");
            if !b.initializers.iter().any(|t| t.name() == name) {
                b.init_i64(&name, &[2], &[h, h]);
            }
            b.node("Split", &[&y, &name], 2, vec![attr_i("axis", 1)])
        }
        Chunk::Slices => {
            let (zero, mid, end, axis) = (
                b.const_i64(&[0]),
                b.const_i64(&[h]),
                b.const_i64(&[i64::MAX]),
                b.const_i64(&[1]),
            );
            vec![
                b.op("Slice", &[&y, &zero, &mid, &axis], vec![]),
                b.op("Slice", &[&y, &mid, &end, &axis], vec![]),
            ]
        }
    };
    for _ in 0..n {
        let last = parts.last().cloned().unwrap_or_default();
        let t = conv_silu(b, &last, h, h, 3, 1);
        let t = conv_silu(b, &t, h, h, 3, 1);
        let t = b.add(&last, &t);
        parts.push(t);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let cat = b.concat(&refs, 1);
    conv_silu(b, &cat, h * (2 + n as i64), c, 1, 1)
}

/// A YOLOv8-style backbone: C2f blocks whose `chunk` is a run-time `Split`, a constant
/// `Split` (sizes shared by two blocks) and two channel `Slice`s, then a 1x1 head.
pub fn yolo_c2f() -> ModelProto {
    let mut b = GraphBuilder::new("yolo_c2f").with_opset(13);
    b.input("images", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    let x = conv_silu(&mut b, "images", 3, 16, 3, 2);
    let x = conv_silu(&mut b, &x, 16, 32, 3, 2);
    let x = c2f(&mut b, &x, 32, 1, Chunk::DynamicSplit);
    let x = c2f(&mut b, &x, 32, 2, Chunk::ConstSplit);
    let x = c2f(&mut b, &x, 32, 1, Chunk::ConstSplit);
    let x = conv_silu(&mut b, &x, 32, 48, 3, 2);
    let x = c2f(&mut b, &x, 48, 1, Chunk::Slices);
    let z = b.conv(&x, 48, 8, 1, 1, 0, 1);
    b.node_named("/head", "Identity", &[&z], &["features"], vec![]);
    b.output("features", &[D::N(1), D::N(8), D::N(4), D::N(4)]);
    b.model()
}

/// Every runnable pruning fixture, by name.
pub fn prune_fixtures() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("resnet_like", resnet_like()),
        ("aspp", aspp()),
        ("psp", psp()),
        ("stereo3d", stereo3d()),
        ("same_pad_dw_se", same_pad_dw_se()),
        ("flatten_view", flatten_view()),
    ]
}

/// Every pruning fixture: [`prune_fixtures`] and the C2f model whose Split sizes come from
/// run-time shape arithmetic (kept apart because extraction's pieces of it, with those sizes
/// as a boundary input, are not runnable in tract).
pub fn all_prune_fixtures() -> Vec<(&'static str, ModelProto)> {
    let mut v = prune_fixtures();
    v.push(("yolo_c2f", yolo_c2f()));
    v
}

// ---- Extraction fixtures (nested-scope reads, data-dependent If, Loop, local functions). ----

/// A data-dependent `If` (its condition comes from tensor values, not shapes) whose branches
/// have different output ranks and read outer-scope tensors (an activation and an
/// initializer): tract cannot run it as a whole.
pub fn data_if() -> ModelProto {
    use pare::model::DataType;
    use pare::model::builder::attr_g;
    let mut b = GraphBuilder::new("data_if");
    b.input("x", &[D::N(1), D::N(2), D::N(8), D::N(8)]);
    let c = b.conv("x", 2, 4, 3, 1, 1, 1);
    let r = b.relu(&c);
    let m = b.op("ReduceMean", &[&c], vec![attr_i("keepdims", 0)]);
    let zero = b.init_f32("zero", &[], &[-100.0]);
    let cond = b.op("Greater", &[&m, &zero], vec![]);
    let pooled = b.op(
        "ReduceMean",
        &[&r],
        vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)],
    );
    b.init_f32("scale", &[], &[2.0]);
    let mut t = GraphBuilder::new("then");
    t.scope = "/then".into();
    let axes = t.const_i64(&[1]);
    let sq = t.op("Squeeze", &[&pooled, &axes], vec![]);
    t.node_named("/then/Mul", "Mul", &[&sq, "scale"], &["t_out"], vec![]);
    t.output_typed("t_out", DataType::FLOAT, Some(&[D::N(1), D::N(8), D::N(8)]));
    let mut e = GraphBuilder::new("else");
    e.node_named("/else/Identity", "Identity", &[&pooled], &["e_out"], vec![]);
    e.output_typed(
        "e_out",
        DataType::FLOAT,
        Some(&[D::N(1), D::N(1), D::N(8), D::N(8)]),
    );
    b.node_named(
        "/If",
        "If",
        &[&cond],
        &["y"],
        vec![
            attr_g("then_branch", t.graph()),
            attr_g("else_branch", e.graph()),
        ],
    );
    b.node_named("/Sigmoid", "Sigmoid", &["y"], &["prob"], vec![]);
    // Declared as the branch taken (the condition holds for any input in practice).
    b.output("prob", &[D::N(1), D::N(8), D::N(8)]);
    b.model()
}

/// A `Loop` (3 trips) whose body reads an activation and a weight from the outer scope.
pub fn loop_outer() -> ModelProto {
    use pare::model::DataType;
    use pare::model::builder::{attr_g, value_info};
    let mut b = GraphBuilder::new("loop_outer");
    b.input("x", &[D::N(1), D::N(4), D::N(4), D::N(4)]);
    let c = b.conv("x", 4, 4, 3, 1, 1, 1);
    let act = b.relu(&c);
    let gain = b.init_f32("gain", &[1, 4, 1, 1], &[0.5, 1.0, 1.5, 2.0]);
    let trips = b.init_i64("trips", &[], &[3]);
    let mut body = GraphBuilder::new("body");
    body.inputs
        .push(value_info("i", DataType::INT64, Some(&[])));
    body.inputs
        .push(value_info("cond_in", DataType::BOOL, Some(&[])));
    body.inputs.push(value_info(
        "acc",
        DataType::FLOAT,
        Some(&[D::N(1), D::N(4), D::N(4), D::N(4)]),
    ));
    body.node_named(
        "/body/Identity",
        "Identity",
        &["cond_in"],
        &["cond_out"],
        vec![],
    );
    body.node_named("/body/Mul", "Mul", &["acc", &gain], &["scaled"], vec![]);
    body.node_named("/body/Add", "Add", &["scaled", &act], &["acc_out"], vec![]);
    body.outputs
        .push(value_info("cond_out", DataType::BOOL, Some(&[])));
    body.outputs.push(value_info(
        "acc_out",
        DataType::FLOAT,
        Some(&[D::N(1), D::N(4), D::N(4), D::N(4)]),
    ));
    b.node_named(
        "/Loop",
        "Loop",
        &[&trips, "", &act],
        &["looped"],
        vec![attr_g("body", body.graph())],
    );
    let y = b.conv("looped", 4, 2, 1, 1, 0, 1);
    b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    b.model()
}

/// A model calling a model-local function (`local.Swish`, itself calling `local.Gate`), like
/// exporters that keep modules as functions.
pub fn local_function() -> ModelProto {
    use pare::model::proto::{FunctionProto, NodeProto, OperatorSetIdProto};
    let mut b = GraphBuilder::new("local_function");
    b.input("x", &[D::N(1), D::N(3), D::N(8), D::N(8)]);
    let c = b.conv("x", 3, 4, 3, 1, 1, 1);
    let call = |name: &str, op: &str, i: &str, o: &str| NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        domain: Some("local".into()),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    b.nodes
        .push(call("/act/Swish", "Swish", &c, "/act/Swish_output_0"));
    let y = b.conv("/act/Swish_output_0", 4, 2, 1, 1, 0, 1);
    b.node_named("/out", "Identity", &[&y], &["y"], vec![]);
    b.output("y", &[D::N(1), D::N(2), D::N(8), D::N(8)]);
    let mut m = b.model();
    let onnx_op = |name: &str, op: &str, i: &[&str], o: &str| NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: i.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        ..Default::default()
    };
    let opsets = vec![
        OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        },
        OperatorSetIdProto {
            domain: Some("local".into()),
            version: Some(1),
        },
    ];
    m.functions.push(FunctionProto {
        name: Some("Gate".into()),
        domain: Some("local".into()),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        node: vec![onnx_op("s", "Sigmoid", &["X"], "Y")],
        opset_import: opsets.clone(),
        ..Default::default()
    });
    m.functions.push(FunctionProto {
        name: Some("Swish".into()),
        domain: Some("local".into()),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        node: vec![
            call("g", "Gate", "X", "G"),
            onnx_op("m", "Mul", &["X", "G"], "Y"),
        ],
        opset_import: opsets,
        ..Default::default()
    });
    m.functions.push(FunctionProto {
        name: Some("Unused".into()),
        domain: Some("local".into()),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        node: vec![onnx_op("n", "Neg", &["X"], "Y")],
        ..Default::default()
    });
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("local".into()),
        version: Some(1),
    });
    m
}

// ---- Quantization fixtures. ----

/// A fully convolutional net with dynamic height and width (seed Q11): conv stack with a
/// residual add, for calibration over several input sizes.
pub fn dynamic_hw() -> ModelProto {
    let mut b = GraphBuilder::new("dynamic_hw");
    b.input("image", &[D::N(1), D::N(3), D::S("height"), D::S("width")]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 1);
    let y = conv_bn_relu(&mut b, &x, 16, 16, 3, 1);
    let y = b.conv(&y, 16, 16, 3, 1, 1, 1);
    let x = b.add(&y, &x);
    let x = b.relu(&x);
    let z = b.conv(&x, 16, 4, 1, 1, 0, 1);
    b.node_named("/out", "Identity", &[&z], &["mask"], vec![]);
    b.output("mask", &[D::N(1), D::N(4), D::S("height"), D::S("width")]);
    b.model()
}

/// Two MatMuls: a linear layer with a constant weight and an activation × activation product
/// (attention-style), then a Gemm head.
pub fn matmul_block() -> ModelProto {
    let mut b = GraphBuilder::new("matmul_block");
    b.input("tokens", &[D::N(1), D::N(16), D::N(32)]);
    let w = b.init_randn("proj.weight", &[32, 32], 0.2);
    let q = b.op("MatMul", &["tokens", &w], vec![]);
    let perm = b.op(
        "Transpose",
        &["tokens"],
        vec![attr_ints("perm", &[0, 2, 1])],
    );
    let att = b.op("MatMul", &[&q, &perm], vec![]); // [1,16,16]
    let att = b.op("Softmax", &[&att], vec![attr_i("axis", -1)]);
    let ctx = b.op("MatMul", &[&att, "tokens"], vec![]); // [1,16,32]
    let s = b.init_i64("flat_shape", &[2], &[16, 32]);
    let flat = b.op("Reshape", &[&ctx, &s], vec![]);
    let logits = b.gemm(&flat, 32, 24);
    b.node_named("/out", "Identity", &[&logits], &["logits"], vec![]);
    b.output("logits", &[D::N(16), D::N(24)]);
    b.model()
}

/// A segmentation-style head whose output is a label map: ArgMax over class scores, cast to
/// float. Tiny score differences flip labels, so its output error says little about the
/// quantized layers (seed Q9's "which part is at fault" question).
pub fn argmax_head() -> ModelProto {
    let mut b = GraphBuilder::new("argmax_head");
    b.input("image", &[D::N(1), D::N(3), D::N(32), D::N(32)]);
    let x = conv_bn_relu(&mut b, "image", 3, 16, 3, 1);
    let x = conv_bn_relu(&mut b, &x, 16, 16, 3, 1);
    let s = b.conv(&x, 16, 16, 1, 1, 0, 1);
    let idx = b.op(
        "ArgMax",
        &[&s],
        vec![attr_i("axis", 1), attr_i("keepdims", 1)],
    );
    b.node_named(
        "/labels",
        "Cast",
        &[&idx],
        &["labels"],
        vec![attr_i("to", 1)],
    );
    b.output("labels", &[D::N(1), D::N(1), D::N(32), D::N(32)]);
    b.model()
}

/// Zeroes every producer-side slice (weights, biases, gate rows, norm parameters, constant
/// operands, initial states) of the `dead` units, so those channels, heads or hidden units
/// carry zeros everywhere: the "dead units removed → equal within 1e-4" exactness test.
pub fn kill(m: &mut ModelProto, ca: &pare::analysis::channels::ChannelAnalysis, dead: &[bool]) {
    let g = m.graph.as_mut().expect("graph");
    for mem in &ca.members {
        if !matches!(
            mem.role,
            pare::analysis::channels::Role::ProducerWeight
                | pare::analysis::channels::Role::ProducerBias
                | pare::analysis::channels::Role::NormScale
                | pare::analysis::channels::Role::NormBias
                | pare::analysis::channels::Role::Elementwise
        ) {
            continue;
        }
        let Some(t) = g.initializer.iter_mut().find(|t| t.name() == mem.tensor) else {
            continue;
        };
        let mut v = pare::model::tensor::to_f32(t).expect("floats");
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let inner: usize = dims[mem.axis + 1..].iter().product();
        let outer: usize = dims[..mem.axis].iter().product();
        let n = dims[mem.axis];
        for o in 0..outer {
            for i in 0..n {
                if dead[mem.atoms[i] as usize] {
                    let base = (o * n + i) * inner;
                    v[base..base + inner].iter_mut().for_each(|x| *x = 0.0);
                }
            }
        }
        *t = pare::model::tensor::f32_tensor(t.name(), &t.dims.clone(), &v);
    }
}

/// `m` pruned at `ratio` with default options: its analysis, channel groups, plan and the
/// rewritten model.
pub fn prune_at(
    m: &ModelProto,
    ratio: f64,
) -> (
    pare::model::Analysis,
    pare::analysis::channels::ChannelAnalysis,
    pare::prune::PrunePlan,
    ModelProto,
) {
    let a = pare::model::Analysis::new(model(m.clone()), &pare::model::InputPins::new())
        .expect("analysis");
    let ca = pare::analysis::channels::analyze_channels(&a);
    let opts = pare::prune::PruneOptions {
        ratio,
        ..Default::default()
    };
    let plan = pare::prune::make_plan(&a, &ca, &opts, &pare::jobs::NoProgress).expect("plan");
    let pruned = pare::prune::apply_plan(&a, &ca, &plan).expect("rewrite");
    (a, ca, plan, pruned)
}
