//! `pare lint` (being built).
