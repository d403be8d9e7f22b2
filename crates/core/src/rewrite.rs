//! What a call's INVITE carries toward one account besides the caller's request: the called
//! number in the form the PBX (or the carrier) expects, the headers it must not see, why a
//! failed-over call reached it (Diversion, RFC 5806; History-Info, RFC 7044), and the session timer
//! the trunk asks for (RFC 4028 section 8). The rules are validated here and applied by pure
//! functions; the proxy only places the results in the message.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::policy::Outcome;

/// Rewrite a number's leading digits: `strip` removed when the number starts with it, then `add`
/// put in front. With `strip` set, a number that does not start with it is left alone (an
/// E.164-to-national rule must not prefix a foreign number). Numbers reach the rule as hatrunk
/// indexes them, without the carrier's `+`; a `+` leading `strip` is matched whether or not the
/// number has one (`strip = "+"` alone only drops it), and `add` may put one back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRule {
    #[serde(default)]
    pub strip: Option<String>,
    #[serde(default)]
    pub add: Option<String>,
}

impl NumberRule {
    pub fn is_empty(&self) -> bool {
        self.strip.is_none() && self.add.is_none()
    }

    pub fn apply(&self, number: &str) -> String {
        let rest = match &self.strip {
            Some(s) => match number.trim_start_matches('+').strip_prefix(s.trim_start_matches('+')) {
                Some(rest) => rest,
                None => return number.to_string(),
            },
            None => number,
        };
        format!("{}{rest}", self.add.as_deref().unwrap_or(""))
    }

    /// Build from the file's two fields (`<at>.<strip_name>`, `<at>.<add_name>`).
    pub fn parse(strip: Option<&str>, add: Option<&str>, field: impl Fn(&str) -> String, names: (&str, &str)) -> Result<Self, CoreError> {
        let check = |v: Option<&str>, name: &str| -> Result<Option<String>, CoreError> {
            match v {
                None => Ok(None),
                Some(p) if is_prefix(p) => Ok(Some(p.to_string())),
                Some(p) => Err(CoreError::field(field(name), format!("{p:?} is not a number prefix ('+' and/or 1-16 digits)"))),
            }
        };
        Ok(NumberRule { strip: check(strip, names.0)?, add: check(add, names.1)? })
    }
}

fn is_prefix(p: &str) -> bool {
    let d = p.strip_prefix('+').unwrap_or(p);
    !p.is_empty() && d.len() <= 16 && d.bytes().all(|b| b.is_ascii_digit())
}

/// How a call delivered to the Secondary after the Primary failed says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Diversion {
    #[default]
    None,
    /// `Diversion:` (RFC 5806), what most PBXes and carriers read.
    Diversion,
    /// `History-Info:` (RFC 7044).
    HistoryInfo,
}

impl Diversion {
    pub fn parse(v: Option<&str>, field: String) -> Result<Self, CoreError> {
        match v.unwrap_or("none") {
            "none" => Ok(Diversion::None),
            "diversion" => Ok(Diversion::Diversion),
            "history-info" => Ok(Diversion::HistoryInfo),
            other => Err(CoreError::field(field, format!("unknown value {other:?}; expected none, diversion or history-info"))),
        }
    }
}

/// RFC 5806's reason and the SIP cause RFC 4458 names for it, from how the Primary's attempt ended.
pub fn divert_reason(outcome: Outcome) -> (&'static str, u16) {
    match outcome {
        Outcome::Final(486) | Outcome::Final(600) => ("user-busy", 486),
        Outcome::Final(408) | Outcome::Final(480) | Outcome::NoAnswer => ("no-answer", 408),
        Outcome::Final(c) if c >= 500 => ("unavailable", 503),
        Outcome::ConnectionError | Outcome::UserNotRegistered => ("unavailable", 503),
        _ => ("unknown", 404),
    }
}

/// The header to add toward the Secondary, naming the Primary's URI it was diverted from, and the
/// number of History-Info entries the request already has (ours continue their indices).
pub fn divert_header(
    style: Diversion,
    primary_uri: &str,
    secondary_uri: &str,
    outcome: Outcome,
    prior_entries: usize,
) -> Option<(&'static str, String)> {
    let (reason, cause) = divert_reason(outcome);
    match style {
        Diversion::None => None,
        Diversion::Diversion => Some(("Diversion", format!("<{primary_uri}>;reason={reason};counter=1;privacy=off"))),
        Diversion::HistoryInfo => {
            let i = prior_entries + 1;
            let sep = if primary_uri.contains('?') { '&' } else { '?' };
            Some((
                "History-Info",
                format!("<{primary_uri}{sep}Reason=SIP%3Bcause%3D{cause}>;index={i}, <{secondary_uri}>;index={i}.1;rc={i}"),
            ))
        }
    }
}

/// Headers that carry the dialog itself: removing one toward a PBX would break the call.
const KEPT: [&str; 14] = [
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "record-route",
    "route",
    "max-forwards",
    "content-length",
    "content-type",
    "require",
    "proxy-require",
    "session-expires",
];

/// Validate `remove_headers`: header names (RFC 3261 tokens), at most 32, none of [`KEPT`].
pub fn parse_remove_headers(names: Option<&[String]>, at: &str) -> Result<Vec<String>, CoreError> {
    let names = names.unwrap_or(&[]);
    if names.len() > 32 {
        return Err(CoreError::field(format!("{at}.remove_headers"), "at most 32 header names"));
    }
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let field = format!("{at}.remove_headers[{i}]");
        let token = !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
        if !token {
            return Err(CoreError::field(field, format!("{n:?} is not a header name")));
        }
        if KEPT.contains(&n.to_ascii_lowercase().as_str()) {
            return Err(CoreError::field(field, format!("{n} carries the dialog; it cannot be removed")));
        }
        out.push(n.clone());
    }
    Ok(out)
}

/// The smallest session interval RFC 4028 allows (its `Min-SE` floor) and the largest we ask for.
pub const SESSION_EXPIRES_RANGE: std::ops::RangeInclusive<i64> = 90..=86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_to_national_and_back() {
        let to_pbx = NumberRule { strip: Some("+44".into()), add: Some("0".into()) };
        assert_eq!(to_pbx.apply("+442079460000"), "02079460000");
        assert_eq!(to_pbx.apply("442079460000"), "02079460000", "the number as indexed, its '+' dropped");
        assert_eq!(to_pbx.apply("+33142000000"), "+33142000000", "a foreign number is left alone");
        let to_carrier = NumberRule { strip: Some("0".into()), add: Some("+44".into()) };
        assert_eq!(to_carrier.apply("02079460000"), "+442079460000");
        let plus = NumberRule { strip: None, add: Some("+".into()) };
        assert_eq!(plus.apply("6561230000"), "+6561230000");
        assert_eq!(NumberRule::default().apply("123"), "123");
    }

    #[test]
    fn bad_rules_name_their_field() {
        let f = |n: &str| format!("primary.{n}");
        let e = NumberRule::parse(Some("+4x"), None, f, ("number_strip", "number_add")).expect_err("refused");
        assert!(e.to_string().contains("primary.number_strip"), "{e}");
        assert!(NumberRule::parse(None, Some(""), |n| n.to_string(), ("s", "a")).is_err());
        assert!(NumberRule::parse(Some("+"), Some("00"), |n| n.to_string(), ("s", "a")).is_ok());
        let e = parse_remove_headers(Some(&["X-Ok".into(), "Via".into()]), "secondary").expect_err("refused");
        assert!(e.to_string().contains("secondary.remove_headers[1]"), "{e}");
        assert!(parse_remove_headers(Some(&["bad header".into()]), "primary").is_err());
        assert_eq!(parse_remove_headers(Some(&["P-Charging-Vector".into()]), "primary").expect("ok"), vec!["P-Charging-Vector"]);
        assert!(Diversion::parse(Some("yes"), "primary.diversion".into()).is_err());
    }

    #[test]
    fn reasons_follow_what_the_primary_did() {
        assert_eq!(divert_reason(Outcome::Final(486)).0, "user-busy");
        assert_eq!(divert_reason(Outcome::Final(480)).0, "no-answer");
        assert_eq!(divert_reason(Outcome::NoAnswer).0, "no-answer");
        assert_eq!(divert_reason(Outcome::Final(503)).0, "unavailable");
        assert_eq!(divert_reason(Outcome::ConnectionError).0, "unavailable");
        let (h, v) = divert_header(Diversion::Diversion, "sip:100@10.0.0.1", "sip:100@10.0.0.2", Outcome::Final(486), 0).expect("header");
        assert_eq!((h, v.as_str()), ("Diversion", "<sip:100@10.0.0.1>;reason=user-busy;counter=1;privacy=off"));
        let (h, v) = divert_header(Diversion::HistoryInfo, "sip:100@10.0.0.1", "sip:100@10.0.0.2", Outcome::NoAnswer, 0).expect("header");
        assert_eq!(h, "History-Info");
        assert_eq!(v, "<sip:100@10.0.0.1?Reason=SIP%3Bcause%3D408>;index=1, <sip:100@10.0.0.2>;index=1.1;rc=1");
        assert!(divert_header(Diversion::None, "a", "b", Outcome::NoAnswer, 0).is_none());
    }
}
