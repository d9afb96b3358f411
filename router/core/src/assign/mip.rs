//! `mip`: the exact batch problem on HiGHS through good_lp — binary x[i][j], one model per query,
//! budget, per-model slots and KV tokens, allowed models; nominal or exact Bertsimas–Sim robust
//! (max Σμx − Γz − Σp, p[i] ≥ Σ_j σ[i][j]·x[i][j] − z). Silent: HiGHS logs nothing.

use super::problem::{min_cost_assignment, Assignment, Problem, SolveStatus};
use super::Assigner;
use crate::{CoreError, Result};
use good_lp::solvers::highs::highs;
use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};
use highs::HighsModelStatus;

#[derive(Debug, Clone)]
pub struct Mip {
    /// HiGHS `time_limit` in seconds (HiGHS may overshoot it; callers enforce hard deadlines).
    pub time_limit_s: f64,
    /// HiGHS `mip_rel_gap`.
    pub rel_gap: f64,
}

impl Default for Mip {
    fn default() -> Self {
        Mip { time_limit_s: 10.0, rel_gap: 1e-4 }
    }
}

impl Assigner for Mip {
    fn name(&self) -> String {
        "mip".into()
    }

    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        super::chance::solve(p, |q| self.solve_linear(q, None))
    }
}

impl Mip {
    /// An exact upper bound on the chance-constrained optimum, for certifying `fast`: the MIP
    /// whose budget row is Σ c·x + κ·t ≤ B with t ≥ the piecewise-linear secant under-estimator
    /// of √(Σ v·x) on `breakpoints` points (SOS2 by binaries). Every assignment that meets the
    /// chance row meets this one, so HiGHS's dual bound bounds the chance optimum from above.
    pub fn chance_bound(&self, p: &Problem, breakpoints: usize) -> Result<Assignment> {
        p.validate()?;
        self.solve_linear(p, Some(breakpoints.max(3)))
    }

    /// The linear problem (κ = 0 or no cost variance), exactly; with `pwl`, the chance row's
    /// relaxation instead (see `chance_bound`).
    fn solve_linear(&self, p: &Problem, pwl: Option<usize>) -> Result<Assignment> {
        if p.n == 0 {
            return Ok(Assignment { choice: vec![], objective: 0.0, bound: Some(0.0), status: SolveStatus::Optimal });
        }
        let mut vars = ProblemVariables::new();
        // x columns for allowed pairs only, in row-major order.
        let mut cols: Vec<(usize, usize, Variable)> = Vec::new();
        for i in 0..p.n {
            for j in 0..p.m {
                if p.allowed[p.at(i, j)] {
                    cols.push((i, j, vars.add(variable().binary())));
                }
            }
        }
        let robust = p.gamma > 0.0;
        let z = robust.then(|| vars.add(variable().min(0.0)));
        let pv: Vec<Variable> = if robust { (0..p.n).map(|_| vars.add(variable().min(0.0))).collect() } else { vec![] };
        let mut objective: Expression = cols.iter().map(|&(i, j, x)| p.mu[p.at(i, j)] * x).sum();
        if let Some(z) = z {
            objective -= p.gamma * z;
            for &pi in &pv {
                objective -= pi;
            }
        }
        // The chance row's piecewise-linear relaxation (chance_bound): weights on breakpoints 0
        // and a geometric ladder up to the largest possible variance, one binary per segment.
        let pwl_vars = pwl.filter(|_| p.is_chance()).map(|k| {
            let vmax: f64 = (0..p.n).map(|i| (0..p.m).map(|j| p.cost_var[p.at(i, j)]).fold(0.0, f64::max)).sum();
            let mut pts: Vec<f64> =
                (0..k - 1).map(|t| vmax * 1e-6f64.powf((k - 2 - t) as f64 / (k - 2) as f64)).collect();
            pts.insert(0, 0.0);
            let lam: Vec<Variable> = pts.iter().map(|_| vars.add(variable().min(0.0).max(1.0))).collect();
            let seg: Vec<Variable> = (1..pts.len()).map(|_| vars.add(variable().binary())).collect();
            (pts, lam, seg)
        });
        let mut model = vars.maximise(objective).using(highs);
        let mut per_query: Vec<Expression> = vec![Expression::from(0.0); p.n];
        let mut sigma_q: Vec<Expression> = vec![Expression::from(0.0); if robust { p.n } else { 0 }];
        let mut per_model: Vec<Expression> = vec![Expression::from(0.0); p.m];
        let mut kv_model: Vec<Expression> = vec![Expression::from(0.0); p.m];
        let mut cost = Expression::from(0.0);
        for &(i, j, x) in &cols {
            let k = p.at(i, j);
            per_query[i] += x;
            per_model[j] += x;
            kv_model[j] += p.tokens[k] * x;
            cost += p.cost[k] * x;
            if robust {
                sigma_q[i] += p.sigma[k] * x;
            }
        }
        for e in per_query {
            model.add_constraint(e.eq(1.0));
        }
        match pwl_vars {
            Some((pts, lam, seg)) => {
                let mut var_expr = Expression::from(0.0);
                for &(i, j, x) in &cols {
                    var_expr += p.cost_var[p.at(i, j)] * x;
                }
                let at_pts: Expression = lam.iter().zip(&pts).map(|(&l, &v)| v * l).sum();
                let sqrt_pts: Expression = lam.iter().zip(&pts).map(|(&l, &v)| v.sqrt() * l).sum();
                model.add_constraint((var_expr - at_pts).eq(0.0));
                model.add_constraint(lam.iter().fold(Expression::from(0.0), |e, &l| e + l).eq(1.0));
                model.add_constraint(seg.iter().fold(Expression::from(0.0), |e, &z| e + z).eq(1.0));
                for (t, &l) in lam.iter().enumerate() {
                    // λ_t may be positive only on a chosen segment touching point t.
                    let mut e = Expression::from(0.0);
                    if t > 0 {
                        e += seg[t - 1];
                    }
                    if t < seg.len() {
                        e += seg[t];
                    }
                    model.add_constraint((l - e).leq(0.0));
                }
                model.add_constraint((cost + p.kappa * sqrt_pts).leq(p.budget));
            }
            None => {
                if p.budget.is_finite() {
                    model.add_constraint(cost.leq(p.budget));
                }
            }
        }
        for (j, e) in per_model.into_iter().enumerate() {
            if p.slots[j] < p.n {
                model.add_constraint(e.leq(p.slots[j] as f64));
            }
        }
        for (j, e) in kv_model.into_iter().enumerate() {
            if p.kv_free[j].is_finite() {
                model.add_constraint(e.leq(p.kv_free[j]));
            }
        }
        if let Some(z) = z {
            for (i, e) in sigma_q.into_iter().enumerate() {
                model.add_constraint((e - z - pv[i]).leq(0.0));
            }
        }
        let mut hm = model.try_into_inner().map_err(|e| CoreError::Solver(e.to_string()))?;
        hm.make_quiet();
        fn opt<V: highs::HighsOptionValue + Copy>(hm: &mut highs::Model, k: &str, v: V) -> Result<()> {
            hm.try_set_option(k, v).map_err(|e| CoreError::Solver(format!("HiGHS option {k}: {e:?}")))
        }
        opt(&mut hm, "threads", 1)?;
        opt(&mut hm, "mip_rel_gap", self.rel_gap)?;
        opt(&mut hm, "time_limit", self.time_limit_s)?;
        opt(&mut hm, "mip_heuristic_run_feasibility_jump", false)?;
        let solved = hm.try_solve().map_err(|e| CoreError::Solver(format!("{e:?}")))?;
        let status = solved.status();
        let has_solution = matches!(solved.primal_solution_status(), highs::HighsSolutionStatus::Feasible);
        match status {
            HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible => {
                let choice = min_cost_assignment(p);
                let objective = p.objective(&choice);
                return Ok(Assignment { choice, objective, bound: None, status: SolveStatus::Relaxed });
            }
            HighsModelStatus::Optimal => {}
            HighsModelStatus::ReachedTimeLimit
            | HighsModelStatus::ReachedIterationLimit
            | HighsModelStatus::ReachedSolutionLimit
            | HighsModelStatus::ReachedInterrupt
                if has_solution => {}
            other => return Err(CoreError::Solver(format!("HiGHS ended with {other:?} and no solution"))),
        }
        let sol = solved.get_solution();
        let values = sol.columns();
        let mut choice = vec![usize::MAX; p.n];
        let mut best = vec![f64::NEG_INFINITY; p.n];
        for (col, &(i, j, _)) in cols.iter().enumerate() {
            if values[col] > best[i] {
                best[i] = values[col];
                choice[i] = j;
            }
        }
        let objective = p.objective(&choice);
        let bound = solved.double_info_value(c"mip_dual_bound").ok().filter(|b| b.is_finite());
        let status = if status == HighsModelStatus::Optimal { SolveStatus::Optimal } else { SolveStatus::Feasible };
        Ok(Assignment { choice, objective, bound, status })
    }
}
