//! PBX targets given by name (RFC 3263): resolved in the background, never on the engine's path.
//! The engine reads [`DnsCache`] without waiting; [`keep_resolved`] keeps every name the trunks use
//! there, refreshed when its TTL runs out. A name with no port is looked up as SRV for the
//! account's transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`), each SRV target then as A/AAAA;
//! without SRV records, or with a port given, the name itself as A/AAAA. The account's transport
//! is always known (the trunk file says it, UDP by default), so NAPTR is not asked (RFC 3263
//! section 4.1 leaves it to a client that has no transport of its own).
//!
//! Host names in an account's `allowed_ips` are kept resolved the same way (A/AAAA), and the
//! engine asks [`DnsCache::allowed_at`] for a source no address of `allowed_ips` matches.
//!
//! While no DNS server answers, the last answer stays in use for `stale_for_s` (RFC 8767); a name
//! that does not exist is remembered as such for its negative TTL, and the account is unreachable
//! at once (failover), not after a timeout per call.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hatrunk_core::srv::SrvTarget;
use hatrunk_core::trunk::{AuthMode, Role, Transport, Trunk};
use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;

use crate::store::{BoxFuture, TrunkStore};

/// A lookup after a failed one (no server answered) comes this much later.
const RETRY_MS: u64 = 5_000;
/// A negative answer without an SOA minimum is kept this long.
const NEGATIVE_MS: u64 = 30_000;
/// TTLs are clamped to this range: a zero TTL would mean a lookup on every pass.
const TTL_MS: (u64, u64) = (1_000, 86_400_000);

/// One name to resolve, as an account's target gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsKey {
    pub host: String,
    /// The port given in the target: A/AAAA only. None: SRV first.
    pub port: Option<u16>,
    pub transport: Transport,
}

impl DnsKey {
    /// A host name in an account's `allowed_ips`: its addresses only (port 0, which no target has).
    pub fn allowed(host: &str) -> DnsKey {
        DnsKey { host: host.to_string(), port: Some(0), transport: Transport::Udp }
    }

    /// The name an account's `target` gives, reached over `transport`.
    pub fn of(target: &hatrunk_core::trunk::SipTarget, transport: Transport) -> DnsKey {
        DnsKey { host: target.host.clone(), port: target.port_given.then_some(target.port), transport }
    }

    /// The SRV name to ask (RFC 3263 section 4.2).
    fn srv_name(&self) -> String {
        let prefix = match self.transport {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
            Transport::Tls => "_sips._tcp",
        };
        format!("{prefix}.{}", fqdn(&self.host))
    }

    fn default_port(&self) -> u16 {
        if self.transport == Transport::Tls {
            5061
        } else {
            5060
        }
    }
}

fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Found {
        targets: Vec<SrvTarget>,
        ttl_ms: u64,
    },
    /// The name does not exist, or has no address: for `ttl_ms`.
    NoSuchName {
        ttl_ms: u64,
        what: String,
    },
    /// No server answered (or answered with an error).
    Failed(String),
}

/// What the cache holds for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub targets: Vec<SrvTarget>,
    /// Looked up again from then on.
    pub fresh_until: u64,
    /// The targets are used until then (past `fresh_until` only while lookups fail).
    pub stale_until: u64,
    /// Why the last lookup found nothing usable, if it did not.
    pub problem: Option<String>,
}

/// The entry after `answer` came at `now`, given the one before (pure).
pub fn next_entry(old: Option<&Entry>, answer: Answer, now: u64, stale_for_ms: u64) -> Entry {
    match answer {
        Answer::Found { targets, ttl_ms } => {
            let ttl = ttl_ms.clamp(TTL_MS.0, TTL_MS.1);
            Entry { targets, fresh_until: now + ttl, stale_until: now + ttl + stale_for_ms, problem: None }
        }
        Answer::NoSuchName { ttl_ms, what } => {
            let ttl = ttl_ms.clamp(TTL_MS.0, 300_000);
            Entry { targets: Vec::new(), fresh_until: now + ttl, stale_until: now + ttl, problem: Some(what) }
        }
        Answer::Failed(why) => match old {
            // RFC 8767: serve the last answer while the servers are unreachable
            Some(o) if !o.targets.is_empty() && now < o.stale_until => {
                Entry { targets: o.targets.clone(), fresh_until: now + RETRY_MS, stale_until: o.stale_until, problem: Some(why) }
            }
            _ => Entry { targets: Vec::new(), fresh_until: now + RETRY_MS, stale_until: now, problem: Some(why) },
        },
    }
}

/// The resolved names, shared between the resolving task (writer) and the engine (reader).
#[derive(Default)]
pub struct DnsCache {
    map: RwLock<HashMap<DnsKey, Entry>>,
    /// The accounts whose `allowed_ips` name a host resolving to each address (see [`Self::allowed_at`]).
    allowed: RwLock<HashMap<IpAddr, Vec<(String, Role)>>>,
}

impl DnsCache {
    /// The targets of `key` usable at `now`, or why there are none.
    pub fn targets(&self, key: &DnsKey, now: u64) -> Result<Vec<SrvTarget>, String> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            None => Err(format!("{} not resolved yet", key.host)),
            Some(e) if !e.targets.is_empty() && now < e.stale_until => Ok(e.targets.clone()),
            Some(e) => Err(e.problem.clone().unwrap_or_else(|| format!("{}: no address", key.host))),
        }
    }

    /// The name each address reached over TLS was resolved from (its certificate must carry it).
    pub fn tls_names(&self) -> HashMap<SocketAddr, String> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(k, _)| k.transport == Transport::Tls)
            .flat_map(|(k, e)| e.targets.iter().map(move |t| (t.addr, k.host.clone())))
            .collect()
    }

    /// Whether `key`'s usable answer at `now` includes `ip` (asked for every untrusted request: no copy).
    pub fn resolves_to(&self, key: &DnsKey, ip: IpAddr, now: u64) -> bool {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_some_and(|e| now < e.stale_until && e.targets.iter().any(|t| t.addr.ip() == ip))
    }

    /// Whether some account allows `ip` by a host name (asked for every untrusted request: no copy).
    pub fn allowed_by_name(&self, ip: IpAddr) -> bool {
        self.allowed.read().unwrap_or_else(|p| p.into_inner()).contains_key(&ip)
    }

    /// The accounts (trunk id, role) that allow `ip` by a host name, as last resolved.
    pub fn allowed_at(&self, ip: IpAddr) -> Vec<(String, Role)> {
        self.allowed.read().unwrap_or_else(|p| p.into_inner()).get(&ip).cloned().unwrap_or_default()
    }

    /// Rebuild [`Self::allowed_at`]'s index from the trunks and their hosts' usable addresses.
    pub fn index_allowed(&self, trunks: &[Arc<Trunk>], now: u64) {
        let mut index: HashMap<IpAddr, Vec<(String, Role)>> = HashMap::new();
        for t in trunks {
            for role in [Role::Primary, Role::Secondary] {
                let Some(a) = t.account(role).filter(|a| a.auth == AuthMode::Ip) else {
                    continue;
                };
                for host in &a.allowed_hosts {
                    for target in self.targets(&DnsKey::allowed(host), now).unwrap_or_default() {
                        let accounts = index.entry(target.addr.ip()).or_default();
                        if !accounts.iter().any(|(id, r)| *id == t.id && *r == role) {
                            accounts.push((t.id.clone(), role));
                        }
                    }
                }
            }
        }
        *self.allowed.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    fn get(&self, key: &DnsKey) -> Option<Entry> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Set what `key` resolves to (the resolving task; tests).
    pub fn put(&self, key: DnsKey, e: Entry) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(key, e);
    }

    fn retain(&self, keys: &BTreeSet<DnsKey>) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keys.contains(k));
    }
}

/// Every name the trunks' IP accounts are reached at or allow calls from.
pub fn wanted(trunks: &[Arc<Trunk>]) -> BTreeSet<DnsKey> {
    let mut out = BTreeSet::new();
    for t in trunks {
        for a in [Some(&t.primary), t.secondary.as_ref()].into_iter().flatten() {
            if a.auth != AuthMode::Ip {
                continue;
            }
            if let Some(st) = a.sip_target().filter(|s| s.is_name()) {
                out.insert(DnsKey::of(&st, a.transport));
            }
            out.extend(a.allowed_hosts.iter().map(|h| DnsKey::allowed(h)));
        }
    }
    out
}

/// A DNS client (the real one is [`Hickory`]).
pub trait Resolve: Send + Sync {
    fn resolve<'a>(&'a self, key: &'a DnsKey) -> BoxFuture<'a, Answer>;
}

/// hickory-resolver, from `[dns] servers` or `/etc/resolv.conf`.
pub struct Hickory(TokioAsyncResolver);

impl Hickory {
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Hickory, String> {
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?
        } else {
            let mut c = ResolverConfig::new();
            for s in servers {
                c.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                c.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            (c, ResolverOpts::default())
        };
        opts.timeout = timeout;
        opts.attempts = 2;
        // the cache here is ours (stale answers, negative TTLs, logged changes)
        opts.cache_size = 0;
        Ok(Hickory(TokioAsyncResolver::tokio(config, opts)))
    }

    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, u64), Answer> {
        match self.0.lookup_ip(fqdn(name)).await {
            Ok(l) => Ok((l.iter().collect(), ttl_of(l.valid_until()))),
            Err(e) => Err(failure(&e, name)),
        }
    }
}

fn ttl_of(valid_until: Instant) -> u64 {
    valid_until.saturating_duration_since(Instant::now()).as_millis() as u64
}

fn failure(e: &hickory_resolver::error::ResolveError, name: &str) -> Answer {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { negative_ttl, response_code, .. } => Answer::NoSuchName {
            ttl_ms: negative_ttl.map_or(NEGATIVE_MS, |s| u64::from(s) * 1000),
            what: format!("{name}: {response_code}"),
        },
        _ => Answer::Failed(format!("{name}: {e}")),
    }
}

impl Resolve for Hickory {
    fn resolve<'a>(&'a self, key: &'a DnsKey) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            if let Some(port) = key.port {
                return match self.addresses(&key.host).await {
                    Ok((ips, ttl_ms)) => Answer::Found { targets: plain(&ips, port), ttl_ms },
                    Err(a) => a,
                };
            }
            let srv = match self.0.srv_lookup(key.srv_name()).await {
                Ok(l) => Some(l),
                Err(e) => match failure(&e, &key.srv_name()) {
                    // no SRV records: the name itself, on the default port (RFC 3263 section 4.2)
                    Answer::NoSuchName { .. } => None,
                    other => return other,
                },
            };
            let Some(srv) = srv else {
                return match self.addresses(&key.host).await {
                    Ok((ips, ttl_ms)) => Answer::Found { targets: plain(&ips, key.default_port()), ttl_ms },
                    Err(a) => a,
                };
            };
            let mut ttl_ms = ttl_of(srv.as_lookup().valid_until());
            let mut targets = Vec::new();
            let mut last_problem = None;
            for r in srv.iter() {
                let name = r.target().to_utf8();
                if name == "." {
                    continue; // RFC 2782: the service is decidedly not available here
                }
                match self.addresses(&name).await {
                    Ok((ips, t)) => {
                        ttl_ms = ttl_ms.min(t);
                        targets.extend(ips.into_iter().map(|ip| SrvTarget {
                            priority: r.priority(),
                            weight: r.weight(),
                            addr: SocketAddr::new(ip, r.port()),
                        }));
                    }
                    Err(a) => last_problem = Some(a),
                }
            }
            match (targets.is_empty(), last_problem) {
                (false, _) => Answer::Found { targets, ttl_ms },
                (true, Some(a)) => a,
                (true, None) => Answer::NoSuchName { ttl_ms: NEGATIVE_MS, what: format!("{}: no SRV target", key.srv_name()) },
            }
        })
    }
}

/// No DNS client could be made (no `/etc/resolv.conf` and no `[dns] servers`): every name fails
/// with the reason, so an account given by name is unreachable and says why.
pub struct NoResolver(pub String);

impl Resolve for NoResolver {
    fn resolve<'a>(&'a self, _key: &'a DnsKey) -> BoxFuture<'a, Answer> {
        Box::pin(async move { Answer::Failed(self.0.clone()) })
    }
}

fn plain(ips: &[IpAddr], port: u16) -> Vec<SrvTarget> {
    ips.iter().map(|ip| SrvTarget { priority: 0, weight: 0, addr: SocketAddr::new(*ip, port) }).collect()
}

/// Keep every name the trunks use resolved, for as long as the node runs. One pass every
/// `every`; a name is looked up when its entry is due (its TTL ran out, or a retry after a
/// failure). Changes are logged once, as they happen.
pub async fn keep_resolved(
    store: Arc<dyn TrunkStore>,
    cache: Arc<DnsCache>,
    resolver: Arc<dyn Resolve>,
    clock: fn() -> u64,
    stale_for_ms: u64,
    every: Duration,
    always: Vec<DnsKey>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let trunks = store.list();
        let mut keys = wanted(&trunks);
        keys.extend(always.iter().cloned());
        cache.retain(&keys);
        for key in keys {
            let old = cache.get(&key);
            if old.as_ref().is_some_and(|e| e.fresh_until > clock()) {
                continue;
            }
            let answer = resolver.resolve(&key).await;
            let now = clock();
            let new = next_entry(old.as_ref(), answer, now, stale_for_ms);
            say(&key, old.as_ref(), &new, now);
            cache.put(key, new);
        }
        cache.index_allowed(&trunks, clock());
    }
}

/// One log line when what a name resolves to (or why it does not) changes.
fn say(key: &DnsKey, old: Option<&Entry>, new: &Entry, now: u64) {
    let same = old.is_some_and(|o| o.targets == new.targets && o.problem == new.problem);
    if same {
        return;
    }
    let host = &key.host;
    let addrs: Vec<String> = new.targets.iter().map(|t| format!("{} (priority {}, weight {})", t.addr, t.priority, t.weight)).collect();
    match (&new.problem, new.targets.is_empty()) {
        (None, _) => tracing::info!(%host, targets = %addrs.join(", "), ttl_s = (new.fresh_until - now) / 1000, "DNS: name resolved"),
        (Some(p), false) => {
            tracing::warn!(%host, problem = %p, stale_s = new.stale_until.saturating_sub(now) / 1000, "DNS: no answer; calls use the last one")
        }
        (Some(p), true) if key.port == Some(0) => {
            tracing::warn!(%host, problem = %p, "DNS: allowed host unusable; its addresses are not allowed by it any more")
        }
        (Some(p), true) => tracing::warn!(%host, problem = %p, "DNS: name unusable; its account is unreachable (calls fail over)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> SrvTarget {
        SrvTarget { priority: 10, weight: 1, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    #[test]
    fn an_answer_is_fresh_for_its_ttl_then_stale_while_servers_fail() {
        let e = next_entry(None, Answer::Found { targets: vec![t(1)], ttl_ms: 30_000 }, 1_000, 60_000);
        assert_eq!((e.fresh_until, e.stale_until), (31_000, 91_000));
        let failed = next_entry(Some(&e), Answer::Failed("timeout".into()), 31_000, 60_000);
        assert_eq!(failed.targets, vec![t(1)], "the last answer is served");
        assert_eq!(failed.fresh_until, 31_000 + RETRY_MS, "and asked again soon");
        let cache = DnsCache::default();
        let key = DnsKey { host: "pbx.test".into(), port: None, transport: Transport::Udp };
        cache.put(key.clone(), failed.clone());
        assert!(cache.targets(&key, 90_999).is_ok());
        let later = next_entry(Some(&failed), Answer::Failed("timeout".into()), 91_000, 60_000);
        cache.put(key.clone(), later);
        assert!(cache.targets(&key, 91_000).is_err(), "no answer for longer than stale_for: unusable");
    }

    #[test]
    fn a_name_that_does_not_exist_is_unusable_at_once_for_its_negative_ttl() {
        let ok = next_entry(None, Answer::Found { targets: vec![t(1)], ttl_ms: 0 }, 0, 60_000);
        assert_eq!(ok.fresh_until, TTL_MS.0, "a zero TTL is not a lookup per pass");
        let nx = next_entry(Some(&ok), Answer::NoSuchName { ttl_ms: 10_000, what: "NXDomain".into() }, 5_000, 60_000);
        assert!(nx.targets.is_empty(), "an authoritative no is not served stale");
        assert_eq!(nx.fresh_until, 15_000);
        let cache = DnsCache::default();
        let key = DnsKey { host: "gone.test".into(), port: Some(5060), transport: Transport::Udp };
        assert!(cache.targets(&key, 0).is_err_and(|e| e.contains("not resolved yet")));
        cache.put(key.clone(), nx);
        assert!(cache.targets(&key, 6_000).is_err_and(|e| e.contains("NXDomain")));
    }

    #[test]
    fn the_srv_name_follows_the_transport() {
        let k = |transport| DnsKey { host: "pbx.example.com".into(), port: None, transport };
        assert_eq!(k(Transport::Udp).srv_name(), "_sip._udp.pbx.example.com.");
        assert_eq!(k(Transport::Tcp).srv_name(), "_sip._tcp.pbx.example.com.");
        assert_eq!(k(Transport::Tls).srv_name(), "_sips._tcp.pbx.example.com.");
        assert_eq!(k(Transport::Tls).default_port(), 5061);
    }

    #[test]
    fn an_allowed_host_is_resolved_and_indexes_its_accounts_by_address() {
        let trunk = Arc::new(
            hatrunk_core::trunk::parse_trunk(
                "id = \"o\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 1\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"office.example.com\"]\n",
            )
            .expect("trunk"),
        );
        let keys = wanted(std::slice::from_ref(&trunk));
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec![DnsKey::allowed("office.example.com")]);
        let cache = DnsCache::default();
        cache.index_allowed(std::slice::from_ref(&trunk), 0);
        assert!(cache.allowed_at("127.0.0.1".parse().expect("ip")).is_empty(), "not resolved yet: nothing allowed");
        cache.put(DnsKey::allowed("office.example.com"), Entry { targets: vec![t(0)], fresh_until: 10, stale_until: 20, problem: None });
        cache.index_allowed(std::slice::from_ref(&trunk), 5);
        assert_eq!(cache.allowed_at("127.0.0.1".parse().expect("ip")), vec![("o".to_string(), Role::Primary)]);
        cache.index_allowed(std::slice::from_ref(&trunk), 25);
        assert!(cache.allowed_at("127.0.0.1".parse().expect("ip")).is_empty(), "past its stale time: no longer allowed");
    }
}
