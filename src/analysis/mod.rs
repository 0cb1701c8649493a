//! Analyses over an indexed, shape-inferred model.

pub mod channels;

pub use channels::{ChannelAnalysis, ChannelGroup, analyze_channels};
