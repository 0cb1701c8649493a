//! Lossless load/save: every field survives, external data works, writes are atomic.

mod common;

use pare::model::io::{SaveOptions, encode_model, load_model, save_model};
use pare::model::proto::{ModelProto, StringStringEntryProto};
use prost::Message;

fn roundtrip(m: &ModelProto) -> ModelProto {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "in.onnx", m);
    let loaded = load_model(&src).expect("load");
    let out = dir.path().join("out.onnx");
    save_model(&loaded, &out, &SaveOptions::default()).expect("save");
    load_model(&out).expect("reload").proto
}

#[test]
fn builder_models_roundtrip_field_by_field_and_byte_identical() {
    for m in [
        common::resnet_like(),
        common::stereo_if(),
        common::seg_head(),
        pare::demo::build_demo(),
    ] {
        let back = roundtrip(&m);
        assert_eq!(back, m, "messages differ after a round trip");
        assert_eq!(
            encode_model(&back),
            encode_model(&m),
            "bytes differ after a round trip"
        );
    }
}

#[test]
fn metadata_props_and_ir11_fields_survive() {
    let mut m = common::resnet_like();
    m.metadata_props
        .push(StringStringEntryProto::new("model_key", "v"));
    m.ir_version = Some(11);
    let g = m.graph.as_mut().expect("graph");
    g.metadata_props
        .push(StringStringEntryProto::new("graph_key", "g"));
    g.input[0].metadata_props.push(StringStringEntryProto::new(
        "pkg.torch.onnx.original_node_name",
        "x",
    ));
    g.initializer[0]
        .metadata_props
        .push(StringStringEntryProto::new("tensor_key", "t"));
    g.node[0]
        .device_configurations
        .push(pare::model::proto::NodeDeviceConfigurationProto {
            configuration_id: Some("cfg".into()),
            pipeline_stage: Some(0),
            sharding_spec: vec![],
        });
    m.functions.push(pare::model::proto::FunctionProto {
        name: Some("MyFn".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        metadata_props: vec![StringStringEntryProto::new("fn_key", "f")],
        ..Default::default()
    });
    let back = roundtrip(&m);
    assert_eq!(back, m);
    let g = back.graph.as_ref().expect("graph");
    assert_eq!(
        g.node[0].metadata_props[0].key.as_deref(),
        Some("namespace")
    );
    assert_eq!(
        g.initializer[0].metadata_props[0].value.as_deref(),
        Some("t")
    );
    assert_eq!(
        back.functions[0].metadata_props[0].key.as_deref(),
        Some("fn_key")
    );
}

#[test]
fn explicit_default_values_keep_their_presence() {
    // proto2 presence: an attribute written with i = 0 must be re-encoded with i = 0.
    let mut m = common::seg_head();
    let g = m.graph.as_mut().expect("graph");
    g.node[0]
        .attribute
        .push(pare::model::builder::attr_i("some_flag", 0));
    g.node[0].domain = Some(String::new());
    let bytes = encode_model(&m);
    let back = ModelProto::decode(&bytes[..]).expect("decode");
    let node = &back.graph.as_ref().expect("graph").node[0];
    assert_eq!(node.attr("some_flag").and_then(|a| a.i), Some(0));
    assert_eq!(node.domain, Some(String::new()));
    assert_eq!(encode_model(&back), bytes);
}

#[test]
fn payloads_are_zero_copy_slices_of_the_file_map() {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "m.onnx", &common::resnet_like());
    let loaded = load_model(&src).expect("load");
    let g = loaded.proto.graph.as_ref().expect("graph");
    let raws: Vec<&bytes::Bytes> = g
        .initializer
        .iter()
        .filter_map(|t| t.raw_data.as_ref())
        .collect();
    assert!(raws.len() > 5);
    // Slices of one buffer: consecutive initializers point into the same region.
    let lo = raws
        .iter()
        .map(|r| r.as_ptr() as usize)
        .min()
        .expect("some");
    let hi = raws
        .iter()
        .map(|r| r.as_ptr() as usize + r.len())
        .max()
        .expect("some");
    assert!(
        hi - lo <= loaded.file_size as usize,
        "payloads are not views of the file buffer"
    );
}

#[test]
fn external_data_saves_and_loads_back_identically() {
    let dir = common::tempdir();
    let m = common::resnet_like();
    let src = common::write(dir.path(), "in.onnx", &m);
    let loaded = load_model(&src).expect("load");
    let out = dir.path().join("ext.onnx");
    save_model(
        &loaded,
        &out,
        &SaveOptions {
            external_threshold: Some(256),
        },
    )
    .expect("save");
    assert!(dir.path().join("ext.onnx.data").exists());
    let small = std::fs::metadata(&out).expect("meta").len();
    assert!(
        small < std::fs::metadata(&src).expect("meta").len() / 2,
        "weights were not moved out"
    );
    let back = load_model(&out).expect("reload external");
    assert_eq!(
        back.proto, m,
        "external data did not resolve to the same tensors"
    );
    assert!(!back.external_tensors.is_empty());
    // Saving a model that came with external data keeps it external by default.
    let again = dir.path().join("sub/again.onnx");
    std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
    save_model(&back, &again, &SaveOptions::default()).expect("save again");
    assert!(dir.path().join("sub/again.onnx.data").exists());
    assert_eq!(load_model(&again).expect("reload").proto, m);
}

#[test]
fn missing_external_file_is_named() {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "in.onnx", &common::resnet_like());
    let loaded = load_model(&src).expect("load");
    let out = dir.path().join("ext.onnx");
    save_model(
        &loaded,
        &out,
        &SaveOptions {
            external_threshold: Some(256),
        },
    )
    .expect("save");
    std::fs::remove_file(dir.path().join("ext.onnx.data")).expect("rm");
    let err = load_model(&out).expect_err("must fail").to_string();
    assert!(
        err.contains("ext.onnx.data") && err.contains("missing"),
        "{err}"
    );
    assert!(
        err.contains("weight") || err.contains("bias"),
        "tensor not named: {err}"
    );
}

#[test]
fn save_refuses_to_overwrite_the_input_and_leaves_no_temp_files() {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "in.onnx", &common::seg_head());
    let before = std::fs::read(&src).expect("read");
    let loaded = load_model(&src).expect("load");
    let err = save_model(&loaded, &src, &SaveOptions::default()).expect_err("must refuse");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&src).expect("read"), before);
    // A save into a missing directory fails without leaving anything behind.
    let bad = dir.path().join("no/such/dir/out.onnx");
    assert!(save_model(&loaded, &bad, &SaveOptions::default()).is_err());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "unexpected files: {names:?}");
}
