//! Trunk file validation: a good file, and each kind of mistake refused with its field named.

use super::*;

const GOOD: &str = r#"
id = "acme"
numbers = ["6561230000", "+6561230001"]
max_concurrent_calls = 30
mode = "auto-failover"
advanced_ha = "none"
failover_policy = "current"
failover_timeout_ms = 2500

[primary]
label = "HQ PBX"
auth = "ip"
target = "sip:192.0.2.10:5060"
transport = "udp"
allowed_ips = ["192.0.2.10/32"]
caller_id = "+6561230000"
probe_interval_ms = 5000

[secondary]
label = "DR PBX"
auth = "digest"
username = "acme-dr"
password = "s3cret-pass"
transport = "tcp"
allowed_ips = ["198.51.100.0/24"]
"#;

#[test]
fn good_file_validates() {
    let t = parse_trunk(GOOD).expect("valid");
    assert_eq!(t.numbers, vec!["6561230000", "6561230001"]);
    assert_eq!(t.mode, Mode::AutoFailover);
    assert_eq!(t.primary.sip_target(), Some(SipTarget { host: "192.0.2.10".into(), port: 5060, port_given: true, sips: false }));
    let s = t.secondary.as_ref().expect("secondary");
    assert!(s.ha1.is_some());
    let shown = t.redacted().to_string();
    assert!(!shown.contains("s3cret"));
    assert!(!shown.contains(&s.ha1.as_ref().expect("ha1").md5));
    assert!(shown.contains("\"password_set\":true"));
}

fn field_of(text: &str) -> String {
    match parse_trunk(text) {
        Err(CoreError::InvalidField { field, .. }) => field,
        Err(CoreError::Syntax(m)) => format!("syntax: {m}"),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn each_mistake_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("mode = \"auto-failover\"", "mode = \"sometimes\"", "mode"),
        ("advanced_ha = \"none\"", "advanced_ha = \"3t\"", "advanced_ha"),
        ("advanced_ha = \"none\"", "advanced_ha = \"4t\"\nprimary_region = \"a b\"", "primary_region"),
        ("failover_policy = \"current\"", "failover_policy = \"random\"", "failover_policy"),
        ("failover_policy = \"current\"", "failover_policy = \"custom\"", "failover_codes"),
        ("failover_policy = \"current\"", "failover_policy = \"custom\"\nfailover_codes = [200]", "failover_codes[0]"),
        ("max_concurrent_calls = 30", "max_concurrent_calls = 0", "max_concurrent_calls"),
        ("max_concurrent_calls = 30", "", "max_concurrent_calls"),
        ("failover_timeout_ms = 2500", "failover_timeout_ms = 5", "failover_timeout_ms"),
        ("allowed_ips = [\"192.0.2.10/32\"]", "allowed_ips = [\"192.0.2.300/32\"]", "primary.allowed_ips[0]"),
        ("allowed_ips = [\"198.51.100.0/24\"]", "allowed_ips = [\"10.0.0.0/8\", \"nope\"]", "secondary.allowed_ips[1]"),
        ("target = \"sip:192.0.2.10:5060\"", "target = \"http://x\"", "primary.target"),
        ("target = \"sip:192.0.2.10:5060\"", "", "primary.target"),
        ("auth = \"digest\"", "auth = \"magic\"", "secondary.auth"),
        ("password = \"s3cret-pass\"", "password = \"short\"", "secondary.password"),
        ("username = \"acme-dr\"", "", "secondary.username"),
        ("transport = \"tcp\"", "transport = \"sctp\"", "secondary.transport"),
        ("numbers = [\"6561230000\", \"+6561230001\"]", "numbers = [\"65612x\"]", "numbers[0]"),
        ("numbers = [\"6561230000\", \"+6561230001\"]", "numbers = []", "numbers"),
        ("numbers = [\"6561230000\", \"+6561230001\"]", "numbers = [\"6561230000\", \"+6561230000\"]", "numbers[1]"),
        ("id = \"acme\"", "id = \"a b\"", "id"),
        ("caller_id = \"+6561230000\"", "caller_id = \"anonymous\"", "primary.caller_id"),
        ("probe_interval_ms = 5000", "probe_interval_ms = 1", "primary.probe_interval_ms"),
    ];
    for (from, to, field) in cases {
        assert!(GOOD.contains(from), "test case does not apply: {from}");
        let text = GOOD.replacen(from, to, 1);
        assert_eq!(field_of(&text), *field, "after replacing {from:?} with {to:?}");
    }
}

#[test]
fn unknown_fields_and_wrong_types_are_refused() {
    let e = field_of(&GOOD.replace("mode = ", "colour = \"red\"\nmode = "));
    assert!(e.starts_with("syntax:") && e.contains("colour"), "{e}");
    let e = field_of(&GOOD.replace("max_concurrent_calls = 30", "max_concurrent_calls = \"thirty\""));
    assert!(e.starts_with("syntax:") && e.contains("max_concurrent_calls"), "{e}");
}

#[test]
fn modes_other_than_only_primary_need_a_secondary() {
    let no_secondary = GOOD.split("[secondary]").next().expect("split");
    assert_eq!(field_of(no_secondary), "secondary");
    let only = no_secondary.replace("auto-failover", "only-primary");
    assert!(parse_trunk(&only).is_ok());
}

#[test]
fn taken_numbers_are_refused() {
    let t = parse_trunk(GOOD).expect("valid");
    let r = check_numbers_free(&t, |n| (n == "6561230001").then_some("other"));
    assert_eq!(r, Err(CoreError::NumberTaken { number: "6561230001".into(), owner: "other".into() }));
    assert!(check_numbers_free(&t, |_| Some("acme")).is_ok());
}

#[test]
fn sip_targets() {
    assert_eq!(
        parse_sip_target("sip:pbx.example.com"),
        Ok(SipTarget { host: "pbx.example.com".into(), port: 5060, port_given: false, sips: false })
    );
    assert_eq!(
        parse_sip_target("sip:u@[::1]:5070;transport=tcp"),
        Ok(SipTarget { host: "::1".into(), port: 5070, port_given: true, sips: false })
    );
    assert!(parse_sip_target("sip:host:0").is_err());
    assert_eq!(
        parse_sip_target("sips:sbc.example.com"),
        Ok(SipTarget { host: "sbc.example.com".into(), port: 5061, port_given: false, sips: true })
    );
    assert!(parse_sip_target("sips:sbc.example.com").is_ok_and(|t| t.is_name()));
    assert!(!parse_sip_target("sip:[2001:db8::1]").is_ok_and(|t| t.is_name()));
    for bad in ["sip:-pbx.example.com", "sip:pbx..example.com", "sip:pbx.example.com-", "tel:+6561230000"] {
        assert!(parse_sip_target(bad).is_err(), "{bad}");
    }
    let sips_over_udp = GOOD.replace("target = \"sip:192.0.2.10:5060\"", "target = \"sips:sbc.example.com\"");
    assert!(sips_over_udp.contains("sips:"));
    assert!(matches!(parse_trunk(&sips_over_udp), Err(CoreError::InvalidField { ref field, .. }) if field == "primary.target"));
}

#[test]
fn redacted_view_has_no_nulls() {
    let t = parse_trunk(GOOD).expect("valid");
    let v = t.redacted();
    assert!(v["secondary"].get("target").is_none(), "{v}");
    assert!(!v.to_string().contains("null"), "{v}");
}

#[test]
fn tls_pins_are_fingerprints_on_tls_ip_accounts_only() {
    let fp = "AB:".repeat(31) + "AB";
    let tls = GOOD.replace("transport = \"udp\"", "transport = \"tls\"");
    for (pin, want) in
        [(fp.clone(), "ab".repeat(32)), (format!("sha256 Fingerprint={fp}"), "ab".repeat(32)), ("0f".repeat(32), "0f".repeat(32))]
    {
        let t = parse_trunk(&tls.replace("probe_interval_ms = 5000", &format!("probe_interval_ms = 5000\ntls_pin = [{pin:?}]")))
            .expect("a pin");
        assert_eq!(t.primary.tls_pins, vec![want]);
    }
    let with = |text: &str, pin: &str| text.replace("probe_interval_ms = 5000", &format!("probe_interval_ms = 5000\ntls_pin = [{pin}]"));
    assert_eq!(field_of(&with(&tls, "\"abc\"")), "primary.tls_pin[0]");
    assert_eq!(field_of(&with(&tls, "")), "primary.tls_pin");
    assert_eq!(field_of(&with(GOOD, &format!("{fp:?}"))), "primary.tls_pin", "udp account");
}

#[test]
fn a_file_may_name_the_revision_it_was_read_at() {
    let base = "id = \"a\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 3\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\n";
    assert_eq!(parse_trunk_at(base).expect("plain").1, None);
    assert_eq!(parse_trunk_at(&format!("revision = 12\n{base}")).expect("named").1, Some(12));
    let e = parse_trunk_at(&format!("revision = -1\n{base}")).expect_err("negative");
    assert!(e.to_string().contains("revision"), "{e}");
    assert_eq!(parse_trunk(&format!("revision = 4\n{base}")).expect("the trunk itself").max_concurrent_calls, 3);
}

#[test]
fn format_3_fields_parse_show_under_their_file_names_and_name_a_wrong_one() {
    let with = |extra: &str| GOOD.replace("probe_interval_ms = 5000", &format!("probe_interval_ms = 5000\n{extra}"));
    let t = parse_trunk(&format!(
        "session_expires_s = 1800\n{}",
        with("number_strip = \"+65\"\nnumber_add = \"0\"\noutbound_number_strip = \"0\"\noutbound_number_add = \"+65\"\nremove_headers = [\"P-Charging-Vector\"]\ndiversion = \"history-info\"")
    ))
    .expect("trunk");
    assert_eq!(t.session_expires_s, Some(1800));
    assert_eq!(t.primary.to_pbx.apply("6561230000"), "061230000");
    assert_eq!(t.primary.to_carrier.apply("061230000"), "+6561230000");
    let v = t.redacted();
    assert_eq!(v["session_expires_s"], 1800);
    assert_eq!(v["primary"]["number_strip"], "+65");
    assert_eq!(v["primary"]["outbound_number_add"], "+65");
    assert_eq!(v["primary"]["remove_headers"][0], "P-Charging-Vector");
    assert_eq!(v["primary"]["diversion"], "history-info");
    assert!(!v.to_string().contains("null") && !v.to_string().contains("to_pbx"), "{v}");
    let plain = parse_trunk(GOOD).expect("plain").redacted();
    assert!(plain["primary"].get("number_strip").is_none() && plain["primary"].get("diversion").is_none(), "{plain}");
    assert_eq!(field_of(&format!("session_expires_s = 30\n{GOOD}")), "session_expires_s");
    assert_eq!(field_of(&format!("max_calls_per_second = 0\n{GOOD}")), "max_calls_per_second");
    let rated = parse_trunk(&format!("max_calls_per_second = 25\n{GOOD}")).expect("rated");
    assert_eq!((rated.max_calls_per_second, rated.redacted()["max_calls_per_second"].as_u64()), (Some(25), Some(25)));
    assert_eq!(field_of(&with("number_add = \"x\"")), "primary.number_add");
    assert_eq!(field_of(&with("remove_headers = [\"Call-ID\"]")), "primary.remove_headers[0]");
    assert_eq!(field_of(&with("diversion = \"always\"")), "primary.diversion");
}

#[test]
fn allowed_ips_may_name_hosts_and_a_bad_address_is_still_an_error() {
    let t = parse_trunk(&GOOD.replace("allowed_ips = [\"192.0.2.10/32\"]", "allowed_ips = [\"192.0.2.10/32\", \"PBX.Example.com\"]"))
        .expect("a name");
    assert_eq!(t.primary.allowed_hosts, vec!["pbx.example.com"]);
    assert!(t.primary.allows("192.0.2.10".parse().expect("ip")));
    let shown = t.redacted();
    assert_eq!(shown["primary"]["allowed_ips"][1], "pbx.example.com", "{shown}");
    assert!(shown["primary"].get("allowed_hosts").is_none());
    let only_name =
        parse_trunk(&GOOD.replace("allowed_ips = [\"192.0.2.10/32\"]", "allowed_ips = [\"office.example.net\"]")).expect("name only");
    assert!(only_name.primary.allowed_ips.is_empty());
    for bad in ["10.0.0.300", "-bad.example.com", "a..b", "under_score.example.com", "office"] {
        assert_eq!(
            field_of(&GOOD.replace("allowed_ips = [\"192.0.2.10/32\"]", &format!("allowed_ips = [{bad:?}]"))),
            "primary.allowed_ips[0]",
            "{bad}"
        );
    }
}
