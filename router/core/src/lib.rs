//! llmroute core: the batch assignment problem and its assigners (`fast`, `mip`, the per-query
//! baselines, the chance-constrained budget row), the budget ledger and the plan format. No
//! network, async runtime or plotting code lives here: the server, the eval harness and the
//! allocator all solve with the same assigners and settle with the same ledger.

// Numeric code indexes row-major (query, model) matrices by position; range loops read clearer.
#![allow(clippy::needless_range_loop)]

pub mod assign;
pub mod error;
pub mod ledger;
pub mod plan;

pub use error::{CoreError, Result};
