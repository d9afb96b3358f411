//! The batch assignment problem (DESIGN.md, "The batch assignment problem") and its assigners.

mod baselines;
pub mod chance;
mod fast;
pub mod instances;
mod mip;
pub mod price;
mod problem;

pub use baselines::{PerQueryPrice, PerQueryThreshold, RandomAssigner, Single};
pub use fast::Fast;
pub use mip::Mip;
pub use problem::{min_cost_assignment, Assignment, Problem, SolveStatus};

use crate::Result;

/// Every assigner: given a batch problem, one model per query.
pub trait Assigner: Send + Sync {
    fn name(&self) -> String;
    fn solve(&self, problem: &Problem) -> Result<Assignment>;
}
