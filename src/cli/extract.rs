//! `pare extract` (being built).
