//! SIP health of the other members: every ping interval an OPTIONS to each SIP member's socket,
//! answered by that member's engine itself, and each answer handed to the cluster view
//! ([`ClusterView::sip_answered`]). A member whose SIP stops answering (a wedged engine, its SIP
//! port blocked between members) is then down even while its cluster heartbeat answers, so setups
//! move off it by the rule that moves them off a dead node (`check_egress`), also after 100 Trying.
//!
//! The probes go out without a client transaction: one unanswered would sit in the table for
//! Timer F's 32 s, for every member, every interval. The branch carries this run's token, so only
//! answers to our own probes count.
//!
//! [`ClusterView::sip_answered`]: crate::cluster_health::ClusterView::sip_answered

use std::net::SocketAddr;

use hatrunk_sip::transport::Proto;
use hatrunk_sip::{Method, SipMessage};

use super::context::cx;
use super::{Engine, Src};

/// Branches of member probes start with this (after the RFC 3261 magic cookie).
const PREFIX: &str = "z9hG4bKhm";

impl Engine {
    /// This run's token in member-probe branches.
    fn member_token(&self) -> String {
        format!("{:x}", self.cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24)
    }

    /// Send the members their OPTIONS if the interval has passed (called a few times a second).
    pub(super) fn probe_members(&mut self) {
        let every = self.cfg.member_probe_ms;
        if every == 0 || self.now < self.next_member_probe {
            return;
        }
        self.next_member_probe = self.now + every;
        let view = self.cluster.view(self.now);
        let token = self.member_token();
        let hostport = cx!(self).hostport(Proto::Udp);
        for m in view.members.iter().filter(|m| m.member.sip && m.member.id != self.cfg.node_id) {
            let Ok(addr) = m.member.sip_addr.parse::<SocketAddr>() else { continue };
            self.member_seq += 1;
            let seq = self.member_seq;
            let mut req = SipMessage::request(Method::Options, format!("sip:{addr}"));
            req.push("Via", format!("SIP/2.0/UDP {hostport};branch={PREFIX}{token}.{}.{seq:x}", m.member.id));
            req.push("Max-Forwards", "1");
            req.push("From", format!("<sip:member-probe@{hostport}>;tag=hm{token}"));
            req.push("To", format!("<sip:{addr}>"));
            req.push("Call-ID", format!("hm{token}.{}.{seq:x}@{}", m.member.id, self.cfg.advertise));
            req.push("CSeq", format!("{seq} OPTIONS"));
            self.io.send(Src { proto: Proto::Udp, addr, conn: None }, req.to_bytes());
        }
    }

    /// Probe the members every `ms` (tests start engines with probing off).
    #[cfg(test)]
    pub(super) fn set_member_probe(&mut self, ms: u64) {
        self.cfg.member_probe_ms = ms;
    }

    /// A response whose branch is a member probe's: handed to the cluster view if it carries this
    /// run's token. True when it was one (nothing else is to be done with it).
    pub(super) fn member_answer(&mut self, branch: &str) -> bool {
        let Some(rest) = branch.strip_prefix(PREFIX) else {
            return false;
        };
        let mut parts = rest.split('.');
        if parts.next() != Some(self.member_token().as_str()) {
            return true;
        }
        if let Some(id) = parts.next().and_then(|id| id.parse::<u64>().ok()) {
            self.cluster.sip_answered(id, self.now);
        }
        true
    }
}
