//! `estimator collect`: records for your own models, from live servers.

pub mod grade;
pub mod questions;
#[cfg(feature = "collect")]
pub mod run;

pub use grade::Grader;
pub use questions::{read_questions, Question};
