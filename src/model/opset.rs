//! Raising a model's default-domain opset without changing what it computes.
//!
//! Exporters still write opset 9–12 files (tf2onnx's open_nsfw is opset 9). Q/DQ needs opset
//! 10, and per-channel weight scales (what keeps depthwise convolutions accurate in INT8) need
//! 13. Most CNN ops mean the same at 13 as at 9 — the versions in between only added types or
//! attributes whose defaults keep the old behaviour — so the model can simply declare 13. The
//! op table says which ([`crate::ops::Upgrade`]); one node that is not known to keep its
//! meaning (Clip's bounds became inputs at 11, Pad's at 11, Upsample was removed at 10)
//! blocks the upgrade, and the caller is told which.

use crate::model::Analysis;
use crate::model::proto::ModelProto;

/// The opset an upgrade raises to: per-channel QuantizeLinear/DequantizeLinear.
pub const TARGET: i64 = 13;

/// Why a model's opset cannot be raised: the first node that may mean something else there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub node: String,
    pub op: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node '{}' ({}) is not known to mean the same at opset {TARGET}",
            self.node, self.op
        )
    }
}

/// The model declaring opset [`TARGET`] in the default domain, when every node keeps its
/// meaning there (`Ok(None)` when it already is at [`TARGET`] or above); otherwise the first
/// node that blocks it. Nodes of other domains are left alone: their opsets do not change.
pub fn upgrade(a: &Analysis) -> Result<Option<ModelProto>, Blocker> {
    let from = a.model.proto.opset("").unwrap_or(1);
    if from >= TARGET {
        return Ok(None);
    }
    for n in &a.graph().node {
        if !n.op_domain().is_empty() {
            continue;
        }
        let rank = n.input.first().and_then(|i| a.shapes.rank(i));
        let keeps = crate::ops::of_node(n).is_some_and(|d| d.upgrade.keeps(from, n, rank));
        if !keeps {
            return Err(Blocker {
                node: n.display_name(),
                op: n.op_type().to_string(),
            });
        }
    }
    let mut m = a.model.proto.clone();
    for o in &mut m.opset_import {
        if matches!(o.domain.as_deref(), None | Some("" | "ai.onnx")) {
            o.version = Some(TARGET);
        }
    }
    // Opset 13 needs IR version 7 or newer.
    if m.ir_version.unwrap_or(0) < 7 {
        m.ir_version = Some(7);
    }
    Ok(Some(m))
}
