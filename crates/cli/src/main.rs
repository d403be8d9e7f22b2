//! `hatrunk`: one binary for running a node (`run`) and for operating a cluster over the admin API.
//! Exit codes: 0 success, 1 refused by the node (bad input, not found), 2 usage error,
//! 3 no node reachable (or no leader: the cluster is unavailable), 4 not available in this build,
//! 5 credentials refused (no or a wrong client certificate or admin token).

mod certs;
mod client;
mod demo;
mod logs;
mod output;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a SIP message is parsed into many small strings and freed
/// soon after, and glibc's malloc and free were a quarter of the node's CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

/// The release and the data format it writes (a mixed-version cluster must agree on it).
static VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} (data format {})", env!("CARGO_PKG_VERSION"), hatrunk_node::DATA_FORMAT));

#[derive(Parser)]
#[command(name = "hatrunk", version = VERSION.as_str(), about = "High-availability SIP trunk cluster")]
struct Cli {
    /// Admin endpoints (host:port, comma separated); any member serves any verb.
    #[arg(long, global = true, env = "HATRUNK_ENDPOINTS", default_value = "127.0.0.1:7700")]
    endpoints: String,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(flatten)]
    creds: Creds,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How the CLI proves itself to a cluster that asks (docs/security.md).
#[derive(clap::Args, Clone, Default)]
pub struct Creds {
    /// The cluster CA (PEM): talk TLS and accept only nodes whose certificate chains to it.
    #[arg(long, global = true, env = "HATRUNK_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and key from the cluster CA (`hatrunk certs` makes admin.pem/admin.key).
    #[arg(long, global = true, env = "HATRUNK_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    #[arg(long, global = true, env = "HATRUNK_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// The name node certificates carry.
    #[arg(long, global = true, env = "HATRUNK_SERVER_NAME", default_value = certs::NODE_NAME)]
    pub server_name: String,
    /// A file holding the admin token (kept off the command line, where `ps` would show it).
    #[arg(long, global = true, env = "HATRUNK_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (with no config: a complete single-node cluster on loopback).
    Run {
        /// The node file (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// What to log: a level for hatrunk's own events (`error`, `warn`, `info`, `debug`,
        /// `trace`; dependencies stay at `warn`), or a full filter such as `info,openraft=debug`.
        /// Default: `RUST_LOG`, else `HATRUNK_LOG`, else `info`.
        #[arg(long, value_name = "LEVEL|FILTER")]
        log_level: Option<String>,
        /// `text` (one line per event) or `json` (one object per line, for log shippers).
        #[arg(long, value_enum, default_value = "text")]
        log_format: logs::LogFormat,
    },
    /// A 2T+4T cluster on loopback with a simulated carrier and PBXes: a PBX failure, a zone and a
    /// region lost and back, live (exit 0 when every check holds).
    Demo(demo::DemoArgs),
    /// Cluster membership and state.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Trunk configuration.
    Trunk {
        #[command(subcommand)]
        cmd: TrunkCmd,
    },
    /// Make a cluster CA and node and operator certificates.
    Certs {
        #[command(subcommand)]
        cmd: certs::CertsCmd,
    },
    /// Slots held per trunk: the cluster's total (the first row of each trunk), then each node's
    /// part (its escrow share, unused reserve included, and its calls' own slots).
    Calls {
        /// Only this trunk.
        #[arg(long)]
        trunk: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Make the node a one-voter cluster (a no-op on an initialised node).
    Init,
    /// Add the node whose cluster address is ADDR (learner, catch up, then voter).
    Join {
        /// The new node's cluster address (`host:port`, its `[cluster] listen` or `advertise`).
        addr: String,
        /// Stay a learner (replicates, does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove node ID from the cluster. A live node is drained first: it takes no new calls and
    /// the command waits (showing what is left) until its calls have ended; Ctrl-C stops waiting
    /// and leaves it draining.
    Remove {
        /// The node's id (`cluster members` lists them).
        id: u64,
        /// Remove it now without waiting for its calls; their slots stay held until they end (by
        /// the trunk's max_call_duration_s at the latest), so the limit still holds.
        #[arg(long)]
        force: bool,
        /// End a drain started by an earlier `remove` instead; the node takes calls again.
        #[arg(long, conflicts_with = "force")]
        cancel: bool,
    },
    /// The members: id, name, zone, region, role, whether each votes, answers and leads.
    Members,
    /// The leader, Raft term, commit and applied indexes, and the members.
    Status,
    /// Make node ID the leader.
    TransferLeader {
        /// The node's id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum TrunkCmd {
    /// Create or change a trunk from a TOML file. The change applies only if the trunk is still at
    /// the revision the file names (`revision = N`, as `trunk get` shows it) or, without one, at the
    /// revision it had when the node took the request; otherwise it is refused (exit 1) naming the
    /// current revision.
    Apply {
        /// The trunk file (TOML; `cluster-configs/` has examples).
        file: std::path::PathBuf,
        /// Write whatever revision the trunk is at.
        #[arg(long)]
        force: bool,
    },
    /// Show a trunk with its revision and each account's live state.
    Get {
        /// The trunk's id.
        id: String,
    },
    /// List trunks.
    List,
    /// Delete a trunk. Refused while calls of it are up, unless --force; forced, its calls in
    /// progress stay counted (also against a trunk re-created under the same id) until they end. A
    /// trunk created under another id with the same numbers does not count them: to rename a trunk,
    /// wait until its calls have ended.
    Delete {
        /// The trunk's id.
        id: String,
        /// Delete it even with calls up.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.cmd {
        Cmd::Run { config, log_level, log_format } => {
            if let Err(e) = logs::init(log_level.as_deref(), log_format) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            rt.block_on(run(config))
        }
        Cmd::Demo(args) => rt.block_on(demo::run(args)),
        Cmd::Certs { cmd } => certs::run(cmd),
        cmd => rt.block_on(client::dispatch(cmd, &cli.endpoints, &cli.creds, cli.output)),
    }
}

async fn run(config: Option<std::path::PathBuf>) -> ExitCode {
    let cfg = match config {
        None => hatrunk_node::config::NodeConfig::default(),
        Some(path) => match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| hatrunk_node::config::NodeConfig::from_toml(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match hatrunk_node::runtime::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ hatrunk_node::NodeError::Config { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every verb and every argument says what it is for in `--help` (issue 21 item 5).
    #[test]
    fn every_verb_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(here.clone());
                }
                for arg in sub.get_arguments().filter(|a| !a.is_global_set() && a.get_id() != "help" && a.get_id() != "version") {
                    if arg.get_help().is_none() && arg.get_long_help().is_none() {
                        missing.push(format!("{here} <{}>", arg.get_id()));
                    }
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hatrunk", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn the_version_names_the_data_format() {
        let v = super::Cli::command().render_version();
        assert!(v.contains(&format!("data format {}", hatrunk_node::DATA_FORMAT)), "{v}");
    }
}
