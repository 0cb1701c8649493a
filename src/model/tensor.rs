//! Element types and tensor payload access.
//!
//! ONNX stores tensor data in several places (`raw_data`, typed repeated fields, external
//! files); everything in pare reads it through these helpers so no caller has to care which.

use bytes::Bytes;

use super::proto::TensorProto;
use crate::error::Result;
use crate::runtime::HostData;

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

/// Tensor values converted to f32 (float, double, float16, bfloat16 and integer types).
/// Decoded by the one raw-tensor codec, [`crate::data::codec`].
pub fn to_f32(t: &TensorProto) -> Result<Vec<f32>> {
    let h = crate::data::codec::tensor_to_host(t)?;
    Ok(match h.data {
        HostData::F32(v) => v,
        HostData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        HostData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
        HostData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
        HostData::I8(v) => v.into_iter().map(f32::from).collect(),
        HostData::U8(v) => v.into_iter().map(f32::from).collect(),
        HostData::Bool(v) => v.into_iter().map(|x| x as u8 as f32).collect(),
    })
}

/// Tensor values converted to i64 (integer and bool types; floats are truncated).
pub fn to_i64(t: &TensorProto) -> Result<Vec<i64>> {
    let h = crate::data::codec::tensor_to_host(t)?;
    Ok(match h.data {
        HostData::I64(v) => v,
        HostData::F32(v) => v.into_iter().map(|x| x as i64).collect(),
        HostData::F64(v) => v.into_iter().map(|x| x as i64).collect(),
        HostData::I32(v) => v.into_iter().map(i64::from).collect(),
        HostData::I8(v) => v.into_iter().map(i64::from).collect(),
        HostData::U8(v) => v.into_iter().map(i64::from).collect(),
        HostData::Bool(v) => v.into_iter().map(i64::from).collect(),
    })
}

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

/// IEEE half to f32, exact for all values including subnormals, inf and NaN.
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
