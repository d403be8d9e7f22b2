//! Harness for end-to-end tests: real `hatrunk` processes and real SIPp processes on loopback,
//! each test on its own high ports. Everything started is killed on drop.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn hatrunk_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hatrunk")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn shared() -> PathBuf {
    repo().join("../shared")
}

/// Test ports live in 30000-39999, inside Linux's ephemeral range: reserve them so no outgoing
/// connection (gRPC, SIPp) is given one of them by the kernel while a test is about to bind it.
fn reserve_test_ports() {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let now = std::fs::read_to_string(PATH).unwrap_or_default();
    if !now.contains("30000-39999") {
        let value = if now.trim().is_empty() { "30000-39999".to_string() } else { format!("{},30000-39999", now.trim()) };
        std::fs::write(PATH, value).unwrap_or_else(|e| panic!("cannot reserve test ports in {PATH} (run as root): {e}"));
    }
}

/// SIPp must be installed (the test command installs Debian's sip-tester); never skip without it.
pub fn require_sipp() {
    reserve_test_ports();
    let ok = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "sipp is not installed: run the README's test command (it installs sip-tester)");
}

pub struct Node {
    child: Child,
    /// The hatrunk binary this node runs (this build's, or another release's).
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub sip: u16,
    pub admin: u16,
    /// Where callers reach its SIP port (`127.0.0.1`, or `[::1]` for a node on IPv6).
    pub host: String,
}

impl Node {
    /// Start a node with SIP on `base`, admin on `base+1`, HTTP on `base+2`, and `extra` TOML appended.
    pub fn start(base: u16, extra: &str) -> Node {
        Node::start_with(base, "", extra)
    }

    /// Like [`Node::start`], with `sip` lines added to the `[sip]` section.
    pub fn start_with(base: u16, sip: &str, extra: &str) -> Node {
        Node::start_full(base, "", sip, "", extra)
    }

    /// Like [`Node::start_with`] where `sip` brings its own `listen = [...]` line.
    pub fn start_sip_listen(base: u16, sip: &str, extra: &str) -> Node {
        Node::start_full(base, "", sip, "", extra)
    }

    /// A cluster member: node `id` (named `n{id}`), bootstrapping a cluster or waiting to be joined.
    pub fn member(base: u16, id: u64, bootstrap: bool) -> Node {
        Node::member_with(base, id, bootstrap, "")
    }

    /// A cluster member with `extra` TOML appended (e.g. a `[tls]` section).
    pub fn member_with(base: u16, id: u64, bootstrap: bool, extra: &str) -> Node {
        Node::start_full(
            base,
            &format!("id = {id}\nname = \"n{id}\"\nzone = \"z{id}\""),
            "",
            &format!("bootstrap = {bootstrap}\nheartbeat_ms = 100\nelection_min_ms = 800\nelection_max_ms = 1600"),
            extra,
        )
    }

    /// Start with lines added to the `[node]`, `[sip]` and `[cluster]` sections and `extra` after.
    pub fn start_full(base: u16, node: &str, sip: &str, cluster: &str, extra: &str) -> Node {
        Node::start_under(&[], base, node, sip, cluster, extra)
    }

    /// Like [`Node::start_full`], the node's command run under `wrapper` (`strace ...`, say).
    pub fn start_under(wrapper: &[&str], base: u16, node: &str, sip: &str, cluster: &str, extra: &str) -> Node {
        Node::start_bin(Path::new(hatrunk_bin()), wrapper, base, node, sip, cluster, extra)
    }

    /// Like [`Node::start_under`], running the hatrunk binary `bin`.
    pub fn start_bin(bin: &Path, wrapper: &[&str], base: u16, node: &str, sip: &str, cluster: &str, extra: &str) -> Node {
        Node::spawn(bin, wrapper, base, &[node, sip, cluster, extra], &[], true)
    }

    /// A node on its defaults but for ports, run with `args` after `run --config` and none of the
    /// log variables a test otherwise sets (what an operator starting it would see).
    pub fn start_logging(base: u16, args: &[&str]) -> Node {
        Node::spawn(Path::new(hatrunk_bin()), &[], base, &["", "", "", ""], args, false)
    }

    fn spawn(bin: &Path, wrapper: &[&str], base: u16, sections: &[&str; 4], args: &[&str], log_info: bool) -> Node {
        let [node, sip, cluster, extra] = *sections;
        require_sipp();
        let dir = tempfile::tempdir().expect("tempdir");
        // `sip` lines with their own listen list replace the default one
        let listen =
            if sip.contains("listen =") { String::new() } else { format!("listen = [\"udp:127.0.0.1:{base}\", \"tcp:127.0.0.1:{base}\"]") };
        // `node` lines with their own data_dir replace the default one
        let data_dir =
            if node.contains("data_dir") { String::new() } else { format!("data_dir = \"{}\"", dir.path().join("data").display()) };
        // These tests judge calls, routing and consensus, not overload (the guard's own tests and
        // benches/overload.sh do): several debug-build clusters on two cores fall 50 ms behind at
        // times, and before the standing-queue test (`hatrunk_sip::standing`) the default
        // `shed_wait_ms` then refused a call (CI, e2e_ha, stops 31 and 32).
        let security = if sections.iter().any(|s| s.contains("[security]")) { "" } else { "\n[security]\nshed_wait_ms = 2000\n" };
        // HATRUNK_TEST_SIP: one more `[sip]` line for every test node (`own_thread = false` runs
        // the suite without the SIP thread), unless the test sets the same key itself
        let more_sip = std::env::var("HATRUNK_TEST_SIP").unwrap_or_default();
        let more_sip = match more_sip.split('=').next() {
            Some(key) if !key.trim().is_empty() && sip.contains(key.trim()) => String::new(),
            _ => more_sip,
        };
        let cfg = format!(
            "[node]\n{data_dir}\n{node}\n[sip]\n{listen}\n{sip}\n{more_sip}\n[cluster]\nlisten = \"127.0.0.1:{}\"\n{cluster}\n[http]\nlisten = \"127.0.0.1:{}\"\n{extra}{security}",
            base + 1,
            base + 2
        );
        let path = dir.path().join("node.toml");
        std::fs::write(&path, cfg).expect("write config");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["run", "--config"]).arg(&path).args(args);
        if log_info {
            // HATRUNK_TEST_LOG (a filter such as `info,hatrunk_node::admission=debug`) to see more
            cmd.env("HATRUNK_LOG", std::env::var("HATRUNK_TEST_LOG").unwrap_or_else(|_| "info".into()));
        } else {
            cmd.env_remove("HATRUNK_LOG").env_remove("RUST_LOG");
        }
        let child = cmd.stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("spawn hatrunk");
        let node = Node { child, bin: bin.to_path_buf(), dir, sip: base, admin: base + 1, host: "127.0.0.1".into() };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", node.admin)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "node did not start:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// Send `sig` (`STOP`, `CONT`, ...) to the node's process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} failed");
    }

    /// Whether the node's process has exited by itself.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Kill the node with SIGKILL (its data directory stays).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kill the node (SIGKILL) and start it again on the same data directory and ports.
    pub fn restart(mut self) -> Node {
        self.kill();
        self.respawn()
    }

    /// Stop the node as an operator does (SIGTERM, waiting for it to exit) and start `bin` on the
    /// same data directory and ports: one step of a rolling upgrade.
    pub fn upgrade_to(mut self, bin: &Path) -> Node {
        self.signal("TERM");
        let t0 = Instant::now();
        while !self.exited() {
            assert!(t0.elapsed() < Duration::from_secs(20), "node did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.bin = bin.to_path_buf();
        self.respawn()
    }

    fn respawn(mut self) -> Node {
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("node.log")).expect("log");
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(self.dir.path().join("node.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("respawn hatrunk");
        let old = std::mem::replace(&mut self.child, child);
        drop(old);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.admin)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "node did not restart:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// GET a path of the node's HTTP endpoint.
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.admin + 1)).expect("http connect");
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(hatrunk_bin()).args(args).env("HATRUNK_ENDPOINTS", format!("127.0.0.1:{}", self.admin)).output().expect("run cli")
    }

    /// Whether this node serves trunk `id` (`trunk get` succeeds).
    pub fn has_trunk(&self, id: &str) -> bool {
        self.cli(&["trunk", "get", id]).status.success()
    }

    /// Apply a trunk file (text); panics with the CLI's stderr if refused.
    pub fn apply(&self, toml: &str) {
        let out = self.try_apply(toml);
        assert!(out.status.success(), "trunk apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn try_apply(&self, toml: &str) -> Output {
        let path = self.dir.path().join(format!("trunk-{}.toml", rand_suffix()));
        std::fs::write(&path, toml).expect("write trunk");
        self.cli(&["trunk", "apply", path.to_str().expect("path")])
    }

    /// The CDRs written so far (one JSON object per line).
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("data/cdr.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Wait until `n` CDRs for `call_prefix`-less filter exist (the writer is asynchronous).
    pub fn wait_cdrs(&self, pred: impl Fn(&serde_json::Value) -> bool, n: usize) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let v: Vec<_> = self.cdrs().into_iter().filter(|c| pred(c)).collect();
            if v.len() >= n || t0.elapsed() > Duration::from_secs(10) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Slots in use once releases in flight have committed: a release is a Raft write issued when
    /// the call ends, so it lands a few milliseconds after the CDR. Polls up to 10 s for `want`.
    pub fn settled_in_use(&self, trunk: &str, want: u64) -> u64 {
        let t0 = Instant::now();
        loop {
            let n = self.in_use(trunk);
            if n == want || t0.elapsed() > Duration::from_secs(10) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn in_use(&self, trunk: &str) -> u64 {
        let out = self.cli(&["calls", "--trunk", trunk, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["in_use"].as_u64().unwrap_or(u64::MAX)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A SIPp process, killed on drop.
pub struct Sipp(Child);

impl From<Child> for Sipp {
    fn from(c: Child) -> Self {
        Sipp(c)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn scenario(name: &str) -> PathBuf {
    let own = repo().join("tests/scenarios").join(name);
    if own.exists() {
        return own;
    }
    shared().join("sipp").join(name)
}

/// A copy of `name` with `@CODE@` replaced, in `dir`.
pub fn with_code(dir: &Path, name: &str, code: u16) -> PathBuf {
    let text = std::fs::read_to_string(scenario(name)).expect("scenario").replace("@CODE@", &code.to_string());
    let path = dir.join(format!("{code}-{name}"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// Start a SIPp UAS on 127.0.0.1:`port` (`tcp` for transport t1), waiting until it listens.
pub fn uas(scenario: &Path, port: u16, tcp: bool) -> Sipp {
    uas_on("127.0.0.1", scenario, port, tcp)
}

pub fn uas_on(ip: &str, scenario: &Path, port: u16, tcp: bool) -> Sipp {
    let mut c = Command::new("sipp");
    c.arg("-sf").arg(scenario).args(["-i", ip, "-p", &port.to_string(), "-nostdin", "-m", "100000"]);
    if tcp {
        c.args(["-t", "t1"]);
    }
    let child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn sipp");
    std::thread::sleep(Duration::from_millis(300));
    Sipp(child)
}

/// A SIPp UAS that logs every message it receives to `trace` (to see whose Via reached the PBX).
pub fn uas_traced(scenario: &Path, port: u16, trace: &Path) -> Sipp {
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin", "-m", "100000", "-trace_msg", "-message_file"])
        .arg(trace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp");
    std::thread::sleep(Duration::from_millis(300));
    Sipp(child)
}

/// Ports in the top Via of each INVITE a traced UAS received (the node that sent it), one per
/// transaction (retransmissions share the top Via's branch and count once).
pub fn invite_via_ports(trace: &Path) -> Vec<u16> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut in_invite = false;
    for line in text.lines() {
        if line.starts_with("INVITE ") {
            in_invite = true;
        } else if in_invite && (line.starts_with("Via:") || line.starts_with("v:")) {
            in_invite = false;
            if !seen.insert(line.to_string()) {
                continue;
            }
            let hostport = line.split_whitespace().nth(2).unwrap_or("").split(';').next().unwrap_or("");
            if let Some(p) = hostport.rsplit(':').next().and_then(|p| p.parse().ok()) {
                out.push(p);
            }
        } else if line.is_empty() {
            in_invite = false;
        }
    }
    out
}

/// Result of a SIPp client run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    pub ok: u64,
    pub failed: u64,
}

/// A SIPp UAC run to completion: `calls` calls to `number` at `rate`/s, each held `hold_ms`.
pub struct Uac<'a> {
    scenario: &'a Path,
    node: &'a Node,
    local_port: u16,
    number: &'a str,
    ip: &'a str,
    calls: u32,
    rate: u32,
    hold_ms: u32,
    extra: &'a [&'a str],
}

impl<'a> Uac<'a> {
    /// One call at 10/s, not held, from 127.0.0.1.
    pub fn new(scenario: &'a Path, node: &'a Node, local_port: u16, number: &'a str) -> Uac<'a> {
        Uac { scenario, node, local_port, number, ip: "127.0.0.1", calls: 1, rate: 10, hold_ms: 0, extra: &[] }
    }

    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    pub fn rate(mut self, per_s: u32) -> Self {
        self.rate = per_s;
        self
    }

    pub fn hold_ms(mut self, ms: u32) -> Self {
        self.hold_ms = ms;
        self
    }

    /// Send from another loopback address (a source the node sees as a different peer).
    pub fn source_ip(mut self, ip: &'a str) -> Self {
        self.ip = ip;
        self
    }

    /// More SIPp arguments.
    pub fn args(mut self, extra: &'a [&'a str]) -> Self {
        self.extra = extra;
        self
    }

    pub fn run(self) -> Calls {
        let Uac { scenario, node, local_port, number, ip, calls, rate, hold_ms, extra } = self;
        let screen = node.dir.path().join(format!("screen-{local_port}-{}.log", rand_suffix()));
        let status = Command::new("timeout")
            .arg("120")
            .arg("sipp")
            .arg("-sf")
            .arg(scenario)
            .args(["-i", ip, "-p", &local_port.to_string()])
            .arg(format!("{}:{}", node.host, node.sip))
            .args(["-s", number, "-m", &calls.to_string(), "-r", &rate.to_string(), "-l", &calls.to_string(), "-d", &hold_ms.to_string()])
            .args(["-nostdin", "-trace_screen", "-screen_file"])
            .arg(&screen)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run sipp");
        let text = std::fs::read_to_string(&screen).unwrap_or_default();
        let count = |label: &str| {
            text.lines().rfind(|l| l.contains(label)).and_then(|l| l.split('|').nth(2)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let ok = count("Successful call").unwrap_or(0);
        let failed = count("Failed call").unwrap_or(0);
        assert!(ok + failed > 0, "sipp ran no call (exit {status:?}):\n{text}\nnode log:\n{}", node.log());
        Calls { ok, failed }
    }
}

/// A trunk file for a test: IP-authenticated Primary and Secondary PBXes on loopback ports, by
/// default Only Primary with a limit of 5; any further top-level setting with [`TrunkFile::with`].
#[derive(Clone)]
pub struct TrunkFile {
    id: String,
    number: String,
    pbx: (u16, u16),
    limit: u32,
    mode: String,
    lines: Vec<String>,
}

impl TrunkFile {
    pub fn new(id: &str, number: &str, pbx: (u16, u16)) -> TrunkFile {
        TrunkFile { id: id.into(), number: number.into(), pbx, limit: 5, mode: "only-primary".into(), lines: Vec::new() }
    }

    pub fn limit(mut self, n: u32) -> TrunkFile {
        self.limit = n;
        self
    }

    pub fn mode(mut self, mode: &str) -> TrunkFile {
        self.mode = mode.into();
        self
    }

    /// Top-level lines (a failover policy, `advanced_ha`, `max_call_duration_s`...).
    pub fn with(mut self, lines: &str) -> TrunkFile {
        self.lines.push(lines.into());
        self
    }

    pub fn toml(&self) -> String {
        let TrunkFile { id, number, pbx: (primary, secondary), limit, mode, lines } = self;
        format!(
            "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = {limit}\nmode = \"{mode}\"\n{}\n\
             [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{primary}\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
             [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{secondary}\"\nallowed_ips = [\"127.0.0.9/32\"]\n",
            lines.join("\n")
        )
    }
}

/// Accounts that carried the calls of `trunk`, from its CDRs: (answered by primary, by secondary).
pub fn answered_by(cdrs: &[serde_json::Value]) -> (usize, usize) {
    let mut p = 0;
    let mut s = 0;
    for c in cdrs {
        if let Some(last) = c["attempts"].as_array().and_then(|a| a.last()) {
            if c["disposition"] == "ANSWERED" {
                if last["account"] == "primary" {
                    p += 1
                } else {
                    s += 1
                }
            }
        }
    }
    (p, s)
}

/// `cluster join` of `new` through `via`; panics with the CLI's stderr if refused.
pub fn join(via: &Node, new: &Node) {
    let out = via.cli(&["cluster", "join", &format!("127.0.0.1:{}", new.admin)]);
    assert!(out.status.success(), "join failed: {}\n{}", String::from_utf8_lossy(&out.stderr), via.log());
}

/// Run the CLI against `node` with extra environment (credentials).
pub fn cli_env(node: &Node, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(hatrunk_bin());
    c.args(args).env("HATRUNK_ENDPOINTS", format!("127.0.0.1:{}", node.admin));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run cli")
}

/// `hatrunk certs init` into `dir` for `nodes`, every node certificate also naming 127.0.0.1.
pub fn make_certs(dir: &Path, nodes: &str) {
    let out = Command::new(hatrunk_bin())
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args(["--nodes", nodes, "--san", "127.0.0.1"])
        .output()
        .expect("run hatrunk certs");
    assert!(out.status.success(), "certs init failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `[tls]` section for a node holding `name`'s certificate from `dir` (trusting `ca_dir`'s CA).
pub fn tls_section(ca_dir: &Path, dir: &Path, name: &str) -> String {
    format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        ca_dir.join("ca.pem").display(),
        dir.join(format!("{name}.pem")).display(),
        dir.join(format!("{name}.key")).display()
    )
}
