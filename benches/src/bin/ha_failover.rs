//! Advanced HA failover timing over real processes on loopback: a 4T cluster (region-1 and region-2
//! with two SIP nodes each, witness in region-3) with the product's default Raft and detector timing,
//! SIPp placing 50 calls/s into a region-2 node, and a PBX here that timestamps each INVITE and notes
//! which node's Via it carries. Each trial puts the leader in region-1, `kill -9`s both region-1
//! nodes, and measures
//! - detection: kill -> the ingress reports both down (its HTTP API's members, polled every ~5 ms), and
//! - new leader: kill -> the ingress reports a leader outside region-1, and
//! - first call: kill -> the first INVITE reaching the PBX from a region-2 node,
//!
//! then restarts region-1 and waits until calls leave from it again. Prints p50 and worst.
//!
//! With `--netns` (root) each region runs in its own network namespace, joined to the others by a
//! veth pair on a bridge (10.88.0.0/16; the harness, its PBX and SIPp on the bridge, 10.88.0.1). A
//! region is lost by an nftables table in its namespace that drops everything but its loopback: its
//! nodes keep running and talking among themselves, the rest hear silence, never an ICMP answer
//! or a reset, as when a WAN link or a whole site goes away. The table is deleted to bring it back.
//!
//!   cargo run --release -p hatrunk-benches --bin ha-failover -- [--trials 20] [--hatrunk target/release/hatrunk] [--netns] [--fast-raft] [--keep]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hatrunk_sip::parse::parse;

type Log = Arc<Mutex<Vec<(Instant, u16)>>>;

struct Node {
    id: u64,
    /// The address it listens on (127.0.0.1, or its namespace's 10.88.R.N).
    ip: String,
    /// Its region's namespace with `--netns`.
    ns: Option<String>,
    sip: u16,
    admin: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, bin: &str) {
        let log = std::fs::File::create(self.config.with_extension("log")).expect("log");
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        c.arg("run").arg("--config").arg(&self.config).stdout(log.try_clone().expect("log")).stderr(log);
        self.child = Some(c.spawn().expect("spawn hatrunk"));
        let t0 = Instant::now();
        while std::net::TcpStream::connect((self.ip.as_str(), self.admin)).is_err() {
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

fn cli(bin: &str, admin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).env("HATRUNK_ENDPOINTS", admin).output().expect("cli")
}

fn run(args: &[&str]) {
    let ok = Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} failed", args.join(" "));
}

/// Region namespaces htr-r1..3 on the bridge htr-br; removed when dropped.
struct Namespaces;

impl Namespaces {
    const BRIDGE: &'static str = "htr-br";
    const HOST: &'static str = "10.88.0.1";

    fn up() -> Namespaces {
        Namespaces::down();
        run(&["ip", "link", "add", Self::BRIDGE, "type", "bridge"]);
        run(&["ip", "addr", "add", "10.88.0.1/16", "dev", Self::BRIDGE]);
        run(&["ip", "link", "set", Self::BRIDGE, "up"]);
        for r in 1..=3 {
            let (ns, veth) = (format!("htr-r{r}"), format!("htr-v{r}"));
            run(&["ip", "netns", "add", &ns]);
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run(&["ip", "link", "set", &veth, "master", Self::BRIDGE, "up"]);
            for n in 1..=2 {
                run(&["ip", "-n", &ns, "addr", "add", &format!("10.88.{r}.{n}/16"), "dev", "eth0"]);
            }
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        Namespaces
    }

    fn down() {
        for r in 1..=3 {
            let _ = Command::new("ip").args(["netns", "del", &format!("htr-r{r}")]).stderr(Stdio::null()).status();
            // gone with its namespace, unless something still runs in it
            let _ = Command::new("ip").args(["link", "del", &format!("htr-v{r}")]).stderr(Stdio::null()).status();
        }
        let _ = Command::new("ip").args(["link", "del", Self::BRIDGE]).stderr(Stdio::null()).status();
    }

    /// Region `r` goes silent: everything in or out of its namespace but its loopback is dropped.
    fn cut(r: u32) {
        let rules = "table inet htrcut {\n chain i { type filter hook input priority -300; policy drop; iifname \"lo\" accept; }\n                      chain o { type filter hook output priority -300; policy drop; oifname \"lo\" accept; }\n}\n";
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &format!("htr-r{r}"), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (install nftables)");
        std::io::Write::write_all(nft.stdin.as_mut().expect("stdin"), rules.as_bytes()).expect("nft rules");
        drop(nft.stdin.take());
        assert!(nft.wait().is_ok_and(|s| s.success()), "nft cut of region {r} failed");
    }

    fn heal(r: u32) {
        run(&["ip", "netns", "exec", &format!("htr-r{r}"), "nft", "delete", "table", "inet", "htrcut"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        Namespaces::down();
    }
}

/// GET `/api/v1/members` from the node whose HTTP API is `http` (host:port): its own failure
/// detector's view and the leader it knows. Polled rather than `cluster status`, which asks the
/// leader, and a silently lost leader holds that call until its timeout.
fn members_json(http: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(http) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET /api/v1/members HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// id -> up, as the node at `http` sees it.
fn health(http: &str) -> Vec<(u64, bool)> {
    let text = members_json(http);
    // ..."members":[{"id":1,...,"state":"up",...},...]: read the two fields without a JSON dependency
    let list = text.split("\"members\":").nth(1).unwrap_or_default();
    list.split('{')
        .filter_map(|obj| {
            let id = obj.split("\"id\":").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            let up = obj.split("\"state\":").nth(1)?.starts_with("\"up\"");
            Some((id, up))
        })
        .collect()
}

/// The leader's id as the node at `http` knows it (0 when none).
fn leader(http: &str) -> u64 {
    let text = members_json(http);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.split("\"leader\":").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn wait_health(via: &str, ids: &[u64], want: bool) {
    let t0 = Instant::now();
    while !ids.iter().all(|id| health(via).iter().any(|(i, h)| i == id && *h == want)) {
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
    let netns = args.iter().any(|a| a == "--netns");
    // the fast leader replacement docs/consensus.md describes, instead of the defaults
    let raft =
        if args.iter().any(|a| a == "--fast-raft") { "heartbeat_ms = 150\nelection_min_ms = 350\nelection_max_ms = 450\n" } else { "" };
    let _spaces = netns.then(Namespaces::up);
    let host = if netns { Namespaces::HOST } else { "127.0.0.1" };
    let region_no = |region: &str| region.trim_start_matches("region-").parse::<u32>().unwrap_or(1);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("ha-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let layout =
        [(1, "region-1", "sip"), (2, "region-1", "sip"), (3, "region-2", "sip"), (4, "region-2", "sip"), (5, "region-3", "witness")];
    let mut nodes: Vec<Node> = layout
        .iter()
        .map(|&(id, region, role)| {
            let sip = base + 10 * id as u16;
            let r = region_no(region);
            // two nodes of a region share its namespace, one address each
            let (ip, ns) =
                if netns { (format!("10.88.{r}.{}", 2 - id % 2), Some(format!("htr-r{r}"))) } else { ("127.0.0.1".into(), None) };
            let config = dir.join(format!("n{id}.toml"));
            let text = format!(
                "[node]\nid = {id}\nname = \"n{id}\"\nregion = \"{region}\"\nzone = \"{region}-a\"\nrole = \"{role}\"\ndata_dir = \"{}\"\n\
                 [sip]\nlisten = [\"udp:{ip}:{sip}\", \"tcp:{ip}:{sip}\"]\n[cluster]\nlisten = \"{ip}:{}\"\nbootstrap = {}\n{raft}\
                 [http]\nlisten = \"{ip}:{}\"\n",
                dir.join(format!("n{id}")).display(),
                sip + 1,
                id == 1,
                sip + 2
            );
            std::fs::write(&config, text).expect("config");
            Node { id, ip, ns, sip, admin: sip + 1, config, child: None }
        })
        .collect();
    for n in nodes.iter_mut() {
        n.start(&bin);
    }
    let admin = |n: &Node| format!("{}:{}", n.ip, n.admin);
    for n in &nodes[1..] {
        let out = cli(&bin, &admin(&nodes[0]), &["cluster", "join", &admin(n)]);
        assert!(out.status.success(), "join: {}", String::from_utf8_lossy(&out.stderr));
    }
    let entry = &admin(&nodes[2]);
    let http = format!("{}:{}", nodes[2].ip, nodes[2].sip + 2);
    wait_health(&http, &[1, 2, 3, 4, 5], true);
    let pbx_port = base + 60;
    let trunk = dir.join("trunk.toml");
    std::fs::write(
        &trunk,
        format!(
            "id = \"bench\"\nnumbers = [\"4700\"]\nmax_concurrent_calls = 1000\nadvanced_ha = \"4t\"\nprimary_region = \"region-1\"\n\
             [primary]\nauth = \"ip\"\ntarget = \"sip:{host}:{pbx_port}\"\nallowed_ips = [\"{host}/32\"]\n"
        ),
    )
    .expect("trunk");
    let out = cli(&bin, entry, &["trunk", "apply", &trunk.display().to_string()]);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    pbx(SocketAddr::new(host.parse().expect("host address"), pbx_port), log.clone());
    let mut carrier = Command::new("sipp")
        .arg("-sf")
        .arg(repo.join("../shared/sipp/uac_rr.xml"))
        .args(["-i", host, "-p", &(base + 61).to_string(), &format!("{}:{}", nodes[2].ip, nodes[2].sip)])
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
            if leader(&http) == 1 || cli(&bin, entry, &["cluster", "transfer-leader", "1"]).status.success() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1)); // a just-restarted node 1 may still be catching up
        }
        std::thread::sleep(Duration::from_millis(500));
        let leader_killed = leader(&http) <= 2;
        let killed = Instant::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if netns {
            Namespaces::cut(1);
        } else {
            nodes[0].kill();
            nodes[1].kill();
        }
        // poll the three moments together: region-1 seen down, a new leader, a call through region-2
        let (mut d, mut l, mut f) = (None, None, None);
        while d.is_none() || l.is_none() || f.is_none() {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "trial {}: within 30 s, region-1 seen down: {d:?}, new leader: {l:?}, a call through region-2: {f:?}",
                t + 1
            );
            if d.is_none() && health(&http).iter().filter(|(i, h)| *i <= 2 && !*h).count() == 2 {
                d = Some(killed.elapsed());
            }
            if l.is_none() && leader(&http) >= 3 {
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
            "trial {:>2} (at unix {}.{:03}): leader {}, detection {:>5} ms, new leader {:>5} ms, first call through region-2 {:>5} ms",
            t + 1,
            wall.as_secs(),
            wall.subsec_millis(),
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
        if netns {
            Namespaces::heal(1);
        } else {
            nodes[0].start(&bin);
            nodes[1].start(&bin);
        }
        wait_health(&http, &[1, 2], true);
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("pkill").args(["-f", &format!("{}:{}", nodes[2].ip, nodes[2].sip)]).status();
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
    if args.iter().any(|a| a == "--keep") {
        println!("node configs and logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(Path::new(&dir));
    }
}
