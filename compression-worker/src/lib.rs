//! llmroute compression worker: reads a Llama-family model (GGUF, dequantized to f32), captures
//! each linear layer's inputs on calibration text, prunes layer by layer (magnitude, Wanda,
//! SparseGPT, ALPS; unstructured or N:M), measures perplexity and task accuracy (its own forward
//! pass) on held-out text, and writes the pruned model, a model card and a catalog entry.

// Numeric code indexes row-major matrices by position; range loops read clearer.
#![allow(clippy::needless_range_loop)]

pub mod card;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod pipeline;
pub mod prune;
pub mod tasks;
pub mod text;
pub mod tokenizer;

pub use error::{Error, Result};
