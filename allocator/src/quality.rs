//! Expected quality per (traffic class, model): the estimator's leave-one-out μ averaged over a
//! seeded sample of the records of the class's tasks.

use crate::error::{AllocError, Result};
use crate::inputs::{Models, Traffic};
use estimator::{KnnConfig, KnnEstimator, Record};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Fills `quality` of every class that has none from `records` (up to `sample` per class).
pub fn fill_from_records(
    traffic: &mut Traffic,
    models: &Models,
    records: &[Record],
    sample: usize,
    seed: u64,
) -> Result<()> {
    if traffic.classes.iter().all(|c| c.quality.is_some()) {
        return Ok(());
    }
    let names: Vec<String> = models.models.iter().map(|m| m.name.clone()).collect();
    let usable: Vec<&Record> = records.iter().filter(|r| names.iter().all(|m| r.outcomes.contains_key(m))).collect();
    if usable.is_empty() {
        return Err(AllocError::Invalid(format!(
            "no record has outcomes for every model in the models file ({})",
            names.join(", ")
        )));
    }
    // Prices do not matter for μ: a flat price table serves records with or without cost_usd.
    let est = KnnEstimator::train(&usable, &names, Some(&estimator::Catalog::flat(&names)), KnnConfig::default())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for class in traffic.classes.iter_mut().filter(|c| c.quality.is_none()) {
        let mut idx: Vec<usize> = (0..usable.len()).filter(|&i| class.matches(usable[i].task.as_deref())).collect();
        if idx.is_empty() {
            return Err(AllocError::Invalid(format!(
                "traffic class `{}`: no record has task {:?}; give `quality` in the traffic file",
                class.name, class.tasks
            )));
        }
        idx.shuffle(&mut rng);
        idx.truncate(sample.max(1));
        let mut q = vec![0.0; names.len()];
        for &i in &idx {
            let p = est.predict_excluding(&usable[i].prompt, usable[i].task.as_deref(), Some(i));
            for (a, m) in q.iter_mut().zip(&p.mu) {
                *a += m / idx.len() as f64;
            }
        }
        class.quality = Some(q);
    }
    Ok(())
}
