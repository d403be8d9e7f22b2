//! The INVITE path: inbound (carrier -> PBX, by mode, with failover) and outbound (PBX -> carrier,
//! with the Primary's caller ID), admission, starting attempts and ending the call. What happens to
//! an attempt once sent, and the choice of the response sent upstream (section 16.7: a 503 from the
//! last attempt becomes 500), is in [`attempt`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hatrunk_core::cdr::{AttemptRecord, Cause, Direction, Disposition};
use hatrunk_core::plan::{CallPlan, Step};
use hatrunk_core::policy::Outcome;
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;
use hatrunk_core::trunk::{normalize_number, AuthMode, Mode, Role, Transport, Trunk};
use hatrunk_sip::headers::{addr_uri, param, SipUri};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::SipMessage;

use super::calls::{AccountTargets, Attempt, AttemptState, Call, Calls, Dest, SlotState};
use super::context::{cx, Cx};
use super::egress::INGRESS_HEADER;
use super::{build, Action, CallTimer, Engine, Owner, Src, Upstream};
use crate::dns::DnsKey;

mod attempt;

impl Engine {
    /// A new INVITE: whose call it is (an inbound DID, a PBX calling out, a forward from another
    /// member), checked here where credentials are; the call itself is the calls' part.
    pub(super) fn on_invite(&mut self, key: TxKey, mut msg: SipMessage, src: Src) {
        let mut ingress_applied = None;
        let forwarded_from = match msg.header(INGRESS_HEADER).map(str::to_string) {
            Some(value) => {
                msg.remove_all(INGRESS_HEADER);
                let member = cx!(self).member_at(src);
                let secret = self.store.cluster_secret();
                let call_id = msg.header("Call-ID").unwrap_or("");
                if member.is_some() && !super::forward_sig::verify(secret.as_deref(), call_id, &value) {
                    // a member's address without the cluster's signature: forged or spoofed
                    tracing::warn!(source = %src.addr, "forwarded INVITE without a valid cluster signature refused");
                    self.metrics.guard_drops.with_label_values(&["forged"]).inc();
                    return self.respond_key(&key, 403, None);
                }
                ingress_applied = super::forward_sig::applied_of(&value);
                member
            }
            None => None,
        };
        let number = msg
            .uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user_unescaped())
            .map(|u| normalize_number(u.split(';').next().unwrap_or("")));
        if let Some(trunk) = number.as_deref().and_then(|n| self.store.by_number(n)) {
            let n = number.unwrap_or_default();
            return self.calls.new_call(&mut cx!(self), key, msg, src, trunk, Direction::Inbound, None, n, forwarded_from);
        }
        if let Some(from) = forwarded_from {
            // members forward only inbound calls, to a number the ingress knew: one of the two
            // copies of the trunks is behind (`catch_up.rs`)
            return self.unknown_forward(key, msg, src, from, number.unwrap_or_default(), ingress_applied);
        }
        // Not one of our numbers: an outbound call from a customer PBX, or nothing we route.
        if self.cfg.upstream.is_none() {
            return self.respond_key(&key, 404, None);
        }
        let by_ip = self.accounts_at(src.addr.ip()).into_iter().next();
        let account = match by_ip {
            Some(found) => Some(found),
            None => match self.authenticate(&msg, "Proxy-Authorization", src.addr.ip()) {
                Ok(found) => Some(found),
                Err(challenge) => {
                    let Some(challenge) = challenge else {
                        return self.respond_key(&key, 404, None);
                    };
                    return self.send_challenge(&key, &msg, 407, challenge);
                }
            },
        };
        let Some((trunk, role)) = account else {
            return self.respond_key(&key, 404, None);
        };
        let dialled = number.unwrap_or_default();
        self.calls.new_call(&mut cx!(self), key, msg, src, trunk, Direction::Outbound, Some(role), dialled, None);
    }
}

impl Calls {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_call(
        &mut self,
        cx: &mut Cx<'_>,
        key: TxKey,
        msg: SipMessage,
        src: Src,
        trunk: Arc<Trunk>,
        direction: Direction,
        via_account: Option<Role>,
        number: String,
        forwarded_from: Option<String>,
    ) {
        let id = cx.io.next_id();
        let from_tag = param(msg.header("From").unwrap_or(""), "tag").unwrap_or("").to_string();
        let slot = SlotId::new(&cx.cfg.node, msg.header("Call-ID").unwrap_or(""), &from_tag);
        let (trunk_id, limit, cps) = (trunk.id.clone(), trunk.max_concurrent_calls, trunk.max_calls_per_second);
        if let Some(e) = cx.tx.servers.get_mut(&key) {
            e.call = Some(id);
        }
        // cut off from the majority: we could not admit, so send the carrier elsewhere now
        let cut_off = if cx.cluster.quorum(cx.now) { None } else { Some(build::response(&msg, 503, Some(&cx.io.tag()))) };
        let call = Call {
            key: Some(Box::new(key)),
            trunk,
            direction,
            via_account,
            call_id: msg.header("Call-ID").unwrap_or("").into(),
            from_uri: addr_uri(msg.header("From").unwrap_or("")).to_string(),
            req: Some(Box::new(msg)),
            src,
            number,
            slot: slot.clone(),
            plan: None,
            attempts: Vec::new(),
            start_ms: cx.now,
            answer_ms: None,
            failover_detect: None,
            failover_ms: None,
            slot_state: SlotState::None,
            egress: None,
            forwarded_from: forwarded_from.clone(),
            report: None,
            targets: None,
            session: None,
        };
        if let Some(mut r) = cut_off {
            r.push("Retry-After", "5");
            r.push("Reason", "Q.850;cause=41;text=\"Node cut off from the cluster majority\"");
            cx.respond_msg(&call.key(), r);
            self.insert(id, call);
            return self.finish(cx, id, Disposition::Congestion, Cause::ClusterUnavailable, Some(503), false);
        }
        self.insert(id, call);
        if forwarded_from.is_some() {
            // the ingress holds the slot; this node only delivers
            return self.deliver_locally(cx, id);
        }
        if let Some(c) = self.get_mut(id) {
            c.slot_state = SlotState::Asking;
        }
        cx.io.push(Action::Admit { call: id, trunk: trunk_id, limit, slot, cps });
    }

    pub(super) fn call_admitted(&mut self, cx: &mut Cx<'_>, id: u64, decision: Result<Decision, String>) {
        let Some(call) = self.get_mut(id) else {
            // the call ended while admission was pending: give the slot straight back
            if let Ok(d) = decision {
                if d.admitted() {
                    tracing::debug!(call = id, "admitted after the call ended; releasing");
                }
            }
            if let Some(slot) = self.admitted_after_end(id) {
                cx.io.push(Action::Release { slot });
            }
            return;
        };
        call.slot_state = SlotState::None;
        match decision {
            Ok(d) if d.admitted() => call.slot_state = SlotState::Held,
            Ok(Decision::RateLimited { per_second }) => {
                let key = call.key();
                cx.metrics.cps_limited.with_label_values(&[&call.trunk.id]).inc();
                tracing::debug!(trunk = %call.trunk.id, per_second, "calls-per-second limit reached: call refused");
                if let Some(mut r) = cx.tx.response(&key, 503, cx.io) {
                    r.push("Retry-After", "1");
                    r.push("Reason", "Q.850;cause=34;text=\"Calls per second limit reached\"");
                    cx.respond_msg(&key, r);
                }
                self.finish(cx, id, Disposition::Congestion, Cause::CpsLimit, Some(503), false);
                return;
            }
            other => {
                let key = call.key();
                let (code, reason) = match &other {
                    Ok(_) => (cx.cfg.congestion_code, "Q.850;cause=34;text=\"No circuit/channel available\""),
                    Err(_) => (503, "Q.850;cause=41;text=\"Temporary failure\""),
                };
                let cause = if other.is_ok() { Cause::CallLimitExceeded } else { Cause::ClusterUnavailable };
                if let Err(e) = &other {
                    tracing::warn!(error = %e, "admission unavailable");
                    // the admit may still commit after we gave up on it: give the slot back anyway
                    // (releasing a slot nobody holds changes nothing)
                    let slot = call.slot.clone();
                    cx.io.push(Action::Release { slot });
                }
                cx.respond_key(&key, code, Some(reason));
                self.finish(cx, id, Disposition::Congestion, cause, Some(code), false);
                return;
            }
        }
        self.route_admitted(cx, id);
    }

    /// Deliver the call from this node: the trunk's mode towards the PBX (inbound) or the carrier.
    pub(super) fn deliver_locally(&mut self, cx: &mut Cx<'_>, id: u64) {
        let Some(call) = self.get(id) else {
            return;
        };
        let step = match call.direction {
            Direction::Outbound => Step::Try(call.via_account.unwrap_or(Role::Primary)),
            Direction::Inbound => {
                let trunk = call.trunk.clone();
                let rr = self.round_robin(&trunk.id);
                let status = cx.status;
                let (plan, step) = CallPlan::start(trunk.mode, trunk.failover_policy.clone(), rr, |r| status.probe_health(&trunk.id, r));
                if let Some(c) = self.get_mut(id) {
                    c.plan = Some(plan);
                }
                step
            }
        };
        if let Step::Try(role) = step {
            self.start_attempt(cx, id, role);
        }
    }

    fn start_attempt(&mut self, cx: &mut Cx<'_>, id: u64, role: Role) {
        let now = cx.now;
        let Some(call) = self.get(id) else {
            return;
        };
        let trunk = call.trunk.clone();
        let number = super::account_rules::dialled(call, role);
        let direction = call.direction;
        let mut dests: VecDeque<Dest> = match direction {
            Direction::Outbound => Self::upstream_targets(cx, &number),
            Direction::Inbound => Self::inbound_targets(cx, &trunk, role, &number),
        };
        let Some(first) = dests.pop_front() else {
            let outcome = match trunk.account(role).map(|a| a.auth) {
                Some(AuthMode::Digest) if direction == Direction::Inbound => Outcome::UserNotRegistered,
                _ => Outcome::ConnectionError,
            };
            let mut rec = self.attempt_record(cx, role);
            rec.target = trunk.account(role).and_then(|a| a.target.clone().or_else(|| a.username.clone())).unwrap_or_default();
            let Some(call) = self.get_mut(id) else {
                return;
            };
            let n = call.attempts.len();
            let mut a = Attempt::new(rec, String::new(), now, false);
            a.state = AttemptState::Done;
            call.attempts.push(a);
            return self.attempt_outcome(cx, id, n, outcome, None);
        };
        if let Some(c) = self.get_mut(id) {
            let per_target_ms = u64::from(trunk.failover_timeout_ms) / (dests.len() as u64 + 1);
            c.targets = (!dests.is_empty()).then(|| Box::new(AccountTargets { role, rest: dests, started: now, per_target_ms }));
        }
        self.send_attempt(cx, id, role, first, now);
    }

    fn attempt_record(&self, cx: &Cx<'_>, role: Role) -> AttemptRecord {
        AttemptRecord {
            account: Some(role),
            node: cx.here.0.clone(),
            zone: cx.here.1.clone(),
            region: cx.here.2.clone(),
            target: String::new(),
            code: None,
            error: None,
            elapsed_ms: 0,
        }
    }

    /// Send attempt `n` (the next) of call `id` to one address of `role`'s account, whose first
    /// address was tried at `account_start` (the failover timer counts from then).
    fn send_attempt(&mut self, cx: &mut Cx<'_>, id: u64, role: Role, d: Dest, account_start: u64) {
        let now = cx.now;
        let mut rec = self.attempt_record(cx, role);
        rec.target = d.shown.clone().unwrap_or_else(|| d.ruri.clone());
        let (dest, ruri) = (d.src, d.ruri.as_str());
        let mut fwd = self.forward_request(cx, id, ruri, dest.proto, Some(role));
        if let Some(hop) = &d.flow {
            super::flow::mark(cx, &mut fwd, hop);
        }
        let Some(n) = self.get(id).map(|c| c.attempts.len()) else {
            return;
        };
        let branch = cx.start_client(fwd, dest, Owner::Call(id, n));
        let Some(call) = self.get_mut(id) else {
            return;
        };
        if let Some(at) = call.failover_detect.take() {
            call.failover_ms = Some(now.saturating_sub(at));
        }
        call.attempts.push(Attempt::new(rec, branch, now, false));
        let trunk = &call.trunk;
        let arm_failover = call.direction == Direction::Inbound && trunk.mode == Mode::AutoFailover && role == Role::Primary;
        if arm_failover {
            cx.io.arm_call(account_start + u64::from(trunk.failover_timeout_ms), id, CallTimer::Failover(n as u32));
        }
        if let Some(t) = call.targets.as_ref().filter(|t| t.role == role && !t.rest.is_empty()) {
            cx.io.arm_call(now + t.per_target_ms, id, CallTimer::NextTarget(n as u32));
        }
    }

    /// Attempt `n` of call `id` failed on its address (a 503, a connection error, silence): the
    /// account's next address, if it has one. False when it has none left.
    pub(super) fn next_target(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) -> bool {
        let Some(call) = self.get_mut(id) else {
            return false;
        };
        let Some(role) = call.attempts.get(n).and_then(|a| a.rec.account) else {
            return false;
        };
        let Some(t) = call.targets.as_mut().filter(|t| t.role == role) else {
            return false;
        };
        let Some(next) = t.rest.pop_front() else {
            return false;
        };
        let started = t.started;
        self.send_attempt(cx, id, role, next, started);
        true
    }

    /// Attempt `n`'s address said nothing (not even 100 Trying) for its share of the account's
    /// time: it is muted, as a silent Primary is at failover, and the next address tried.
    pub(super) fn target_silent(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        let now = cx.now;
        let Some(a) = self.attempt_mut(id, n) else {
            return;
        };
        if a.state != AttemptState::Sent {
            return; // answered, heard from, or over
        }
        a.state = AttemptState::Done;
        a.unsettled = true; // it may still answer: see `keep_for_unsettled`
        a.rec.set_outcome(Outcome::NoAnswer);
        a.rec.elapsed_ms = now.saturating_sub(a.started);
        let branch = a.branch.clone();
        cx.tx.mute(&branch);
        if !self.next_target(cx, id, n) {
            self.attempt_outcome(cx, id, n, Outcome::NoAnswer, None);
        }
    }

    /// Where an inbound attempt to `role` goes, and its Request-URI: one address, or a name's
    /// addresses in the order to try them.
    fn inbound_targets(cx: &mut Cx<'_>, trunk: &Trunk, role: Role, number: &str) -> VecDeque<Dest> {
        let mut out = VecDeque::new();
        let Some(a) = trunk.account(role) else {
            return out;
        };
        match a.auth {
            AuthMode::Ip => {
                let Some(t) = a.sip_target() else {
                    return out;
                };
                let proto = match a.transport {
                    Transport::Udp => Proto::Udp,
                    Transport::Tcp => Proto::Tcp,
                    Transport::Tls => Proto::Tls,
                };
                if let Ok(ip) = t.host.parse::<IpAddr>() {
                    let addr = SocketAddr::new(ip, t.port);
                    out.push_back(Dest::to(
                        Src { proto, addr, conn: None },
                        format!("sip:{number}@{}{}", fmt_hostport(addr), proto.uri_param()),
                    ));
                    return out;
                }
                return Self::by_name(cx, &DnsKey::of(&t, a.transport), proto, number);
            }
            AuthMode::Digest => {
                let Some(user) = a.username.as_deref() else {
                    return out;
                };
                out.extend(super::flow::dest(cx, user, &trunk.id));
            }
        }
        out
    }

    /// Where an outbound call goes: the upstream carrier's address, or its name's addresses.
    fn upstream_targets(cx: &mut Cx<'_>, number: &str) -> VecDeque<Dest> {
        match cx.cfg.upstream.clone() {
            None => VecDeque::new(),
            Some(Upstream::Addr(addr)) => {
                [Dest::to(Src { proto: Proto::Udp, addr, conn: None }, format!("sip:{number}@{}", fmt_hostport(addr)))].into()
            }
            Some(Upstream::Name(key)) => Self::by_name(cx, &key, Proto::Udp, number),
        }
    }

    /// The addresses `key` resolves to, in the order to try them (RFC 2782), each with the
    /// Request-URI (which keeps the name) and the address the CDR names; none while the name is
    /// not usable (logged).
    fn by_name(cx: &mut Cx<'_>, key: &DnsKey, proto: Proto, number: &str) -> VecDeque<Dest> {
        let found = match cx.dns.targets(key, cx.now) {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!(host = %key.host, %why, "no address for the name");
                return VecDeque::new();
            }
        };
        let io = &mut *cx.io;
        let order = hatrunk_core::srv::order(&found, || io.next_id().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16);
        let port = key.port.map(|p| format!(":{p}")).unwrap_or_default();
        let ruri = format!("sip:{number}@{}{port}{}", key.host, proto.uri_param());
        // the CDR names the address each attempt went to; the Request-URI keeps the name
        let shown = |addr| Some(format!("sip:{number}@{}{}", fmt_hostport(addr), proto.uri_param()));
        order
            .into_iter()
            .map(|addr| Dest { src: Src { proto, addr, conn: None }, ruri: ruri.clone(), shown: shown(addr), flow: None })
            .collect()
    }

    /// The caller's INVITE, rewritten for one attempt (RFC 3261 section 16.6): to the account
    /// `role`, whose rules it then carries, or (`None`) to the member that delivers the call.
    pub(super) fn forward_request(&mut self, cx: &mut Cx<'_>, id: u64, ruri: &str, out_proto: Proto, role: Option<Role>) -> SipMessage {
        let Some((call, req)) = self.get(id).and_then(|c| Some((c, c.req.as_deref()?))) else {
            return SipMessage::request(hatrunk_sip::Method::Invite, ruri);
        };
        let mut m = req.clone();
        let in_proto = call.src.proto;
        m.set_uri(ruri);
        let mf = m.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
        m.set("Max-Forwards", mf.saturating_sub(1).to_string());
        cx.pop_own_routes(&mut m); // loose routing, section 16.4
        m.remove_all("Proxy-Authorization");
        m.remove_all(INGRESS_HEADER);
        // Record-Route: one entry per side when the transports differ (RFC 5658 double record-routing)
        // the node holding the slot names its boot and the trunk, so a BYE reaching a later run
        // of this node still frees the slot kept for the call (admission/inherited.rs)
        let ht = if call.forwarded_from.is_none() {
            format!(";{}={}", super::context::HT_PARAM, cx.boot_tag(&call.trunk.id))
        } else {
            String::new()
        };
        cx.record_route(&mut m, in_proto, out_proto, &ht);
        if call.direction == Direction::Outbound {
            if let Some(cid) = call.trunk.primary.caller_id.clone() {
                m.set("P-Asserted-Identity", format!("<sip:{cid}@{}>", cx.cfg.advertise));
                if call.trunk.primary.caller_id_in_from {
                    if let Some(from) = m.header("From").map(str::to_string) {
                        m.set("From", super::account_rules::rewrite_user(&from, &cid));
                    }
                }
            }
        }
        if let Some(role) = role {
            super::account_rules::apply(call, role, &mut m, ruri);
        }
        m
    }

    /// The call ends without (or after) an answer: slot back, CDR out, state gone.
    pub(super) fn finish(&mut self, cx: &mut Cx<'_>, id: u64, disposition: Disposition, cause: Cause, code: Option<u16>, answered: bool) {
        if let Some(slot) = self.finish_holding(cx, id, disposition, cause, code, answered) {
            cx.io.push(Action::Release { slot });
        }
    }

    /// [`Calls::finish`], but the slot is the caller's to give back (a BYE's: once the far end
    /// answered it, see `dialog.rs`).
    pub(super) fn finish_holding(
        &mut self,
        cx: &mut Cx<'_>,
        id: u64,
        disposition: Disposition,
        cause: Cause,
        code: Option<u16>,
        answered: bool,
    ) -> Option<SlotId> {
        self.keep_for_unsettled(cx, id);
        let (call, release) = self.end(id)?;
        // an egress node writes no CDR: the ingress writes this call's, with our attempts in it
        if let Some(cdr) = call.into_cdr(disposition, cause, if answered { None } else { code }, cx.now) {
            let disp = serde_json::to_value(cdr.disposition).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            cx.metrics.calls.with_label_values(&[&cdr.trunk.clone().unwrap_or_default(), &disp]).inc();
            cx.io.push(Action::Cdr(Box::new(cdr)));
        }
        release
    }
}

fn fmt_hostport(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.to_string(),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}
