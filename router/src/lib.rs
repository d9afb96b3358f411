//! llmroute router library: the batch assignment problem and its assigners, the budget ledger,
//! and the evaluation harness. No server or network code lives here, so the allocator and the
//! eval harness use the same assigners as the server.

pub mod assign;
pub mod bench;
pub mod error;
pub mod eval;
pub mod ledger;

pub use error::{Result, RouterError};
