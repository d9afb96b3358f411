//! `mip`: the exact batch problem on HiGHS through good_lp — binary x[i][j], one model per query,
//! budget, per-model slots and KV tokens, allowed models; nominal or exact Bertsimas–Sim robust
//! (max Σμx − Γz − Σp, p[i] ≥ Σ_j σ[i][j]·x[i][j] − z). Silent: HiGHS logs nothing.

use super::problem::{min_cost_assignment, Assignment, Problem, SolveStatus};
use super::Assigner;
use crate::{Result, RouterError};
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
        if p.budget.is_finite() {
            model.add_constraint(cost.leq(p.budget));
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
        let mut hm = model.try_into_inner().map_err(|e| RouterError::Solver(e.to_string()))?;
        hm.make_quiet();
        fn opt<V: highs::HighsOptionValue + Copy>(hm: &mut highs::Model, k: &str, v: V) -> Result<()> {
            hm.try_set_option(k, v).map_err(|e| RouterError::Solver(format!("HiGHS option {k}: {e:?}")))
        }
        opt(&mut hm, "threads", 1)?;
        opt(&mut hm, "mip_rel_gap", self.rel_gap)?;
        opt(&mut hm, "time_limit", self.time_limit_s)?;
        opt(&mut hm, "mip_heuristic_run_feasibility_jump", false)?;
        let solved = hm.try_solve().map_err(|e| RouterError::Solver(format!("{e:?}")))?;
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
            other => return Err(RouterError::Solver(format!("HiGHS ended with {other:?} and no solution"))),
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
