//! The allocation MIP (good_lp + HiGHS). Integer n[m][g] (instances of model m on GPU type g, for
//! each profile), continuous y[c][m] (share of class c routed to m):
//!   Σ_m y[c][m] = 1                                   every class served
//!   Σ_c rate_c·load_c·y[c][m] ≤ util·Σ_g tps[m][g]·n[m][g]   throughput (tokens/s) per model
//!   Σ_m tp[m][g]·n[m][g] ≤ count_g                    GPU count per type
//!   Σ_m (weights + KV)·n[m][g] ≤ count_g·memory_g     GPU memory per type
//!   Σ tp·n·usd_g ≤ budget                              optional $/hour budget
//!   Σ_g n[m][g] ≥ min_replicas_m                       availability
//! maximize Σ_c rate_c Σ_m μ[c][m]·y[c][m] (minus a tiny cost tie-break), or minimize $/hour at a
//! quality floor. Every constraint that can fail has an elastic slack with a large penalty, so an
//! infeasible input still solves and the slacks say which constraint cannot be met and by how much.

use crate::error::{AllocError, Result};
use crate::inputs::{Inventory, Models, Traffic};
use good_lp::solvers::highs::highs;
use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Maximize expected quality of the served traffic.
    Quality,
    /// Minimize $/hour subject to mean quality ≥ the floor.
    Cost { quality_floor: f64 },
}

/// The router's per-query budget, when the plan should respect it: the routing may spend at most
/// `per_query` USD per query on average, with `cost[c][m]` the price of a class-c query on model m.
#[derive(Debug, Clone)]
pub struct Spend {
    pub per_query: f64,
    pub cost: Vec<Vec<f64>>,
}

impl Spend {
    /// Query prices from a catalog's token prices and the classes' token counts.
    pub fn from_catalog(
        catalog: &estimator::Catalog,
        models: &Models,
        traffic: &Traffic,
        per_query: f64,
    ) -> Result<Spend> {
        let mut cost = Vec::with_capacity(traffic.classes.len());
        for c in &traffic.classes {
            let mut row = Vec::with_capacity(models.models.len());
            for m in &models.models {
                let e = catalog.get(&m.name).ok_or_else(|| {
                    AllocError::Invalid(format!("model `{}` is not in the catalog (needed for its prices)", m.name))
                })?;
                row.push(e.cost(c.input_tokens, c.output_tokens));
            }
            cost.push(row);
        }
        Ok(Spend { per_query, cost })
    }
}

/// The allocation problem with every class's quality filled in.
pub struct Instance<'a> {
    pub inv: &'a Inventory,
    pub models: &'a Models,
    pub traffic: &'a Traffic,
    pub spend: Option<&'a Spend>,
}

impl Instance<'_> {
    /// Tokens of decode work one query of class `c` costs.
    pub fn load(&self, c: usize) -> f64 {
        let k = &self.traffic.classes[c];
        k.output_tokens + self.models.prefill_cost * k.input_tokens
    }

    pub fn quality(&self, c: usize, m: usize) -> f64 {
        self.traffic.classes[c].quality.as_ref().map_or(0.0, |q| q[m])
    }
}

/// A plan's numbers (n and y), with its figures.
#[derive(Debug, Clone)]
pub struct Solution {
    /// instances[m][g] (0 where the model has no profile for g).
    pub instances: Vec<Vec<u32>>,
    /// routing[c][m].
    pub routing: Vec<Vec<f64>>,
    pub expected_quality: f64,
    pub usd_per_hour: f64,
    pub solve_time: Duration,
    /// HiGHS' relative gap at the end (0 = proven optimal).
    pub gap: f64,
    /// Rate-weighted share of the traffic the plan cannot serve (0 for a feasible plan).
    pub unserved: f64,
}

#[derive(Debug, Clone)]
pub struct SolveOptions {
    pub objective: Objective,
    pub time_limit_s: f64,
    pub rel_gap: f64,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions { objective: Objective::Quality, time_limit_s: 60.0, rel_gap: 1e-6 }
    }
}

/// Solves the allocation; an input no plan can meet is an `Infeasible` error explaining why.
pub fn solve(inst: &Instance, opts: &SolveOptions) -> Result<Solution> {
    let (s, why) = solve_with(inst, opts, None)?;
    if !why.is_empty() {
        return Err(AllocError::Infeasible(why));
    }
    Ok(s)
}

/// The best routing for fixed instances (a baseline plan); traffic it cannot serve is reported in
/// `unserved`, not as an error.
pub fn route_fixed(inst: &Instance, instances: &[Vec<u32>]) -> Result<Solution> {
    let opts = SolveOptions::default();
    Ok(solve_with(inst, &opts, Some(instances))?.0)
}

fn solve_with(inst: &Instance, opts: &SolveOptions, fixed: Option<&[Vec<u32>]>) -> Result<(Solution, Vec<String>)> {
    let t0 = Instant::now();
    let (inv, models, traffic) = (inst.inv, inst.models, inst.traffic);
    let (nm, ng, nc) = (models.models.len(), inv.gpus.len(), traffic.classes.len());
    let total_rate = traffic.total_rate().max(1e-9);
    let mut vars = ProblemVariables::new();
    let mut cols = 0usize;
    let mut add = |vars: &mut ProblemVariables, v: good_lp::VariableDefinition| {
        cols += 1;
        vars.add(v)
    };
    // n[m][g] for existing profiles.
    let mut n: Vec<Vec<Option<(Variable, usize)>>> = vec![vec![None; ng]; nm];
    for (m, mp) in models.models.iter().enumerate() {
        for (k, p) in mp.profiles.iter().enumerate() {
            let def = match fixed {
                Some(f) => variable().min(f[m][p.gpu] as f64).max(f[m][p.gpu] as f64),
                None => variable().integer().min(0).max((inv.gpus[p.gpu].count / p.tensor_parallel) as f64),
            };
            n[m][p.gpu] = Some((add(&mut vars, def), k));
        }
    }
    let y: Vec<Vec<Variable>> =
        (0..nc).map(|_| (0..nm).map(|_| add(&mut vars, variable().min(0.0).max(1.0))).collect()).collect();
    // Elastic slacks.
    let unserved: Vec<Variable> = (0..nc).map(|_| add(&mut vars, variable().min(0.0).max(1.0))).collect();
    let budget_slack = add(&mut vars, variable().min(0.0));
    let replica_slack: Vec<Variable> = (0..nm).map(|_| add(&mut vars, variable().min(0.0))).collect();
    let floor_slack = add(&mut vars, variable().min(0.0));
    let spend_slack = add(&mut vars, variable().min(0.0));

    let mut dollars = Expression::from(0.0);
    for m in 0..nm {
        for g in 0..ng {
            if let Some((v, k)) = n[m][g] {
                let p = &models.models[m].profiles[k];
                dollars += (p.tensor_parallel as f64 * inv.gpus[g].usd_per_hour) * v;
            }
        }
    }
    let mut quality = Expression::from(0.0);
    for c in 0..nc {
        for m in 0..nm {
            quality += (traffic.classes[c].rate_qps * inst.quality(c, m)) * y[c][m];
        }
    }
    // Penalties: an unserved query outweighs any quality gain; $ and replica slacks likewise.
    let big = 1e4 * total_rate;
    let mut penalty = Expression::from(0.0);
    for c in 0..nc {
        penalty += (big * traffic.classes[c].rate_qps.max(1e-6)) * unserved[c];
    }
    penalty += big * budget_slack;
    for &r in &replica_slack {
        penalty += big * r;
    }
    penalty += big * total_rate * floor_slack;
    penalty += big * 1e4 * spend_slack;
    let max_dollars: f64 = inv.gpus.iter().map(|g| g.count as f64 * g.usd_per_hour).sum::<f64>().max(1e-9);
    let objective = match opts.objective {
        // Tie-break toward cheaper plans: worth less than any quality difference that matters.
        Objective::Quality => quality.clone() - (1e-3 * total_rate / max_dollars) * dollars.clone() - penalty,
        Objective::Cost { .. } => Expression::from(0.0) - dollars.clone() - penalty,
    };
    let mut model = vars.maximise(objective).using(highs);
    for c in 0..nc {
        let mut e = Expression::from(0.0) + unserved[c];
        for m in 0..nm {
            e += y[c][m];
        }
        model.add_constraint(e.eq(1.0));
    }
    for m in 0..nm {
        let mut routed = Expression::from(0.0);
        for c in 0..nc {
            routed += (traffic.classes[c].rate_qps * inst.load(c)) * y[c][m];
        }
        let mut capacity = Expression::from(0.0);
        let mut count = Expression::from(0.0) + replica_slack[m];
        for g in 0..ng {
            if let Some((v, k)) = n[m][g] {
                capacity += (models.target_utilization * models.models[m].profiles[k].tokens_per_s) * v;
                count += v;
            }
        }
        model.add_constraint((routed - capacity).leq(0.0));
        if models.models[m].min_replicas > 0 {
            model.add_constraint(count.geq(models.models[m].min_replicas as f64));
        }
    }
    for g in 0..ng {
        let (mut gpus, mut mem) = (Expression::from(0.0), Expression::from(0.0));
        for m in 0..nm {
            if let Some((v, k)) = n[m][g] {
                let p = &models.models[m].profiles[k];
                gpus += (p.tensor_parallel as f64) * v;
                mem += (p.weights_gb + p.kv_gb) * v;
            }
        }
        model.add_constraint(gpus.leq(inv.gpus[g].count as f64));
        model.add_constraint(mem.leq(inv.gpus[g].count as f64 * inv.gpus[g].memory_gb));
    }
    if let Some(b) = inv.budget_usd_per_hour {
        model.add_constraint((dollars.clone() - budget_slack).leq(b));
    }
    if let Objective::Cost { quality_floor } = opts.objective {
        model.add_constraint((quality.clone() + total_rate * floor_slack).geq(quality_floor * total_rate));
    }
    if let Some(sp) = inst.spend {
        let mut e = Expression::from(0.0) - total_rate * spend_slack;
        for c in 0..nc {
            for m in 0..nm {
                e += (traffic.classes[c].rate_qps * sp.cost[c][m]) * y[c][m];
            }
        }
        model.add_constraint(e.leq(sp.per_query * total_rate));
    }
    let mut hm = model.try_into_inner().map_err(|e| AllocError::Solver(e.to_string()))?;
    hm.make_quiet();
    let set = |hm: &mut highs::Model, k: &str, v: f64| {
        hm.try_set_option(k, v).map_err(|e| AllocError::Solver(format!("HiGHS option {k}: {e:?}")))
    };
    set(&mut hm, "mip_rel_gap", opts.rel_gap)?;
    set(&mut hm, "time_limit", opts.time_limit_s)?;
    hm.try_set_option("threads", 1).map_err(|e| AllocError::Solver(format!("HiGHS option threads: {e:?}")))?;
    let solved = hm.try_solve().map_err(|e| AllocError::Solver(format!("{e:?}")))?;
    let has_solution = matches!(solved.primal_solution_status(), highs::HighsSolutionStatus::Feasible);
    if !has_solution {
        return Err(AllocError::Solver(format!("HiGHS ended with {:?} and no plan", solved.status())));
    }
    let gap = solved.double_info_value(c"mip_gap").ok().filter(|g| g.is_finite()).unwrap_or(0.0);
    let sol = solved.get_solution();
    let val = sol.columns();
    debug_assert_eq!(val.len(), cols);
    // Column order = creation order: n (per profile, models then profiles), y, unserved, budget,
    // replicas, floor.
    let mut col = 0usize;
    let mut instances = vec![vec![0u32; ng]; nm];
    for (m, mp) in models.models.iter().enumerate() {
        for p in &mp.profiles {
            instances[m][p.gpu] = val[col].round().max(0.0) as u32;
            col += 1;
        }
    }
    let mut routing = vec![vec![0.0; nm]; nc];
    for row in routing.iter_mut() {
        for v in row.iter_mut() {
            *v = val[col].clamp(0.0, 1.0);
            col += 1;
        }
    }
    let unserved_v: Vec<f64> = (0..nc).map(|c| val[col + c]).collect();
    col += nc;
    let budget_v = val[col];
    col += 1;
    let replica_v: Vec<f64> = (0..nm).map(|m| val[col + m]).collect();
    col += nm;
    let floor_v = val[col];
    let spend_v = val[col + 1];
    let mut why = Vec::new();
    for c in 0..nc {
        if unserved_v[c] > 1e-6 {
            let k = &traffic.classes[c];
            why.push(format!(
                "traffic class `{}`: {:.1} % of its {} q/s cannot be served: it needs {:.0} tokens/s of throughput \
                 and the GPU inventory{} cannot provide it",
                k.name,
                100.0 * unserved_v[c],
                k.rate_qps,
                k.rate_qps * inst.load(c),
                if inv.budget_usd_per_hour.is_some() { " within the $/hour budget" } else { "" }
            ));
        }
    }
    if budget_v > 1e-6 {
        let b = inv.budget_usd_per_hour.unwrap_or(0.0);
        why.push(format!(
            "usd_per_hour_budget {b:.2} is too small: serving the traffic needs at least {:.2} $/hour",
            b + budget_v
        ));
    }
    for m in 0..nm {
        if replica_v[m] > 1e-6 {
            why.push(format!(
                "model `{}`: min_replicas {} cannot be met: only {} instance(s) fit in the GPU inventory",
                models.models[m].name,
                models.models[m].min_replicas,
                (models.models[m].min_replicas as f64 - replica_v[m]).round()
            ));
        }
    }
    if floor_v > 1e-6 {
        if let Objective::Cost { quality_floor } = opts.objective {
            why.push(format!(
                "quality floor {quality_floor:.3} cannot be reached: the best plan serves {:.3}",
                quality_floor - floor_v
            ));
        }
    }
    if spend_v > 1e-12 {
        if let Some(sp) = inst.spend {
            why.push(format!(
                "budget_per_query {:.3e} USD is too small: the cheapest routing the plan allows costs {:.3e} per query",
                sp.per_query,
                sp.per_query + spend_v
            ));
        }
    }
    let usd_per_hour = cost_of(inst, &instances);
    let expected_quality = quality_of(inst, &routing);
    let total = traffic.total_rate().max(1e-12);
    let unserved = (0..nc).map(|c| traffic.classes[c].rate_qps * unserved_v[c]).sum::<f64>() / total;
    Ok((Solution { instances, routing, expected_quality, usd_per_hour, solve_time: t0.elapsed(), gap, unserved }, why))
}

/// $/hour of a set of instances.
pub fn cost_of(inst: &Instance, instances: &[Vec<u32>]) -> f64 {
    let mut d = 0.0;
    for (m, mp) in inst.models.models.iter().enumerate() {
        for p in &mp.profiles {
            d += instances[m][p.gpu] as f64 * p.tensor_parallel as f64 * inst.inv.gpus[p.gpu].usd_per_hour;
        }
    }
    d
}

/// Rate-weighted mean quality of a routing.
pub fn quality_of(inst: &Instance, routing: &[Vec<f64>]) -> f64 {
    let total = inst.traffic.total_rate().max(1e-12);
    let mut q = 0.0;
    for (c, row) in routing.iter().enumerate() {
        for (m, y) in row.iter().enumerate() {
            q += inst.traffic.classes[c].rate_qps * y * inst.quality(c, m);
        }
    }
    q / total
}

/// Every constraint of the MIP, checked on a solution; None when all hold (tolerance 1e-6 relative).
pub fn violation(inst: &Instance, s: &Solution) -> Option<String> {
    let (inv, models, traffic) = (inst.inv, inst.models, inst.traffic);
    for (c, row) in s.routing.iter().enumerate() {
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > 1e-6 && s.unserved == 0.0 {
            return Some(format!("class {}: shares sum to {sum}", traffic.classes[c].name));
        }
    }
    for (m, mp) in models.models.iter().enumerate() {
        let routed: f64 =
            (0..traffic.classes.len()).map(|c| traffic.classes[c].rate_qps * inst.load(c) * s.routing[c][m]).sum();
        let cap: f64 =
            mp.profiles.iter().map(|p| models.target_utilization * p.tokens_per_s * s.instances[m][p.gpu] as f64).sum();
        if routed > cap * (1.0 + 1e-6) + 1e-6 {
            return Some(format!("model {}: routed {routed:.1} tokens/s > capacity {cap:.1}", mp.name));
        }
        let count: u32 = s.instances[m].iter().sum();
        if count < mp.min_replicas {
            return Some(format!("model {}: {count} instances < min_replicas {}", mp.name, mp.min_replicas));
        }
        for g in 0..inv.gpus.len() {
            if s.instances[m][g] > 0 && !mp.profiles.iter().any(|p| p.gpu == g) {
                return Some(format!("model {} placed on {} without a profile", mp.name, inv.gpus[g].kind));
            }
        }
    }
    for (g, gpu) in inv.gpus.iter().enumerate() {
        let (mut used, mut mem) = (0u32, 0.0);
        for (m, mp) in models.models.iter().enumerate() {
            if let Some(p) = mp.profiles.iter().find(|p| p.gpu == g) {
                used += p.tensor_parallel * s.instances[m][g];
                mem += (p.weights_gb + p.kv_gb) * s.instances[m][g] as f64;
            }
        }
        if used > gpu.count {
            return Some(format!("GPU {}: {used} used > {}", gpu.kind, gpu.count));
        }
        if mem > gpu.count as f64 * gpu.memory_gb + 1e-6 {
            return Some(format!("GPU {}: {mem} GB > {} GB", gpu.kind, gpu.count as f64 * gpu.memory_gb));
        }
    }
    if let Some(b) = inv.budget_usd_per_hour {
        if s.usd_per_hour > b * (1.0 + 1e-9) {
            return Some(format!("$ {:.2}/h > budget {b:.2}", s.usd_per_hour));
        }
    }
    None
}
