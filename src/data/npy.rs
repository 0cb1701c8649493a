//! The one `.npy` codec, on the `npyz` crate: whole arrays from bytes, headers alone and single
//! rows of a batch from files (so a 10 000-sample file is never read whole), and writing.
//! float16 widens to float32, 16-bit and unsigned 32/64-bit integers widen as in
//! [`super::codec`]; C and Fortran order, either endianness.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use npyz::{Deserialize, NpyFile, Order, TypeChar};

use crate::error::{PareError, Result};
use crate::runtime::{HostData, HostTensor};

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Whether `bytes` start like a `.npy` file.
pub fn is_npy(bytes: &[u8]) -> bool {
    bytes.starts_with(NPY_MAGIC)
}

fn npy_err(origin: &Path, m: impl std::fmt::Display) -> PareError {
    PareError::NotOnnx {
        path: origin.to_path_buf(),
        message: format!("is not a readable .npy file: {m}"),
    }
}

/// The element types pare reads, as (type char, byte width).
#[derive(Clone, Copy)]
enum Kind {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

fn kind_of<R: Read>(f: &NpyFile<R>, origin: &Path) -> Result<Kind> {
    let dtype = f.dtype();
    let bad = || npy_err(origin, format!("unsupported dtype '{}'", dtype.descr()));
    let npyz::DType::Plain(ts) = &dtype else {
        return Err(bad());
    };
    Ok(match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 2) => Kind::F16,
        (TypeChar::Float, 4) => Kind::F32,
        (TypeChar::Float, 8) => Kind::F64,
        (TypeChar::Int, 1) => Kind::I8,
        (TypeChar::Int, 2) => Kind::I16,
        (TypeChar::Int, 4) => Kind::I32,
        (TypeChar::Int, 8) => Kind::I64,
        (TypeChar::Uint, 1) => Kind::U8,
        (TypeChar::Uint, 2) => Kind::U16,
        (TypeChar::Uint, 4) => Kind::U32,
        (TypeChar::Uint, 8) => Kind::U64,
        (TypeChar::Bool, 1) => Kind::Bool,
        _ => return Err(bad()),
    })
}

/// Reads `count` values from element `start` on.
fn take<T: Deserialize, R: Read + Seek>(
    f: NpyFile<R>,
    start: u64,
    count: usize,
) -> std::io::Result<Vec<T>> {
    let mut r = f
        .data::<T>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    r.seek_to(start.min(r.total_len()))?;
    r.take(count)
        .collect::<std::io::Result<Vec<T>>>()
        .and_then(|v| {
            if v.len() == count {
                Ok(v)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            }
        })
}

/// Values `start..start+count` of `f` as host data of the widened type.
fn read_values<R: Read + Seek>(
    f: NpyFile<R>,
    start: u64,
    count: usize,
    origin: &Path,
) -> Result<HostData> {
    let kind = kind_of(&f, origin)?;
    let descr = f.dtype().descr();
    let widen = |v: Vec<i64>| HostData::I64(v);
    let data = match kind {
        Kind::F16 => take::<npyz::half::f16, _>(f, start, count)
            .map(|v| HostData::F32(v.into_iter().map(f32::from).collect())),
        Kind::F32 => take(f, start, count).map(HostData::F32),
        Kind::F64 => take(f, start, count).map(HostData::F64),
        Kind::I8 => take(f, start, count).map(HostData::I8),
        Kind::I16 => take::<i16, _>(f, start, count)
            .map(|v| HostData::I32(v.into_iter().map(i32::from).collect())),
        Kind::I32 => take(f, start, count).map(HostData::I32),
        Kind::I64 => take(f, start, count).map(HostData::I64),
        Kind::U8 => take(f, start, count).map(HostData::U8),
        Kind::U16 => take::<u16, _>(f, start, count)
            .map(|v| HostData::I32(v.into_iter().map(i32::from).collect())),
        Kind::U32 => {
            take::<u32, _>(f, start, count).map(|v| widen(v.into_iter().map(i64::from).collect()))
        }
        Kind::U64 => take::<u64, _>(f, start, count)
            .map(|v| widen(v.into_iter().map(|x| x as i64).collect())),
        Kind::Bool => take(f, start, count).map(HostData::Bool),
    };
    data.map_err(|e| {
        npy_err(
            origin,
            format!("data does not match its header ({count} values of {descr}): {e}"),
        )
    })
}

fn shape_of<R: Read>(f: &NpyFile<R>) -> Vec<usize> {
    f.shape().iter().map(|&d| d as usize).collect()
}

/// Parses a whole `.npy` array held in memory; `origin` names it in errors.
pub fn read_npy(bytes: &[u8], origin: &Path) -> Result<HostTensor> {
    if !is_npy(bytes) {
        return Err(npy_err(origin, "no NUMPY magic"));
    }
    let f = NpyFile::new(std::io::Cursor::new(bytes)).map_err(|e| npy_err(origin, e))?;
    read_whole(f, origin)
}

/// Every value of `f`, in C order.
fn read_whole<R: Read + Seek>(f: NpyFile<R>, origin: &Path) -> Result<HostTensor> {
    let shape = shape_of(&f);
    let fortran = f.order() == Order::Fortran;
    let data = read_values(f, 0, shape.iter().product(), origin)?;
    let h = HostTensor { shape, data };
    Ok(if fortran { fortran_to_c(&h) } else { h })
}

fn open(path: &Path) -> Result<NpyFile<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|e| super::io_err(path, e))?;
    NpyFile::new(BufReader::new(file)).map_err(|e| npy_err(path, e))
}

/// The shape a `.npy` file's header declares (nothing else is read).
pub fn npy_shape(path: &Path) -> Result<Vec<usize>> {
    let f = open(path)?;
    kind_of(&f, path)?;
    Ok(shape_of(&f))
}

/// Reads a `.npy` file, or only row `row` along its first axis.
pub fn read_npy_file(path: &Path, row: Option<usize>) -> Result<HostTensor> {
    let f = open(path)?;
    let Some(row) = row else {
        return read_whole(f, path);
    };
    let mut shape = shape_of(&f);
    if f.order() == Order::Fortran {
        return Err(npy_err(
            path,
            "a Fortran-ordered batch cannot be read row by row; save it with np.ascontiguousarray",
        ));
    }
    let rows = shape.first().copied().unwrap_or(0);
    if row >= rows {
        return Err(npy_err(
            path,
            format!("has {rows} rows, row {row} asked for"),
        ));
    }
    let per_row: usize = shape[1..].iter().product();
    shape[0] = 1;
    let data = read_values(f, (row * per_row) as u64, per_row, path)?;
    Ok(HostTensor { shape, data })
}

/// Reorders column-major data to row-major.
fn fortran_to_c(h: &HostTensor) -> HostTensor {
    let shape = &h.shape;
    let n: usize = shape.iter().product();
    let mut strides = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        strides[k] = strides[k - 1] * shape[k - 1];
    }
    let src: Vec<usize> = (0..n)
        .map(|mut c| {
            let mut off = 0;
            for k in (0..shape.len()).rev() {
                off += (c % shape[k]) * strides[k];
                c /= shape[k];
            }
            off
        })
        .collect();
    fn perm<T: Copy>(v: &[T], src: &[usize]) -> Vec<T> {
        src.iter().map(|&i| v[i]).collect()
    }
    let data = match &h.data {
        HostData::F32(v) => HostData::F32(perm(v, &src)),
        HostData::F64(v) => HostData::F64(perm(v, &src)),
        HostData::I64(v) => HostData::I64(perm(v, &src)),
        HostData::I32(v) => HostData::I32(perm(v, &src)),
        HostData::I8(v) => HostData::I8(perm(v, &src)),
        HostData::U8(v) => HostData::U8(perm(v, &src)),
        HostData::Bool(v) => HostData::Bool(perm(v, &src)),
    };
    HostTensor {
        shape: shape.clone(),
        data,
    }
}

fn encode<T: npyz::AutoSerialize>(shape: &[usize], v: &[T]) -> std::io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut out = Vec::new();
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&dims)
        .writer(&mut out)
        .begin_nd()?;
    for x in v {
        w.push(x)?;
    }
    w.finish()?;
    Ok(out)
}

/// Encodes a `.npy` (little endian, C order) in the data's own type.
pub fn encode_npy(h: &HostTensor) -> std::io::Result<Vec<u8>> {
    match &h.data {
        HostData::F32(v) => encode(&h.shape, v),
        HostData::F64(v) => encode(&h.shape, v),
        HostData::I64(v) => encode(&h.shape, v),
        HostData::I32(v) => encode(&h.shape, v),
        HostData::I8(v) => encode(&h.shape, v),
        HostData::U8(v) => encode(&h.shape, v),
        HostData::Bool(v) => encode(&h.shape, v),
    }
}

/// Encodes a `.npy` in memory. Writing to a `Vec` with the data's own dtype cannot fail, so
/// the empty result of an impossible error is never seen.
pub fn write_npy(h: &HostTensor) -> Vec<u8> {
    encode_npy(h).unwrap_or_default()
}

/// Writes a float32 `.npy` file.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = encode(shape, data).map_err(|e| npy_err(path, e))?;
    crate::model::io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn npy_round_trip_every_type_and_rows() {
        let mut rng = Rng::new(5);
        let dir = tempfile::tempdir().expect("tmp");
        for (k, d) in crate::data::codec::tests::HOST_TYPES
            .into_iter()
            .enumerate()
        {
            let t = HostTensor::random(d, &[3, 2, 2], &mut rng).expect("random");
            let bytes = write_npy(&t);
            assert_eq!(read_npy(&bytes, Path::new("m.npy")).expect("read"), t);
            let p = dir.path().join(format!("{k}.npy"));
            std::fs::write(&p, &bytes).expect("write");
            assert_eq!(npy_shape(&p).expect("shape"), vec![3, 2, 2]);
            let row = read_npy_file(&p, Some(2)).expect("row");
            assert_eq!(row.shape, vec![1, 2, 2]);
            assert_eq!(row.to_f64()[..], t.to_f64()[8..]);
        }
    }

    #[test]
    fn float16_widens_and_bad_files_name_the_file() {
        let halves: Vec<npyz::half::f16> = [1.5f32, -2.0, 65504.0]
            .iter()
            .map(|&x| npyz::half::f16::from_f32(x))
            .collect();
        let bytes = encode(&[3], &halves).expect("f16 npy");
        let h = read_npy(&bytes, Path::new("h.npy")).expect("f16");
        assert_eq!(h, HostTensor::f32(vec![3], vec![1.5, -2.0, 65504.0]));
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("bad.npy");
        std::fs::write(&p, b"\x93NUMPY\x01\x00garbage").expect("w");
        let e = read_npy_file(&p, None).expect_err("bad header").to_string();
        assert!(e.contains("bad.npy"), "{e}");
        // A header claiming more data than the file holds.
        let mut short = write_npy(&HostTensor::f32(vec![4], vec![1.0; 4]));
        short.truncate(short.len() - 4);
        let e = read_npy(&short, Path::new("short.npy"))
            .expect_err("short")
            .to_string();
        assert!(e.contains("short.npy"), "{e}");
        let e = read_npy(b"PK\x03\x04", Path::new("z.npz"))
            .expect_err("magic")
            .to_string();
        assert!(e.contains("z.npz"), "{e}");
    }
}
