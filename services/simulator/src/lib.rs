//! orelink-simulator: a seeded workload for the hub (`orelink simulate`).
//!
//! [`Generator`] is pure: the same seed and start time give the same events,
//! byte for byte, with no clock or randomness source of its own. The edge in
//! [`run`] encodes them through the registry and produces them at a rate. It
//! writes at least once (an idempotent producer; the hub deduplicates by
//! `event_id`).
//!
//! Assumptions (documented in `docs`-style comments on each table below):
//! clusters, sites and partners come from `topology/`; enterprises are
//! invented, with valid unified social credit codes whose region part is the
//! cluster's city (Baise 451000, Hechi 451200, Fangchenggang 450600, Nanning
//! 450100); prices are late-2026 Chinese spot levels; energy intensities are
//! typical for each process, and missing for a share of small firms whose
//! sites are not metered (the policy paper: sensor coverage under 20 % in key
//! processes). Demand has a trend, a week, a working day and seeded shocks
//! ([`demand`]), for forecasts to find.

pub mod demand;
mod generator;
mod edge;

pub use edge::{SimStats, run};
pub use generator::{DEMAND, Demand, FLOWS, Flow, Generator, STEP_MS, SimEvent, SimRecord};
