//! The budget ledger: closes the loop on realized cost.
//!
//! Each batch gets `budget_per_query × n` minus the overspend carried from earlier batches
//! (realized cost above what they were allowed), plus carried unspent budget if configured.
//! The assigner plans against that budget shrunk by a margin for cost-prediction error; the
//! margin is the largest relative under-prediction (realized / predicted − 1) seen over a recent
//! window of batches (× 1.5), starting from the value calibrated offline, widened by √(n_ref / n) for
//! batches smaller than the ones it was measured on.

use std::collections::VecDeque;

/// Online under-predictions are widened by this factor: errors that grow from batch to batch
/// (traffic ordered by length, say) must not catch the margin from behind.
const OBSERVED_SAFETY: f64 = 1.5;

#[derive(Debug, Clone)]
pub struct Ledger {
    pub budget_per_query: f64,
    /// Carry unspent budget forward as well as overspend.
    pub carry_unspent: bool,
    /// Overspend (> 0) or, with `carry_unspent`, unspent budget (< 0) carried to the next batch.
    carried: f64,
    prior_margin: f64,
    window: usize,
    ratios: VecDeque<f64>,
    spent: f64,
    allowed: f64,
    reference_n: usize,
}

/// What one batch may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchBudget {
    /// The batch's budget (realized cost is judged against this).
    pub budget: f64,
    /// The budget the assigner plans against (budget shrunk by the prediction-error margin).
    pub plan: f64,
    /// The allowance could not cover the batch's cheapest assignment; the budget was raised.
    pub overdraft: bool,
}

impl Ledger {
    pub fn new(budget_per_query: f64, prior_margin: f64) -> Ledger {
        Ledger {
            budget_per_query,
            carry_unspent: false,
            carried: 0.0,
            prior_margin: prior_margin.max(0.0),
            window: 50,
            ratios: VecDeque::new(),
            spent: 0.0,
            allowed: 0.0,
            reference_n: 64,
        }
    }

    /// The batch size the margins were measured on; smaller batches get proportionally wider
    /// margins (the relative error of a sum of n independent errors shrinks like 1/√n).
    pub fn with_reference_batch(mut self, n: usize) -> Ledger {
        self.reference_n = n.max(1);
        self
    }

    /// The margin for a batch of `n` queries.
    pub fn margin_for(&self, n: usize) -> f64 {
        self.margin() * (self.reference_n as f64 / n.max(1) as f64).sqrt().max(1.0)
    }

    /// The margin currently kept for cost-prediction error (relative).
    pub fn margin(&self) -> f64 {
        let observed = self.ratios.iter().map(|r| r - 1.0).fold(0.0, f64::max);
        (OBSERVED_SAFETY * observed).max(self.prior_margin).max(0.0)
    }

    /// The budget of the next batch of `n` queries whose cheapest feasible assignment is
    /// predicted to cost `min_cost`. When the allowance is below that (the batch cannot be served
    /// within it), the ledger grants an overdraft up to `min_cost` — reported as `overdraft` —
    /// and the excess is repaid by later batches through the carry-over.
    pub fn reserve(&self, n: usize, min_cost: f64) -> BatchBudget {
        let allowance = self.raw_budget(n).max(0.0);
        let margin = self.margin_for(n);
        let floor = min_cost * (1.0 + margin);
        let budget = allowance.max(floor);
        BatchBudget { budget, plan: (budget / (1.0 + margin)).max(min_cost), overdraft: budget > allowance }
    }

    fn raw_budget(&self, n: usize) -> f64 {
        self.budget_per_query * n as f64 - self.carried
    }

    /// Records the realized and predicted cost of a batch of `n` queries that ran on the budget
    /// `reserve(n)` gave. Overspend (and, with `carry_unspent`, unspent budget) carries over.
    pub fn settle(&mut self, n: usize, predicted: f64, realized: f64) {
        let raw = self.raw_budget(n);
        self.spent += realized;
        self.allowed += self.budget_per_query * n as f64;
        let diff = realized - raw;
        self.carried = if self.carry_unspent { diff } else { diff.max(0.0) };
        if predicted > 0.0 && realized.is_finite() {
            self.ratios.push_back(realized / predicted);
            if self.ratios.len() > self.window {
                self.ratios.pop_front();
            }
        }
    }

    /// Realized spend so far and the budget allowed so far (Σ budget_per_query × n).
    pub fn totals(&self) -> (f64, f64) {
        (self.spent, self.allowed)
    }

    /// Overspend (or unspent budget, negative) carried into the next batch.
    pub fn carried(&self) -> f64 {
        self.carried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overspend_is_carried_and_repaid() {
        let mut l = Ledger::new(1.0, 0.0);
        let b = l.reserve(10, 0.0);
        assert_eq!(b.budget, 10.0);
        assert!(!b.overdraft);
        l.settle(10, 10.0, 12.0); // 2 over
        assert_eq!(l.carried(), 2.0);
        assert_eq!(l.reserve(10, 0.0).budget, 8.0);
        l.settle(10, 8.0, 7.0); // 1 under: not carried by default
        assert_eq!(l.carried(), 0.0);
        assert_eq!(l.reserve(10, 0.0).budget, 10.0);
        assert_eq!(l.totals(), (19.0, 20.0));
    }

    #[test]
    fn unspent_carries_when_configured_and_debt_beyond_a_batch_is_kept() {
        let mut l = Ledger::new(1.0, 0.0);
        l.carry_unspent = true;
        l.settle(10, 10.0, 4.0);
        assert_eq!(l.reserve(10, 0.0).budget, 16.0);
        let mut l = Ledger::new(1.0, 0.0);
        l.settle(10, 10.0, 35.0); // 25 over: two batches of 10 cannot repay it
        assert_eq!(l.reserve(10, 0.0).budget, 0.0);
        l.settle(10, 0.0, 1.0);
        assert_eq!(l.carried(), 16.0);
    }

    #[test]
    fn margin_tracks_under_prediction() {
        let mut l = Ledger::new(1.0, 0.05).with_reference_batch(10);
        assert!((l.reserve(10, 0.0).plan - 10.0 / 1.05).abs() < 1e-12);
        // Overdraft: the cheapest assignment costs more than the allowance.
        let b = l.reserve(10, 11.0);
        assert!(b.overdraft && (b.budget - 11.0 * 1.05).abs() < 1e-12 && b.plan >= 11.0);
        l.settle(10, 10.0, 12.0);
        assert!((l.margin() - 0.3).abs() < 1e-12);
        // A batch a quarter of the reference size keeps twice the margin.
        let l = l.with_reference_batch(64);
        assert!((l.margin_for(16) - 0.6).abs() < 1e-12);
        assert!((l.margin_for(128) - 0.3).abs() < 1e-12);
    }
}
