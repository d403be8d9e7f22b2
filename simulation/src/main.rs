//! `hatrunk-sim`: run scenarios from seeds and judge them. Exit 0 when every run passed, 1 when
//! one failed, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hatrunk_simulation::broken::Broken;
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
    /// Build the cluster with a deliberate defect, to prove the checks catch it: `skip-pool-check`,
    /// `failover-on-486`.
    #[arg(long, hide = true)]
    broken: Option<String>,
    /// Print every call's record as the oracle has it (debugging a failing seed).
    #[arg(long)]
    dump_calls: bool,
    /// Runs at once for --seeds and --all-scenarios (each in its own process; default: the cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Instead of clusters: run the WAN false-alarm model (`wan.rs`) for this many simulated hours
    /// per seed (--seeds, --from), with the product's timing, and fail if region A is ever seen down.
    #[arg(long)]
    wan_hours: Option<u64>,
    /// --wan-hours: the link's round trip (ms).
    #[arg(long, default_value_t = 150)]
    wan_rtt_ms: u64,
    /// --wan-hours: the chance a packet is lost, each way.
    #[arg(long, default_value_t = 0.01)]
    wan_loss: f64,
    /// --wan-hours: the TCP retransmission timer's floor (ms; Linux 200, a route's `rto_min`).
    #[arg(long, default_value_t = 200)]
    wan_rto_min_ms: u64,
    /// --wan-hours: Raft election timing to try instead of the product's (`MIN,MAX` ms).
    #[arg(long)]
    wan_election: Option<String>,
    /// Print one run's result as a line of JSON (how --seeds and --all-scenarios get their runs).
    #[arg(long, hide = true)]
    child: bool,
}

/// One run's result as a child process reports it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildResult {
    passed: bool,
    report: String,
    repro: String,
}

/// `--wan-hours`: one line per seed and the totals; exit 1 when any run saw region A down.
fn wan(hours: u64, args: &Args) -> ExitCode {
    let mut p = hatrunk_simulation::wan::WanParams::product(hours, args.wan_rtt_ms, args.wan_loss);
    p.rto_min_ms = args.wan_rto_min_ms;
    if let Some(e) = &args.wan_election {
        let Some((lo, hi)) = e.split_once(',').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))) else {
            eprintln!("error: --wan-election MIN,MAX (ms)");
            return ExitCode::from(2);
        };
        (p.election_min_ms, p.election_max_ms) = (lo, hi);
    }
    println!("{p:?}");
    let (mut region, mut member, mut elections) = (0, 0, 0);
    let n = args.seeds.unwrap_or(1);
    for seed in args.from..args.from + n {
        let r = hatrunk_simulation::wan::run(seed, &p);
        println!("seed {seed}: {r:?}");
        region += r.region_down;
        member += r.member_down;
        elections += r.elections;
    }
    println!("{n} runs of {hours} h: region A seen down {region} times, a member {member} times, follower elections {elections}");
    if region == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("HATRUNK_SIM_LOG").is_some() {
        tracing_subscriber_init();
    }
    let opts = match args.broken.as_deref() {
        None => Options::default(),
        Some(b) if Broken::parse(b).is_some() => Options { broken: Broken::parse(b), ..Options::default() },
        Some(other) => {
            let known: Vec<&str> = Broken::ALL.iter().map(|b| b.name()).collect();
            eprintln!("error: unknown --broken {other:?} (known: {})", known.join(", "));
            return ExitCode::from(2);
        }
    };
    if let Some(hours) = args.wan_hours {
        return wan(hours, &args);
    }
    if args.list {
        for n in Scenario::names() {
            let sc = Scenario::named(n).expect("listed scenarios exist");
            println!("{n:32} {:6} {:>4} s  {}", sc.layout.ha, sc.end_ms / 1000, sc.about);
        }
        return ExitCode::SUCCESS;
    }
    let mut runs: Vec<(Scenario, u64)> = Vec::new();
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let passthrough = |extra: &mut Vec<String>| {
        if let Some(b) = &args.broken {
            extra.extend(["--broken".to_string(), b.clone()]);
        }
        if let Some(r) = &args.report {
            extra.extend(["--report".to_string(), r.display().to_string()]);
        }
    };
    if args.all_scenarios && !args.child {
        let specs: Vec<Vec<String>> = Scenario::names()
            .into_iter()
            .map(|n| {
                let mut v = vec!["--scenario".to_string(), n.to_string(), "--seed".to_string(), args.seed.unwrap_or(1).to_string()];
                passthrough(&mut v);
                v
            })
            .collect();
        return in_children(specs, jobs, false);
    }
    if let (Some(n), false) = (args.seeds, args.child) {
        let specs: Vec<Vec<String>> = (args.from..args.from + n)
            .map(|seed| {
                let mut v = vec!["--seed".to_string(), seed.to_string()];
                passthrough(&mut v);
                v
            })
            .collect();
        return in_children(specs, jobs, true);
    }
    if let Some(name) = &args.scenario {
        match Scenario::named(name) {
            Some(sc) => runs.push((sc, args.seed.unwrap_or(1))),
            None => {
                eprintln!("error: no scenario named {name:?}; see --list");
                return ExitCode::from(2);
            }
        }
    } else if let Some(seed) = args.seed {
        runs.push((Scenario::random(seed), seed));
    } else {
        eprintln!("error: say what to run: --seeds N, --seed S, --scenario NAME, --all-scenarios or --list");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for (sc, seed) in runs {
        let j = judge(sc, seed, opts);
        if args.child {
            let r = ChildResult { passed: j.passed(), report: run_text(&j), repro: repro(&j) };
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            if let Some(dir) = &args.report {
                let _ = report::write(dir, &j);
            }
            return if j.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) };
        }
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
    let broken = j.outcome.broken.map(|b| format!(" --broken {}", b.name())).unwrap_or_default();
    if j.scenario.name.starts_with("seed-") {
        format!("hatrunk-sim --seed {}{broken}", j.seed)
    } else {
        format!("hatrunk-sim --scenario {} --seed {}{broken}", j.scenario.name, j.seed)
    }
}

fn print_run(j: &Judged) {
    print!("{}", run_text(j));
}

fn run_text(j: &Judged) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} layout, limit {}, {} calls, {:.1} s simulated): {}",
        j.scenario.name,
        j.scenario.layout.ha,
        j.scenario.limit,
        j.calls,
        j.sim_ms as f64 / 1000.0,
        if j.passed() { "passed" } else { "FAILED" }
    );
    for v in &j.verdicts {
        let _ = writeln!(out, "  {:4} {:28} property {:5} checked {:6}", if v.ok() { "ok" } else { "FAIL" }, v.name, v.property, v.checked);
        for x in &v.violations {
            let _ = writeln!(out, "         {x}");
        }
    }
    if !j.passed() {
        let _ = writeln!(out, "  reproduce: {}", repro(j));
    }
    let _ = writeln!(out, "trace-hash: {}", j.trace_hash);
    out
}

/// Run each spec as `hatrunk-sim --child ARGS` in its own process, `jobs` at a time: a process
/// holds one run, so what `--seed S` replays is exactly what was judged here.
fn in_children(specs: Vec<Vec<String>>, jobs: usize, bar: bool) -> ExitCode {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find my own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let n = specs.len() as u64;
    let progress = if bar { indicatif::ProgressBar::new(n) } else { indicatif::ProgressBar::hidden() };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {elapsed_precise} (eta {eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let queue = std::sync::Mutex::new(specs.into_iter().enumerate().collect::<std::collections::VecDeque<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some((i, spec)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { return };
                let out = std::process::Command::new(&me).arg("--child").args(&spec).output();
                let r = match out {
                    Ok(o) => serde_json::from_slice::<ChildResult>(&o.stdout).unwrap_or_else(|_| ChildResult {
                        passed: false,
                        report: format!("{}: the run crashed ({})\n{}", spec.join(" "), o.status, String::from_utf8_lossy(&o.stderr)),
                        repro: format!("hatrunk-sim {}", spec.join(" ")),
                    }),
                    Err(e) => ChildResult { passed: false, report: format!("cannot start a run: {e}\n"), repro: String::new() },
                };
                if bar && !r.passed {
                    progress.suspend(|| print!("{}", r.report));
                }
                progress.inc(1);
                results.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            });
        }
    });
    progress.finish_and_clear();
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let failed: Vec<&ChildResult> = results.iter().map(|(_, r)| r).filter(|r| !r.passed).collect();
    if bar {
        for f in &failed {
            println!("failed: {}", f.repro);
        }
        println!("{:.1} seeds/minute ({jobs} at a time)", n as f64 * 60.0 / started.elapsed().as_secs_f64().max(0.001));
        println!("passed {}/{} seeds", n - failed.len() as u64, n);
    } else {
        for (_, r) in &results {
            print!("{}", r.report);
        }
        println!("passed {}/{} scenarios", n - failed.len() as u64, n);
    }
    if failed.is_empty() {
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
