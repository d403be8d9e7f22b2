//! `hatrunk-sim`: run scenarios from seeds and judge them. Exit 0 when every run passed, 1 when
//! one failed, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hatrunk_simulation::run::Options;
use hatrunk_simulation::scenario::Scenario;
use hatrunk_simulation::{judge, report, Judged};

#[derive(Parser, Debug)]
#[command(name = "hatrunk-sim", about = "Deterministic simulation of hatrunk clusters under faults")]
struct Args {
    /// Run N random scenarios from consecutive seeds (starting at --from).
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of --seeds.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Run one seed: the random scenario it derives, or the --scenario with this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run a named scenario (see --list).
    #[arg(long)]
    scenario: Option<String>,
    /// Run every named scenario.
    #[arg(long)]
    all_scenarios: bool,
    /// List the named scenarios.
    #[arg(long)]
    list: bool,
    /// Write a picture and the verdicts of each run into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Build the cluster with a deliberate defect, to prove the checks catch it: `skip-pool-check`.
    #[arg(long, hide = true)]
    broken: Option<String>,
    /// Print every call's record as the oracle has it (debugging a failing seed).
    #[arg(long)]
    dump_calls: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("HATRUNK_SIM_LOG").is_some() {
        tracing_subscriber_init();
    }
    let opts = match args.broken.as_deref() {
        None => Options::default(),
        Some("skip-pool-check") => Options { broken_admission: true },
        Some(other) => {
            eprintln!("error: unknown --broken {other:?} (known: skip-pool-check)");
            return ExitCode::from(2);
        }
    };
    if args.list {
        for n in Scenario::names() {
            let sc = Scenario::named(n).expect("listed scenarios exist");
            println!("{n:32} {:6} {:>4} s  {}", sc.layout.name, sc.end_ms / 1000, sc.about);
        }
        return ExitCode::SUCCESS;
    }
    let mut runs: Vec<(Scenario, u64)> = Vec::new();
    if args.all_scenarios {
        runs.extend(Scenario::names().into_iter().map(|n| (Scenario::named(n).expect("listed"), args.seed.unwrap_or(1))));
    } else if let Some(name) = &args.scenario {
        match Scenario::named(name) {
            Some(sc) => runs.push((sc, args.seed.unwrap_or(1))),
            None => {
                eprintln!("error: no scenario named {name:?}; see --list");
                return ExitCode::from(2);
            }
        }
    } else if let Some(seed) = args.seed {
        runs.push((Scenario::random(seed), seed));
    } else if let Some(n) = args.seeds {
        return seeds(args.from, n, opts, args.report.as_deref());
    } else {
        eprintln!("error: say what to run: --seeds N, --seed S, --scenario NAME, --all-scenarios or --list");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for (sc, seed) in runs {
        let j = judge(sc, seed, opts);
        if args.dump_calls {
            for (cid, c) in &j.outcome.oracle.calls {
                println!("{cid} {c:?}");
            }
        }
        print_run(&j);
        if let Some(dir) = &args.report {
            if let Err(e) = report::write(dir, &j) {
                eprintln!("error: cannot write the report into {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        }
        if !j.passed() {
            failed += 1;
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn repro(j: &Judged) -> String {
    let broken = if j.outcome.broken { " --broken skip-pool-check" } else { "" };
    if j.scenario.name.starts_with("seed-") {
        format!("hatrunk-sim --seed {}{broken}", j.seed)
    } else {
        format!("hatrunk-sim --scenario {} --seed {}{broken}", j.scenario.name, j.seed)
    }
}

fn print_run(j: &Judged) {
    println!(
        "{} ({} layout, limit {}, {} calls, {:.1} s simulated): {}",
        j.scenario.name,
        j.scenario.layout.name,
        j.scenario.limit,
        j.calls,
        j.sim_ms as f64 / 1000.0,
        if j.passed() { "passed" } else { "FAILED" }
    );
    for v in &j.verdicts {
        println!("  {:4} {:28} property {:5} checked {:6}", if v.ok() { "ok" } else { "FAIL" }, v.name, v.property, v.checked);
        for x in &v.violations {
            println!("         {x}");
        }
    }
    if !j.passed() {
        println!("  reproduce: {}", repro(j));
    }
    println!("trace-hash: {}", j.trace_hash);
}

fn seeds(from: u64, n: u64, opts: Options, report_dir: Option<&std::path::Path>) -> ExitCode {
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {elapsed_precise} (eta {eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for seed in from..from + n {
        let j = judge(Scenario::random(seed), seed, opts);
        if let Some(dir) = report_dir {
            let _ = report::write(dir, &j);
        }
        if !j.passed() {
            bar.suspend(|| print_run(&j));
            failures.push(repro(&j));
            bar.set_message(format!("{} failed", failures.len()));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for f in &failures {
        println!("failed: {f}");
    }
    println!("{:.1} seeds/minute", n as f64 * 60.0 / secs.max(0.001));
    println!("passed {}/{} seeds", n - failures.len() as u64, n);
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HATRUNK_SIM_LOG"))
        .with_writer(std::io::stderr)
        .try_init();
}
