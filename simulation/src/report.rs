//! The report of a run: one HTML page with an SVG of answered calls per second by the zone they left
//! from, calls in progress against the limit, faults as shaded spans and failovers as ticks, then
//! the verdicts. People look at this before they read logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::oracle::Pbx;
use crate::Judged;

const W: f64 = 1000.0;
const H: f64 = 300.0;
const PAD: f64 = 40.0;
const COLOURS: [&str; 8] = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn write(dir: &Path, j: &Judged) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{}.html", j.scenario.name)), html(j))
}

pub fn html(j: &Judged) -> String {
    let o = &j.outcome.oracle;
    let secs = (j.sim_ms / 1000).max(1) as f64;
    let x = |ms: u64| PAD + (ms as f64 / 1000.0) / secs * (W - 2.0 * PAD);
    // answered calls per second, by the zone of the node they left from
    let mut by_zone: BTreeMap<String, BTreeMap<u64, u32>> = BTreeMap::new();
    for (sec, per_node) in &o.egress {
        for (node, n) in per_node {
            let zone = j.scenario.layout.by_name(node).map(|n| n.zone.clone()).unwrap_or_else(|| "?".into());
            *by_zone.entry(zone).or_default().entry(*sec).or_default() += n;
        }
    }
    let peak = by_zone.values().flat_map(|m| m.values()).copied().max().unwrap_or(1).max(j.scenario.limit).max(1) as f64;
    let y = |v: f64| H - PAD - v / peak * (H - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#);
    let _ = write!(svg, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##);
    // faults
    let windows = crate::invariants::down_windows(&j.outcome);
    for (i, (node, from, to)) in windows.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{PAD}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.12"><title>{} down {}-{} ms</title></rect>"##,
            x(*from),
            (x(*to) - x(*from)).max(1.0),
            H - 2.0 * PAD,
            esc(node),
            from,
            to
        );
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#d62728">{}</text>"##,
            x(*from) + 2.0,
            PAD - 4.0 - (i % 3) as f64 * 11.0,
            esc(node)
        );
    }
    for f in o.faults.iter().filter(|f| f.down.is_empty() && f.up.is_empty()) {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{PAD}" y2="{1:.1}" stroke="#d62728" stroke-dasharray="4,3"><title>{2}</title></line>"##,
            x(f.at_ms),
            H - PAD,
            esc(&f.what)
        );
    }
    // limit and calls in progress
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#000" stroke-dasharray="2,2"/>"##,
        W - PAD,
        y(j.scenario.limit as f64)
    );
    let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}">limit {}</text>"#, W - PAD - 50.0, y(j.scenario.limit as f64) - 3.0, j.scenario.limit);
    let mut path = String::new();
    let mut last = 0u32;
    for (t, n) in &o.in_progress {
        let _ = write!(
            path,
            "{}{:.1},{:.1} L{:.1},{:.1} ",
            if path.is_empty() { "M" } else { "L" },
            x(*t),
            y(last as f64),
            x(*t),
            y(*n as f64)
        );
        last = *n;
    }
    let _ = write!(svg, r##"<path d="{path}" fill="none" stroke="#ff7f0e" stroke-width="1.5"><title>calls in progress</title></path>"##);
    // answered per second by zone
    for (i, (zone, series)) in by_zone.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> =
            (0..secs as u64).map(|s| format!("{:.1},{:.1}", x(s * 1000 + 500), y(*series.get(&s).unwrap_or(&0) as f64))).collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(zone)
        );
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#, PAD + 5.0 + i as f64 * 90.0, H - 8.0, esc(zone));
    }
    // failovers: calls that reached the Secondary
    for c in o.calls.values() {
        if let Some(s) = c.legs.get(&Pbx::Secondary).and_then(|l| l.first()) {
            let _ = write!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#ff7f0e"/>"##,
                x(s.invite_ms),
                H - PAD,
                H - PAD + 6.0
            );
        }
    }
    let _ = write!(svg, r##"<line x1="{PAD}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#000"/>"##, W - PAD, H - PAD);
    for s in (0..=secs as u64).step_by(5) {
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s}s</text>"#, x(s * 1000), H - PAD + 16.0);
    }
    svg.push_str("</svg>");
    let mut rows = String::new();
    for v in &j.verdicts {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if v.ok() { "ok" } else { "<b style='color:#d62728'>FAIL</b>" },
            v.name,
            v.property,
            v.checked,
            esc(&v.violations.join("; "))
        );
    }
    let faults: String = o.faults.iter().map(|f| format!("<li>{:.1} s: {}</li>", f.at_ms as f64 / 1000.0, esc(&f.what))).collect();
    format!(
        "<!doctype html><meta charset=utf-8><title>{name}</title><body style='font-family:sans-serif'>\
         <h2>{name} (seed {seed})</h2><p>{about}. Layout {layout}, limit {limit}, {calls} calls, {sim:.1} s simulated. trace-hash <code>{hash}</code></p>\
         {svg}<p>Lines: answered calls per second by the zone they left from; orange: calls in progress (dashed: the limit); red spans: nodes down; ticks under the axis: calls that reached the Secondary.</p>\
         <h3>Faults</h3><ul>{faults}</ul><h3>Invariants</h3><table border=1 cellpadding=4><tr><th></th><th>invariant</th><th>property</th><th>checked</th><th>violations</th></tr>{rows}</table></body>",
        name = esc(&j.scenario.name),
        seed = j.seed,
        about = esc(&j.scenario.about),
        layout = j.scenario.layout.ha,
        limit = j.scenario.limit,
        calls = j.calls,
        sim = j.sim_ms as f64 / 1000.0,
        hash = j.trace_hash,
    )
}
