//! OPTIONS both ways: answering the ones sent to us, and health probing of IP accounts that set
//! `probe_interval_ms` (Kamailio dispatcher style): one OPTIONS per interval through a non-INVITE
//! client transaction; any response means alive, Timer F or an unreachable port means not.
//! Thresholds turn results into Up/Down ([`ProbeHealth`]).
//!
//! [`ProbeHealth`]: hatrunk_core::health::ProbeHealth

use hatrunk_core::trunk::{AuthMode, Role};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::{Method, SipMessage};

use super::{build, Engine, Owner, TimerKey};

impl Engine {
    /// OPTIONS to us (a carrier's or PBX's own probe): 200 with what we allow, 420 for any Require.
    pub(super) fn on_options(&mut self, key: TxKey, msg: SipMessage) {
        if let Some(unsupported) = unsupported_require(&msg) {
            let mut r = build::response(&msg, 420, Some(&self.io.tag()));
            r.push("Unsupported", unsupported);
            return self.respond_msg(&key, r);
        }
        let mut r = build::response(&msg, 200, Some(&self.io.tag()));
        r.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER");
        r.push("Accept", "application/sdp");
        self.respond_msg(&key, r);
    }

    /// Make sure every probed account has a probe scheduled (called on trunk changes and ticks).
    pub fn sync_probes(&mut self, now: u64) {
        self.now = now;
        for t in self.store.list() {
            for role in [Role::Primary, Role::Secondary] {
                let Some(a) = t.account(role) else { continue };
                if a.auth != AuthMode::Ip || a.probe_interval_ms.is_none() {
                    continue;
                }
                if self.status.mark_probe_scheduled(&t.id, role) {
                    self.io.arm(now, TimerKey::Probe(t.id.clone(), role));
                }
            }
        }
    }

    pub(super) fn probe_due(&mut self, trunk: &str, role: Role) {
        let t = self.store.get(trunk);
        let Some((interval, ruri, dest)) = t.as_ref().and_then(|t| t.account(role)).and_then(|a| {
            let target = a.target.clone()?;
            let dest = super::uri_dest(&target)?;
            Some((a.probe_interval_ms?, target, dest))
        }) else {
            self.status.unschedule_probe(trunk, role);
            return;
        };
        let mut m = SipMessage::request(Method::Options, ruri.clone());
        let tag = self.io.tag();
        m.push("Max-Forwards", "70");
        m.push("From", format!("<sip:probe@{}>;tag={tag}", self.cfg.advertise));
        m.push("To", format!("<{ruri}>"));
        m.push("Call-ID", format!("probe-{tag}@{}", self.cfg.advertise));
        m.push("CSeq", "1 OPTIONS");
        self.start_client(m, dest, Owner::Probe(trunk.to_string(), role));
        self.io.arm(self.now + u64::from(interval), TimerKey::Probe(trunk.to_string(), role));
    }

    pub(super) fn probe_result(&mut self, trunk: &str, role: Role, answered: bool) {
        let Some(a) = self.store.get(trunk).and_then(|t| t.account(role).cloned()) else {
            return;
        };
        if let Some(state) = self.status.record_probe(trunk, role, answered, self.now, a.probe_up_after, a.probe_down_after) {
            tracing::info!(trunk, ?role, ?state, "account health changed");
        }
    }
}

/// An option tag in Require that we (as UAS) do not support (RFC 3261 section 8.2.2.3).
fn unsupported_require(msg: &SipMessage) -> Option<String> {
    let tags: Vec<String> =
        msg.headers_named("Require").flat_map(|v| v.split(',').map(|t| t.trim().to_string())).filter(|t| !t.is_empty()).collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}
