//! Plans as files (llmroute_core::plan::Plan) and as readable tables.

use crate::solve::{Instance, Solution};
use llmroute_core::plan::Plan;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// GPUs of each type a set of instances uses.
pub fn gpus_used(inst: &Instance, instances: &[Vec<u32>]) -> Vec<u32> {
    let mut used = vec![0u32; inst.inv.gpus.len()];
    for (m, mp) in inst.models.models.iter().enumerate() {
        for p in &mp.profiles {
            used[p.gpu] += instances[m][p.gpu] * p.tensor_parallel;
        }
    }
    used
}

pub fn to_plan(inst: &Instance, s: &Solution, kind: &str, inputs: BTreeMap<String, PathBuf>) -> Plan {
    let mut instances = BTreeMap::new();
    for (m, mp) in inst.models.models.iter().enumerate() {
        let per: BTreeMap<String, u32> = inst
            .inv
            .gpus
            .iter()
            .enumerate()
            .filter(|(g, _)| s.instances[m][*g] > 0)
            .map(|(g, gpu)| (gpu.kind.clone(), s.instances[m][g]))
            .collect();
        if !per.is_empty() {
            instances.insert(mp.name.clone(), per);
        }
    }
    let routing = inst
        .traffic
        .classes
        .iter()
        .enumerate()
        .map(|(c, k)| {
            let row = inst
                .models
                .models
                .iter()
                .enumerate()
                .filter(|(m, _)| s.routing[c][*m] > 1e-9)
                .map(|(m, mp)| (mp.name.clone(), (s.routing[c][m] * 1e6).round() / 1e6))
                .collect();
            (k.name.clone(), row)
        })
        .collect();
    let gpus_used = inst
        .inv
        .gpus
        .iter()
        .zip(gpus_used(inst, &s.instances))
        .filter(|(_, n)| *n > 0)
        .map(|(g, n)| (g.kind.clone(), n))
        .collect();
    Plan {
        kind: kind.into(),
        instances,
        routing,
        expected_quality: (s.expected_quality * 1e6).round() / 1e6,
        usd_per_hour: (s.usd_per_hour * 1e4).round() / 1e4,
        gpus_used,
        budget_per_query: inst.spend.map(|s| s.per_query),
        inputs,
    }
}

/// Instances per model per GPU type, each model's utilization (routed / planned throughput),
/// expected quality, $/hour, GPUs used.
pub fn table(inst: &Instance, s: &Solution, title: &str) -> String {
    let mut out = String::new();
    let gpus = &inst.inv.gpus;
    let _ = writeln!(out, "== {title}");
    let _ = write!(out, "{:<34}", "model");
    for g in gpus {
        let _ = write!(out, " {:>10}", g.kind);
    }
    let _ = writeln!(out, " {:>8} {:>7}", "util %", "share %");
    let total_rate = inst.traffic.total_rate().max(1e-12);
    for (m, mp) in inst.models.models.iter().enumerate() {
        let count: u32 = s.instances[m].iter().sum();
        let routed: f64 = (0..inst.traffic.classes.len())
            .map(|c| inst.traffic.classes[c].rate_qps * inst.load(c) * s.routing[c][m])
            .sum();
        let share: f64 =
            (0..inst.traffic.classes.len()).map(|c| inst.traffic.classes[c].rate_qps * s.routing[c][m]).sum::<f64>()
                / total_rate;
        if count == 0 && routed == 0.0 {
            continue;
        }
        let cap: f64 = mp.profiles.iter().map(|p| p.tokens_per_s * s.instances[m][p.gpu] as f64).sum();
        let _ = write!(out, "{:<34}", mp.name);
        for g in 0..gpus.len() {
            let v = s.instances[m][g];
            let _ = write!(out, " {:>10}", if v == 0 { "-".to_string() } else { v.to_string() });
        }
        let util = if cap > 0.0 { 100.0 * routed / cap } else { 0.0 };
        let _ = writeln!(out, " {:>8.1} {:>7.1}", util, 100.0 * share);
    }
    let used = gpus_used(inst, &s.instances);
    let _ = write!(out, "{:<34}", "GPUs used / available");
    for (g, u) in gpus.iter().zip(&used) {
        let _ = write!(out, " {:>10}", format!("{u}/{}", g.count));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "expected quality {:.4}   $/hour {:.2}   unserved {:.1} %",
        s.expected_quality,
        s.usd_per_hour,
        100.0 * s.unserved
    );
    out
}
