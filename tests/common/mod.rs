//! Fixture models shared by the integration tests, written with pare's own builder so the
//! tests need neither Python nor network access.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pare::model::builder::{D, GraphBuilder, attr_g, attr_i, attr_ints, attr_s, set_node_metadata, value_info};
use pare::model::proto::ModelProto;
use pare::model::{DataType, Model};

/// A fresh temporary directory that lives as long as the returned guard.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pare::model::io::encode_model(m)).expect("write fixture");
    p
}

pub fn model(proto: ModelProto) -> Model {
    Model {
        file_size: 0,
        proto,
        path: None,
        external_tensors: Vec::new(),
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
            set_node_metadata(n, "pkg.torch.onnx.stack_trace", "File \"model.py\", line 1, in forward");
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
    let m = b.op("ReduceMean", &[&d], vec![attr_ints("axes", &[1]), attr_i("keepdims", 1)]);
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
    b.node_named("/If", "If", &[&cond], &["disparity"], vec![attr_g("then_branch", t.graph()), attr_g("else_branch", e.graph())]);
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
    b.node_named("/Resize", "Resize", &[&y, "", &scales], &["mask"], vec![attr_s("mode", "nearest")]);
    b.output("mask", &[D::N(1), D::N(3), D::N(16), D::N(16)]);
    b.model()
}
