//! The one raw-tensor codec: ONNX `TensorProto` (raw little-endian bytes or the typed repeated
//! fields) to typed host buffers and back, for every element type pare handles. The widening
//! accessors of `model::tensor` (`to_f32`, `to_i64`) and every `.pb` reader decode through
//! here, so a dtype supported in one place is supported in all of them.

use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::error::{PareError, Result};
use crate::model::proto::TensorProto;
use crate::model::tensor::{DataType, f16_to_f32, f32_to_f16};
use crate::runtime::{HostData, HostTensor};

/// A data error naming the tensor.
pub(crate) fn tensor_err(name: &str, message: impl Into<String>) -> PareError {
    PareError::Tensor {
        tensor: name.to_string(),
        message: message.into(),
    }
}

/// Little-endian words of width `N` decoded by `f`.
fn words<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| f(c.try_into().unwrap_or([0; N])))
        .collect()
}

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Decodes `raw_data` of type `dt`.
fn decode_raw(dt: DataType, raw: &[u8]) -> Option<HostData> {
    Some(match dt {
        DataType::FLOAT => HostData::F32(words(raw, f32::from_le_bytes)),
        DataType::FLOAT16 => HostData::F32(words(raw, |w| f16_to_f32(u16::from_le_bytes(w)))),
        DataType::BFLOAT16 => HostData::F32(words(raw, |w| bf16_to_f32(u16::from_le_bytes(w)))),
        DataType::DOUBLE => HostData::F64(words(raw, f64::from_le_bytes)),
        DataType::INT64 => HostData::I64(words(raw, i64::from_le_bytes)),
        DataType::UINT64 => HostData::I64(words(raw, |w| u64::from_le_bytes(w) as i64)),
        DataType::UINT32 => HostData::I64(words(raw, |w| u32::from_le_bytes(w) as i64)),
        DataType::INT16 => HostData::I64(words(raw, |w| i16::from_le_bytes(w) as i64)),
        DataType::UINT16 => HostData::I64(words(raw, |w| u16::from_le_bytes(w) as i64)),
        DataType::INT32 => HostData::I32(words(raw, i32::from_le_bytes)),
        DataType::INT8 => HostData::I8(raw.iter().map(|&b| b as i8).collect()),
        DataType::UINT8 => HostData::U8(raw.to_vec()),
        DataType::BOOL => HostData::Bool(raw.iter().map(|&b| b != 0).collect()),
        _ => return None,
    })
}

/// Decodes the typed repeated fields of type `dt`.
fn decode_typed(dt: DataType, t: &TensorProto) -> Option<HostData> {
    let i32s = &t.int32_data;
    Some(match dt {
        DataType::FLOAT => HostData::F32(t.float_data.clone()),
        DataType::FLOAT16 => HostData::F32(i32s.iter().map(|&v| f16_to_f32(v as u16)).collect()),
        DataType::BFLOAT16 => HostData::F32(i32s.iter().map(|&v| bf16_to_f32(v as u16)).collect()),
        DataType::DOUBLE => HostData::F64(t.double_data.clone()),
        DataType::INT64 => HostData::I64(t.int64_data.clone()),
        DataType::UINT64 | DataType::UINT32 => {
            HostData::I64(t.uint64_data.iter().map(|&v| v as i64).collect())
        }
        DataType::INT16 | DataType::UINT16 => {
            HostData::I64(i32s.iter().map(|&v| v as i64).collect())
        }
        DataType::INT32 => HostData::I32(i32s.clone()),
        DataType::INT8 => HostData::I8(i32s.iter().map(|&v| v as i8).collect()),
        DataType::UINT8 => HostData::U8(i32s.iter().map(|&v| v as u8).collect()),
        DataType::BOOL => HostData::Bool(i32s.iter().map(|&v| v != 0).collect()),
        _ => return None,
    })
}

/// Reads an ONNX tensor into host memory. float16/bfloat16 widen to float32; 16-bit and
/// unsigned 32/64-bit integers widen to int64. Errors name the tensor.
pub fn tensor_to_host(t: &TensorProto) -> Result<HostTensor> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let dt = DataType(t.data_type());
    let want = t.numel() as usize;
    let data = match &t.raw_data {
        Some(raw) => {
            let width = (dt.bits() / 8) as usize;
            if width > 0 && Some(raw.len()) != want.checked_mul(width) {
                return Err(tensor_err(
                    t.name(),
                    format!(
                        "holds {} bytes of data, but its dims {:?} of type {dt} need {}",
                        raw.len(),
                        t.dims,
                        want.saturating_mul(width)
                    ),
                ));
            }
            decode_raw(dt, raw)
        }
        None => decode_typed(dt, t),
    }
    .ok_or_else(|| {
        tensor_err(
            t.name(),
            format!("tensors of type {dt} are not supported as data"),
        )
    })?;
    let h = HostTensor { shape, data };
    if h.len() != want {
        return Err(tensor_err(
            t.name(),
            format!(
                "holds {} values, its dims {:?} need {want}",
                h.len(),
                t.dims
            ),
        ));
    }
    Ok(h)
}

/// Writes host data as an ONNX tensor of type `dtype` (default: the data's own type),
/// converting values where the types differ (e.g. float16 tensors tract returned as float32).
pub fn host_to_tensor(name: &str, h: &HostTensor, dtype: Option<DataType>) -> Result<TensorProto> {
    let dt = dtype.unwrap_or_else(|| h.dtype());
    let mut raw: Vec<u8> = Vec::with_capacity(h.len() * (dt.bits() as usize / 8).max(1));
    macro_rules! put {
        ($iter:expr) => {
            for v in $iter {
                raw.extend_from_slice(&v.to_le_bytes());
            }
        };
    }
    match (&h.data, dt) {
        (HostData::F32(v), DataType::FLOAT) => put!(v.iter()),
        (HostData::F64(v), DataType::DOUBLE) => put!(v.iter()),
        (HostData::I64(v), DataType::INT64) => put!(v.iter()),
        (HostData::I32(v), DataType::INT32) => put!(v.iter()),
        (HostData::I8(v), DataType::INT8) => put!(v.iter()),
        (HostData::U8(v), DataType::UINT8) => put!(v.iter()),
        (HostData::Bool(v), DataType::BOOL) => raw.extend(v.iter().map(|&b| b as u8)),
        (HostData::I64(v), DataType::UINT64) => put!(v.iter().map(|&x| x as u64)),
        (_, DataType::FLOAT) => put!(h.to_f64().iter().map(|&x| x as f32)),
        (_, DataType::DOUBLE) => put!(h.to_f64().iter()),
        (_, DataType::FLOAT16) => put!(h.to_f64().iter().map(|&x| f32_to_f16(x as f32))),
        (_, DataType::BFLOAT16) => put!(
            h.to_f64()
                .iter()
                .map(|&x| ((x as f32).to_bits() >> 16) as u16)
        ),
        (_, DataType::INT64) => put!(h.to_f64().iter().map(|&x| x as i64)),
        (_, DataType::INT32) => put!(h.to_f64().iter().map(|&x| x as i32)),
        (_, DataType::INT16) => put!(h.to_f64().iter().map(|&x| x as i16)),
        (_, DataType::INT8) => put!(h.to_f64().iter().map(|&x| x as i8)),
        (_, DataType::UINT64) => put!(h.to_f64().iter().map(|&x| x as u64)),
        (_, DataType::UINT32) => put!(h.to_f64().iter().map(|&x| x as u32)),
        (_, DataType::UINT16) => put!(h.to_f64().iter().map(|&x| x as u16)),
        (_, DataType::UINT8) => put!(h.to_f64().iter().map(|&x| x as u8)),
        (_, DataType::BOOL) => raw.extend(h.to_f64().iter().map(|&x| (x != 0.0) as u8)),
        (_, other) => {
            return Err(tensor_err(
                name,
                format!("cannot write data of type {other}"),
            ));
        }
    }
    Ok(TensorProto {
        dims: h.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dt.0),
        name: Some(name.to_string()),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}

/// Raw little-endian bytes of host data in its own type (what `.npy` and `raw_data` hold).
pub fn host_bytes(h: &HostTensor) -> Vec<u8> {
    host_to_tensor("", h, None)
        .ok()
        .and_then(|t| t.raw_data)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// Converts host data to another element type: float<->float and int<->int (bool included).
/// Returns `None` for float<->int conversions, which would change values.
pub fn cast_host(h: &HostTensor, to: DataType) -> Option<HostTensor> {
    if h.dtype() == to {
        return Some(h.clone());
    }
    let from_float = matches!(h.data, HostData::F32(_) | HostData::F64(_));
    let v = h.to_f64();
    let data = match to {
        DataType::FLOAT if from_float => HostData::F32(v.iter().map(|&x| x as f32).collect()),
        DataType::DOUBLE if from_float => HostData::F64(v),
        _ if from_float => return None,
        DataType::INT64 => HostData::I64(match &h.data {
            HostData::I64(x) => x.clone(),
            _ => v.iter().map(|&x| x as i64).collect(),
        }),
        DataType::INT32 => HostData::I32(v.iter().map(|&x| x as i32).collect()),
        DataType::INT8 => HostData::I8(v.iter().map(|&x| x as i8).collect()),
        DataType::UINT8 => HostData::U8(v.iter().map(|&x| x as u8).collect()),
        DataType::BOOL => HostData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        _ => return None,
    };
    Some(HostTensor {
        shape: h.shape.clone(),
        data,
    })
}

/// Reads an ONNX `TensorProto` file (`.pb`); errors name the file.
pub fn read_pb(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).map_err(|e| super::io_err(path, e))?;
    decode_pb(bytes, path)
}

fn decode_pb(bytes: Vec<u8>, path: &Path) -> Result<TensorProto> {
    let t = TensorProto::decode(Bytes::from(bytes)).map_err(|e| PareError::NotOnnx {
        path: path.to_path_buf(),
        message: format!("is neither a .npy file nor an ONNX TensorProto: {e}"),
    })?;
    if t.data_type.is_none() {
        return Err(PareError::NotOnnx {
            path: path.to_path_buf(),
            message: "decodes as protobuf but is not an ONNX TensorProto (no data_type)".into(),
        });
    }
    Ok(t)
}

/// Reads one tensor file: `.npy`, or an ONNX TensorProto (`.pb`). Returns the name stored in
/// a TensorProto, if any. Errors name the file.
pub fn read_tensor_file(path: &Path) -> Result<(Option<String>, HostTensor)> {
    let bytes = std::fs::read(path).map_err(|e| super::io_err(path, e))?;
    if super::npy::is_npy(&bytes) {
        return Ok((None, super::npy::read_npy(&bytes, path)?));
    }
    let t = decode_pb(bytes, path)?;
    let name = Some(t.name().to_string()).filter(|n| !n.is_empty());
    let h = tensor_to_host(&t).map_err(|e| PareError::NotOnnx {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((name, h))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every element type host data has.
    pub(crate) const HOST_TYPES: [DataType; 7] = [
        DataType::FLOAT,
        DataType::DOUBLE,
        DataType::INT64,
        DataType::INT32,
        DataType::INT8,
        DataType::UINT8,
        DataType::BOOL,
    ];

    fn all_types() -> Vec<HostTensor> {
        let mut rng = Rng::new(3);
        HOST_TYPES
            .iter()
            .map(|&d| HostTensor::random(d, &[2, 3], &mut rng).expect("random"))
            .collect()
    }

    #[test]
    fn pb_round_trip_every_type_through_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        for (k, t) in all_types().iter().enumerate() {
            let p = dir.path().join(format!("t{k}.pb"));
            let pb = host_to_tensor("x", t, None).expect("encode");
            std::fs::write(&p, pb.encode_to_vec()).expect("write");
            let (name, back) = read_tensor_file(&p).expect("read");
            assert_eq!(name.as_deref(), Some("x"));
            assert_eq!(&back, t);
        }
    }

    #[test]
    fn typed_fields_and_narrow_types_decode() {
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::INT16.0),
            int32_data: vec![-2, 0, 7],
            ..Default::default()
        };
        assert_eq!(
            tensor_to_host(&t).expect("i16").data,
            HostData::I64(vec![-2, 0, 7])
        );
        let f16 = host_to_tensor(
            "h",
            &HostTensor::f32(vec![2], vec![1.5, -3.0]),
            Some(DataType::FLOAT16),
        )
        .expect("f16");
        assert_eq!(
            tensor_to_host(&f16).expect("back").to_f64(),
            vec![1.5, -3.0]
        );
    }

    #[test]
    fn bad_pb_and_short_payload_are_errors_naming_file_or_tensor() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("junk.pb");
        std::fs::write(&p, b"\xff\xff\xff not protobuf").expect("write");
        let e = read_tensor_file(&p).expect_err("junk").to_string();
        assert!(e.contains("junk.pb"), "{e}");
        let t = TensorProto {
            name: Some("w".into()),
            dims: vec![4],
            data_type: Some(DataType::FLOAT.0),
            raw_data: Some(Bytes::from_static(&[0, 0, 0, 0])),
            ..Default::default()
        };
        let e = tensor_to_host(&t).expect_err("short").to_string();
        assert!(e.contains("'w'") && e.contains("16"), "{e}");
        let missing = read_tensor_file(&dir.path().join("nope.pb")).expect_err("missing");
        assert!(missing.to_string().contains("nope.pb"));
    }
}
