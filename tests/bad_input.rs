//! Every kind of bad input gets one clear line on stderr and exit code 2 — never a panic,
//! never a hang.

mod common;

use std::path::Path;
use std::process::Command;

use pare::model::io::{SaveOptions, load_model, save_model};

fn pare_info(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pare"))
        .arg("info")
        .arg(path)
        .output()
        .expect("run pare");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), err)
}

fn assert_clean(path: &Path, needles: &[&str]) {
    let (code, err) = pare_info(path);
    assert_eq!(code, 2, "exit code for {}: {err}", path.display());
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(
            err.to_lowercase().contains(&n.to_lowercase()),
            "'{n}' missing from: {err}"
        );
    }
}

#[test]
fn missing_file_and_directory() {
    let dir = common::tempdir();
    assert_clean(
        &dir.path().join("nope.onnx"),
        &["nope.onnx", "no such file"],
    );
    assert_clean(dir.path(), &["directory"]);
}

#[test]
fn empty_truncated_random_png_zip_pickle() {
    let dir = common::tempdir();
    let d = dir.path();
    std::fs::write(d.join("empty.onnx"), b"").expect("w");
    assert_clean(&d.join("empty.onnx"), &["empty.onnx", "empty"]);

    let good = pare::model::io::encode_model(&common::resnet_like());
    for frac in [3, 2] {
        let p = d.join(format!("trunc{frac}.onnx"));
        std::fs::write(&p, &good[..good.len() / frac]).expect("w");
        assert_clean(&p, &[&format!("trunc{frac}.onnx")]);
    }
    let mut rng = pare::rng::Rng::new(1);
    let random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(d.join("rand.onnx"), &random).expect("w");
    assert_clean(&d.join("rand.onnx"), &["rand.onnx"]);
    // Random bytes that happen to start like text are still called corrupt, not text.
    let mut brace = random.clone();
    brace[0] = b'{';
    std::fs::write(d.join("brace.onnx"), &brace).expect("w");
    let (_, err) = pare_info(&d.join("brace.onnx"));
    assert!(!err.contains("text file"), "{err}");
    std::fs::write(d.join("cfg.onnx"), b"{\"model\": \"resnet\"}\n").expect("w");
    assert_clean(&d.join("cfg.onnx"), &["text file"]);

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&random[..512]);
    std::fs::write(d.join("img.onnx"), &png).expect("w");
    assert_clean(&d.join("img.onnx"), &["PNG"]);

    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&random[..512]);
    std::fs::write(d.join("model.pt"), &zip).expect("w");
    assert_clean(&d.join("model.pt"), &["TorchScript", "torch.onnx.export"]);

    std::fs::write(d.join("ckpt.pth"), [0x80u8, 0x02, 0x7d, 0x71]).expect("w");
    assert_clean(&d.join("ckpt.pth"), &["pickle"]);
}

#[test]
fn missing_external_data_file_is_named() {
    let dir = common::tempdir();
    let src = common::write(dir.path(), "in.onnx", &common::resnet_like());
    let m = load_model(&src).expect("load");
    let out = dir.path().join("big.onnx");
    save_model(
        &m,
        &out,
        &SaveOptions {
            external_threshold: Some(64),
        },
    )
    .expect("save");
    std::fs::remove_file(dir.path().join("big.onnx.data")).expect("rm");
    assert_clean(&out, &["big.onnx.data", "missing"]);
}

fn graph_case(
    dir: &Path,
    name: &str,
    nodes: Vec<pare::model::proto::NodeProto>,
) -> std::path::PathBuf {
    let mut b = pare::model::builder::GraphBuilder::new("g");
    b.input(
        "x",
        &[pare::model::builder::D::N(1), pare::model::builder::D::N(2)],
    );
    b.output(
        "y",
        &[pare::model::builder::D::N(1), pare::model::builder::D::N(2)],
    );
    let mut m = b.model();
    m.graph.as_mut().expect("graph").node = nodes;
    common::write(dir, name, &m)
}

fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> pare::model::proto::NodeProto {
    pare::model::proto::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn dangling_duplicate_and_cyclic_graphs() {
    let dir = common::tempdir();
    let d = dir.path();
    let p = graph_case(
        d,
        "dangling.onnx",
        vec![node("a", "Add", &["x", "ghost"], &["y"])],
    );
    assert_clean(&p, &["'ghost'", "'a'"]);
    let p = graph_case(
        d,
        "dup.onnx",
        vec![
            node("a", "Relu", &["x"], &["y"]),
            node("b", "Sigmoid", &["x"], &["y"]),
        ],
    );
    assert_clean(&p, &["'y'", "twice"]);
    let p = graph_case(
        d,
        "cycle.onnx",
        vec![
            node("a", "Add", &["x", "t2"], &["t1"]),
            node("b", "Relu", &["t1"], &["t2"]),
            node("c", "Identity", &["t1"], &["y"]),
        ],
    );
    assert_clean(&p, &["cycl", "'a'", "'b'"]);
}

#[test]
fn bad_input_shape_flag_is_usage_error() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::seg_head());
    for spec in ["image", "image:1xAx3", "nosuch:1x3x16x16"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pare"))
            .args(["info", "--input-shape", spec])
            .arg(&p)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains("input") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn external_data_through_a_symlink_leaving_the_folder_is_refused() {
    let outside = common::tempdir();
    let dir = common::tempdir();
    let src = common::write(outside.path(), "in.onnx", &common::resnet_like());
    let m = load_model(&src).expect("load");
    let out = outside.path().join("big.onnx");
    save_model(
        &m,
        &out,
        &SaveOptions {
            external_threshold: Some(64),
        },
    )
    .expect("save");
    // The model sits in `dir`; its data file name is a link to the file in `outside`.
    let model = dir.path().join("big.onnx");
    std::fs::copy(&out, &model).expect("copy");
    std::os::unix::fs::symlink(
        outside.path().join("big.onnx.data"),
        dir.path().join("big.onnx.data"),
    )
    .expect("symlink");
    assert_clean(&model, &["big.onnx.data", "outside the model's directory"]);
    // The same data file, really inside the folder, loads.
    std::fs::remove_file(dir.path().join("big.onnx.data")).expect("rm");
    std::fs::copy(
        outside.path().join("big.onnx.data"),
        dir.path().join("big.onnx.data"),
    )
    .expect("copy");
    assert!(load_model(&model).is_ok());
}

/// resnet_like with NaN and Inf planted in one conv weight.
fn nan_model(dir: &Path) -> std::path::PathBuf {
    let m = common::resnet_like_with_conv_weights(|mut v| {
        v[0] = f32::NAN;
        v[3] = f32::NAN;
        v[5] = f32::INFINITY;
        v
    });
    common::write(dir, "nan.onnx", &m)
}

#[test]
fn nan_weights_are_named_and_never_panic() {
    let dir = common::tempdir();
    let p = nan_model(dir.path());
    let m = load_model(&p).expect("load");
    let name = m
        .proto
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.dims.len() == 4)
        .unwrap()
        .name()
        .to_string();
    let path = p.to_str().unwrap();
    let (rc, out, err) = common::pare(&["info", path]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains(&name) && out.contains("2 NaN and 1 Inf"),
        "{out}"
    );
    let (rc, out, _) = common::pare(&["lint", path]);
    assert_eq!(rc, 1, "a NaN weight is an error finding: {out}");
    assert!(out.contains("G13") && out.contains(&name), "{out}");
    // Analysis and pruning rank the NaN channels deterministically: two runs, same plan.
    let (rc, g1, err) = common::pare(&["groups", path, "--json"]);
    assert_eq!(rc, 0, "{err}");
    let (_, g2, _) = common::pare(&["groups", path, "--json"]);
    assert_eq!(g1, g2);
    let args = ["prune", path, "--ratio", "0.5", "--dry-run", "--json"];
    let (rc1, p1, e1) = common::pare(&args);
    let (rc2, p2, _) = common::pare(&args);
    assert!(rc1 == 0 || rc1 == 2, "no panic: rc {rc1} {e1}");
    assert!(!e1.contains("panicked"), "{e1}");
    assert_eq!((rc1, strip_times(&p1)), (rc2, strip_times(&p2)));
}

/// The JSON without its timings, for comparing two runs.
fn strip_times(s: &str) -> String {
    s.lines()
        .filter(|l| !l.contains("seconds") && !l.contains("_ms"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The rest of the catalogue (issue 19): every case one clear line and exit 2, through the
// command that meets it.

/// Runs pare with `args` and checks: exit `code`, no panic, one line on stderr, every needle.
fn assert_cmd(args: &[&str], code: i32, needles: &[&str]) -> String {
    let (rc, _, err) = common::pare(args);
    let err = err.trim().to_string();
    assert_eq!(rc, code, "exit code of {args:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    if code == 2 {
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: expected one line, got: {err}"
        );
    }
    for n in needles {
        assert!(
            err.to_lowercase().contains(&n.to_lowercase()),
            "{args:?}: '{n}' missing from: {err}"
        );
    }
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A model saved with its weights in `NAME.data`, the data file then moved by `place`.
fn external_model(dir: &Path) -> std::path::PathBuf {
    let src = common::write(dir, "src.onnx", &common::resnet_like());
    let m = load_model(&src).expect("load");
    let out = dir.join("ext.onnx");
    save_model(
        &m,
        &out,
        &SaveOptions {
            external_threshold: Some(64),
        },
    )
    .expect("save");
    out
}

/// Rewrites every external `location` of the model at `path` to `loc`.
fn relocate(path: &Path, loc: &str) {
    use prost::Message;
    let bytes = std::fs::read(path).expect("read");
    let mut m = pare::model::proto::ModelProto::decode(bytes.as_slice()).expect("decode");
    for t in &mut m.graph.as_mut().expect("graph").initializer {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                e.value = Some(loc.to_string());
            }
        }
    }
    std::fs::write(path, m.encode_to_vec()).expect("write");
}

#[test]
fn external_data_outside_the_folder_needs_the_flag() {
    let root = common::tempdir();
    let inner = root.path().join("models");
    std::fs::create_dir(&inner).expect("mkdir");
    let model = external_model(&inner);
    let data = root.path().join("weights.bin");
    std::fs::rename(inner.join("ext.onnx.data"), &data).expect("move data out");
    for loc in ["../weights.bin".to_string(), data.display().to_string()] {
        relocate(&model, &loc);
        // Refused by every command that loads a model, naming the tensor and the file.
        for cmd in ["info", "groups", "lint"] {
            assert_cmd(
                &[cmd, s(&model)],
                2,
                &[
                    &loc,
                    "outside the model's directory",
                    "--allow-external-outside",
                ],
            );
        }
        // The global flag lets it through, before or after the subcommand.
        let (rc, _, err) = common::pare(&["--allow-external-outside", "info", s(&model)]);
        assert_eq!(rc, 0, "{loc}: {err}");
        let (rc, _, err) = common::pare(&["groups", s(&model), "--allow-external-outside"]);
        assert_eq!(rc, 0, "{loc}: {err}");
    }
}

#[test]
fn external_data_offsets_past_the_end_are_errors() {
    use prost::Message;
    let dir = common::tempdir();
    let model = external_model(dir.path());
    let len = std::fs::metadata(dir.path().join("ext.onnx.data"))
        .expect("data")
        .len();
    let bytes = std::fs::read(&model).expect("read");
    let pristine = pare::model::proto::ModelProto::decode(bytes.as_slice()).expect("decode");
    for (key, value, needle) in [
        ("offset", (len + 4096).to_string(), "too short"),
        ("length", (len * 2).to_string(), "too short"),
        ("offset", u64::MAX.to_string(), "too short"),
        ("offset", "-8".to_string(), "non-numeric 'offset'"),
    ] {
        let mut m = pristine.clone();
        let t = &mut m.graph.as_mut().expect("graph").initializer[0];
        let name = t.name().to_string();
        t.external_data.retain(|e| e.key.as_deref() != Some(key));
        t.external_data
            .push(pare::model::proto::StringStringEntryProto::new(
                key,
                value.clone(),
            ));
        std::fs::write(&model, m.encode_to_vec()).expect("write");
        assert_cmd(&["info", s(&model)], 2, &[&name, "ext.onnx.data", needle]);
    }
}

#[test]
fn duplicate_initializer_names_are_refused() {
    let dir = common::tempdir();
    let mut m = common::resnet_like();
    let g = m.graph.as_mut().expect("graph");
    let twin = g.initializer[1].clone();
    let name = twin.name().to_string();
    g.initializer.push(twin);
    let p = common::write(dir.path(), "dupinit.onnx", &m);
    assert_cmd(&["info", s(&p)], 2, &[&name, "duplicate"]);
}

#[test]
fn unknown_op_still_analyses_and_locks_its_group() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "custom.onnx", &common::custom_op());
    let (rc, out, err) = common::pare(&["groups", s(&p)]);
    assert_eq!(rc, 0, "an unknown op is not bad input: {err}");
    assert!(
        out.contains("MemoryEfficientSwish"),
        "the op locks its group: {out}"
    );
    let (rc, _, err) = common::pare(&["prune", s(&p), "--ratio", "0.5", "--dry-run"]);
    assert_eq!(rc, 0, "{err}");
}

#[test]
fn calibration_data_of_the_wrong_shape_names_file_and_input() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::resnet_like());
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).expect("mkdir");
    pare::data::npy::write_npy_f32(&calib.join("s0.npy"), &[1, 5, 7], &[0.5; 35]).expect("npy");
    let out = dir.path().join("q.onnx");
    assert_cmd(
        &["quantize", s(&p), "-o", s(&out), "--data", s(&calib)],
        2,
        &["s0.npy", "input"],
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn tags_naming_unknown_layers_are_refused_with_the_closest() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::resnet_like());
    let tags = dir.path().join("tags.toml");
    std::fs::write(&tags, "skip = [\"/no/such/Conv\"]\n").expect("tags");
    assert_cmd(
        &["prune", s(&p), "--tags", s(&tags), "--dry-run"],
        2,
        &["/no/such/Conv"],
    );
    assert_cmd(
        &["groups", s(&p), "--tags", s(&tags)],
        2,
        &["/no/such/Conv"],
    );
}

#[test]
fn output_equal_to_input_is_refused_also_through_links() {
    let dir = common::tempdir();
    let d = dir.path();
    let p = common::write(d, "m.onnx", &common::resnet_like());
    let before = std::fs::read(&p).expect("read");
    let sym = d.join("sym.onnx");
    std::os::unix::fs::symlink(&p, &sym).expect("symlink");
    let hard = d.join("hard.onnx");
    std::fs::hard_link(&p, &hard).expect("hard link");
    for out in [&p, &sym, &hard] {
        assert_cmd(
            &["prune", s(&p), "-o", s(out), "--no-validate"],
            2,
            &["refusing to overwrite", "input"],
        );
        assert_cmd(&["fix", s(&p), "-o", s(out)], 2, &["refusing to overwrite"]);
    }
    assert_eq!(std::fs::read(&p).expect("read"), before, "input untouched");
}

#[test]
fn unwritable_output_folder_names_the_path() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::resnet_like());
    // A folder that does not exist, and one whose "folder" is a file: both fail even as root.
    let missing = dir.path().join("no/such/dir/out.onnx");
    assert_cmd(
        &["prune", s(&p), "-o", s(&missing), "--no-validate"],
        2,
        &["no/such/dir"],
    );
    let under_file = p.join("out.onnx");
    assert_cmd(
        &["prune", s(&p), "-o", s(&under_file), "--no-validate"],
        2,
        &["m.onnx/out.onnx"],
    );
}

#[test]
fn ratio_out_of_range_is_a_usage_error() {
    let dir = common::tempdir();
    let p = common::write(dir.path(), "m.onnx", &common::resnet_like());
    for r in ["1.5", "-0.1", "1", "NaN"] {
        let flag = format!("--ratio={r}");
        assert_cmd(&["prune", s(&p), &flag, "--dry-run"], 2, &["ratio"]);
    }
}

/// x → a (Relu) → t1 → b (Relu) → t2 → c (Relu) → y
fn chain(dir: &Path) -> std::path::PathBuf {
    graph_case(
        dir,
        "chain.onnx",
        vec![
            node("a", "Relu", &["x"], &["t1"]),
            node("b", "Relu", &["t1"], &["t2"]),
            node("c", "Relu", &["t2"], &["y"]),
        ],
    )
}

#[test]
fn empty_extraction_is_refused() {
    let dir = common::tempdir();
    let p = chain(dir.path());
    let out = dir.path().join("piece.onnx");
    // No node lies on a path from c to a.
    assert_cmd(
        &["extract", s(&p), "-o", s(&out), "--from", "c", "--to", "a"],
        2,
        &["'c'", "'a'"],
    );
    // Inputs equal to outputs select nothing.
    assert_cmd(
        &[
            "extract",
            s(&p),
            "-o",
            s(&out),
            "--inputs",
            "t1",
            "--outputs",
            "t1",
        ],
        2,
        &["t1"],
    );
    assert!(!out.exists());
}

#[test]
fn outputs_not_computable_from_the_inputs_are_named() {
    let dir = common::tempdir();
    let p = chain(dir.path());
    let out = dir.path().join("piece.onnx");
    assert_cmd(
        &[
            "extract",
            s(&p),
            "-o",
            s(&out),
            "--inputs",
            "t2",
            "--outputs",
            "t1",
        ],
        2,
        &["t1", "t2"],
    );
    assert!(!out.exists());
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

/// Every writing command leaves its input (model and external data) byte for byte as it
/// was, and leaves no temporary file next to its output.
#[test]
fn writing_commands_never_modify_their_input() {
    let root = common::tempdir();
    let inp = root.path().join("in");
    let out = root.path().join("out");
    std::fs::create_dir(&inp).expect("mkdir");
    std::fs::create_dir(&out).expect("mkdir");
    let model = external_model(&inp);
    std::fs::remove_file(inp.join("src.onnx")).expect("rm");
    let m = load_model(&model).expect("load");
    let g = m.proto.graph.as_ref().expect("graph");
    let relu = g
        .node
        .iter()
        .find(|n| n.op_type() == "Relu")
        .expect("a Relu");
    let cut = relu.output[0].clone();
    let node = g.node[2].name().to_string();
    let before = snapshot(&inp);
    let o = |n: &str| out.join(n).display().to_string();
    let mp = s(&model);
    let runs: Vec<Vec<String>> = vec![
        vec!["prune", mp, "-o", &o("p.onnx"), "--ratio", "0.5"],
        vec![
            "quantize",
            mp,
            "-o",
            &o("q.onnx"),
            "--data",
            "random",
            "--samples",
            "2",
        ],
        vec!["fix", mp, "-o", &o("f.onnx")],
        vec!["convert", mp, "-o", &o("c.onnx"), "--precision", "fp16"],
        vec!["extract", mp, "-o", &o("e.onnx"), "--node", &node],
        vec!["split", mp, "--at", &cut, "-o", &o("h.onnx"), &o("t.onnx")],
        vec![
            "reduce",
            mp,
            "--check",
            "false",
            "-o",
            &o("r.onnx"),
            "--max-tries",
            "4",
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for args in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (rc, _, err) = common::pare(&args);
        assert!(rc == 0 || rc == 1, "{args:?}: {rc} {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(snapshot(&inp) == before, "{}: the input changed", args[0]);
    }
    for (p, _) in snapshot(&out) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp-"),
            "temporary file left behind: {name}"
        );
    }
    for f in [
        "p.onnx", "q.onnx", "c.onnx", "e.onnx", "h.onnx", "t.onnx", "r.onnx",
    ] {
        assert!(out.join(f).exists(), "{f} written");
    }
}

/// A declared 2^40-element tensor over a few bytes is an error naming it, found at load
/// before anything allocates what the dims claim (fuzzer finding).
#[test]
fn declared_sizes_must_match_the_data() {
    let dir = common::tempdir();
    let mut m = common::resnet_like();
    let g = m.graph.as_mut().expect("graph");
    let name = g.initializer[0].name().to_string();
    g.initializer[0].dims = vec![1 << 40, 1 << 20];
    let p = common::write(dir.path(), "huge.onnx", &m);
    for cmd in ["info", "groups", "lint"] {
        assert_cmd(&[cmd, s(&p)], 2, &[&name, "bytes", "need"]);
    }
    // A channel count of 2^40 declared on an input only (no data behind it) is analysed
    // without allocating per channel.
    let mut m = common::resnet_like();
    let g = m.graph.as_mut().expect("graph");
    if let Some(pare::model::proto::TypeValue::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().expect("shape").dim[1].value =
            Some(pare::model::proto::Dimension::DimValue(1 << 40));
    }
    let p = common::write(dir.path(), "wide.onnx", &m);
    let (rc, _, err) = common::pare(&["groups", s(&p)]);
    assert!(rc == 0 || rc == 2, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("memory"),
        "{err}"
    );
}

/// The soak's hang (seed 20261208, case 483160, kept in tests/data/fuzz): swin_tiny whose
/// second block's LayerNormalization reads a rank-0 constant. tract's inference rules counted
/// to `usize::MAX` on it (axis -1 + rank 0, wrapped); prune's validation and extract hung.
/// The node is now refused by name before tract sees it, and each command answers as it does
/// for any model no engine runs: prune exits 1 (not validated, nothing written), extract
/// writes the piece (which needs no engine) and with `--with-data` exits 1 naming the node.
#[test]
fn axis_out_of_range_for_the_rank_is_refused_before_tract() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/case-20261208-483160.onnx");
    let dir = common::tempdir();
    let out = dir.path().join("out.onnx");
    let needles = [
        "'/blocks/blocks.1/norm2/LayerNormalization' (LayerNormalization)",
        "axis -1 is out of range for rank 0",
    ];
    // prune's report (stdout) says why it was not validated.
    let (rc, report, err) = common::pare(&["prune", s(&case), "-o", s(&out)]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("validation did not pass"), "{err}");
    for n in needles {
        assert!(report.contains(n), "'{n}' missing from: {report}");
    }
    assert!(!out.exists());
    let ln = "/blocks/blocks.1/norm2/LayerNormalization";
    assert_cmd(&["extract", s(&case), "-o", s(&out), "--node", ln], 0, &[]);
    let data = ["--with-data", "--data", "random"];
    let mut args = vec!["extract", s(&case), "-o", s(&out), "--node", ln];
    args.extend(data);
    assert_cmd(&args, 1, &needles);
    // lint's tract target asks tract itself: the node is reported (T1), tract not asked.
    let (rc, report, err) = common::pare(&["lint", s(&case), "--target", "tract"]);
    assert_eq!(rc, 1, "{err}");
    assert!(report.contains("T1"), "{report}");
    let flat = report.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("axis -1 is out of range for rank 0 (invalid ONNX)"),
        "{report}"
    );
}

/// Softmax with an axis its input's rank does not have (rank 2, axis 5): invalid ONNX that
/// tract would wrap or index out of bounds; refused naming the node wherever a model runs.
#[test]
fn softmax_axis_out_of_range_is_refused_naming_the_node() {
    let dir = common::tempdir();
    let mut sm = node("sm", "Softmax", &["x"], &["y"]);
    sm.attribute.push(pare::model::builder::attr_i("axis", 5));
    let p = graph_case(dir.path(), "softmax.onnx", vec![sm]);
    let out = dir.path().join("piece.onnx");
    let args = [
        "extract",
        s(&p),
        "-o",
        s(&out),
        "--node",
        "sm",
        "--with-data",
        "--data",
        "random",
    ];
    assert_cmd(
        &args,
        1,
        &["'sm' (Softmax)", "axis 5 is out of range for rank 2"],
    );
}

/// One node `op` with `attrs` on a float input of `dims`, its output the graph's.
fn one_op(
    op: &str,
    dims: &[i64],
    attrs: Vec<pare::model::proto::AttributeProto>,
) -> pare::model::proto::ModelProto {
    use pare::model::builder::{D, GraphBuilder};
    let mut b = GraphBuilder::new("g").with_opset(17);
    let d: Vec<D> = dims.iter().map(|&n| D::N(n)).collect();
    b.input("x", &d);
    let mut ins = vec!["x".to_string()];
    if op == "LayerNormalization" {
        let last = dims.last().copied().unwrap_or(1);
        ins.push(b.init_f32("scale", &[last], &vec![1.0; last as usize]));
    }
    if op == "Concat" {
        ins.push("x".into());
    }
    if op == "Gather" {
        ins.push(b.init_i64("idx", &[1], &[0]));
    }
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    b.node_named("n", op, &ins, &["y"], attrs);
    b.output_typed("y", pare::model::DataType::FLOAT, None);
    b.model()
}

/// The guard that keeps invalid axes from tract: out-of-range axes are found whatever the op
/// (default or given, negative or positive), in-range ones (Flatten's axis may equal the rank)
/// are not, and the committed fixtures have none.
#[test]
fn invalid_axes_are_found_and_valid_ones_left_alone() {
    use pare::model::builder::attr_i;
    use pare::model::shape::invalid_axes;
    let pins = Default::default();
    let bad = [
        ("LayerNormalization", vec![], vec![]),
        ("LayerNormalization", vec![2, 4], vec![attr_i("axis", 2)]),
        ("Softmax", vec![2, 4], vec![attr_i("axis", -3)]),
        ("LogSoftmax", vec![], vec![]),
        ("Concat", vec![2, 4], vec![attr_i("axis", 1 << 40)]),
        ("Gather", vec![2, 4], vec![attr_i("axis", -3)]),
        ("Flatten", vec![2, 4], vec![attr_i("axis", 3)]),
        ("ArgMax", vec![2, 4], vec![attr_i("axis", 2)]),
    ];
    for (op, dims, attrs) in bad {
        let m = one_op(op, &dims, attrs);
        let d = invalid_axes(&m, &pins).unwrap_or_else(|| panic!("{op} {dims:?}: not found"));
        assert_eq!(d.node, "n");
        assert!(d.message.contains("out of range"), "{}", d.message);
    }
    let good = [
        ("LayerNormalization", vec![2, 4], vec![]),
        ("LayerNormalization", vec![2, 4], vec![attr_i("axis", -2)]),
        ("Softmax", vec![2, 4], vec![]),
        ("Concat", vec![2, 4], vec![attr_i("axis", -2)]),
        ("Gather", vec![2, 4], vec![attr_i("axis", 1)]),
        ("Flatten", vec![2, 4], vec![attr_i("axis", 2)]),
        ("ArgMax", vec![2, 4], vec![attr_i("axis", -1)]),
    ];
    for (op, dims, attrs) in good {
        let d = invalid_axes(&one_op(op, &dims, attrs), &pins);
        assert!(d.is_none(), "{op} {dims:?}: {d:?}");
    }
    for m in [
        common::resnet_like(),
        common::seg_head(),
        common::yolo_c2f(),
    ] {
        assert_eq!(invalid_axes(&m, &pins), None);
    }
}

/// Random inputs are bounded by bytes (256 MiB per input), not by the model's size: a tiny
/// conv model's 2048x2048 image input (50 MB) gets its random data; a corrupt declaration (the
/// soak's batch of 65536, a 2^40 dim) is refused before allocating, naming the input and its
/// shape and pointing at `--input-shape`.
#[test]
fn random_inputs_are_bounded_naming_the_input() {
    use pare::model::DataType;
    use pare::runtime::InputSpec;
    let mut rng = pare::rng::Rng::new(0);
    let img = InputSpec {
        name: "img".into(),
        dtype: DataType::FLOAT,
        shape: vec![1, 3, 2048, 2048],
    };
    assert_eq!(img.random(&mut rng).expect("4 MP image").len(), 3 << 22);
    for (dtype, shape) in [
        (DataType::FLOAT, vec![65536, 3, 32, 32]),
        (DataType::FLOAT, vec![1, 3, 1 << 20, 1 << 20]),
        (DataType::INT64, vec![1, 1 << 28]),
        (DataType::FLOAT, vec![1 << 40, 1 << 40, 1 << 40]),
    ] {
        let spec = InputSpec {
            name: "img".into(),
            dtype,
            shape: shape.clone(),
        };
        let e = spec.random(&mut rng).expect_err("absurd").to_string();
        let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
        for n in ["input 'img'", &dims.join("x"), "--input-shape img:"] {
            assert!(e.contains(n), "'{n}' missing from: {e}");
        }
    }
}
