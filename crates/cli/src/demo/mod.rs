//! `hatrunk demo`: a 2T+4T cluster with its witness on loopback (nine real `hatrunk run` processes),
//! a simulated carrier calling into region hk1 and two simulated PBXes, then, while calls flow: the
//! Primary PBX fails (Auto Fail-over), zone sg1-a dies (`kill -9`, the Raft leader with it), region
//! sg1 dies, region sg1 returns. A row per second shows where calls left the cluster; the summary
//! checks that every call offered 2.5 s after each fault was answered, and that no slot leaked.
//! Exit 0 when all of that holds, 1 when not.

mod ua;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ua::{Shared, Stats};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// First port of the demo's range (each node takes 3 ports every 10; PBXes and carrier at +900).
    #[arg(long, default_value_t = 45000)]
    pub base_port: u16,
    /// Calls per second offered by the carrier.
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Seconds per act (normal, Primary failing, zone down, region down, region back).
    #[arg(long, default_value_t = 8)]
    pub act_secs: u64,
    /// How long each answered call is held before the carrier hangs up (ms).
    #[arg(long, default_value_t = 2000)]
    pub hold_ms: u64,
}

const LAYOUT: [(u64, &str, &str, &str, bool); 9] = [
    (1, "sg1-a1", "sg1", "sg1-a", false),
    (2, "sg1-a2", "sg1", "sg1-a", false),
    (3, "sg1-b1", "sg1", "sg1-b", false),
    (4, "sg1-b2", "sg1", "sg1-b", false),
    (5, "hk1-a1", "hk1", "hk1-a", false),
    (6, "hk1-a2", "hk1", "hk1-a", false),
    (7, "hk1-b1", "hk1", "hk1-b", false),
    (8, "hk1-b2", "hk1", "hk1-b", false),
    (9, "tk1-witness", "tk1", "tk1-a", true),
];
const ZONES: [&str; 4] = ["sg1-a", "sg1-b", "hk1-a", "hk1-b"];
const ENTRY: usize = 4; // hk1-a1: calls enter in the region that survives

struct Proc {
    zone: &'static str,
    sip: u16,
    admin: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe).arg("run").arg("--config").arg(&self.config).stdout(log.try_clone()?).stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(admin: u16, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(std::env::current_exe()?).args(args).env("HATRUNK_ENDPOINTS", format!("127.0.0.1:{admin}")).stderr(Stdio::piped()).output()
}

fn wait_port(port: u16) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn healthy_count(admin: u16) -> usize {
    let Ok(out) = cli(admin, &["cluster", "members", "-o", "json"]) else { return 0 };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array().map(|a| a.iter().filter(|m| m["healthy"] == true).count()).unwrap_or(0)
}

fn write_configs(dir: &Path, base: u16) -> std::io::Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for (id, name, region, zone, witness) in LAYOUT {
        let sip = base + 10 * id as u16;
        let (admin, http) = (sip + 1, sip + 2);
        let data = dir.join(name);
        std::fs::create_dir_all(&data)?;
        let cfg = format!(
            "[node]\nid = {id}\nname = \"{name}\"\nregion = \"{region}\"\nzone = \"{zone}\"\nrole = \"{}\"\ndata_dir = \"{}\"\n\
             [sip]\nlisten = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\"]\n\
             [cluster]\nlisten = \"127.0.0.1:{admin}\"\nbootstrap = {}\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n",
            if witness { "witness" } else { "sip" },
            data.join("data").display(),
            id == 1
        );
        let config = data.join("node.toml");
        std::fs::write(&config, cfg)?;
        procs.push(Proc { zone, sip, admin, config, log: data.join("node.log"), child: None });
    }
    Ok(procs)
}

fn trunk(base: u16) -> String {
    format!(
        "id = \"demo\"\nnumbers = [\"6561230000\"]\nmax_concurrent_calls = 500\nmode = \"auto-failover\"\n\
         advanced_ha = \"2t+4t\"\nprimary_region = \"sg1\"\nfailover_policy = \"current\"\n\
         [primary]\nlabel = \"HQ PBX\"\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{}\"\nallowed_ips = [\"127.0.0.1/32\"]\n\
         [secondary]\nlabel = \"DR PBX\"\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{}\"\nallowed_ips = [\"127.0.0.1/32\"]\n",
        base + 900,
        base + 901
    )
}

/// Bring the cluster up: nodes started, joined through node 1, all healthy, the trunk applied.
fn bring_up(procs: &mut [Proc], base: u16, dir: &Path) -> Result<(), String> {
    for p in procs.iter_mut() {
        p.spawn().map_err(|e| format!("cannot start a node: {e}"))?;
    }
    for p in procs.iter() {
        if !wait_port(p.admin) {
            return Err(format!("a node did not start; see {}", p.log.display()));
        }
    }
    let first = procs[0].admin;
    for p in &procs[1..] {
        let out = cli(first, &["cluster", "join", &format!("127.0.0.1:{}", p.admin)]).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("join failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        eprint!(".");
    }
    let t0 = Instant::now();
    while healthy_count(first) < procs.len() {
        if t0.elapsed() > Duration::from_secs(20) {
            return Err("the cluster did not become healthy within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let file = dir.join("trunk.toml");
    std::fs::write(&file, trunk(base)).map_err(|e| e.to_string())?;
    let out = cli(first, &["trunk", "apply", &file.display().to_string()]).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("trunk apply failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    eprintln!(" cluster of 8 SIP nodes + witness is up");
    Ok(())
}

pub async fn run(args: DemoArgs) -> ExitCode {
    let base = args.base_port;
    if base > 64_000 {
        eprintln!("error: --base-port must leave room for 1000 ports");
        return ExitCode::from(2);
    }
    let dir = std::env::temp_dir().join(format!("hatrunk-demo-{}", std::process::id()));
    let mut procs = match write_configs(&dir, base) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    println!("hatrunk demo: 2T+4T on loopback. Region sg1 (zones sg1-a, sg1-b) is primary, region hk1 (hk1-a, hk1-b)");
    println!("is secondary, the witness sits in tk1. The carrier calls hk1-a1 at {} calls/s; the trunk is Auto Fail-over", args.rate);
    println!("from the HQ PBX (Primary) to the DR PBX (Secondary). Node logs: {}", dir.display());
    eprint!("starting 9 nodes");
    let up = { tokio::task::block_in_place(|| bring_up(&mut procs, base, &dir)) };
    if let Err(e) = up {
        eprintln!("\nerror: {e}");
        return ExitCode::from(1);
    }
    let stats: Shared = Arc::new(Mutex::new(Stats::default()));
    let failing = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let pbx_addr = |off: u16| SocketAddr::from(([127, 0, 0, 1], base + off));
    tokio::spawn(ua::pbx(pbx_addr(900), failing.clone(), stats.clone(), t0));
    tokio::spawn(ua::pbx(pbx_addr(901), Arc::new(AtomicBool::new(false)), stats.clone(), t0));
    let act = Duration::from_secs(args.act_secs.max(4));
    let offering = act * 5;
    let carrier = tokio::spawn(ua::carrier(
        pbx_addr(902),
        SocketAddr::from(([127, 0, 0, 1], procs[ENTRY].sip)),
        "6561230000".into(),
        args.rate,
        Duration::from_millis(args.hold_ms),
        offering,
        stats.clone(),
        t0,
    ));
    let zone_of: BTreeMap<u16, &str> = procs.iter().map(|p| (p.sip, p.zone)).collect();
    println!();
    println!("  time | offered answered failed | {:>6} {:>6} {:>6} {:>6} | failovers", ZONES[0], ZONES[1], ZONES[2], ZONES[3]);
    let mut events: Vec<(Duration, String)> = Vec::new();
    let mut next_act = 1u32;
    let mut shown = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = t0.elapsed();
        let done_secs = now.as_secs() as usize;
        while shown < done_secs {
            print_row(&stats, shown, &zone_of);
            shown += 1;
        }
        if next_act <= 4 && now >= act * next_act {
            let (short, text) = match next_act {
                1 => {
                    failing.store(true, Ordering::Relaxed);
                    ("Primary failing", "the HQ PBX (Primary) fails every call with 503: Auto Fail-over to the DR PBX")
                }
                2 => {
                    failing.store(false, Ordering::Relaxed);
                    procs[0].kill();
                    procs[1].kill();
                    ("zone sg1-a down", "HQ PBX back; zone sg1-a down (kill -9 sg1-a1, sg1-a2; the Raft leader was sg1-a1)")
                }
                3 => {
                    procs[2].kill();
                    procs[3].kill();
                    ("region sg1 down", "region sg1 down (kill -9 sg1-b1, sg1-b2): calls move to region hk1")
                }
                _ => {
                    for p in procs.iter_mut().take(4) {
                        let _ = p.spawn();
                    }
                    ("region sg1 back", "region sg1 back (4 nodes restarted on their disks): calls return to it")
                }
            };
            println!("  ---- {:>5.1}s  {text}", now.as_secs_f64());
            events.push((now, short.to_string()));
            next_act += 1;
        }
        if carrier.is_finished() {
            break;
        }
        if now > offering + Duration::from_secs(30) {
            println!("  (calls still open 30 s after the last offer; giving up on them)");
            break;
        }
    }
    summary(&stats, &events, &zone_of, procs[ENTRY].admin, act)
}

fn print_row(stats: &Shared, i: usize, zone_of: &BTreeMap<u16, &str>) {
    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
    let get = |v: &Vec<u32>| v.get(i).copied().unwrap_or(0);
    let mut by_zone = [0u32; 4];
    if let Some(m) = s.egress.get(i) {
        for (port, n) in m {
            if let Some(z) = zone_of.get(port).and_then(|z| ZONES.iter().position(|x| x == z)) {
                by_zone[z] += n;
            }
        }
    }
    println!(
        "  {:>3}s | {:>7} {:>8} {:>6} | {:>6} {:>6} {:>6} {:>6} | {:>9}",
        i,
        get(&s.offered),
        get(&s.answered),
        get(&s.failed),
        by_zone[0],
        by_zone[1],
        by_zone[2],
        by_zone[3],
        get(&s.failovers)
    );
}

fn summary(stats: &Shared, events: &[(Duration, String)], zone_of: &BTreeMap<u16, &str>, entry_admin: u16, act: Duration) -> ExitCode {
    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
    let offered: u32 = s.offered.iter().sum();
    let answered: u32 = s.answered.iter().sum();
    let failed: u32 = s.failed.iter().sum();
    let failovers: u32 = s.failovers.iter().sum();
    let mut by_zone: BTreeMap<&str, u32> = BTreeMap::new();
    for m in &s.egress {
        for (port, n) in m {
            *by_zone.entry(zone_of.get(port).copied().unwrap_or("?")).or_default() += n;
        }
    }
    println!();
    println!("Summary");
    let pct = if offered > 0 { 100.0 * f64::from(answered) / f64::from(offered) } else { 0.0 };
    println!("  calls offered {offered}, answered {answered} ({pct:.1}%), failed {failed}");
    println!("  calls by egress zone: {}", by_zone.iter().map(|(z, n)| format!("{z} {n}")).collect::<Vec<_>>().join(", "));
    println!("  Auto Fail-over (HQ PBX 503 -> DR PBX): {failovers} calls");
    println!("  hang-ups: {} completed, {} lost with the node that carried them", s.bye_ok, s.bye_failed);
    // each fault: every call offered from 2.5 s after it until the next act must be answered
    let mut ok = true;
    for (at, text) in events.iter().skip(1).take(2) {
        let from = *at + Duration::from_millis(2500);
        let until = *at + act;
        let window: Vec<bool> = s.outcomes.iter().filter(|(o, _)| *o >= from && *o < until).map(|(_, a)| *a).collect();
        let good = window.iter().filter(|a| **a).count();
        let held = good == window.len();
        ok &= held;
        println!(
            "  {text}: calls offered from {:.1}s to {:.1}s answered {good}/{} {}",
            from.as_secs_f64(),
            until.as_secs_f64(),
            window.len(),
            if held { "(ok)" } else { "(NOT ok)" }
        );
    }
    let mut slots = tokio::task::block_in_place(|| settled_slots(entry_admin, Duration::from_secs(10)));
    if let Some(n) = slots.filter(|n| *n > 0) {
        // calls being forwarded to a node as it died may have reached the PBX through it: the
        // ingress holds a second slot for each until that is certainly over (docs/decisions.md)
        println!(
            "  {n} slots still held for calls moved off a lost node while it may have delivered them; they go back within about a minute"
        );
        slots = tokio::task::block_in_place(|| settled_slots(entry_admin, Duration::from_secs(75)));
    }
    match slots {
        Some(0) => println!("  slots in use after every call ended: 0 (ok)"),
        Some(n) => {
            ok = false;
            println!("  slots in use after every call ended: {n} (NOT ok)")
        }
        None => println!("  slots in use: could not ask the cluster"),
    }
    println!("{}", if ok { "demo passed" } else { "demo FAILED" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Slots still held for the demo trunk, once releases in flight have committed (up to `within`).
fn settled_slots(admin: u16, within: Duration) -> Option<u64> {
    let t0 = Instant::now();
    loop {
        let out = cli(admin, &["calls", "-o", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let n: u64 = v
            .as_array()?
            .iter()
            .filter(|p| p["trunk"] == "demo" && p["node"] == "cluster")
            .map(|p| p["in_use"].as_u64().unwrap_or(0))
            .sum();
        if n == 0 || t0.elapsed() > within {
            return Some(n);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
