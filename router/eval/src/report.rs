//! The eval report for a person (table) and as a picture (SVG cost–accuracy curves).

use super::EvalReport;
use llmroute_core::{CoreError, Result};
use plotters::prelude::*;
use std::fmt::Write;
use std::path::Path;

pub fn table(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "records {} (train {}, test {}), models {}", r.records, r.n_train, r.n_test, r.models.len());
    let _ = writeln!(s, "settings {}", r.settings);
    let _ = writeln!(s, "\nsingle models on the test split:");
    for m in &r.single_models {
        let _ = writeln!(
            s,
            "  {:<36} accuracy {:.3}  $/query {:.7}",
            m["model"].as_str().unwrap_or(""),
            m["accuracy"].as_f64().unwrap_or(f64::NAN),
            m["mean_cost"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        s,
        "\n{:<28} {:>5} {:>11} {:>11} {:>7} {:>15} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "assigner",
        "spend",
        "target $/q",
        "real $/q",
        "acc",
        "95% CI",
        "batches",
        "over-bud",
        "overdraft",
        "max over",
        "roll over",
        "p50 ms",
        "p99 ms"
    );
    for x in &r.results {
        let _ = writeln!(
            s,
            "{:<28} {:>5.2} {:>11.7} {:>11.7} {:>7.4} [{:.3}, {:.3}] {:>7} {:>9} {:>9} {:>8.3} {:>8.4} {:>8.3} {:>8.3}",
            x.assigner,
            x.spend_frac,
            x.target_cost,
            x.mean_cost,
            x.accuracy,
            x.accuracy_ci[0],
            x.accuracy_ci[1],
            x.batches,
            x.batches_over_budget,
            x.batches_overdraft,
            x.max_overspend,
            x.rolling_overspend,
            x.solve_ms_p50,
            x.solve_ms_p99
        );
    }
    if !r.matched.is_empty() {
        let _ = writeln!(s, "\naccuracy at matched realized cost (upper hull of each assigner's test sweep):");
        let mut names: Vec<&str> = r.matched.iter().map(|m| m.assigner.as_str()).collect();
        names.dedup();
        names.sort();
        names.dedup();
        let _ = write!(s, "{:>11}", "$/query");
        for n in &names {
            let _ = write!(s, " {:>20}", n);
        }
        let _ = writeln!(s);
        let mut costs: Vec<f64> = r.matched.iter().map(|m| m.cost).collect();
        costs.dedup();
        for &c in &costs {
            let _ = write!(s, "{:>11.7}", c);
            for n in &names {
                let a = r.matched.iter().find(|m| m.cost == c && m.assigner == *n).map(|m| m.accuracy);
                let _ = write!(s, " {:>20}", a.map_or("-".into(), |a| format!("{a:.4}")));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "\nmatched accuracy with its 95% interval, and the difference to per-query-price (paired 95% interval):"
        );
        for &c in &costs {
            for m in r.matched.iter().filter(|m| m.cost == c) {
                let d = m.vs_per_query.map_or(String::new(), |d| {
                    format!("  vs per-query-price {:+.4} [{:+.4}, {:+.4}]", d[0], d[1], d[2])
                });
                let _ = writeln!(
                    s,
                    "  {:>11.7} {:<28} {:.4} [{:.4}, {:.4}]{}",
                    c, m.assigner, m.accuracy, m.ci[0], m.ci[1], d
                );
            }
        }
        let _ = writeln!(s, "\nAIQ (mean of the hull over the common cost range):");
        for (k, v) in &r.aiq {
            let _ = writeln!(s, "  {:<28} {:.4}", k, v);
        }
    }
    for cm in &r.cost_models {
        let _ = writeln!(
            s,
            "\ncost model ({} estimator), test split: realized / predicted and p90 coverage, calibrated (raw):",
            cm["estimator"].as_str().unwrap_or("?")
        );
        for m in cm["models"].as_array().into_iter().flatten() {
            let _ = writeln!(s, "  {}", estimator::costmodel::table_line(m));
        }
    }
    s
}

fn caption(r: &EvalReport) -> String {
    let st = &r.settings;
    let mut c =
        format!("cost vs accuracy: {} test queries, {} batching", r.n_test, st["batching"].as_str().unwrap_or("?"));
    if let Some(f) = st["capacity_frac"].as_f64() {
        let _ = write!(c, ", capacity {f}");
    }
    for (key, label) in [("gamma", "Γ"), ("estimator_noise", "noise")] {
        if let Some(v) = st[key].as_f64().filter(|v| *v > 0.0) {
            let _ = write!(c, ", {label} {v}");
        }
    }
    c
}

/// Draws each assigner's test sweep (cost vs accuracy) and the calibrated spend points.
pub fn plot(r: &EvalReport, path: &Path) -> Result<()> {
    let err = |e: String| CoreError::Io { path: path.into(), source: std::io::Error::other(e) };
    let pts: Vec<(f64, f64)> = r
        .sweep
        .iter()
        .map(|p| (p.cost, p.accuracy))
        .chain(r.results.iter().map(|x| (x.mean_cost, x.accuracy)))
        .collect();
    if pts.is_empty() {
        return Err(CoreError::Invalid("nothing to plot".into()));
    }
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad_x = ((x1 - x0) * 0.05).max(1e-9);
    let pad_y = ((y1 - y0) * 0.05).max(0.01);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption(r), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y)..(y1 + pad_y))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("realized mean cost per query (USD)")
        .y_desc("accuracy")
        .x_label_formatter(&|x| format!("{x:.1e}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut names: Vec<String> = r.sweep.iter().map(|p| p.assigner.clone()).collect();
    names.sort();
    names.dedup();
    for (k, name) in names.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let mut line: Vec<(f64, f64)> =
            r.sweep.iter().filter(|p| &p.assigner == name).map(|p| (p.cost, p.accuracy)).collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(e.to_string()))?;
        let spend: Vec<(f64, f64)> =
            r.results.iter().filter(|x| &x.assigner == name).map(|x| (x.mean_cost, x.accuracy)).collect();
        chart
            .draw_series(spend.iter().map(|&p| TriangleMarker::new(p, 7, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
