//! CDRs into a real PostgreSQL (Debian's, started by the test as the `postgres` user): the node
//! applies its schema, ships every call's CDR, keeps taking calls while the database is stopped
//! (the JSON-lines file is the spool, rotated by size meanwhile), and replays in order once it is
//! back: every call has exactly one row, with its attempts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PG_PORT: u16 = 39750;

/// A PostgreSQL cluster in a temporary directory, run by `pg_ctl` as the `postgres` user.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).max())
            .expect("PostgreSQL is not installed: run the README's test command (it installs Debian's postgresql)");
        let dir = tempfile::tempdir().expect("tmp");
        run(&["chown", "postgres:postgres", &dir.path().to_string_lossy()]);
        let data = dir.path().join("data");
        let initdb = bin.join("initdb");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&initdb)
            .args(["-A", "trust", "-U", "hatrunk", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Postgres { bin, dir };
        pg.ctl(&["start", "-w"]);
        pg
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let opts = format!("-p {PG_PORT} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.dir.path().display());
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// One value from `sql`.
    fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-U", "hatrunk", "-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn rotated(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cdr.2")).count()).unwrap_or(0)
}

#[test]
fn every_call_has_exactly_one_row_though_the_database_was_stopped_under_load() {
    let pg = Postgres::start();
    let node = Node::start(
        39700,
        &format!("[cdr]\npostgres = \"postgres://hatrunk@127.0.0.1:{PG_PORT}/postgres\"\nrotate_bytes = 20000\nkeep_files = 3\n"),
    );
    let _pbx = uas(&scenario("uas_rr.xml"), 39711, false);
    node.apply(&TrunkFile::new("pg", "3970", (39711, 39712)).limit(50).toml());
    let t0 = Instant::now();
    while pg.query("SELECT version FROM hatrunk_cdr_schema") != "1" {
        assert!(t0.elapsed() < Duration::from_secs(10), "the schema was not applied:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = std::thread::scope(|s| {
        let caller = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &node, 39720, "3970").calls(150).rate(25).run());
        std::thread::sleep(Duration::from_millis(1500));
        pg.ctl(&["stop", "-m", "fast", "-w"]);
        std::thread::sleep(Duration::from_millis(2500));
        pg.ctl(&["start", "-w"]);
        caller.join().expect("caller")
    });
    assert_eq!(calls, Calls { ok: 150, failed: 0 });
    let t0 = Instant::now();
    while pg.query("SELECT count(*) FROM hatrunk_calls WHERE trunk = 'pg'") != "150" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} rows of 150 calls:\n{}",
            pg.query("SELECT count(*) FROM hatrunk_calls WHERE trunk = 'pg'"),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(pg.query("SELECT count(DISTINCT call_id) FROM hatrunk_calls WHERE trunk = 'pg'"), "150", "one row per call");
    assert_eq!(pg.query("SELECT count(*) FROM hatrunk_attempts a JOIN hatrunk_calls c USING (call_key) WHERE c.trunk = 'pg'"), "150");
    assert_eq!(pg.query("SELECT count(*) FROM hatrunk_calls WHERE disposition = 'ANSWERED' AND answer_at IS NOT NULL"), "150");
    let log = node.log();
    assert!(log.contains("CDR database unreachable") && log.contains("CDR database reachable again"), "the outage is said:\n{log}");
    let data = node.dir.path().join("data");
    let kept = rotated(&data);
    assert!((1..=3).contains(&kept), "rotated by size, 3 kept: {kept}");
}
