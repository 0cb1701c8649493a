//! A minimal, safe pickle reader for PyTorch `state_dict` checkpoints.
//!
//! It builds a value tree and never executes anything: `GLOBAL` becomes a name, `REDUCE` a
//! recorded call, a persistent id a marker. That is all a `state_dict` needs (dicts of
//! `_rebuild_tensor_v2(storage, offset, size, stride, ...)` calls), and it means a malicious
//! checkpoint cannot run code — unlike `torch.load(weights_only=False)`.

use std::collections::HashMap;

/// A decoded pickle value. Calls and globals stay symbolic.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion-ordered (state dicts are `OrderedDict`s and order matters for matching).
    Dict(Vec<(Value, Value)>),
    /// `module.name`, as written by `GLOBAL`/`STACK_GLOBAL`.
    Global(String),
    /// `callable(*args)` from `REDUCE`/`NEWOBJ`, with any `BUILD` state attached and the
    /// items `SETITEMS`/`APPENDS` added to it (how `OrderedDict`s arrive).
    Call {
        func: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
        items: Vec<(Value, Value)>,
    },
    /// A persistent id (`BINPERSID`): torch's storage references.
    PersId(Box<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    /// Items of a tuple or list.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("unexpected end of pickle data at byte {0}")]
    Eof(usize),
    #[error("unsupported pickle opcode 0x{op:02x} at byte {at}")]
    Opcode { op: u8, at: usize },
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed { at: usize, what: String },
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Decodes one pickle starting at `data[0]`; returns the value and the bytes consumed (the
/// legacy torch format stores several pickles back to back).
pub fn load(data: &[u8]) -> Result<(Value, usize), PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m.byte()?;
        if op == b'.' {
            let v = m.pop(at)?;
            return Ok((v, m.pos));
        }
        m.step(op, at)?;
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Eof(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        let rest = &self.data[start..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Eof(start))?;
        self.pos = start + n + 1;
        Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
    }
    fn utf8(&mut self, n: usize) -> Result<Value, PickleError> {
        let at = self.pos;
        let b = self.take(n)?.to_vec();
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| PickleError::Malformed {
                at,
                what: "invalid UTF-8 string".into(),
            })
    }
    fn pop(&mut self, at: usize) -> Result<Value, PickleError> {
        self.stack.pop().ok_or(PickleError::Malformed {
            at,
            what: "stack underflow".into(),
        })
    }
    fn top(&mut self, at: usize) -> Result<&mut Value, PickleError> {
        self.stack.last_mut().ok_or(PickleError::Malformed {
            at,
            what: "stack underflow".into(),
        })
    }
    /// Pops everything above the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, PickleError> {
        let m = self.marks.pop().ok_or(PickleError::Malformed {
            at,
            what: "no MARK on the stack".into(),
        })?;
        if m > self.stack.len() {
            return Err(PickleError::Malformed {
                at,
                what: "MARK above the stack".into(),
            });
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&self, k: u32, at: usize) -> Result<Value, PickleError> {
        self.memo.get(&k).cloned().ok_or(PickleError::Malformed {
            at,
            what: format!("memo key {k} not set"),
        })
    }
    fn memo_put(&mut self, k: u32, at: usize) -> Result<(), PickleError> {
        let v = self.top(at)?.clone();
        self.memo.insert(k, v);
        Ok(())
    }

    fn step(&mut self, op: u8, at: usize) -> Result<(), PickleError> {
        match op {
            0x80 => {
                self.byte()?; // PROTO
            }
            0x95 => {
                self.take(8)?; // FRAME
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let v = self.u32()? as i32;
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'K' => {
                let v = self.byte()?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = self.u16()?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            0x8a => {
                let n = self.byte()? as usize;
                let v = self.long(n, at)?;
                self.stack.push(v);
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.stack.push(Value::Float(f64::from_be_bytes(a)));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let v = self.utf8(n)?;
                self.stack.push(v);
            }
            0x8c => {
                let n = self.byte()? as usize;
                let v = self.utf8(n)?;
                self.stack.push(v);
            }
            b'C' => {
                let n = self.byte()? as usize;
                let v = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(v));
            }
            b'B' => {
                let n = self.u32()? as usize;
                let v = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(v));
            }
            _ => self.step_struct(op, at)?,
        }
        Ok(())
    }

    fn long(&mut self, n: usize, at: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?;
        if n > 8 {
            // Only the magic number of the legacy format is this long; keep its low bits.
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            return Ok(Value::Int(i64::from_le_bytes(a)));
        }
        if n == 0 {
            return Ok(Value::Int(0));
        }
        let neg = b[n - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..n].copy_from_slice(b);
        let _ = at;
        Ok(Value::Int(i64::from_le_bytes(a)))
    }

    fn step_struct(&mut self, op: u8, at: usize) -> Result<(), PickleError> {
        match op {
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let v = self.pop_mark(at)?;
                self.stack.push(Value::Tuple(v));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n {
                    return Err(PickleError::Malformed {
                        at,
                        what: "stack underflow".into(),
                    });
                }
                let v = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(v));
            }
            b'a' => {
                let v = self.pop(at)?;
                self.extend(vec![v], at)?;
            }
            b'e' => {
                let v = self.pop_mark(at)?;
                self.extend(v, at)?;
            }
            b's' => {
                let v = self.pop(at)?;
                let k = self.pop(at)?;
                self.set_items(vec![k, v], at)?;
            }
            b'u' => {
                let v = self.pop_mark(at)?;
                self.set_items(v, at)?;
            }
            b'q' => {
                let k = u32::from(self.byte()?);
                self.memo_put(k, at)?;
            }
            b'r' => {
                let k = self.u32()?;
                self.memo_put(k, at)?;
            }
            0x94 => {
                let k = self.memo.len() as u32;
                self.memo_put(k, at)?;
            }
            b'h' => {
                let k = u32::from(self.byte()?);
                let v = self.memo_get(k, at)?;
                self.stack.push(v);
            }
            b'j' => {
                let k = self.u32()?;
                let v = self.memo_get(k, at)?;
                self.stack.push(v);
            }
            _ => self.step_call(op, at)?,
        }
        Ok(())
    }

    fn step_call(&mut self, op: u8, at: usize) -> Result<(), PickleError> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = self.pop(at)?;
                let module = self.pop(at)?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => self.stack.push(Value::Global(format!("{m}.{n}"))),
                    _ => {
                        return Err(PickleError::Malformed {
                            at,
                            what: "STACK_GLOBAL needs two strings".into(),
                        });
                    }
                }
            }
            b'R' | 0x81 => {
                let args = self.pop(at)?;
                let func = self.pop(at)?;
                self.stack.push(Value::Call {
                    func: Box::new(func),
                    args: Box::new(args),
                    state: None,
                    items: Vec::new(),
                });
            }
            b'b' => {
                let st = self.pop(at)?;
                if let Value::Call { state, .. } = self.top(at)? {
                    *state = Some(Box::new(st));
                }
            }
            b'Q' => {
                let pid = self.pop(at)?;
                self.stack.push(Value::PersId(Box::new(pid)));
            }
            _ => return Err(PickleError::Opcode { op, at }),
        }
        Ok(())
    }

    fn extend(&mut self, items: Vec<Value>, at: usize) -> Result<(), PickleError> {
        match self.top(at)? {
            Value::List(l) => l.extend(items),
            // `list` subclasses rebuilt through REDUCE: keep the items with the call.
            Value::Call { items: own, .. } => {
                own.extend(items.into_iter().map(|v| (Value::None, v)));
            }
            _ => {
                return Err(PickleError::Malformed {
                    at,
                    what: "APPEND to a non-list".into(),
                });
            }
        }
        Ok(())
    }

    fn set_items(&mut self, kv: Vec<Value>, at: usize) -> Result<(), PickleError> {
        if !kv.len().is_multiple_of(2) {
            return Err(PickleError::Malformed {
                at,
                what: "SETITEMS with an odd number of values".into(),
            });
        }
        let mut it = kv.into_iter();
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top(at)? {
            Value::Dict(d) => d.extend(pairs),
            // `OrderedDict()` arrives as a REDUCE; its items are set on it afterwards.
            Value::Call { items, .. } => items.extend(pairs),
            _ => {
                return Err(PickleError::Malformed {
                    at,
                    what: "SETITEM on a non-dict".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_protocol_2_dict_with_global_and_persid() {
        // {'a': 1, 'b': (torch.FloatStorage persistent id)} hand-assembled.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'K', 1,
        ];
        p.extend_from_slice(b"X\x01\x00\x00\x00b(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
        p.extend_from_slice(b"X\x01\x00\x00\x000tQu.");
        let (v, n) = load(&p).unwrap();
        assert_eq!(n, p.len());
        let Value::Dict(d) = v else { panic!("{v:?}") };
        assert_eq!(d[0], (Value::Str("a".into()), Value::Int(1)));
        let Value::PersId(pid) = &d[1].1 else {
            panic!()
        };
        assert_eq!(
            pid.items().unwrap()[1],
            Value::Global("torch.FloatStorage".into())
        );
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        assert!(matches!(
            load(&[0x80, 2, b'X', 9]),
            Err(PickleError::Eof(_))
        ));
        assert!(matches!(
            load(&[0x80, 2, b'i']),
            Err(PickleError::Opcode { op: b'i', .. })
        ));
        assert!(load(b"a").is_err());
        assert_eq!(
            load(&[0x8a, 2, 0xff, 0xff, b'.']).unwrap().0,
            Value::Int(-1)
        );
    }
}
