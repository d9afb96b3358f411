//! llmroute's offline allocator: how many instances of each model run on which GPU type
//! (DESIGN.md, "Offline allocator"). Inputs → quality per class from records → MIP → plan file,
//! table, Kubernetes manifests, and a replay simulation against naive baselines.

#![allow(clippy::needless_range_loop)]

pub mod baseline;
pub mod bench;
pub mod error;
pub mod inputs;
pub mod manifests;
pub mod quality;
pub mod report;
pub mod simulate;
pub mod solve;

pub use error::{AllocError, Result};
