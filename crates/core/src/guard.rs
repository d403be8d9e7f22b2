//! Defences against hostile sources, decided from `(state, event, now)` only: a per-source limit on
//! new requests with a ban list that expires (what Kamailio's pike module does), and digest
//! brute-force limits per source and per account. The node asks before it does any work for a
//! request; trusted sources (carriers, PBXs known by IP, cluster nodes) are never asked about.
//!
//! Memory stays bounded: at most `max_sources` sources and as many accounts are tracked. A full
//! table lets new sources through untracked (a spoofed flood from random addresses cannot fill it
//! and then lock out every newcomer); the node's transaction limit is the backstop for that case.

use std::collections::HashMap;
use std::net::IpAddr;

/// The limits, with the defaults a public carrier edge starts from (docs/security.md says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Counting window for new requests per source.
    pub window_ms: u64,
    /// New requests one source may send per window; one more and it is banned.
    pub max_new_requests: u32,
    /// How long a ban lasts.
    pub ban_ms: u64,
    /// Failed digest authentications one source may make per `auth_window_ms` before a ban.
    pub auth_failures_per_source: u32,
    /// Failed authentications for one account (from anywhere) per window before it is locked.
    pub auth_failures_per_account: u32,
    pub auth_window_ms: u64,
    /// How long a locked account refuses credentials from sources other than its last good one.
    pub lockout_ms: u64,
    /// Sources (and accounts) tracked at most.
    pub max_sources: usize,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            window_ms: 2_000,
            max_new_requests: 100,
            ban_ms: 300_000,
            auth_failures_per_source: 10,
            auth_failures_per_account: 30,
            auth_window_ms: 60_000,
            lockout_ms: 300_000,
            max_sources: 100_000,
        }
    }
}

/// What to do with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped without an answer: the source is banned (answering would feed the flood).
    Drop,
    /// This request crossed a limit: the source is banned from now on, this request included.
    Banned,
}

#[derive(Debug, Clone, Default)]
struct Source {
    window_start: u64,
    requests: u32,
    auth_start: u64,
    auth_failures: u32,
    banned_until: u64,
    last_seen: u64,
}

#[derive(Debug, Clone, Default)]
struct Account {
    window_start: u64,
    failures: u32,
    locked_until: u64,
    /// Where the account last authenticated: a lockout does not apply there, so guessing a
    /// PBX's username from elsewhere cannot cut the PBX itself off.
    last_good: Option<IpAddr>,
    last_seen: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Guard {
    limits: GuardLimits,
    sources: HashMap<IpAddr, Source>,
    accounts: HashMap<String, Account>,
    bans: u64,
}

impl Guard {
    pub fn new(limits: GuardLimits) -> Guard {
        Guard { limits, ..Guard::default() }
    }

    pub fn limits(&self) -> &GuardLimits {
        &self.limits
    }

    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.sources.get(&ip).is_some_and(|s| s.banned_until > now)
    }

    /// A new request (one that opens a transaction, or a malformed message) from `ip`; every
    /// message of a banned source counts, so a source that keeps flooding stays banned.
    pub fn new_request(&mut self, ip: IpAddr, now: u64) -> Verdict {
        let l = self.limits;
        let Some(s) = self.source(ip, now) else {
            return Verdict::Pass;
        };
        if now.saturating_sub(s.window_start) >= l.window_ms {
            s.window_start = now;
            s.requests = 0;
        }
        s.requests = s.requests.saturating_add(1);
        let over = s.requests > l.max_new_requests;
        if s.banned_until > now {
            // still flooding while banned: the ban runs on from now
            if over {
                s.banned_until = now + l.ban_ms;
            }
            return Verdict::Drop;
        }
        if over {
            return self.ban(ip, now);
        }
        Verdict::Pass
    }

    /// `ip` presented wrong credentials for `account`. Returns [`Verdict::Banned`] when that was
    /// one failure too many for the source.
    pub fn auth_failed(&mut self, ip: IpAddr, account: &str, now: u64) -> Verdict {
        self.account_failed(account, now);
        self.source_auth_failed(ip, now)
    }

    /// Wrong credentials for `account` from a source that is never banned (a trusted one): only
    /// the account's lockout counts them. Over UDP a source address proves nothing, so counting
    /// them against the source would let anyone get a carrier or a PBX banned by spoofing it.
    /// True when this failure locked the account.
    pub fn account_failed(&mut self, account: &str, now: u64) -> bool {
        let l = self.limits;
        let Some(a) = self.account(account, now) else {
            return false;
        };
        if now.saturating_sub(a.window_start) >= l.auth_window_ms {
            a.window_start = now;
            a.failures = 0;
        }
        a.failures += 1;
        let lock = a.failures > l.auth_failures_per_account && a.locked_until <= now;
        if lock {
            a.locked_until = now + l.lockout_ms;
        }
        lock
    }

    fn source_auth_failed(&mut self, ip: IpAddr, now: u64) -> Verdict {
        let l = self.limits;
        let Some(s) = self.source(ip, now) else {
            return Verdict::Pass;
        };
        if now.saturating_sub(s.auth_start) >= l.auth_window_ms {
            s.auth_start = now;
            s.auth_failures = 0;
        }
        s.auth_failures += 1;
        if s.auth_failures > l.auth_failures_per_source {
            return self.ban(ip, now);
        }
        Verdict::Pass
    }

    /// `ip` authenticated as `account`.
    pub fn auth_ok(&mut self, ip: IpAddr, account: &str, now: u64) {
        if let Some(a) = self.account(account, now) {
            a.last_good = Some(ip);
        }
    }

    /// `account` is locked out (from every address but the one it last authenticated from).
    pub fn is_locked(&self, account: &str, now: u64) -> bool {
        self.accounts.get(account).is_some_and(|a| a.locked_until > now)
    }

    /// Whether credentials for `account` from `ip` must be refused unchecked (the account is
    /// locked and `ip` is not where it last authenticated).
    pub fn account_locked(&self, ip: IpAddr, account: &str, now: u64) -> bool {
        self.accounts.get(account).is_some_and(|a| a.locked_until > now && a.last_good != Some(ip))
    }

    /// Sources banned now, with when their ban ends, sorted by address.
    pub fn bans(&self, now: u64) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> =
            self.sources.iter().filter(|(_, s)| s.banned_until > now).map(|(ip, s)| (*ip, s.banned_until)).collect();
        v.sort();
        v
    }

    /// Bans imposed since start.
    pub fn bans_total(&self) -> u64 {
        self.bans
    }

    /// Forget what no longer matters: sources idle past every window and not banned, accounts
    /// idle past their window and not locked.
    pub fn sweep(&mut self, now: u64) {
        let l = &self.limits;
        let keep = l.window_ms.max(l.auth_window_ms);
        self.sources.retain(|_, s| s.banned_until > now || now.saturating_sub(s.last_seen) < keep);
        self.accounts.retain(|_, a| a.locked_until > now || now.saturating_sub(a.last_seen) < l.auth_window_ms.max(l.lockout_ms));
    }

    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.accounts.len())
    }

    fn ban(&mut self, ip: IpAddr, now: u64) -> Verdict {
        if let Some(s) = self.sources.get_mut(&ip) {
            s.banned_until = now + self.limits.ban_ms;
            self.bans += 1;
        }
        Verdict::Banned
    }

    fn source(&mut self, ip: IpAddr, now: u64) -> Option<&mut Source> {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.limits.max_sources {
            self.sweep(now);
            if self.sources.len() >= self.limits.max_sources {
                return None;
            }
        }
        let s = self.sources.entry(ip).or_insert_with(|| Source { window_start: now, auth_start: now, ..Source::default() });
        s.last_seen = now;
        Some(s)
    }

    fn account(&mut self, name: &str, now: u64) -> Option<&mut Account> {
        if !self.accounts.contains_key(name) && self.accounts.len() >= self.limits.max_sources {
            self.sweep(now);
            if self.accounts.len() >= self.limits.max_sources {
                return None;
            }
        }
        let a = self.accounts.entry(name.to_string()).or_insert_with(|| Account { window_start: now, ..Account::default() });
        a.last_seen = now;
        Some(a)
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
