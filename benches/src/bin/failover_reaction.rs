//! Failover reaction time: from the moment the Primary PBX sends its 503 to the moment the
//! Secondary PBX receives the same call's INVITE, both timestamped here on one clock (so the figure
//! includes two loopback hops and is an upper bound of the node's own reaction). One real hatrunk
//! node, an Auto Fail-over trunk, SIPp as the carrier. Prints p50, p99 and max over every call.
//!
//!   cargo run --release -p hatrunk-benches --bin failover-reaction -- \
//!       [--hatrunk target/release/hatrunk] [--rate 200] [--calls 4000] [--base 39500]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hatrunk_sip::parse::parse;

type Stamps = Arc<Mutex<HashMap<String, Instant>>>;

/// A PBX on `addr`: the Primary fails every INVITE with 503 and notes when; the Secondary answers
/// and notes when each INVITE arrived.
fn pbx(addr: SocketAddr, primary: bool, stamps: Stamps) {
    let sock = UdpSocket::bind(addr).expect("bind pbx");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = sock.recv_from(&mut buf) else { return };
            let Ok(msg) = parse(&buf[..len], true) else { continue };
            let method = msg.method().map(|m| m.as_str().to_string()).unwrap_or_default();
            let call = msg.header("Call-ID").unwrap_or("").to_string();
            if method == "INVITE" && !primary {
                stamps.lock().unwrap_or_else(|e| e.into_inner()).insert(call.clone(), Instant::now());
            }
            let (code, tag) = if primary { (503, "p") } else { (200, "s") };
            let r = hatrunk_sip::uas::answer(&msg, code, &addr.to_string(), tag, None);
            if let Some(r) = r {
                let bytes = r.to_bytes();
                if primary && method == "INVITE" {
                    stamps.lock().unwrap_or_else(|e| e.into_inner()).entry(call).or_insert_with(Instant::now);
                }
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str, default: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.into());
    let bin = arg("--hatrunk", "target/release/hatrunk");
    let rate: u32 = arg("--rate", "200").parse().expect("--rate N");
    let calls: u32 = arg("--calls", "4000").parse().expect("--calls N");
    let base: u16 = arg("--base", "39500").parse().expect("--base PORT");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("failover-reaction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (sip, admin, http, p, s, carrier) = (base, base + 1, base + 2, base + 3, base + 4, base + 5);
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\n[sip]\nlisten = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\"]\n[cluster]\nlisten = \"127.0.0.1:{admin}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let mut node = Command::new(&bin)
        .args(["run", "--config", &cfg.display().to_string()])
        .env("HATRUNK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hatrunk");
    let trunk = dir.join("trunk.toml");
    std::fs::write(
        &trunk,
        format!(
            "id = \"bench\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = 100000\nmode = \"auto-failover\"\n\
             [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{p}\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
             [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{s}\"\nallowed_ips = [\"127.0.0.9/32\"]\n"
        ),
    )
    .expect("trunk");
    let endpoint = format!("127.0.0.1:{admin}");
    let mut applied = false;
    for _ in 0..100 {
        let out = Command::new(&bin).args(["--endpoints", &endpoint, "trunk", "apply", &trunk.display().to_string()]).output();
        if out.is_ok_and(|o| o.status.success()) {
            applied = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(applied, "trunk apply failed");
    let (sent, received): (Stamps, Stamps) = Default::default();
    pbx(SocketAddr::from(([127, 0, 0, 1], p)), true, sent.clone());
    pbx(SocketAddr::from(([127, 0, 0, 1], s)), false, received.clone());
    let status = Command::new("sipp")
        .arg("-sf")
        .arg(repo.join("../shared/sipp/uac_rr.xml"))
        .args(["-i", "127.0.0.1", "-p", &carrier.to_string(), &format!("127.0.0.1:{sip}")])
        .args(["-s", "1000", "-r", &rate.to_string(), "-m", &calls.to_string(), "-d", "0", "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp (install sip-tester)");
    let _ = node.kill();
    let _ = node.wait();
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
    let received = received.lock().unwrap_or_else(|e| e.into_inner());
    let mut d: Vec<Duration> = received.iter().filter_map(|(c, r)| sent.get(c).map(|s| r.saturating_duration_since(*s))).collect();
    d.sort();
    if d.is_empty() {
        eprintln!("no call failed over (sipp exit {status:?})");
        std::process::exit(1);
    }
    let q = |p: f64| d[((d.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    println!(
        "failover reaction (Primary's 503 sent -> Secondary's INVITE received), {} calls at {rate}/s: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        d.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    println!("failover_p50_us={:.0} failover_p99_us={:.0} (goal <= 1000)", q(0.5), q(0.99));
    let _ = std::fs::remove_dir_all(&dir);
}
