//! Pruning one linear layer W (rows = outputs, columns = inputs) given H = XᵀX of its inputs.

pub mod alps;
pub mod linalg;
pub mod lowrank;
pub mod mask;
pub mod sparsegpt;
pub mod transpose;
