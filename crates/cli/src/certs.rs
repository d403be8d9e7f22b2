//! `hatrunk certs`: a cluster CA and the certificates its nodes and operators present (mutual TLS
//! between nodes, admin client certificates). Meant for test clusters and small deployments; a
//! carrier with its own PKI issues the same shapes with it (docs/security.md has the openssl steps).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The name every node certificate carries; nodes check it on each other (`[tls] server_name`).
pub const NODE_NAME: &str = "hatrunk-node";

#[derive(clap::Subcommand)]
pub enum CertsCmd {
    /// Create a cluster CA in DIR and a certificate for each node and for one operator.
    Init {
        /// Where the CA and the certificates go (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Node names, comma separated (each gets NAME.pem and NAME.key).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Extra names or IP addresses every node certificate also carries.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
    },
    /// Issue one more certificate from the CA in DIR: a node (default) or an operator (--admin).
    Issue {
        /// The directory holding the CA (`certs init` made it); the certificate goes there too.
        #[arg(long)]
        dir: PathBuf,
        /// The node's (or operator's) name: NAME.pem and NAME.key.
        name: String,
        /// An operator's client certificate instead of a node's.
        #[arg(long)]
        admin: bool,
        /// Extra names or IP addresses the certificate also carries, comma separated.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
    },
}

pub fn run(cmd: CertsCmd) -> ExitCode {
    let r = match cmd {
        CertsCmd::Init { dir, nodes, san } => init(&dir, &nodes, &san),
        CertsCmd::Issue { dir, name, admin, san } => ca_key(&dir).and_then(|k| issue(&dir, &k, &name, admin, &san)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init(dir: &Path, nodes: &[String], san: &[String]) -> Result<(), String> {
    if dir.join("ca.key").exists() {
        return Err(format!("{} already holds a CA; use `hatrunk certs issue` to add a certificate", dir.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = ca_params().self_signed(&key).map_err(|e| e.to_string())?;
    write(&dir.join("ca.pem"), &cert.pem(), false)?;
    write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
    for n in nodes {
        issue(dir, &key, n, false, san)?;
    }
    issue(dir, &key, "admin", true, &[])?;
    println!("CA and certificates written to {}", dir.display());
    Ok(())
}

fn ca_key(dir: &Path) -> Result<KeyPair, String> {
    let p = dir.join("ca.key");
    let pem = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", p.display()))
}

/// The CA's parameters. `issue` rebuilds the issuer from these and the CA key, so they must stay
/// the same for every certificate a CA signs.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hatrunk cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let y = this_year();
    p.not_before = rcgen::date_time_ymd(y, 1, 1);
    p.not_after = rcgen::date_time_ymd(y + 10, 1, 1);
    p
}

fn issue(dir: &Path, ca: &KeyPair, name: &str, admin: bool, san: &[String]) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(format!("{name:?}: a certificate name is letters, digits, '-', '_' and '.'"));
    }
    let mut names = if admin { vec!["hatrunk-admin".to_string()] } else { vec![NODE_NAME.to_string(), name.to_string()] };
    names.extend(san.iter().cloned());
    let mut p = CertificateParams::new(names).map_err(|e| format!("{name}: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // a node is a server to its peers and a client of them; an operator only a client
    p.extended_key_usages = if admin {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    };
    let y = this_year();
    p.not_before = rcgen::date_time_ymd(y, 1, 1);
    p.not_after = rcgen::date_time_ymd(y + 3, 1, 1);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca_params(), ca);
    let cert = p.signed_by(&key, &issuer).map_err(|e| format!("{name}: {e}"))?;
    write(&dir.join(format!("{name}.pem")), &cert.pem(), false)?;
    write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// Write a file; keys are created readable by their owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
