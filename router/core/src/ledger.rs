//! The budget ledger: a running balance that closes the loop on realized cost.
//!
//! - **Balance.** `reserve` adds the batch's allowance (`budget_per_query × n`) to the balance and
//!   grants the batch what the balance holds (never less than its cheapest assignment: an
//!   *overdraft*, reported), subtracting the grant at once — concurrent batches cannot each see
//!   the same money. `settle` gives back the grant and subtracts the realized cost. Without
//!   `carry_unspent` a surplus is dropped at settle (overspend is still repaid by later batches).
//! - **Margin.** The assigner plans against `grant / (1 + margin)` with the budget row as a
//!   chance constraint (Σ ĉ·x + κ·√(Σ v·x) ≤ plan). The margin is a conformal quantile, at level
//!   1 − `max_over_probability`, of batch-level ratios realized / predicted budget use (the
//!   left-hand side of that row): from calibration batches (cross-fitted: out-of-sample
//!   predictions on training traffic) and then online from every settled batch. It is never the
//!   maximum, so one heavy-tailed batch moves it by one rank, not to its own size.
//!
//! Guarantee (tested below): after every settle, cumulative realized spend ≤ cumulative
//! allowance + the debt of the balance, and that debt is at most the last settled batch's
//! overshoot (realized − grant) whenever no batch overshoots by more than the next batch's
//! allowance and no overdraft was needed. The per-batch over-budget frequency is at most
//! `max_over_probability` in expectation when the batches' ratios are exchangeable with the
//! ones the quantile saw (the conformal argument).

use crate::assign::chance::kappa_for;
use std::collections::VecDeque;

/// The margin may go below 0 — the plan above the grant — when the quantile says the predicted
/// budget use (with its κ·√variance term) overstates what batches realize; never below this.
const MIN_MARGIN: f64 = -0.5;

/// Default ACI step γ: after one over-budget batch the level drops by γ·(1 − ε), after each
/// batch within its grant it rises by γ·ε.
pub const DEFAULT_ADAPT_RATE: f64 = 0.02;

/// Observations kept for the quantiles (the calibration ones first, the oldest dropped first).
const WINDOW: usize = 400;

/// κ is kept within [0, this × the normal κ] whatever the observed errors say.
const KAPPA_CAP: f64 = 3.0;

/// One batch as planned and as it turned out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Σ ĉ·x of the assignment that ran.
    pub cost: f64,
    /// Σ v·x: its predicted cost variance.
    pub var: f64,
    pub realized: f64,
}

/// The ledger's settings from the config (`budget.*`, and `batch.max_batch` as the reference
/// batch size).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    pub budget_per_query: f64,
    pub carry_unspent: bool,
    pub max_over_probability: f64,
    pub prior_margin: f64,
    pub reference_batch: usize,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    pub budget_per_query: f64,
    /// Carry unspent budget forward as well as overspend (a rolling budget).
    pub carry_unspent: bool,
    /// Allowed per-batch over-budget probability ε (the quantiles' level is 1 − ε).
    pub max_over_probability: f64,
    /// Plan with the chance row (κ > 0); off: point costs and the ratio margin only.
    pub chance: bool,
    /// Σ allowance − Σ realized (settled) − Σ grants (outstanding).
    balance: f64,
    outstanding: usize,
    obs: VecDeque<Observation>,
    /// The adaptive miscoverage level αₜ (adaptive conformal inference): starts at ε, falls after
    /// a batch over its grant, rises slowly after batches within it.
    alpha: f64,
    /// ACI step γ (0: the plain split-conformal quantile at level 1 − ε).
    pub adapt_rate: f64,
    spent: f64,
    allowed: f64,
    reference_n: usize,
    prior_margin: f64,
}

/// What one batch may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchBudget {
    /// The batch's grant (realized cost is judged against this).
    pub budget: f64,
    /// The budget the assigner plans against (the grant shrunk by the margin).
    pub plan: f64,
    /// κ of the batch's chance row (Σ ĉ·x + κ·√(Σ v·x) ≤ plan).
    pub kappa: f64,
    /// The balance could not cover the batch's cheapest assignment; the grant was raised to it.
    pub overdraft: bool,
}

/// The split-conformal (1 − α)-quantile of `v`: its ⌈(k + 1)(1 − α)⌉-th smallest (α ≤ 0: the
/// largest); None below ⌈1/ε⌉ values.
fn conformal(mut v: Vec<f64>, alpha: f64, min: usize) -> Option<f64> {
    let k = v.len();
    if k == 0 || k < min {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let rank = (((k + 1) as f64) * (1.0 - alpha)).ceil() as usize;
    Some(v[rank.clamp(1, k) - 1])
}

/// The most a priced assigner holds back (see `auto_headroom`).
pub const MAX_HEADROOM: f64 = 0.2;

/// Headroom for a priced assigner, from calibration batches: how far the (1 − ε)-quantile batch
/// overruns its predicted cost, realized / Σ ĉ·x − 1, within [0, 0.2]. Costs known exactly give
/// 0 (pricing spends the whole target); heavy-tailed costs give up to 0.2 (pricing aims at
/// target / 1.2 and the rest stays in the balance for surprises).
pub fn auto_headroom(obs: &[Observation], max_over_probability: f64) -> f64 {
    let eps = max_over_probability.clamp(1e-6, 0.5);
    let ratios: Vec<f64> = obs.iter().filter(|o| o.cost > 0.0).map(|o| o.realized / o.cost).collect();
    let min = (1.0 / eps).ceil() as usize;
    conformal(ratios, eps, min).map_or(0.0, |q| (q - 1.0).clamp(0.0, MAX_HEADROOM))
}

impl Ledger {
    /// A ledger with no calibration yet: until it has seen ⌈1/ε⌉ batches κ is the normal one,
    /// Φ⁻¹(1 − ε), and the margin `prior_margin` (relative).
    pub fn new(budget_per_query: f64, prior_margin: f64) -> Ledger {
        Ledger {
            budget_per_query,
            carry_unspent: false,
            max_over_probability: 0.05,
            chance: true,
            balance: 0.0,
            outstanding: 0,
            obs: VecDeque::new(),
            alpha: f64::NAN,
            adapt_rate: DEFAULT_ADAPT_RATE,
            spent: 0.0,
            allowed: 0.0,
            reference_n: 64,
            prior_margin: prior_margin.max(0.0),
        }
    }

    /// Applies settings (at start and on every reload): the allowance per query, carrying
    /// unspent budget, ε, the prior margin and the reference batch size. Batches already reserved
    /// keep their grants (each settles against the `BatchBudget` it was given); the balance,
    /// the observations and the adaptive level carry over.
    pub fn configure(&mut self, s: &LedgerSettings) {
        self.budget_per_query = s.budget_per_query;
        self.carry_unspent = s.carry_unspent;
        self.max_over_probability = s.max_over_probability;
        self.prior_margin = s.prior_margin.max(0.0);
        self.reference_n = s.reference_batch.max(1);
    }

    /// The batch size the observations were made on; smaller batches get proportionally wider
    /// positive margins (the relative error of a sum of n independent errors shrinks like 1/√n).
    pub fn with_reference_batch(mut self, n: usize) -> Ledger {
        self.reference_n = n.max(1);
        self
    }

    /// Calibration batches (planned like the live ones, on out-of-sample predictions) to start
    /// the quantiles from.
    pub fn with_calibration(mut self, obs: &[Observation]) -> Ledger {
        for &o in obs {
            self.push(o);
        }
        self
    }

    fn push(&mut self, o: Observation) {
        if o.cost.is_finite() && o.var.is_finite() && o.realized.is_finite() && o.cost >= 0.0 && o.var >= 0.0 {
            self.obs.push_back(o);
            if self.obs.len() > WINDOW {
                self.obs.pop_front();
            }
        }
    }

    fn eps(&self) -> f64 {
        self.max_over_probability.clamp(1e-6, 0.5)
    }

    fn min_obs(&self) -> usize {
        (1.0 / self.eps()).ceil() as usize
    }

    /// κ of the chance row: the conformal (1 − αₜ)-quantile of the batches' standardized errors
    /// (realized − Σ ĉ·x) / √(Σ v·x) — calibrated on what batches did, not on a normal tail,
    /// which overstates the quantile of right-skewed sums (most batches far below, a few far
    /// above) — within [0, 3 Φ⁻¹(1 − ε)]; Φ⁻¹(1 − ε) until ⌈1/ε⌉ batches with a spread are known.
    pub fn kappa(&self) -> f64 {
        if !self.chance {
            return 0.0;
        }
        let normal = kappa_for(self.eps());
        let z: Vec<f64> =
            self.obs.iter().filter(|o| o.var > 0.0).map(|o| (o.realized - o.cost) / o.var.sqrt()).collect();
        conformal(z, self.level(), self.min_obs()).map_or(normal, |q| q.clamp(0.0, KAPPA_CAP * normal))
    }

    /// The margin currently kept for cost-prediction error (relative): the conformal
    /// (1 − αₜ)-quantile of realized / predicted budget use (Σ ĉ·x + κ·√(Σ v·x), at today's κ)
    /// minus 1, at least −0.5 (a negative margin lets the plan exceed the grant when batches
    /// realize well below their prediction); `prior_margin` while fewer than ⌈1/ε⌉ batches are
    /// known. With spreads known, κ already holds the quantile and the margin is near 0; with
    /// point costs (no spread) it is the whole protection.
    pub fn margin(&self) -> f64 {
        self.margin_at(self.kappa())
    }

    /// `margin` for a κ already computed (each is a quantile over the window: computed once).
    pub fn margin_at(&self, kappa: f64) -> f64 {
        let ratios: Vec<f64> = self
            .obs
            .iter()
            .map(|o| (o.realized, o.cost + kappa * o.var.sqrt()))
            .filter(|&(_, p)| p > 0.0)
            .map(|(r, p)| r / p)
            .collect();
        conformal(ratios, self.level(), self.min_obs()).map_or(self.prior_margin, |q| (q - 1.0).max(MIN_MARGIN))
    }

    /// The current miscoverage level αₜ.
    pub fn level(&self) -> f64 {
        if self.alpha.is_nan() {
            self.eps()
        } else {
            self.alpha
        }
    }

    /// The margin for a batch of `n` queries (a positive margin widens for small batches).
    pub fn margin_for(&self, n: usize) -> f64 {
        self.widen(self.margin(), n)
    }

    fn widen(&self, m: f64, n: usize) -> f64 {
        if m > 0.0 {
            m * (self.reference_n as f64 / n.max(1) as f64).sqrt().max(1.0)
        } else {
            m
        }
    }

    /// Grants the next batch of `n` queries its budget: what the balance holds with this batch's
    /// allowance added, raised to the predicted budget use of its cheapest feasible assignment
    /// (cost `min_cost`, variance `min_var`) × (1 + margin) when the balance cannot cover it (an
    /// overdraft). The grant is subtracted from the balance now; `settle` corrects it with the
    /// realized cost.
    pub fn reserve(&mut self, n: usize, min_cost: f64, min_var: f64) -> BatchBudget {
        self.balance += self.budget_per_query * n as f64;
        self.allowed += self.budget_per_query * n as f64;
        let kappa = self.kappa();
        let margin = self.widen(self.margin_at(kappa), n);
        let min_use = (min_cost + kappa * min_var.max(0.0).sqrt()).max(0.0);
        let available = self.balance.max(0.0);
        let budget = available.max(min_use * (1.0 + margin));
        self.balance -= budget;
        self.outstanding += 1;
        BatchBudget { budget, plan: (budget / (1.0 + margin)).max(min_use), kappa, overdraft: budget > available }
    }

    /// Settles a batch reserved with `reserve`: `cost` and `var` are its assignment's Σ ĉ·x and
    /// Σ v·x, `realized` what it cost.
    pub fn settle(&mut self, granted: &BatchBudget, cost: f64, var: f64, realized: f64) {
        self.settle_with(granted, realized, Some(Observation { cost, var, realized }));
    }

    /// Settles a batch whose total charge is `realized`; `observed` is the part of it whose cost
    /// was actually measured (the queries that ran), the only part the quantiles learn from. A
    /// batch of decision-only queries is charged its prediction but teaches κ, the margin and the
    /// adaptive level nothing: with `None` only the balance moves.
    pub fn settle_with(&mut self, granted: &BatchBudget, realized: f64, observed: Option<Observation>) {
        let realized = if realized.is_finite() { realized.max(0.0) } else { granted.budget };
        self.outstanding = self.outstanding.saturating_sub(1);
        self.balance += granted.budget - realized;
        self.spent += realized;
        if !self.carry_unspent && self.balance > 0.0 {
            self.balance = 0.0;
        }
        let Some(o) = observed else { return };
        self.push(o);
        // Adaptive conformal inference (Gibbs & Candès): α ← α + γ·(ε − 1[over]); the long-run
        // share of batches over their grant tends to ε whatever the order of the traffic.
        let over = realized > granted.budget * (1.0 + 1e-9) && !granted.overdraft;
        let a = self.level() + self.adapt_rate * (self.eps() - if over { 1.0 } else { 0.0 });
        self.alpha = a.clamp(-1.0, 0.5);
    }

    /// Realized spend so far and the budget allowed so far (Σ budget_per_query × n).
    pub fn totals(&self) -> (f64, f64) {
        (self.spent, self.allowed)
    }

    /// Settled balance less outstanding grants; negative = debt that later batches repay.
    pub fn balance(&self) -> f64 {
        self.balance
    }

    /// Overspend carried into the next batch (the debt), 0 when there is none.
    pub fn carried(&self) -> f64 {
        (-self.balance).max(0.0)
    }

    /// Batches reserved and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Finding 8: a reload's settings reach the ledger (the prior margin and the reference batch
    /// size were ignored), and a batch reserved before the reload settles against its own grant.
    #[test]
    fn reconfiguring_applies_every_setting_and_keeps_grants_in_flight() {
        let mut l = Ledger::new(1.0, 0.1).with_reference_batch(64);
        let before = l.reserve(10, 0.0, 0.0);
        let margin_before = l.margin_for(16);
        l.configure(&LedgerSettings {
            budget_per_query: 2.0,
            carry_unspent: true,
            max_over_probability: 0.1,
            prior_margin: 0.3,
            reference_batch: 16,
        });
        assert_eq!((l.budget_per_query, l.carry_unspent, l.max_over_probability), (2.0, true, 0.1));
        assert!(l.margin_for(16) > margin_before, "the new prior margin applies");
        assert!((l.margin_for(16) - 0.3).abs() < 1e-12, "at the reference batch size: the prior margin itself");
        // The batch reserved under the old allowance settles against its old grant.
        l.settle_with(&before, before.budget, None);
        assert!(l.balance().abs() < 1e-12, "{}", l.balance());
        let after = l.reserve(10, 0.0, 0.0);
        assert!((after.budget - 20.0).abs() < 1e-9, "{after:?}");
    }

    #[test]
    fn overspend_is_repaid_and_unspent_dropped_by_default() {
        let mut l = Ledger::new(1.0, 0.0);
        let b = l.reserve(10, 0.0, 0.0);
        assert_eq!(b.budget, 10.0);
        assert!(!b.overdraft);
        l.settle(&b, 10.0, 0.0, 12.0); // 2 over
        assert_eq!(l.carried(), 2.0);
        let b = l.reserve(10, 0.0, 0.0);
        assert_eq!(b.budget, 8.0);
        l.settle(&b, 8.0, 0.0, 7.0); // 1 under: dropped by default
        assert_eq!(l.carried(), 0.0);
        assert_eq!(l.reserve(10, 0.0, 0.0).budget, 10.0);
        assert_eq!(l.totals().0, 19.0);
    }

    #[test]
    fn unspent_rolls_over_when_configured_and_deep_debt_is_kept() {
        let mut l = Ledger::new(1.0, 0.0);
        l.carry_unspent = true;
        let b = l.reserve(10, 0.0, 0.0);
        l.settle(&b, 10.0, 0.0, 4.0);
        assert_eq!(l.reserve(10, 0.0, 0.0).budget, 16.0);
        let mut l = Ledger::new(1.0, 0.0);
        let b = l.reserve(10, 0.0, 0.0);
        l.settle(&b, 10.0, 0.0, 35.0); // 25 over: one batch of 10 cannot repay it
        let b = l.reserve(10, 0.0, 0.0);
        assert_eq!(b.budget, 0.0);
        l.settle(&b, 0.0, 0.0, 1.0);
        assert_eq!(l.carried(), 16.0);
    }

    /// Two batches decided before either settles: the second sees the first's grant gone.
    #[test]
    fn concurrent_batches_do_not_share_the_same_money() {
        let mut l = Ledger::new(1.0, 0.0);
        l.carry_unspent = true;
        let b = l.reserve(10, 0.0, 0.0);
        l.settle(&b, 10.0, 0.0, 0.0); // 10 unspent rolls over
        let a = l.reserve(10, 0.0, 0.0);
        let c = l.reserve(10, 0.0, 0.0);
        assert_eq!((a.budget, c.budget), (20.0, 10.0));
        assert_eq!(l.outstanding(), 2);
        l.settle(&c, 10.0, 0.0, 10.0);
        l.settle(&a, 20.0, 0.0, 20.0);
        assert_eq!((l.balance(), l.outstanding()), (0.0, 0));
    }

    #[test]
    fn overdraft_raises_the_grant_to_the_cheapest_assignment() {
        let mut l = Ledger::new(1.0, 0.1).with_reference_batch(10);
        let b = l.reserve(10, 11.0, 0.0);
        assert!(b.overdraft && (b.budget - 11.0 * 1.1).abs() < 1e-12 && b.plan >= 11.0);
    }

    #[test]
    fn margin_is_a_quantile_not_the_max() {
        let mut l = Ledger::new(1.0, 0.3).with_reference_batch(10);
        // Before ⌈1/ε⌉ = 20 ratios: the prior.
        assert!((l.margin() - 0.3).abs() < 1e-12);
        // Point costs (no spread): the ratio realized / predicted is the whole margin.
        let obs: Vec<Observation> =
            (0..99).map(|k| Observation { cost: 1.0, var: 0.0, realized: 0.9 + 0.002 * k as f64 }).collect(); // 0.9 .. 1.096
        l = l.with_calibration(&obs);
        let m = l.margin();
        // ⌈100 · 0.95⌉ = 95th smallest = 0.9 + 0.002·94.
        assert!((m - (0.9 + 0.002 * 94.0 - 1.0)).abs() < 1e-12, "{m}");
        // One heavy-tailed batch moves the quantile by one rank, not to 10×.
        let b = l.reserve(10, 0.0, 0.0);
        l.settle(&b, 10.0, 0.0, 100.0);
        assert!(l.margin() < 0.1, "{}", l.margin());
        // A batch a quarter of the reference size keeps twice the margin.
        let l = l.with_reference_batch(40);
        assert!((l.margin_for(10) - 2.0 * l.margin()).abs() < 1e-12);
    }

    /// κ follows the observed standardized errors of batch sums, not the normal tail.
    #[test]
    fn kappa_is_the_conformal_quantile_of_standardized_errors() {
        let mut l = Ledger::new(1.0, 0.0);
        assert!((l.kappa() - 1.6448536).abs() < 1e-6, "normal before any batch");
        // z = −1.0, −0.98, …, 0.96: right-skewed sums that rarely exceed their mean by much.
        let obs: Vec<Observation> = (0..99)
            .map(|k| Observation { cost: 10.0, var: 4.0, realized: 10.0 + 2.0 * (-1.0 + 0.02 * k as f64) })
            .collect();
        l = l.with_calibration(&obs);
        assert!((l.kappa() - (-1.0 + 0.02 * 94.0)).abs() < 1e-9, "{}", l.kappa());
        // With κ the quantile of z, the ratio margin is about 0.
        assert!(l.margin().abs() < 0.02, "{}", l.margin());
        let b = l.reserve(10, 5.0, 4.0);
        assert!((b.kappa - l.kappa()).abs() < 1e-12);
        l.chance = false;
        assert_eq!(l.kappa(), 0.0);
    }

    #[test]
    fn headroom_follows_batch_overruns() {
        let exact: Vec<Observation> = (0..50).map(|_| Observation { cost: 1.0, var: 0.0, realized: 1.0 }).collect();
        assert_eq!(auto_headroom(&exact, 0.05), 0.0);
        let skewed: Vec<Observation> =
            (0..99).map(|k| Observation { cost: 1.0, var: 0.0, realized: 0.95 + 0.001 * k as f64 }).collect();
        assert!((auto_headroom(&skewed, 0.05) - (0.95 + 0.001 * 94.0 - 1.0)).abs() < 1e-9);
        let heavy: Vec<Observation> =
            (0..99).map(|k| Observation { cost: 1.0, var: 0.0, realized: 0.5 + 0.02 * k as f64 }).collect();
        assert_eq!(auto_headroom(&heavy, 0.05), MAX_HEADROOM);
        assert_eq!(auto_headroom(&exact[..3], 0.05), 0.0, "too few batches");
    }

    /// Batches whose cost was not measured (decision only) are charged but teach the quantiles
    /// nothing: a flood of them cannot talk κ down to "predictions are exact".
    #[test]
    fn unobserved_batches_move_the_balance_only() {
        let obs: Vec<Observation> = (0..99)
            .map(|k| Observation { cost: 10.0, var: 4.0, realized: 10.0 + 2.0 * (-1.0 + 0.02 * k as f64) })
            .collect();
        let mut l = Ledger::new(1.0, 0.0).with_calibration(&obs);
        let (kappa, margin, level) = (l.kappa(), l.margin(), l.level());
        for _ in 0..500 {
            let b = l.reserve(10, 5.0, 4.0);
            l.settle_with(&b, 5.0, None);
        }
        assert_eq!((l.kappa(), l.margin(), l.level()), (kappa, margin, level));
        assert_eq!(l.totals().0, 2500.0);
        // The same batches settled as observed would have pulled κ to 0 (realized = predicted).
        for _ in 0..500 {
            let b = l.reserve(10, 5.0, 4.0);
            l.settle(&b, 5.0, 4.0, 5.0);
        }
        assert!(l.kappa() < kappa);
    }

    /// The documented guarantee on a random stream of batches whose realized cost scatters
    /// around the plan (heavy right tail, overshoots below the next allowance).
    #[test]
    fn cumulative_spend_never_exceeds_allowance_by_more_than_the_last_overshoot() {
        for carry in [false, true] {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut l = Ledger::new(1.0, 0.0);
            l.carry_unspent = carry;
            let mut last_overshoot: f64;
            for _ in 0..2000 {
                let n = rng.gen_range(1..64);
                let b = l.reserve(n, 0.0, 0.0);
                assert!(!b.overdraft);
                // Realized: the plan times a log-normal-ish factor, overshoot capped below the
                // next batch's smallest allowance (1).
                let f: f64 = (rng.gen::<f64>() * 1.2 - 0.6).exp();
                let realized = (b.plan * f).min(b.budget + 0.99);
                l.settle(&b, b.plan, 0.0, realized);
                last_overshoot = (realized - b.budget).max(0.0);
                let (spent, allowed) = l.totals();
                assert!(spent <= allowed + last_overshoot + 1e-9, "{spent} > {allowed} + {last_overshoot}");
                assert!(l.carried() <= last_overshoot + 1e-9);
            }
        }
    }
}
