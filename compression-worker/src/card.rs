//! The model card (JSON) and the catalog entry (YAML) a run writes next to the pruned model.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// SHA-256 of a file, hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Peak resident memory of this process (VmHWM), MB; None where /proc is not there.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A catalog entry for the pruned model (the router's catalog format).
pub struct Entry<'a> {
    pub name: &'a str,
    pub parent: &'a str,
    pub recipe: &'a str,
    /// The model card's path (the router's day-0 prior reads its task accuracies).
    pub card: &'a Path,
    pub price_in: f64,
    pub price_out: f64,
    pub max_concurrency: u32,
}

pub fn catalog_yaml(e: &Entry) -> String {
    format!(
        "# Catalog entry written by compression-worker; set `backend` to the server that serves the model.\n\
         name: {name}\nmodels:\n- name: {name}\n  backend: http://REPLACE-WITH-SERVER:8080\n  \
         price_in_per_mtok: {pin}\n  price_out_per_mtok: {pout}\n  price_source: set by the operator (compression-worker --price-in/--price-out)\n  \
         max_concurrency: {mc}\n  parent: {parent}\n  recipe: '{recipe}'\n  \
         # Until the model has records, the router predicts it from its parent scaled by the card's task accuracy\n  \
         # ratio (a card without `tasks` needs quality_ratio: R set here instead).\n  card: '{card}'\n",
        name = e.name,
        pin = e.price_in,
        pout = e.price_out,
        mc = e.max_concurrency,
        parent = e.parent,
        recipe = e.recipe.replace('\'', "''"),
        card = e.card.display().to_string().replace('\'', "''"),
    )
}
