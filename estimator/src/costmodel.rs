//! The calibrated cost model: per (query, model) a predicted cost and its spread, from the
//! estimator's output-token prediction, corrected per model by a multiplicative bias and a
//! variance scale fitted on out-of-sample predictions of the training records (leave-one-out kNN
//! predictions: each training query predicted without itself).
//!
//! - bias b[m] = Σ realized / Σ predicted (so the mean of b·ĉ matches the mean realized cost);
//! - variance scale s[m] = Σ (realized − b·ĉ)² / Σ (b·sd)² (so Σ v over a batch estimates the
//!   variance of the batch's realized cost); where the estimator gives no spread at all (every sd
//!   0, e.g. fixed output lengths) but realized costs still scatter, a relative variance
//!   r[m] = Σ (realized − b·ĉ)² / Σ (b·ĉ)² instead (v = r·(b·ĉ)²);
//! - q90[m]: the 0.9 quantile of the standardized error (realized − b·ĉ) / √v, for a p90 bound
//!   that does not assume normal tails.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostCalibration {
    pub bias: Vec<f64>,
    pub var_scale: Vec<f64>,
    /// Relative variance for models whose predictions carry no spread (0 otherwise).
    #[serde(default)]
    pub rel_var: Vec<f64>,
    pub q90: Vec<f64>,
}

/// One model's out-of-sample predictions: (predicted cost, predicted sd, realized cost).
pub type Triples = [(f64, f64, f64)];

impl CostCalibration {
    /// The identity (no correction).
    pub fn identity(m: usize) -> CostCalibration {
        CostCalibration {
            bias: vec![1.0; m],
            var_scale: vec![1.0; m],
            rel_var: vec![0.0; m],
            q90: vec![1.2815515655446004; m],
        }
    }

    /// Fits per model on `per_model[m]` = that model's (ĉ, sd, realized) triples.
    pub fn fit(per_model: &[Vec<(f64, f64, f64)>]) -> CostCalibration {
        let mut c = CostCalibration::identity(per_model.len());
        for (j, t) in per_model.iter().enumerate() {
            let (sp, sr): (f64, f64) = t.iter().fold((0.0, 0.0), |a, x| (a.0 + x.0, a.1 + x.2));
            let b = if sp > 0.0 && sr > 0.0 { sr / sp } else { 1.0 };
            let (se, sv): (f64, f64) =
                t.iter().fold((0.0, 0.0), |a, x| (a.0 + (x.2 - b * x.0).powi(2), a.1 + (b * x.1).powi(2)));
            let s = if sv > 0.0 { se / sv } else { 1.0 };
            let sc: f64 = t.iter().map(|x| (b * x.0).powi(2)).sum();
            let r = if sv <= 0.0 && sc > 0.0 { se / sc } else { 0.0 };
            c.rel_var[j] = r;
            let mut z: Vec<f64> = t
                .iter()
                .map(|x| {
                    let (cc, v) = (b * x.0, s * (b * x.1).powi(2) + r * (b * x.0).powi(2));
                    (x.2 - cc) / v.sqrt()
                })
                .filter(|z| z.is_finite())
                .collect();
            z.sort_unstable_by(f64::total_cmp);
            c.bias[j] = b;
            c.var_scale[j] = s;
            if !z.is_empty() {
                c.q90[j] = z[((z.len() as f64 * 0.9).ceil() as usize).clamp(1, z.len()) - 1];
            }
        }
        c
    }

    /// The calibrated (cost, variance) of model j's raw (ĉ, sd).
    pub fn apply(&self, j: usize, cost: f64, sd: f64) -> (f64, f64) {
        let b = self.bias[j];
        let r = self.rel_var.get(j).copied().unwrap_or(0.0);
        (b * cost, self.var_scale[j] * (b * sd).powi(2) + r * (b * cost).powi(2))
    }
}

/// Per model on held-out data: mean realized / mean predicted (goal: within 2 % of 1) and the
/// share of queries whose realized cost is at most the p90 bound ĉ + q90·√v (goal: 0.9).
#[derive(Debug, Clone, Serialize)]
pub struct CostCheck {
    pub realized_over_predicted: f64,
    pub p90_coverage: f64,
    pub n: usize,
}

pub fn check(cal: &CostCalibration, j: usize, t: &Triples) -> CostCheck {
    let (mut sp, mut sr, mut covered) = (0.0, 0.0, 0usize);
    for &(c, sd, r) in t {
        let (cc, v) = cal.apply(j, c, sd);
        sp += cc;
        sr += r;
        if r <= cc + cal.q90[j] * v.sqrt() + 1e-15 {
            covered += 1;
        }
    }
    CostCheck {
        realized_over_predicted: if sp > 0.0 { sr / sp } else { f64::NAN },
        p90_coverage: covered as f64 / t.len().max(1) as f64,
        n: t.len(),
    }
}

/// The calibration table's JSON rows (one per model): bias, variance scale, and on held-out data
/// realized / predicted and p90 coverage, calibrated and raw (`raw_…`).
pub fn report_rows(
    models: &[String],
    cal: &CostCalibration,
    checks: &[CostCheck],
    raw: &[CostCheck],
) -> Vec<serde_json::Value> {
    models
        .iter()
        .enumerate()
        .map(|(j, m)| {
            serde_json::json!({
                "model": m, "bias": cal.bias[j], "var_scale": cal.var_scale[j],
                "rel_var": cal.rel_var.get(j).copied().unwrap_or(0.0),
                "realized_over_predicted": checks[j].realized_over_predicted, "p90_coverage": checks[j].p90_coverage,
                "raw_realized_over_predicted": raw[j].realized_over_predicted, "raw_p90_coverage": raw[j].p90_coverage,
            })
        })
        .collect()
}

/// One row of `report_rows` as a table line.
pub fn table_line(r: &serde_json::Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:<36} bias {:>7.3}  var×{:>8.3}  realized/pred {:>6.3} ({:>6.3})  p90 cover {:>5.3} ({:>5.3})",
        r["model"].as_str().unwrap_or(""),
        f("bias"),
        f("var_scale"),
        f("realized_over_predicted"),
        f("raw_realized_over_predicted"),
        f("p90_coverage"),
        f("raw_p90_coverage")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_and_spread_are_fitted_per_model() {
        // Model 0 realizes twice its prediction with a spread twice the claimed one; model 1 is exact.
        let t0: Vec<(f64, f64, f64)> =
            (0..1000).map(|k| (1.0, 0.5, 2.0 + if k % 2 == 0 { 2.0 } else { -2.0 })).collect();
        let t1: Vec<(f64, f64, f64)> = (0..1000).map(|_| (1.0, 0.1, 1.0)).collect();
        let c = CostCalibration::fit(&[t0.clone(), t1.clone()]);
        assert!((c.bias[0] - 2.0).abs() < 1e-12 && (c.bias[1] - 1.0).abs() < 1e-12);
        // Realized sd 2 around 2; claimed sd 0.5 × bias 2 = 1 → scale 4.
        assert!((c.var_scale[0] - 4.0).abs() < 1e-9, "{}", c.var_scale[0]);
        let k = check(&c, 0, &t0);
        assert!((k.realized_over_predicted - 1.0).abs() < 1e-12);
        assert!(k.p90_coverage >= 0.9, "{}", k.p90_coverage);
        assert_eq!(check(&CostCalibration::identity(2), 0, &t0).realized_over_predicted, 2.0);
        // No spread from the estimator, yet realized costs scatter ±50 %: a relative variance.
        let t2: Vec<(f64, f64, f64)> = (0..1000).map(|k| (2.0, 0.0, if k % 2 == 0 { 3.0 } else { 1.0 })).collect();
        let c = CostCalibration::fit(&[t2]);
        assert!((c.rel_var[0] - 0.25).abs() < 1e-12, "{}", c.rel_var[0]);
        assert!((c.apply(0, 2.0, 0.0).1 - 1.0).abs() < 1e-12);
    }
}
