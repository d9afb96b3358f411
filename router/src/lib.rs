//! llmroute router library: the batch assignment problem and its assigners, the budget ledger,
//! and the evaluation harness. No server or network code lives here, so the allocator and the
//! eval harness use the same assigners as the server.

// Numeric code indexes row-major (query, model) matrices by position; range loops read clearer.
#![allow(clippy::needless_range_loop)]

pub mod assign;
pub mod bench;
pub mod error;
pub mod eval;
pub mod ledger;
pub mod plan;
#[cfg(feature = "server")]
pub mod server;

pub use error::{Result, RouterError};
