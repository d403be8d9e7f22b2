//! The parser against RFC 4475 (`../shared/sip-torture/`): valid messages parse, invalid ones are
//! refused, none panics. The end-to-end torture test (tests/) checks what the node answers on the wire.

use std::path::PathBuf;

use hatrunk_sip::parse::parse;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sip-torture")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.dat"))).unwrap_or_else(|e| panic!("torture file {name}: {e}"))
}

const VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    "badbranch",
    "inv2543",
];
const INVALID: &[&str] = &[
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
];

#[test]
fn valid_messages_parse() {
    let mut bad = vec![];
    for name in VALID {
        if let Err(e) = parse(&load(name), true) {
            bad.push(format!("{name}: {e}"));
        }
    }
    assert!(bad.is_empty(), "refused valid messages:\n{}", bad.join("\n"));
}

#[test]
fn invalid_messages_are_refused() {
    let mut accepted = vec![];
    for name in INVALID {
        if parse(&load(name), true).is_ok() {
            accepted.push(*name);
        }
    }
    assert!(accepted.is_empty(), "accepted invalid messages: {accepted:?}");
}

#[test]
fn every_message_parses_without_panic_on_both_transports() {
    for entry in std::fs::read_dir(dir()).expect("torture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).expect("read");
            let _ = parse(&bytes, true);
            let _ = parse(&bytes, false);
        }
    }
}
