//! Converters from the public data in `shared/data` to routing records.

pub mod dcrouter;
pub mod pricing_reversal;
pub mod routellm;

use crate::records::Record;
use std::collections::HashSet;

/// What a conversion did, for the log: nothing is dropped without being counted here.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub rows_read: usize,
    pub records: usize,
    pub duplicates_dropped: usize,
    pub contaminated_dropped: usize,
}

/// Keeps the first record of each exact prompt text, counting the rest.
pub(crate) fn dedupe(records: Vec<Record>, report: &mut ConvertReport) -> Vec<Record> {
    let mut seen = HashSet::new();
    let before = records.len();
    let out: Vec<Record> = records.into_iter().filter(|r| seen.insert(r.prompt.clone())).collect();
    report.duplicates_dropped += before - out.len();
    out
}

pub(crate) fn csv_err(path: &std::path::Path, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Csv { path: path.into(), msg: e.to_string() }
}
