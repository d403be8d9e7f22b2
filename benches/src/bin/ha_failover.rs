//! Advanced HA failover timing over real processes on loopback: a 4T cluster (region-1 and region-2
//! with two SIP nodes each, witness in region-3) with the product's default Raft and detector timing,
//! SIPp placing 50 calls/s into a region-2 node, and a PBX here that timestamps each INVITE and notes
//! which node's Via it carries. Each trial puts the leader in region-1, `kill -9`s both region-1
//! nodes, and measures
//! - detection: kill -> the ingress reports both down (`cluster members`, polled every ~20 ms), and
//! - new leader: kill -> the ingress reports a leader outside region-1, and
//! - first call: kill -> the first INVITE reaching the PBX from a region-2 node,
//!
//! then restarts region-1 and waits until calls leave from it again. Prints p50 and worst.
//!
//!   cargo run --release -p hatrunk-benches --bin ha-failover -- [--trials 20] [--hatrunk target/release/hatrunk]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hatrunk_sip::parse::parse;

type Log = Arc<Mutex<Vec<(Instant, u16)>>>;

struct Node {
    id: u64,
    sip: u16,
    admin: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, bin: &str) {
        let log = std::fs::File::create(self.config.with_extension("log")).expect("log");
        let mut c = Command::new(bin);
        c.arg("run").arg("--config").arg(&self.config).stdout(log.try_clone().expect("log")).stderr(log);
        self.child = Some(c.spawn().expect("spawn hatrunk"));
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.admin)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "node {} did not start", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(bin: &str, admin: u16, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).env("HATRUNK_ENDPOINTS", format!("127.0.0.1:{admin}")).output().expect("cli")
}

/// id -> healthy, as `via` reports it.
fn health(bin: &str, via: u16) -> Vec<(u64, bool)> {
    let out = cli(bin, via, &["cluster", "members", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // {"id":1,...,"healthy":true,...}: read the two fields without a JSON dependency
    text.split('{')
        .filter_map(|obj| {
            let id = obj.split("\"id\":").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            let healthy = obj.split("\"healthy\":").nth(1)?.starts_with("true");
            Some((id, healthy))
        })
        .collect()
}

/// The leader's id as `via` reports it (0 when none).
fn leader(bin: &str, via: u16) -> u64 {
    let out = cli(bin, via, &["cluster", "status", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"leader\":").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn wait_health(bin: &str, via: u16, ids: &[u64], want: bool) {
    let t0 = Instant::now();
    while !ids.iter().all(|id| health(bin, via).iter().any(|(i, h)| i == id && *h == want)) {
        assert!(t0.elapsed() < Duration::from_secs(30), "nodes {ids:?} not healthy={want} after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PBX that answers every INVITE (Record-Route echoed) and logs (when, top Via port).
fn pbx(addr: SocketAddr, log: Log) {
    let sock = std::net::UdpSocket::bind(addr).expect("bind pbx");
    let mut buf = vec![0u8; 65_536];
    std::thread::spawn(move || loop {
        let Ok((len, from)) = sock.recv_from(&mut buf) else { return };
        let Ok(msg) = parse(&buf[..len], true) else { continue };
        if msg.method() == Some(&hatrunk_sip::Method::Invite) {
            let port = msg.header("Via").and_then(|v| v.split(';').next()).and_then(|v| v.rsplit(':').next()).and_then(|p| p.parse().ok());
            if let Some(p) = port {
                log.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), p));
            }
        }
        let Some(r) = hatrunk_sip::uas::answer(&msg, 200, &addr.to_string(), "pbx", None) else { continue };
        let _ = sock.send_to(&r.to_bytes(), from);
    });
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str, default: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.into());
    let trials: usize = arg("--trials", "20").parse().expect("--trials N");
    let bin = arg("--hatrunk", "target/release/hatrunk");
    let base: u16 = arg("--base", "39400").parse().expect("--base PORT"); // inside the range scripts/test.sh reserves
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("ha-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let layout =
        [(1, "region-1", "sip"), (2, "region-1", "sip"), (3, "region-2", "sip"), (4, "region-2", "sip"), (5, "region-3", "witness")];
    let mut nodes: Vec<Node> = layout
        .iter()
        .map(|&(id, region, role)| {
            let sip = base + 10 * id as u16;
            let config = dir.join(format!("n{id}.toml"));
            let text = format!(
                "[node]\nid = {id}\nname = \"n{id}\"\nregion = \"{region}\"\nzone = \"{region}-a\"\nrole = \"{role}\"\ndata_dir = \"{}\"\n\
                 [sip]\nlisten = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\"]\n[cluster]\nlisten = \"127.0.0.1:{}\"\nbootstrap = {}\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\n",
                dir.join(format!("n{id}")).display(),
                sip + 1,
                id == 1,
                sip + 2
            );
            std::fs::write(&config, text).expect("config");
            Node { id, sip, admin: sip + 1, config, child: None }
        })
        .collect();
    for n in nodes.iter_mut() {
        n.start(&bin);
    }
    for n in &nodes[1..] {
        let out = cli(&bin, nodes[0].admin, &["cluster", "join", &format!("127.0.0.1:{}", n.admin)]);
        assert!(out.status.success(), "join: {}", String::from_utf8_lossy(&out.stderr));
    }
    let entry = nodes[2].admin;
    wait_health(&bin, entry, &[1, 2, 3, 4, 5], true);
    let pbx_port = base + 60;
    let trunk = dir.join("trunk.toml");
    std::fs::write(
        &trunk,
        format!(
            "id = \"bench\"\nnumbers = [\"4700\"]\nmax_concurrent_calls = 1000\nadvanced_ha = \"4t\"\nprimary_region = \"region-1\"\n\
             [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{pbx_port}\"\nallowed_ips = [\"127.0.0.1/32\"]\n"
        ),
    )
    .expect("trunk");
    let out = cli(&bin, entry, &["trunk", "apply", &trunk.display().to_string()]);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    pbx(SocketAddr::from(([127, 0, 0, 1], pbx_port)), log.clone());
    let mut carrier = Command::new("sipp")
        .arg("-sf")
        .arg(repo.join("../shared/sipp/uac_rr.xml"))
        .args(["-i", "127.0.0.1", "-p", &(base + 61).to_string(), &format!("127.0.0.1:{}", nodes[2].sip)])
        .args(["-s", "4700", "-r", "50", "-d", "0", "-nostdin", "-m", "10000000", "-bg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (install sip-tester)");
    let _ = carrier.wait(); // -bg: the launcher returns, the carrier keeps calling
    let survivors = [nodes[2].sip, nodes[3].sip];
    let (mut detect, mut elect, mut first, mut after_leader, mut first_no_leader) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in 0..trials {
        // the leader in region-1, calls flowing from it
        for _ in 0..3 {
            if leader(&bin, entry) == 1 || cli(&bin, entry, &["cluster", "transfer-leader", "1"]).status.success() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1)); // a just-restarted node 1 may still be catching up
        }
        std::thread::sleep(Duration::from_millis(500));
        let leader_killed = leader(&bin, entry) <= 2;
        let killed = Instant::now();
        nodes[0].kill();
        nodes[1].kill();
        // poll the three moments together: region-1 seen down, a new leader, a call through region-2
        let (mut d, mut l, mut f) = (None, None, None);
        while d.is_none() || l.is_none() || f.is_none() {
            assert!(killed.elapsed() < Duration::from_secs(30), "trial {t}: no recovery within 30 s");
            if d.is_none() && health(&bin, entry).iter().filter(|(i, h)| *i <= 2 && !*h).count() == 2 {
                d = Some(killed.elapsed());
            }
            if l.is_none() && leader(&bin, entry) >= 3 {
                l = Some(killed.elapsed());
            }
            if f.is_none() {
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                f = log.iter().find(|(at, p)| *at > killed && survivors.contains(p)).map(|x| x.0.duration_since(killed));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (d, l, f) = (d.unwrap_or_default(), l.unwrap_or_default(), f.unwrap_or_default());
        println!(
            "trial {:>2}: leader {}, detection {:>5} ms, new leader {:>5} ms, first call through region-2 {:>5} ms",
            t + 1,
            if leader_killed { "killed    " } else { "not killed" },
            d.as_millis(),
            l.as_millis(),
            f.as_millis()
        );
        detect.push(d);
        if leader_killed {
            elect.push(l);
            first.push(f);
            after_leader.push(f.saturating_sub(l));
        } else {
            first_no_leader.push(f);
        }
        nodes[0].start(&bin);
        nodes[1].start(&bin);
        wait_health(&bin, entry, &[1, 2], true);
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("pkill").args(["-f", &format!("127.0.0.1:{}", nodes[2].sip)]).status();
    let ms = |d: Duration| d.as_millis();
    println!(
        "detection (kill -> ingress sees region-1 down): p50 {} ms, worst {} ms over {trials} trials",
        ms(percentile(&mut detect, 0.5)),
        ms(percentile(&mut detect, 1.0))
    );
    let report = |what: &str, v: &mut Vec<Duration>| {
        if v.is_empty() {
            println!("{what}: no trial");
        } else {
            let n = v.len();
            println!("{what}: p50 {} ms, worst {} ms over {n} trials", ms(percentile(v, 0.5)), ms(percentile(v, 1.0)));
        }
    };
    report("leader killed with region-1: new leader after", &mut elect);
    report("leader killed with region-1: first call through region-2 after the kill", &mut first);
    report("leader killed with region-1: first call through region-2 after the new leader (0 = before it)", &mut after_leader);
    report("leader elsewhere: first call through region-2 after the kill", &mut first_no_leader);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
