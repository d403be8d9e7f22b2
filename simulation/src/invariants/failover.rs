//! Property 4: Auto Fail-over reaches the Secondary within 2.5 s of detecting the failure, and only
//! on the failures the policy names. The policy table is written here again from the seed page
//! (the trunk uses `current`), not taken from the code under test: a build that fails over on 486
//! must fail this check.
//!
//! Detection is the Primary's failure response, or its silence reaching the trunk's failover timer.
//! Calls a fault touched (a node they went through was out) are not judged here.

use super::{down_windows, touched, Verdict};
use crate::oracle::Pbx;
use crate::run::Outcome;
use crate::scenario::Scenario;
use crate::topology::FAILOVER_TIMEOUT_MS;

/// Seed 001's "fail over" codes.
const FAILOVER_CODES: [u16; 10] = [408, 480, 500, 501, 502, 503, 504, 505, 513, 580];
const WITHIN_MS: u64 = 2500;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let windows = down_windows(out);
    let mut violations = Vec::new();
    let mut checked = 0;
    for (cid, c) in &o.calls {
        let Some(legs) = c.legs.get(&Pbx::Primary) else { continue };
        let Some(p) = legs.first() else { continue };
        // a retransmitted INVITE is a new leg to a PBX that was silent: the first answer counts
        let reply = legs.iter().find_map(|l| l.reply);
        // a failure the node never heard (no ACK came for it: lost, and the PBX died before it
        // was asked again, seed 2500439) was silence to the node: detected at the timer
        let heard = legs.iter().find(|l| l.reply.is_some()).is_some_and(|l| l.ack_ms.is_some());
        if c.moved_ms.is_some() || touched(c, &windows, 3000) {
            continue;
        }
        let secondary = c.legs.get(&Pbx::Secondary).and_then(|l| l.first());
        let timer = p.invite_ms + FAILOVER_TIMEOUT_MS;
        let detected = match reply {
            Some((t, code)) if FAILOVER_CODES.contains(&code) && t <= timer => Some(if heard { t } else { timer }),
            Some((t, _)) if t <= timer => None,
            _ => Some(timer),
        };
        // the caller hung up or gave up before the failover was due, or the call had already
        // ended before the Primary failed (the ingress refused to move it off a node that may have
        // delivered it when no second slot was free, seed 2100915): nothing to judge
        if let Some(d) = detected {
            if c.hangup_ms.or(c.gave_up_ms).is_some_and(|h| h < d + WITHIN_MS) && secondary.is_none() {
                continue;
            }
            if c.final_.is_some_and(|(at, code)| code >= 300 && at < d) && secondary.is_none() {
                continue;
            }
        }
        checked += 1;
        match (detected, secondary) {
            (Some(d), Some(s)) if s.invite_ms > d + WITHIN_MS => {
                violations.push(format!("{cid}: Secondary reached {} ms after the failure was detected", s.invite_ms - d))
            }
            (Some(d), None) => violations.push(format!("{cid}: Primary failed at {d} ms ({reply:?}) and the Secondary never got the call")),
            // the Primary's answer may have been lost on its way: failing over is wrong only
            // before the failover timer could have run out (then the answer itself moved the call)
            (None, Some(s)) if s.invite_ms < c.offered_ms + FAILOVER_TIMEOUT_MS => {
                violations.push(format!("{cid}: failed over although the Primary's answer {reply:?} is not a failover code"))
            }
            _ => {}
        }
    }
    Verdict::new("failover_within_2_5s", "4", checked, violations)
}
