//! The kept-channel mapping `pare prune` records in the pruned model's `metadata_props`
//! (key [`KEY`]), so `pare diff` can compare a pruned tensor with the original's kept
//! channels instead of calling it "not comparable". Per pruned group: the tensors carrying
//! its channels, the original width and the kept unit indices, which are channel indices in
//! every tensor as wide as the group (units follow channel order; coupled tensors, such as the
//! two sides of a residual Add, share it). A tensor of another width (a Concat of several
//! groups) is not mapped and stays "not comparable".

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::analysis::ChannelAnalysis;
use crate::model::proto::{ModelProto, StringStringEntryProto};
use crate::prune::plan::PrunePlan;

/// The metadata key.
pub const KEY: &str = "pare.prune.kept_channels";

/// One pruned group's mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptGroup {
    pub tensors: Vec<String>,
    pub total: usize,
    pub keep: Vec<usize>,
}

/// Records the mapping of every pruned group in `model`'s metadata (replacing an older one).
pub fn record(model: &mut ModelProto, ca: &ChannelAnalysis, plan: &PrunePlan) {
    let groups: Vec<KeptGroup> = plan
        .groups
        .iter()
        .filter(|g| g.kept() < g.total)
        .filter_map(|g| {
            let cg = ca.groups.get(g.group)?;
            Some(KeptGroup {
                tensors: cg.tensors.clone(),
                total: g.total,
                keep: g.keep.clone(),
            })
        })
        .collect();
    model.metadata_props.retain(|e| e.key() != KEY);
    if groups.is_empty() {
        return;
    }
    if let Ok(v) = serde_json::to_string(&groups) {
        model
            .metadata_props
            .push(StringStringEntryProto::new(KEY, v));
    }
}

/// Tensor name → (original width, kept channel indices), from `model`'s metadata; empty when
/// it has none (or it does not parse: then the tensors are "not comparable").
pub fn read(model: &ModelProto) -> HashMap<String, (usize, Vec<usize>)> {
    let mut out = HashMap::new();
    let Some(e) = model.metadata_props.iter().find(|e| e.key() == KEY) else {
        return out;
    };
    let Ok(groups) = serde_json::from_str::<Vec<KeptGroup>>(e.value()) else {
        return out;
    };
    for g in groups {
        for t in g.tensors {
            out.insert(t, (g.total, g.keep.clone()));
        }
    }
    out
}
