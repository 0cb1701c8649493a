//! One test per source kind, and bad input: every error names the file or input, none panics.

use std::path::Path;

use prost::Message;

use super::*;
use crate::model::DataType;
use crate::rng::Rng;

fn decl(name: &str, dims: &[usize]) -> InputDecl {
    InputDecl {
        name: name.into(),
        dtype: DataType::FLOAT,
        dims: dims.iter().map(|&d| DeclDim::Known(d)).collect(),
    }
}

fn open(inputs: Vec<InputDecl>, source: DataSource) -> Result<SampleSet> {
    SampleSet::open(inputs, &source, 100, Preprocess::default())
}

fn path_of(p: &Path) -> DataSource {
    DataSource::Path(p.to_path_buf())
}

fn write_pb(p: &Path, name: &str, t: &HostTensor) {
    let pb = host_to_tensor(name, t, None).expect("encode");
    std::fs::write(p, pb.encode_to_vec()).expect("write pb");
}

fn random(shape: &[usize], seed: u64) -> HostTensor {
    HostTensor::random(DataType::FLOAT, shape, &mut Rng::new(seed)).expect("random")
}

#[test]
fn images_resize_normalise_and_lay_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let red = ::image::RgbImage::from_pixel(6, 2, ::image::Rgb([255, 0, 0]));
    red.save(dir.path().join("red.png")).expect("png");
    let set = open(vec![decl("x", &[1, 3, 4, 4])], path_of(dir.path())).expect("set");
    let t = set.load(0).expect("load").tensors.remove(0);
    assert_eq!(t.shape, vec![1, 3, 4, 4], "resized to the declared size");
    let v = t.to_f64();
    assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-4, "{}", v[0]);
    assert!((v[16] - (0.0 - 0.456) / 0.224).abs() < 1e-4);
    // NHWC (guessed from the declared dims), BGR, no normalisation.
    let pp = Preprocess {
        mean: vec![0.0],
        std: vec![1.0],
        scale: 1.0,
        bgr: true,
        ..Preprocess::default()
    };
    let set = SampleSet::open(
        vec![decl("x", &[1, 2, 2, 3])],
        &path_of(&dir.path().join("red.png")),
        1,
        pp,
    )
    .expect("nhwc");
    let v = set.load(0).expect("load").tensors[0].to_f64();
    assert_eq!(&v[..3], &[0.0, 0.0, 255.0], "BGR puts red last");
}

#[test]
fn npy_batches_split_into_samples_and_pb_files_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let batch = random(&[3, 2, 4], 1);
    std::fs::write(dir.path().join("a.npy"), write_npy(&batch)).expect("npy");
    write_pb(&dir.path().join("b.pb"), "x", &random(&[2, 4], 2));
    let set = open(vec![decl("x", &[1, 2, 4])], path_of(dir.path())).expect("set");
    assert_eq!(set.len(), 4, "3 rows of a.npy + b.pb");
    assert_eq!(
        set.label(1),
        format!("{}[1]", dir.path().join("a.npy").display())
    );
    assert_eq!(
        set.load(1).expect("row").tensors[0].to_f64(),
        batch.to_f64()[8..16]
    );
    let pb = set.load(3).expect("pb").tensors.remove(0);
    assert_eq!(pb.shape, vec![1, 2, 4], "batch dim added");
    assert_eq!(pb.to_f64(), random(&[2, 4], 2).to_f64());
    assert!(set.notes.iter().any(|n| n.contains("no batch dim")));
}

#[test]
fn test_data_set_folders_map_tensors_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    for k in 0..2 {
        let d = dir.path().join(format!("test_data_set_{k}"));
        std::fs::create_dir(&d).expect("mkdir");
        // Stored in the opposite order of the model's inputs: the names decide.
        write_pb(&d.join("input_0.pb"), "b", &random(&[1, 2], 10 + k));
        write_pb(&d.join("input_1.pb"), "a", &random(&[1, 3], 20 + k));
    }
    let inputs = vec![decl("a", &[1, 3]), decl("b", &[1, 2])];
    let set = open(inputs.clone(), path_of(dir.path())).expect("set");
    assert_eq!(set.len(), 2);
    let s = set.load(1).expect("load");
    assert_eq!(s.tensors[0], random(&[1, 3], 21));
    assert_eq!(s.tensors[1], random(&[1, 2], 11));
    // One such folder given directly is one sample; several folders are several samples.
    let one = open(inputs.clone(), path_of(&dir.path().join("test_data_set_0"))).expect("one");
    assert_eq!(one.len(), 1);
    let both = DataSource::Paths(vec![
        dir.path().join("test_data_set_0"),
        dir.path().join("test_data_set_1"),
    ]);
    assert_eq!(open(inputs, both).expect("both").len(), 2);
}

#[test]
fn name_equals_dir_and_subfolders_per_input_pair_files() {
    let dir = tempfile::tempdir().expect("tmp");
    for (side, seed) in [("left", 0), ("right", 100)] {
        std::fs::create_dir(dir.path().join(side)).expect("mkdir");
        for k in 0..2 {
            let t = random(&[1, 2], seed + k);
            std::fs::write(
                dir.path().join(side).join(format!("{k}.npy")),
                write_npy(&t),
            )
            .expect("npy");
        }
    }
    let inputs = vec![decl("left", &[1, 2]), decl("right", &[1, 2])];
    let named = DataSource::parse(
        &[
            format!("right={}", dir.path().join("right").display()),
            format!("left={}", dir.path().join("left").display()),
        ],
        0,
    )
    .expect("parse");
    assert!(matches!(named, DataSource::PerInput(_)));
    let set = open(inputs.clone(), named).expect("named");
    assert_eq!(set.len(), 2);
    assert_eq!(set.load(1).expect("s").tensors[1], random(&[1, 2], 101));
    let sub = open(inputs, path_of(dir.path())).expect("subfolders");
    assert_eq!(sub.items, set.items);
}

#[test]
fn random_data_is_seeded_and_deterministic() {
    let inputs = vec![decl("x", &[1, 3, 2]), decl("y", &[1, 2])];
    let a = open(inputs.clone(), DataSource::Random { seed: 4 }).expect("a");
    assert_eq!(a.len(), 100);
    let b = open(inputs.clone(), DataSource::Random { seed: 4 }).expect("b");
    for k in [0, 7] {
        assert_eq!(a.load(k).expect("a").tensors, b.load(k).expect("b").tensors);
    }
    assert_ne!(a.load(0).expect("0").tensors, a.load(1).expect("1").tensors);
    // Sample K of seed S is sample 0 of seed S+K.
    let c = open(inputs, DataSource::Random { seed: 5 }).expect("c");
    assert_eq!(
        a.load(1).expect("a1").tensors,
        c.load(0).expect("c0").tensors
    );
    // Dynamic non-batch dims: calibration asks for a pin, other commands guess.
    let dynamic = vec![InputDecl {
        name: "img".into(),
        dtype: DataType::FLOAT,
        dims: vec![DeclDim::Sym("n".into()), DeclDim::Sym("h".into())],
    }];
    let e = open(dynamic.clone(), DataSource::Random { seed: 0 })
        .expect_err("needs pin")
        .to_string();
    assert!(e.contains("--input-shape img:1xN"), "{e}");
    let g = SampleSet::open_with(
        dynamic,
        &DataSource::Random { seed: 0 },
        1,
        Preprocess::default(),
        DynamicDims::Guess,
    )
    .expect("guess");
    assert_eq!(g.shapes[0][0], vec![1, 64]);
}

#[test]
fn bad_input_is_an_error_naming_the_file_or_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let one = || vec![decl("x", &[1, 2])];
    let err = |inputs: Vec<InputDecl>, src: DataSource| -> String {
        match open(inputs, src) {
            Ok(set) => (0..set.len())
                .find_map(|k| set.load(k).err())
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no error".into()),
            Err(e) => e.to_string(),
        }
    };
    // Missing path, corrupt image, truncated .npy, junk .pb, wrong shape, wrong type.
    let e = err(one(), path_of(&d.join("missing")));
    assert!(e.contains("missing"), "{e}");
    std::fs::write(d.join("broken.png"), b"\x89PNG not really").expect("w");
    let e = err(
        vec![decl("x", &[1, 3, 2, 2])],
        path_of(&d.join("broken.png")),
    );
    assert!(e.contains("broken.png"), "{e}");
    let mut npy = write_npy(&random(&[1, 2], 0));
    npy.truncate(npy.len() - 3);
    std::fs::write(d.join("short.npy"), npy).expect("w");
    let e = err(one(), path_of(&d.join("short.npy")));
    assert!(e.contains("short.npy"), "{e}");
    std::fs::write(d.join("junk.pb"), b"\x0a\xff\xff").expect("w");
    let e = err(one(), path_of(&d.join("junk.pb")));
    assert!(e.contains("junk.pb"), "{e}");
    std::fs::write(d.join("wide.npy"), write_npy(&random(&[1, 5], 0))).expect("w");
    let e = err(one(), path_of(&d.join("wide.npy")));
    assert!(
        e.contains("wide.npy") && e.contains("'x'") && e.contains("dim 1 is 5"),
        "{e}"
    );
    let ints = HostTensor::random(DataType::INT64, &[1, 2], &mut Rng::new(0)).expect("i64");
    std::fs::write(d.join("ints.npy"), write_npy(&ints)).expect("w");
    let e = err(one(), path_of(&d.join("ints.npy")));
    assert!(e.contains("ints.npy") && e.contains("int64"), "{e}");
    // A name that is no input suggests the closest one; a flat folder for two inputs says how.
    let e = err(
        one(),
        DataSource::parse(&[format!("y={}", d.display())], 0).expect("parse"),
    );
    assert!(e.contains("'y'") && e.contains("'x'"), "{e}");
    let e = err(vec![decl("l", &[1]), decl("r", &[1])], path_of(d));
    assert!(e.contains("l/, r/"), "{e}");
    assert!(DataSource::parse(&[], 0).is_err());
}

#[test]
fn load_samples_reads_files_for_an_analysed_model() {
    use crate::model::builder::{D, GraphBuilder};
    let mut g = GraphBuilder::new("tiny");
    let x = g.input("x", &[D::N(1), D::N(2), D::N(4), D::N(4)]);
    let y = g.conv(&x, 2, 4, 3, 1, 1, 1);
    g.output(&y, &[D::N(1), D::N(4), D::N(4), D::N(4)]);
    let a = Analysis::new(g.build(), &crate::model::InputPins::new()).expect("analysis");
    let s = load_samples(&a, &[], 2, 3).expect("random");
    assert_eq!(s.sets.len(), 2);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("x.npy");
    std::fs::write(&p, write_npy(&s.sets[1][0])).expect("w");
    let back = load_samples(&a, &[p.display().to_string()], 5, 0).expect("file");
    assert_eq!(back.sets, vec![s.sets[1].clone()]);
}
