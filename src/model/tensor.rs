//! Element types and tensor payload access.
//!
//! ONNX stores tensor data in several places (`raw_data`, typed repeated fields, external
//! files); everything in pare reads it through these helpers so no caller has to care which.

use bytes::Bytes;

use super::proto::TensorProto;
use crate::error::{PareError, Result};

/// ONNX `TensorProto.DataType`, as the integer codes of onnx.proto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataType(pub i32);

impl DataType {
    pub const UNDEFINED: DataType = DataType(0);
    pub const FLOAT: DataType = DataType(1);
    pub const UINT8: DataType = DataType(2);
    pub const INT8: DataType = DataType(3);
    pub const UINT16: DataType = DataType(4);
    pub const INT16: DataType = DataType(5);
    pub const INT32: DataType = DataType(6);
    pub const INT64: DataType = DataType(7);
    pub const STRING: DataType = DataType(8);
    pub const BOOL: DataType = DataType(9);
    pub const FLOAT16: DataType = DataType(10);
    pub const DOUBLE: DataType = DataType(11);
    pub const UINT32: DataType = DataType(12);
    pub const UINT64: DataType = DataType(13);
    pub const COMPLEX64: DataType = DataType(14);
    pub const COMPLEX128: DataType = DataType(15);
    pub const BFLOAT16: DataType = DataType(16);

    /// Lower-case name as numpy/onnxruntime print it (`float32`, `int64`, …).
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "float32",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "float64",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            17 => "float8e4m3fn",
            18 => "float8e4m3fnuz",
            19 => "float8e5m2",
            20 => "float8e5m2fnuz",
            21 => "uint4",
            22 => "int4",
            23 => "float4e2m1",
            24 => "float8e8m0",
            25 => "uint2",
            26 => "int2",
            _ => "undefined",
        }
    }

    /// Size of one element in bits (0 for strings and unknown types).
    pub fn bits(self) -> u64 {
        match self.0 {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 | 24 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21..=23 => 4,
            25 | 26 => 2,
            _ => 0,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16 | 17..=20 | 23 | 24)
    }

    pub fn is_integer(self) -> bool {
        matches!(self.0, 2..=7 | 12 | 13 | 21 | 22 | 25 | 26)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Raw little-endian payload of a tensor that stores it in `raw_data` (after external data was
/// resolved at load time). `None` when the tensor uses the typed repeated fields.
pub fn raw_bytes(t: &TensorProto) -> Option<&Bytes> {
    t.raw_data.as_ref()
}

fn check_len(t: &TensorProto, got: usize, width: usize) -> Result<usize> {
    let want = t.numel() as usize;
    if got != want * width {
        return Err(PareError::Tensor {
            tensor: t.name().to_string(),
            message: format!(
                "holds {got} bytes of data, but its dims {:?} of type {} need {}",
                t.dims,
                DataType(t.data_type()),
                want * width
            ),
        });
    }
    Ok(want)
}

/// Tensor values converted to f32 (float, double, float16, bfloat16 and integer types).
pub fn to_f32(t: &TensorProto) -> Result<Vec<f32>> {
    let dt = DataType(t.data_type());
    if let Some(raw) = &t.raw_data {
        let w = (dt.bits() / 8) as usize;
        if w == 0 {
            return Err(unsupported(t, "f32"));
        }
        check_len(t, raw.len(), w)?;
        let out = match dt {
            DataType::FLOAT => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DataType::DOUBLE => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DataType::FLOAT16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DataType::BFLOAT16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            _ => to_i64(t)?.into_iter().map(|v| v as f32).collect(),
        };
        return Ok(out);
    }
    match dt {
        DataType::FLOAT => Ok(t.float_data.clone()),
        DataType::DOUBLE => Ok(t.double_data.iter().map(|&v| v as f32).collect()),
        DataType::FLOAT16 => Ok(t.int32_data.iter().map(|&v| f16_to_f32(v as u16)).collect()),
        DataType::BFLOAT16 => Ok(t
            .int32_data
            .iter()
            .map(|&v| f32::from_bits((v as u32) << 16))
            .collect()),
        _ => Ok(to_i64(t)?.into_iter().map(|v| v as f32).collect()),
    }
}

/// Tensor values converted to i64 (integer and bool types; floats are truncated).
pub fn to_i64(t: &TensorProto) -> Result<Vec<i64>> {
    let dt = DataType(t.data_type());
    if let Some(raw) = &t.raw_data {
        let w = (dt.bits() / 8) as usize;
        if w == 0 {
            return Err(unsupported(t, "i64"));
        }
        check_len(t, raw.len(), w)?;
        let out = match dt {
            DataType::INT64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DataType::UINT64 => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64)
                .collect(),
            DataType::INT32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DataType::UINT32 => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DataType::INT16 => raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::UINT16 => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::INT8 => raw.iter().map(|&b| b as i8 as i64).collect(),
            DataType::UINT8 | DataType::BOOL => raw.iter().map(|&b| b as i64).collect(),
            DataType::FLOAT | DataType::DOUBLE | DataType::FLOAT16 | DataType::BFLOAT16 => {
                to_f32(t)?.into_iter().map(|v| v as i64).collect()
            }
            _ => return Err(unsupported(t, "i64")),
        };
        return Ok(out);
    }
    match dt {
        DataType::INT64 => Ok(t.int64_data.clone()),
        DataType::UINT64 | DataType::UINT32 => {
            Ok(t.uint64_data.iter().map(|&v| v as i64).collect())
        }
        DataType::INT32
        | DataType::INT16
        | DataType::INT8
        | DataType::UINT16
        | DataType::UINT8
        | DataType::BOOL => Ok(t.int32_data.iter().map(|&v| v as i64).collect()),
        DataType::FLOAT | DataType::DOUBLE | DataType::FLOAT16 | DataType::BFLOAT16 => {
            Ok(to_f32(t)?.into_iter().map(|v| v as i64).collect())
        }
        _ => Err(unsupported(t, "i64")),
    }
}

fn unsupported(t: &TensorProto, what: &str) -> PareError {
    PareError::Tensor {
        tensor: t.name().to_string(),
        message: format!(
            "cannot read data of type {} as {what}",
            DataType(t.data_type())
        ),
    }
}

/// IEEE half to f32, exact for all values including subnormals, inf and NaN.
/// float32 to IEEE half, round to nearest even (the inverse of [`f16_to_f32`] on its range).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut v = m >> shift;
        if rest > half || (rest == half && v & 1 == 1) {
            v += 1;
        }
        return sign | v as u16;
    }
    let mut v = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && v & 1 == 1) {
        v += 1;
    }
    sign | v as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// A float32 tensor with `raw_data`.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut raw = Vec::with_capacity(values.len() * 4);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::FLOAT.0),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// An int64 tensor with `raw_data`.
pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut raw = Vec::with_capacity(values.len() * 8);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::INT64.0),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// Payload size of a tensor in bytes as stored (raw or typed fields).
pub fn payload_len(t: &TensorProto) -> usize {
    if let Some(r) = &t.raw_data {
        return r.len();
    }
    t.float_data.len() * 4
        + t.int32_data.len() * 4
        + t.int64_data.len() * 8
        + t.double_data.len() * 8
        + t.uint64_data.len() * 8
        + t.string_data.iter().map(|s| s.len()).sum::<usize>()
}
