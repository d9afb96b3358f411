//! `fast` certified against the HiGHS optimum on batch-sized instances (256 × 11), nominal and
//! Γ-robust, with binding budget and capacity: the gap must stay within 0.1 %.

use router::assign::{Assigner, Fast, Mip, SolveStatus};
use router::bench::random_problem;

fn certify(gamma: f64, seeds: &[u64]) {
    for &seed in seeds {
        let p = random_problem(256, 11, seed, true, gamma);
        let exact = Mip { time_limit_s: 60.0, rel_gap: 1e-6 }.solve(&p).unwrap();
        assert_eq!(exact.status, SolveStatus::Optimal, "HiGHS did not prove optimality (seed {seed})");
        let fast = Fast::default().solve(&p).unwrap();
        assert!(p.violation(&fast.choice).is_none());
        let gap = (exact.objective - fast.objective) / exact.objective.abs();
        eprintln!(
            "seed {seed} Γ {gamma}: HiGHS {:.6} fast {:.6} gap {:.5} %",
            exact.objective,
            fast.objective,
            100.0 * gap
        );
        assert!(gap <= 1e-3, "gap {:.4} % above 0.1 % (seed {seed}, Γ {gamma})", 100.0 * gap);
        assert!(gap >= -1e-6, "fast above the proven optimum");
    }
}

#[test]
fn fast_within_a_tenth_of_a_percent_nominal() {
    certify(0.0, &[1, 2, 3]);
}

#[test]
fn fast_within_a_tenth_of_a_percent_robust() {
    certify(26.0, &[1, 2]);
}
