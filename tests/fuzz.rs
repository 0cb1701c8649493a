//! A mutation fuzzer on stable Rust (issue 19): corrupted copies of the test fixtures and the
//! committed models run through load → index → shape inference → info → groups → lint →
//! prune dry-run → extract of one node, in process, each under `catch_unwind`, a per-case time
//! limit (a worker thread and a watchdog) and an allocation cap derived from the file size and
//! the declared input sizes ([`alloc_cap`]).
//!
//! `cargo test --release --test fuzz` runs a deterministic slice (fixed seed). The soak:
//! `PARE_FUZZ_MUTANTS=1000000 cargo test --release --test fuzz -- --ignored --exact soak
//! --nocapture` (`PARE_FUZZ_SEED` picks another seed; `PARE_FUZZ_CASE=N` replays one case and
//! prints it, `PARE_FUZZ_DUMP=FILE` writes it; `PARE_FUZZ_CASE_SECS` sets the time limit).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use pare::model::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, StringStringEntryProto,
    TensorProto, TypeValue, ValueInfoProto,
};
use pare::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Allocation cap: the largest single allocation a case may make.

/// Counts the largest allocation a fuzz worker makes and refuses (aborting with the case
/// number) any above a hard limit, so a declared 2^40-element tensor shows up as a failure
/// naming the case instead of an out-of-memory kill.
struct CapAlloc;

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static MAX_ALLOC: Cell<usize> = const { Cell::new(0) };
    static CASE_NO: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Above this a worker's allocation aborts the process (after naming the case).
const HARD_LIMIT: usize = 1 << 31;

/// Heap bytes in use by the whole process, and the most since [`reset_peak`] (the large-model
/// test's memory bound; memory-mapped tensor data is page cache, not heap).
static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = HEAP_NOW.fetch_add(n, Ordering::Relaxed) + n;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

fn reset_peak() -> usize {
    let now = HEAP_NOW.load(Ordering::Relaxed);
    HEAP_PEAK.store(now, Ordering::Relaxed);
    now
}

unsafe impl GlobalAlloc for CapAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        grow(new_size);
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    let _ = IN_CASE.try_with(|c| {
        if c.get() {
            MAX_ALLOC.with(|m| m.set(m.get().max(size)));
            if size > HARD_LIMIT {
                let case = CASE_NO.with(Cell::get);
                // No allocation here: format into a stack buffer.
                let mut buf = [0u8; 96];
                let msg = fmt_case(&mut buf, case, size);
                let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
                // Replaying one case: say where (this allocates, so leave the case first).
                c.set(false);
                if std::env::var_os("PARE_FUZZ_CASE").is_some() {
                    eprintln!("{}", std::backtrace::Backtrace::force_capture());
                }
                std::process::abort();
            }
        }
    });
}

fn fmt_case(buf: &mut [u8; 96], case: u64, size: usize) -> &[u8] {
    let mut n = 0;
    let mut put = |s: &[u8]| {
        for &b in s {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"fuzz case ");
    put(&digits(case));
    put(b" allocates ");
    put(&digits(size as u64));
    put(b" bytes\n");
    &buf[..n]
}

fn digits(mut v: u64) -> [u8; 20] {
    let mut d = [b' '; 20];
    let mut i = 20;
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    d
}

#[global_allocator]
static ALLOC: CapAlloc = CapAlloc;

/// The cap for one mutant: 64 MiB plus 64 times its size, plus [`ACTIVATION_FACTOR`] times the
/// bytes of the random inputs its declared input shapes ask for. Every payload pare decodes is
/// at most a small multiple of the bytes in the file (f16 → f32 doubles it, a Vec<f64> of i8
/// ×8), and analysis state is proportional to the node count. Validation and extraction run the
/// model on random inputs of the declared shapes, and the file says nothing about how large
/// those may be: a 100 KB convolutional model may take a 4K image. So the product bounds them
/// itself (`pare::runtime::MAX_RANDOM_BYTES`, 1 GiB per input, refused with a clear error
/// above) and the cap grants what it lets through: the input, tract's copy of it, and
/// activations a few times wider (a stem conv widening 3 channels to 48).
fn alloc_cap(file_len: usize, input_bytes: usize) -> usize {
    (64 << 20) + 64 * file_len + ACTIVATION_FACTOR * input_bytes
}

/// Largest single activation allowed per byte of declared random input (see [`alloc_cap`]).
const ACTIVATION_FACTOR: usize = 16;

/// [`declared_input_bytes`] of the case the worker is on, for the watchdog ([`case_limit`]).
static CASE_INPUT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the random inputs pare makes for `a` (the declared shapes, dynamic dims guessed as
/// validation guesses them); inputs over the product's bound are refused, not made, and count 0.
fn declared_input_bytes(a: &pare::model::Analysis) -> usize {
    let Ok((specs, _)) = pare::data::spec::input_specs(a) else {
        return 0;
    };
    specs
        .iter()
        .filter_map(|s| pare::runtime::random_bytes(s.dtype, &s.shape))
        .filter(|&b| b <= pare::runtime::MAX_RANDOM_BYTES)
        .fold(0usize, usize::saturating_add)
}

// ---------------------------------------------------------------------------------------------
// Seeds.

fn seeds() -> Vec<(String, Vec<u8>)> {
    let fixtures: Vec<(&str, ModelProto)> = vec![
        ("resnet_like", common::resnet_like()),
        ("stereo_if", common::stereo_if()),
        ("seg_head", common::seg_head()),
        ("aspp", common::aspp()),
        ("psp", common::psp()),
        ("stereo3d", common::stereo3d()),
        ("same_pad_dw_se", common::same_pad_dw_se()),
        ("flatten_view", common::flatten_view()),
        ("custom_op", common::custom_op()),
        ("yolo_c2f", common::yolo_c2f()),
        ("data_if", common::data_if()),
        ("loop_outer", common::loop_outer()),
        ("local_function", common::local_function()),
        ("dynamic_hw", common::dynamic_hw()),
        ("matmul_block", common::matmul_block()),
        ("argmax_head", common::argmax_head()),
    ];
    let mut out: Vec<(String, Vec<u8>)> = fixtures
        .into_iter()
        .map(|(n, m)| (n.to_string(), m.encode_to_vec()))
        .collect();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    for p in files {
        let bytes = std::fs::read(&p).expect("read seed");
        out.push((p.file_name().unwrap().to_string_lossy().into_owned(), bytes));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Byte-level mutations.

fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) -> &'static str {
    if b.is_empty() {
        b.push(rng.next_u64() as u8);
        return "grow";
    }
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = pick(rng, b.len());
                b[i] ^= 1 << rng.below(8);
            }
            "bit flips"
        }
        1 => {
            b.truncate(pick(rng, b.len()));
            "truncate"
        }
        2 => {
            let i = pick(rng, b.len());
            let n = (1 + rng.below(64) as usize).min(b.len() - i);
            let v = [0u8, 0xff, rng.next_u64() as u8][pick(rng, 3)];
            b[i..i + n].fill(v);
            "byte run"
        }
        3 => {
            // Corrupt a varint: a byte with the continuation bit, made huge or endless.
            let starts: Vec<usize> = (0..b.len()).filter(|&i| b[i] & 0x80 != 0).collect();
            let i = if starts.is_empty() {
                pick(rng, b.len())
            } else {
                starts[pick(rng, starts.len())]
            };
            let run = [0xffu8; 10];
            let n = (1 + pick(rng, 10)).min(b.len() - i);
            b[i..i + n].copy_from_slice(&run[..n]);
            "varint"
        }
        4 => {
            // A length-delimited field (wire type 2) gets a new length.
            let tags: Vec<usize> = (0..b.len().saturating_sub(1))
                .filter(|&i| b[i] & 7 == 2 && b[i] >> 3 != 0)
                .collect();
            let i = if tags.is_empty() {
                0
            } else {
                tags[pick(rng, tags.len())] + 1
            };
            if i < b.len() {
                b[i] = match rng.below(4) {
                    0 => 0,
                    1 => 0x7f,
                    2 => b[i].wrapping_add(1 + rng.below(4) as u8),
                    _ => b[i].wrapping_sub(1),
                };
            }
            "length"
        }
        5 => {
            let pat: [u8; 4] = [
                [0x00, 0x00, 0xc0, 0x7f], // NaN
                [0x00, 0x00, 0x80, 0x7f], // +Inf
                [0x00, 0x00, 0x80, 0xff], // -Inf
                [0xff, 0xff, 0x7f, 0x7f], // f32::MAX
            ][pick(rng, 4)];
            for _ in 0..1 + rng.below(4) {
                let i = pick(rng, b.len()) & !3;
                let n = 4.min(b.len() - i);
                b[i..i + n].copy_from_slice(&pat[..n]);
            }
            "NaN pattern"
        }
        6 => {
            // Duplicate a chunk somewhere else.
            let i = pick(rng, b.len());
            let n = (1 + pick(rng, 256)).min(b.len() - i);
            let chunk = b[i..i + n].to_vec();
            let j = pick(rng, b.len());
            b.splice(j..j, chunk);
            "splice"
        }
        _ => {
            let i = pick(rng, b.len());
            let n = (1 + pick(rng, 64)).min(b.len() - i);
            b.drain(i..i + n);
            "delete"
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structural mutations, through the protobuf types.

/// Every graph of the model, nested bodies included, as paths of attribute indices.
fn graph_paths(
    g: &GraphProto,
    path: &mut Vec<(usize, usize, usize)>,
    out: &mut Vec<Vec<(usize, usize, usize)>>,
) {
    out.push(path.clone());
    for (ni, n) in g.node.iter().enumerate() {
        for (ai, a) in n.attribute.iter().enumerate() {
            if let Some(sub) = &a.g {
                path.push((ni, ai, usize::MAX));
                graph_paths(sub, path, out);
                path.pop();
            }
            for (gi, sub) in a.graphs.iter().enumerate() {
                path.push((ni, ai, gi));
                graph_paths(sub, path, out);
                path.pop();
            }
        }
    }
}

fn graph_at<'a>(g: &'a mut GraphProto, path: &[(usize, usize, usize)]) -> &'a mut GraphProto {
    match path.split_first() {
        None => g,
        Some((&(ni, ai, gi), rest)) => {
            let a = &mut g.node[ni].attribute[ai];
            let sub = if gi == usize::MAX {
                a.g.as_deref_mut().expect("path")
            } else {
                &mut a.graphs[gi]
            };
            graph_at(sub, rest)
        }
    }
}

const WILD_INTS: [i64; 10] = [
    0,
    -1,
    1 << 40,
    i64::MAX,
    i64::MIN,
    -(1 << 40),
    1 << 31,
    3,
    65536,
    7,
];

fn wild(rng: &mut Rng) -> i64 {
    WILD_INTS[pick(rng, WILD_INTS.len())]
}

fn all_names(g: &GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().filter_map(|i| i.name.clone()).collect();
    v.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v
}

fn value_dims(
    v: &mut ValueInfoProto,
) -> Option<&mut Vec<pare::model::proto::TensorShapeDimension>> {
    match v.r#type.as_mut()?.value.as_mut()? {
        TypeValue::TensorType(t) => t.shape.as_mut().map(|s| &mut s.dim),
        _ => None,
    }
}

fn mutate_graph(rng: &mut Rng, g: &mut GraphProto) -> &'static str {
    let nn = g.node.len();
    let ni = pick(rng, nn);
    let names = all_names(g);
    match rng.below(16) {
        0 if !g.initializer.is_empty() => {
            let t = pick(rng, g.initializer.len());
            let t = &mut g.initializer[t];
            if t.dims.is_empty() {
                t.dims.push(wild(rng));
            } else {
                let d = pick(rng, t.dims.len());
                t.dims[d] = wild(rng);
            }
            "initializer dim"
        }
        1 => {
            let mut vis: Vec<&mut ValueInfoProto> = g
                .input
                .iter_mut()
                .chain(g.output.iter_mut())
                .chain(g.value_info.iter_mut())
                .collect();
            let k = pick(rng, vis.len());
            if let Some(dims) = vis.get_mut(k).and_then(|v| value_dims(v)) {
                if !dims.is_empty() {
                    let d = pick(rng, dims.len());
                    dims[d].value = Some(match rng.below(3) {
                        0 => Dimension::DimParam(String::new()),
                        _ => Dimension::DimValue(wild(rng)),
                    });
                } else {
                    dims.clear();
                }
            }
            "value dim"
        }
        2 if nn > 0 => {
            let n = &mut g.node[ni];
            if n.attribute.is_empty() {
                n.attribute.push(AttributeProto {
                    name: Some(
                        ["axis", "group", "kernel_shape", "pads", "to"][pick(rng, 5)].into(),
                    ),
                    r#type: Some(2),
                    i: Some(wild(rng)),
                    ..Default::default()
                });
            } else {
                let a = pick(rng, n.attribute.len());
                let a = &mut n.attribute[a];
                match rng.below(4) {
                    0 => a.i = Some(wild(rng)),
                    1 => {
                        if a.ints.is_empty() {
                            a.ints.push(wild(rng));
                        } else {
                            let k = pick(rng, a.ints.len());
                            a.ints[k] = wild(rng);
                        }
                    }
                    2 => {
                        a.f = Some([f32::NAN, f32::INFINITY, -1.0, 0.0][pick(rng, 4)]);
                        a.floats.iter_mut().for_each(|f| *f = f32::NAN);
                    }
                    _ => {
                        // The wrong kind of value for the attribute.
                        a.r#type = Some(1 + rng.below(14) as i32);
                        a.ints.clear();
                    }
                }
            }
            "attribute"
        }
        3 if nn > 0 => {
            let n = &mut g.node[ni];
            if n.input.is_empty() {
                n.input.push("ghost".into());
            } else {
                let k = pick(rng, n.input.len());
                n.input[k] = "ghost".into();
            }
            "dangling input"
        }
        4 if nn > 0 && !names.is_empty() => {
            let dup = names[pick(rng, names.len())].clone();
            let n = &mut g.node[ni];
            if n.output.is_empty() {
                n.output.push(dup);
            } else {
                let k = pick(rng, n.output.len());
                n.output[k] = dup;
            }
            "duplicate output"
        }
        5 if !g.initializer.is_empty() => {
            let t = g.initializer[pick(rng, g.initializer.len())].clone();
            g.initializer.push(t);
            "duplicate initializer"
        }
        6 if nn > 0 => {
            // A self-loop, or an edge back from a later node (a cycle).
            let later = ni + pick(rng, nn - ni);
            let src = g.node[later].output.first().cloned().unwrap_or_default();
            let n = &mut g.node[ni];
            if n.input.is_empty() {
                n.input.push(src);
            } else {
                let k = pick(rng, n.input.len());
                n.input[k] = src;
            }
            "cycle"
        }
        7 => {
            match rng.below(3) {
                0 => g.node.clear(),
                1 => g.output.clear(),
                _ => g.input.clear(),
            }
            "empty graph"
        }
        8 if !g.initializer.is_empty() => {
            let t = pick(rng, g.initializer.len());
            let t = &mut g.initializer[t];
            let raw = t.raw_data.clone().unwrap_or_default();
            let cut = pick(rng, raw.len() + 1);
            t.raw_data = Some(match rng.below(3) {
                0 => raw.slice(..cut),
                1 => {
                    let mut v = raw.to_vec();
                    v.extend_from_slice(&[0x7f; 5]);
                    Bytes::from(v)
                }
                _ => Bytes::new(),
            });
            "initializer bytes"
        }
        9 if !g.initializer.is_empty() => {
            let t = pick(rng, g.initializer.len());
            let t = &mut g.initializer[t];
            match rng.below(3) {
                0 => {
                    t.data_type = Some(8);
                    t.raw_data = None;
                    t.string_data = vec![Bytes::from_static(b"hello"); 2];
                }
                1 => {
                    t.dims = vec![0];
                    t.raw_data = Some(Bytes::new());
                }
                _ => t.data_type = Some([0, 14, 15, 99, -3, 21][pick(rng, 6)]),
            }
            "string/0-size/type"
        }
        10 if !g.initializer.is_empty() => {
            let t = pick(rng, g.initializer.len());
            let t = &mut g.initializer[t];
            let loc = [
                "../../etc/passwd",
                "/etc/hostname",
                "missing.bin",
                "",
                "x/../../y",
            ][pick(rng, 5)];
            t.data_location = Some(1);
            t.external_data = vec![
                StringStringEntryProto::new("location", loc.to_string()),
                StringStringEntryProto::new("offset", wild(rng).to_string()),
                StringStringEntryProto::new("length", wild(rng).to_string()),
            ];
            "external data"
        }
        11 if nn > 0 => {
            const OPS: [&str; 16] = [
                "Conv",
                "Relu",
                "Add",
                "Concat",
                "Reshape",
                "Gather",
                "If",
                "Loop",
                "Slice",
                "Resize",
                "MatMul",
                "Split",
                "Transpose",
                "ConstantOfShape",
                "Expand",
                "NoSuchOp",
            ];
            g.node[ni].op_type = Some(OPS[pick(rng, OPS.len())].into());
            if rng.below(4) == 0 {
                g.node[ni].domain = Some("com.example".into());
            }
            "op type"
        }
        12 if nn > 0 => {
            let n = &mut g.node[ni];
            match rng.below(3) {
                0 => {
                    n.input.pop();
                }
                1 => n.input.push(String::new()),
                _ => {
                    n.output.pop();
                }
            }
            "arity"
        }
        13 if nn > 1 => {
            let j = pick(rng, nn);
            g.node.swap(ni, j);
            "node order"
        }
        14 => {
            // A Constant with a big declared shape and no data, or one ConstantOfShape.
            let name = names.first().cloned().unwrap_or_default();
            g.node.insert(
                0,
                NodeProto {
                    name: Some("fz".into()),
                    op_type: Some("Constant".into()),
                    output: vec![name],
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(4),
                        t: Some(Box::new(TensorProto {
                            dims: vec![1 << 20, 1 << 20],
                            data_type: Some(1),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            "big constant"
        }
        _ if !g.node.is_empty() => {
            g.node.remove(ni);
            "remove node"
        }
        _ => "none",
    }
}

fn mutate_model(rng: &mut Rng, m: &mut ModelProto) -> &'static str {
    if rng.below(12) == 0 {
        match rng.below(3) {
            0 => m
                .opset_import
                .iter_mut()
                .for_each(|o| o.version = Some(wild(rng))),
            1 => m.opset_import.clear(),
            _ => m.ir_version = Some(wild(rng)),
        }
        return "opset";
    }
    let Some(g) = m.graph.as_mut() else {
        return "no graph";
    };
    let mut paths = Vec::new();
    graph_paths(g, &mut Vec::new(), &mut paths);
    // Prefer nested bodies now and then so If/Loop branches get corrupted too.
    let p = if paths.len() > 1 && rng.below(3) == 0 {
        &paths[1 + pick(rng, paths.len() - 1)]
    } else {
        &paths[0]
    };
    mutate_graph(rng, graph_at(g, p))
}

/// One mutant of `seed`: structural edits (decoded seeds only), then maybe byte edits.
fn mutant(
    rng: &mut Rng,
    seed: &[u8],
    decoded: Option<&ModelProto>,
) -> (Vec<u8>, Vec<&'static str>) {
    let mut what = Vec::new();
    let structural = decoded.is_some() && rng.below(2) == 0;
    let mut bytes = if let (true, Some(m)) = (structural, decoded) {
        let mut m = m.clone();
        for _ in 0..1 + rng.below(3) {
            what.push(mutate_model(rng, &mut m));
        }
        m.encode_to_vec()
    } else {
        seed.to_vec()
    };
    if !structural || rng.below(4) == 0 {
        for _ in 0..1 + rng.below(3) {
            what.push(mutate_bytes(rng, &mut bytes));
        }
    }
    (bytes, what)
}

// ---------------------------------------------------------------------------------------------
// The pipeline under test.

/// How far a mutant got and how many bytes of random inputs its declared shapes ask for.
struct Reached {
    depth: usize,
    input_bytes: usize,
}

/// Every stage the issue names, through the library; errors are fine, panics and hangs are
/// not. Mutants with external data go through a file so the loader resolves it.
fn pipeline(bytes: Bytes, dir: &Path) -> Reached {
    let at = |depth| Reached {
        depth,
        input_bytes: 0,
    };
    use pare::model::io;
    let origin = dir.join("mutant.onnx");
    let model = match io::load_model_bytes(bytes.clone(), &origin) {
        Ok(m) => m,
        Err(pare::PareError::NotOnnx { message, .. }) if message.contains("external data") => {
            if io::write_atomic(&origin, &bytes).is_err() {
                return at(0);
            }
            match io::load_model(&origin) {
                Ok(m) => m,
                Err(_) => return at(0),
            }
        }
        Err(_) => return at(0),
    };
    let Ok(a) = pare::model::Analysis::new(model, &Default::default()) else {
        return at(1);
    };
    let input_bytes = declared_input_bytes(&a);
    CASE_INPUT_BYTES.store(input_bytes, Ordering::Relaxed);
    let _ = pare::model::info::model_info(&a);
    let tags = pare::tags::Tags::default();
    let _ = pare::prune::groups(&a, &tags);
    let _ = pare::lint::lint(&a, &Default::default());
    let req = pare::prune::PruneRequest::default();
    let pruned = pare::prune::run(&a, &req, &pare::jobs::NoProgress).is_ok();
    let node = a.graph().node.iter().rev().find_map(|n| n.name.clone());
    if let Some(node) = node {
        let _ = pare::extract::extract_selection(&a, &pare::extract::Selector::Node(node));
    }
    Reached {
        depth: if pruned { 3 } else { 2 },
        input_bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: a worker thread runs cases, the caller watches the clock.

struct Case {
    no: u64,
    bytes: Vec<u8>,
}

enum Outcome {
    Done { max_alloc: usize, reached: Reached },
    Panicked(String),
}

struct Worker {
    tx: mpsc::Sender<Case>,
    rx: mpsc::Receiver<(u64, Outcome)>,
}

fn spawn_worker(dir: PathBuf) -> Worker {
    let (tx, case_rx) = mpsc::channel::<Case>();
    let (out_tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fuzz-worker".into())
        .stack_size(64 << 20)
        .spawn(move || {
            for case in case_rx {
                let bytes = Bytes::from(case.bytes);
                CASE_NO.with(|c| c.set(case.no));
                MAX_ALLOC.with(|m| m.set(0));
                IN_CASE.with(|c| c.set(true));
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| pipeline(bytes, &dir)));
                IN_CASE.with(|c| c.set(false));
                let outcome = match r {
                    Ok(reached) => Outcome::Done {
                        reached,
                        max_alloc: MAX_ALLOC.with(Cell::get),
                    },
                    Err(p) => Outcome::Panicked(
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "non-string panic".into()),
                    ),
                };
                if out_tx.send((case.no, outcome)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn worker");
    Worker { tx, rx }
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    panics: Vec<String>,
    hangs: Vec<String>,
    over_cap: Vec<String>,
    max_alloc: usize,
    /// Mutants that failed to load, loaded but failed analysis, analysed, and pruned.
    depth: [u64; 4],
}

/// Per-case time limit: generous, because the machines running the tests are shared; a
/// mutant normally takes milliseconds.
fn case_limit() -> Duration {
    Duration::from_secs(
        std::env::var("PARE_FUZZ_CASE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}

/// Extra time a case gets per byte of random input its declared shapes ask for: drawing them
/// and running the model on them is work the declaration asks for, like the allocations
/// [`alloc_cap`] grants (a mutated batch of 8192 on a 32x32 model is 100 MB of input and
/// seconds of compute). One second per 4 MiB: the product's bound of 256 MiB per input adds at
/// most about a minute. A hang is a case past `case_limit() + this`.
fn input_time(input_bytes: usize) -> Duration {
    Duration::from_secs((input_bytes >> 22) as u64)
}

/// Waits for the worker's answer: `limit`, extended by [`input_time`] once the case has
/// declared its inputs.
fn await_case(worker: &Worker, limit: Duration) -> Option<(u64, Outcome)> {
    let started = Instant::now();
    loop {
        let deadline = limit + input_time(CASE_INPUT_BYTES.load(Ordering::Relaxed));
        let left = deadline.checked_sub(started.elapsed())?;
        match worker.rx.recv_timeout(left) {
            Ok(r) => return Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = limit + input_time(CASE_INPUT_BYTES.load(Ordering::Relaxed));
                if now <= deadline {
                    return None;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn run_fuzz(seed: u64, mutants: u64, only: Option<u64>) -> Tally {
    let seeds = seeds();
    let decoded: Vec<Option<ModelProto>> = seeds
        .iter()
        .map(|(_, b)| ModelProto::decode(b.as_slice()).ok())
        .collect();
    let dir = common::tempdir();
    let mut worker = spawn_worker(dir.path().to_path_buf());
    // Panics are caught and counted; keep the default hook from printing each one.
    let quiet = std::env::var("PARE_FUZZ_VERBOSE").is_err();
    if quiet {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut t = Tally::default();
    let started = Instant::now();
    let limit = case_limit();
    for no in 0..mutants {
        let mut rng = Rng::new(seed.wrapping_mul(0x1000_0000_01B3) ^ no);
        let s = pick(&mut rng, seeds.len());
        let (bytes, what) = mutant(&mut rng, &seeds[s].1, decoded[s].as_ref());
        if only.is_some_and(|o| o != no) {
            continue;
        }
        let label = format!(
            "case {no} (seed {seed}, {} + {})",
            seeds[s].0,
            what.join(", ")
        );
        if only.is_some() {
            eprintln!("{label}: {} bytes", bytes.len());
            if let Some(to) = std::env::var_os("PARE_FUZZ_DUMP") {
                std::fs::write(&to, &bytes).expect("PARE_FUZZ_DUMP");
            }
        }
        let file_len = bytes.len();
        CASE_INPUT_BYTES.store(0, Ordering::Relaxed);
        worker.tx.send(Case { no, bytes }).expect("worker alive");
        match await_case(&worker, limit) {
            Some((_, Outcome::Done { max_alloc, reached })) => {
                let cap = alloc_cap(file_len, reached.input_bytes);
                t.depth[reached.depth.min(3)] += 1;
                t.max_alloc = t.max_alloc.max(max_alloc);
                if max_alloc > cap {
                    eprintln!("fuzz: OVER CAP {label}: {max_alloc} > {cap}");
                    t.over_cap
                        .push(format!("{label}: allocated {max_alloc} > cap {cap}"));
                }
            }
            Some((_, Outcome::Panicked(msg))) => {
                eprintln!("fuzz: PANIC {label}: {msg}");
                t.panics.push(format!("{label}: {msg}"));
            }
            None => {
                eprintln!("fuzz: HANG {label}");
                let extra = input_time(CASE_INPUT_BYTES.load(Ordering::Relaxed));
                t.hangs.push(format!(
                    "{label}: no result after {limit:?} + {extra:?} for its declared inputs"
                ));
                // The stuck thread cannot be killed; leave it and carry on with a new one.
                worker = spawn_worker(dir.path().to_path_buf());
            }
        }
        t.cases += 1;
        if (no + 1) % 10_000 == 0 {
            eprintln!(
                "fuzz: {} mutants, {} panics, {} hangs, {} over cap, {:.0} s",
                no + 1,
                t.panics.len(),
                t.hangs.len(),
                t.over_cap.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if quiet {
        let _ = std::panic::take_hook();
    }
    eprintln!(
        "fuzz: seed {seed}: {} mutants in {:.1} s: {} panics, {} hangs, {} over the allocation cap \
         (largest single allocation {} bytes); rejected at load {}, at indexing {}, \
         analysed {} (pruned {})",
        t.cases,
        started.elapsed().as_secs_f64(),
        t.panics.len(),
        t.hangs.len(),
        t.over_cap.len(),
        t.max_alloc,
        t.depth[0],
        t.depth[1],
        t.depth[2] + t.depth[3],
        t.depth[3]
    );
    t
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|s| s.parse().ok())
}

fn assert_clean(t: &Tally) {
    let show = |v: &[String]| v.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
    assert!(
        t.panics.is_empty(),
        "{} panics:\n{}",
        t.panics.len(),
        show(&t.panics)
    );
    assert!(
        t.hangs.is_empty(),
        "{} hangs:\n{}",
        t.hangs.len(),
        show(&t.hangs)
    );
    assert!(
        t.over_cap.is_empty(),
        "{} over the cap:\n{}",
        t.over_cap.len(),
        show(&t.over_cap)
    );
}

/// The deterministic slice CI runs: a fixed seed, a few thousand mutants.
#[test]
fn fuzz_slice() {
    let n = env_u64("PARE_FUZZ_SLICE").unwrap_or(3000);
    let t = run_fuzz(19, n, env_u64("PARE_FUZZ_CASE"));
    assert_clean(&t);
}

/// The soak: `PARE_FUZZ_MUTANTS` mutants (default 1,000,000) from `PARE_FUZZ_SEED`.
#[test]
#[ignore = "soak: minutes to hours; see the module docs"]
fn soak() {
    let n = env_u64("PARE_FUZZ_MUTANTS").unwrap_or(1_000_000);
    let seed = env_u64("PARE_FUZZ_SEED").unwrap_or(20261207);
    let t = run_fuzz(seed, n, env_u64("PARE_FUZZ_CASE"));
    assert_clean(&t);
}

/// Mutants the fuzzer once failed on (tests/data/fuzz, one file each, written with
/// `PARE_FUZZ_CASE=N PARE_FUZZ_DUMP=FILE`), replayed on every run: see tests/data/README.md.
#[test]
fn regressions() {
    let dir = common::tempdir();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/data/fuzz")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        let file_len = bytes.len();
        MAX_ALLOC.with(|m| m.set(0));
        IN_CASE.with(|c| c.set(true));
        let r = std::panic::catch_unwind(|| pipeline(Bytes::from(bytes), dir.path()));
        IN_CASE.with(|c| c.set(false));
        let Ok(reached) = r else {
            panic!("{}: panicked", f.display());
        };
        let cap = alloc_cap(file_len, reached.input_bytes);
        let max = MAX_ALLOC.with(Cell::get);
        assert!(max <= cap, "{}: allocated {max} > {cap}", f.display());
    }
}

/// Unmutated seeds pass the whole pipeline within the cap: the harness itself is sound.
#[test]
fn seeds_are_clean() {
    let dir = common::tempdir();
    for (name, bytes) in seeds() {
        IN_CASE.with(|c| c.set(true));
        MAX_ALLOC.with(|m| m.set(0));
        let reached = pipeline(Bytes::from(bytes.clone()), dir.path());
        IN_CASE.with(|c| c.set(false));
        let max = MAX_ALLOC.with(Cell::get);
        assert!(
            max <= alloc_cap(bytes.len(), reached.input_bytes),
            "{name}: {max}"
        );
        assert!(
            reached.depth >= 2,
            "{name}: an unmutated seed fails to analyse"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A model over 2 GB with external data (issue 19, part 5).

/// Channels of each 1x1 conv: 11,180² f32 = 500 MB per weight, five weights = 2.5 GB.
const BIG_C: i64 = 11_180;
const BIG_LAYERS: usize = 5;

/// Writes `big.onnx` + `big.onnx.data` (five 1x1 convs with ReLUs between, weights external),
/// streaming the data so the test itself never holds a weight. Returns the model path and the
/// size of the largest tensor in bytes.
fn write_big_model(dir: &Path) -> (PathBuf, usize) {
    use pare::model::builder::{D, GraphBuilder, attr_ints};
    use std::io::Write;
    let c = BIG_C as usize;
    let data_path = dir.join("big.onnx.data");
    let mut data = std::io::BufWriter::with_capacity(
        8 << 20,
        std::fs::File::create(&data_path).expect("data file"),
    );
    let mut offset = 0u64;
    let mut external = |name: &str, dims: Vec<i64>, n: usize, layer: usize| -> TensorProto {
        // Cheap deterministic values, different per output channel so ranking is meaningful.
        let mut chunk = Vec::with_capacity(c * 4);
        for row in 0..n / c {
            chunk.clear();
            let scale = 1.0 + ((row * 7919 + layer * 104_729) % 997) as f32 / 997.0;
            for k in 0..c {
                let h = (row as u64 * 2_654_435_761 + k as u64 * 40_503) % 65_536;
                chunk.extend_from_slice(&((h as f32 / 65_536.0 - 0.5) * scale).to_le_bytes());
            }
            data.write_all(&chunk).expect("write data");
        }
        let len = (n * 4) as u64;
        let t = TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(1),
            data_location: Some(1),
            external_data: vec![
                StringStringEntryProto::new("location", "big.onnx.data".to_string()),
                StringStringEntryProto::new("offset", offset.to_string()),
                StringStringEntryProto::new("length", len.to_string()),
            ],
            ..Default::default()
        };
        offset += len;
        t
    };
    let mut b = GraphBuilder::new("big");
    b.input("x", &[D::N(1), D::N(BIG_C), D::N(2), D::N(2)]);
    let mut x = "x".to_string();
    let mut inits = Vec::new();
    for l in 0..BIG_LAYERS {
        let w = format!("w{l}");
        inits.push(external(&w, vec![BIG_C, BIG_C, 1, 1], c * c, l));
        let bias = format!("b{l}");
        inits.push(external(&bias, vec![BIG_C], c, l + 100));
        let y = format!("conv{l}_out");
        b.nodes.push(NodeProto {
            name: Some(format!("conv{l}")),
            op_type: Some("Conv".into()),
            input: vec![x.clone(), w, bias],
            output: vec![y.clone()],
            attribute: vec![attr_ints("kernel_shape", &[1, 1])],
            ..Default::default()
        });
        x = y;
        if l + 1 < BIG_LAYERS {
            let r = format!("relu{l}_out");
            b.nodes.push(NodeProto {
                name: Some(format!("relu{l}")),
                op_type: Some("Relu".into()),
                input: vec![x.clone()],
                output: vec![r.clone()],
                ..Default::default()
            });
            x = r;
        }
    }
    b.output(&x, &[D::N(1), D::N(BIG_C), D::N(2), D::N(2)]);
    data.flush().expect("flush");
    let mut m = b.model();
    m.graph.as_mut().expect("graph").initializer = inits;
    let path = dir.join("big.onnx");
    std::fs::write(&path, m.encode_to_vec()).expect("write model");
    (path, c * c * 4)
}

/// info, groups, extract and prune on a 2.5 GB model whose weights are external: the heap
/// stays bounded by a few times the largest tensor rewritten, not the file. Run by the soak
/// command (its name matches `soak`); needs about 5 GB of free disk.
#[test]
#[ignore = "soak: writes a 2.5 GB model"]
fn soak_large_external_model() {
    use pare::model::io::{SaveOptions, load_model, save_model};
    let dir = common::tempdir();
    let t0 = Instant::now();
    let (path, largest) = write_big_model(dir.path());
    let total = std::fs::metadata(dir.path().join("big.onnx.data"))
        .expect("data")
        .len();
    assert!(total > 2_400_000_000, "{total}");
    eprintln!(
        "large: wrote {total} bytes in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let base = reset_peak();
    let a = pare::model::Analysis::new(load_model(&path).expect("load"), &Default::default())
        .expect("analyse");
    eprintln!(
        "large: load + index + shapes: heap peak {} bytes",
        HEAP_PEAK.load(Ordering::Relaxed) - base
    );
    let info = pare::model::info::model_info(&a);
    eprintln!(
        "large: + info: heap peak {} bytes",
        HEAP_PEAK.load(Ordering::Relaxed) - base
    );
    let groups = pare::prune::groups(&a, &pare::tags::Tags::default()).expect("groups");
    let analysis_peak = HEAP_PEAK.load(Ordering::Relaxed) - base;
    eprintln!(
        "large: info + groups: heap peak {analysis_peak} bytes ({} groups); {:?}",
        groups.groups.len(),
        info.params
    );
    reset_peak();
    let (_, piece) =
        pare::extract::extract_selection(&a, &pare::extract::Selector::Node("conv2".into()))
            .expect("extract");
    let piece_path = dir.path().join("piece.onnx");
    save_model(&piece.model, &piece_path, &SaveOptions::default()).expect("save piece");
    let extract_peak = HEAP_PEAK.load(Ordering::Relaxed) - base;
    eprintln!("large: extract conv2: heap peak {extract_peak} bytes");
    drop(piece);
    std::fs::remove_file(&piece_path).ok();
    reset_peak();
    let out = dir.path().join("pruned.onnx");
    let req = pare::prune::PruneRequest {
        output: Some(out.clone()),
        ..Default::default()
    };
    let report = pare::prune::run(&a, &req, &pare::jobs::NoProgress).expect("prune");
    let prune_peak = HEAP_PEAK.load(Ordering::Relaxed) - base;
    eprintln!(
        "large: prune 0.5: heap peak {prune_peak} bytes; params {} -> {}; {:.0} s in all",
        report.params_before,
        report.params_after,
        t0.elapsed().as_secs_f64()
    );
    assert!(report.params_after < report.params_before);
    let pruned = load_model(&out).expect("reload pruned");
    assert!(
        !pruned.external_tensors.is_empty(),
        "pruned weights stay external"
    );
    // Bounds: ranking, extract and prune hold about one tensor at a time (its f32 values and
    // their per-channel rows, or the rewritten copy), never the 2.5 GB file.
    let bound = 3 * largest;
    assert!(analysis_peak < bound, "analysis: {analysis_peak} > {bound}");
    assert!(extract_peak < bound, "extract: {extract_peak} > {bound}");
    assert!(prune_peak < bound, "prune: {prune_peak} > {bound}");
}
