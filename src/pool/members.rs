//! Who is in the pool: the backends as configured (or added through the
//! admin API), resolved to addresses by discovery, and the live state lb
//! keeps for each address (passive health, draining, counters).
//!
//! [`Members`] is Pingora's `ServiceDiscovery` for the pool's
//! `LoadBalancer`: each `update()` resolves every host name again, so DNS
//! changes, reloads and admin changes all take the same path. States live in
//! an `ArcSwap`ed map, replaced (keeping the existing entries) when the set
//! of addresses changes; requests only read it.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::{Backend, Extensions};

use super::clock::now_ms;
use super::resolve::{Change, NameState, Resolver, Verdict};
use crate::config::{BackendConfig, DiscoveryConfig};
use crate::sync::lock;
use crate::telemetry::metrics::{metrics, BackendMetrics};

/// Where a backend entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file or the command line.
    Config,
    /// `POST /api/backends`; kept until the next reload.
    Admin,
}

/// One entry of the pool as written: a host (IP or name), a port, a weight.
#[derive(Debug, Clone)]
pub struct Entry {
    pub backend: BackendConfig,
    pub origin: Origin,
}

/// The last active health check of a backend.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub at: SystemTime,
    pub passed: bool,
    /// Why it failed, empty when it passed.
    pub detail: String,
}

/// What lb knows of one backend address right now.
#[derive(Debug)]
pub struct BackendState {
    pub addr: SocketAddr,
    /// What a sticky cookie names it by: a hash of its address, so the
    /// cookie does not show the address and stays valid across restarts.
    pub sticky_id: u64,
    /// The entry it was resolved from (`be1:8080`, `127.0.0.1:8081`).
    pub entry: String,
    /// The entry's host (`be1`, `127.0.0.1`): the default TLS SNI.
    pub host: String,
    pub weight: usize,
    /// Drained by the admin API: no new requests.
    pub draining: AtomicBool,
    /// Requests being proxied to it now.
    pub in_flight: AtomicUsize,
    /// Its response latency, for `peak_ewma` pools.
    pub latency: super::ewma::PeakEwma,
    /// Requests it has answered, any status.
    pub requests: AtomicU64,
    /// Requests that failed on it (connect, reset, timeout, counted 5xx).
    pub errors: AtomicU64,
    /// Passive health: failures in a row.
    pub(super) consecutive_failures: AtomicU32,
    /// Passive health: end of the ejection in outlier time; 0 when none.
    pub(super) ejected_until: AtomicU64,
    /// Passive health: ejections in a row.
    pub(super) ejections: AtomicU32,
    /// Passive health: when it last came back, in outlier time.
    pub(super) returned_at: AtomicU64,
    /// The last active check, for the admin API.
    last_check: Mutex<Option<CheckRecord>>,
    /// Its request counters and latency histograms.
    pub metrics: BackendMetrics,
    /// When its active health last changed (healthy or not), for the status page.
    health_since: Mutex<SystemTime>,
    /// Slow start: when it came back or was added, in [`now_ms`] time; 0
    /// when it is not ramping.
    ramp_started: AtomicU64,
}

/// The least share of its traffic a backend in slow start takes: small,
/// yet enough that its first requests come at once.
const RAMP_FLOOR: f64 = 0.02;

impl BackendState {
    /// The last active check, if one ran.
    pub fn last_check(&self) -> Option<CheckRecord> {
        lock(&self.last_check).clone()
    }

    /// Records an active check.
    pub fn set_last_check(&self, record: CheckRecord) {
        *lock(&self.last_check) = Some(record);
    }

    /// When its active health last changed.
    pub fn health_since(&self) -> SystemTime {
        *lock(&self.health_since)
    }

    /// Records that its active health changed now.
    pub fn health_changed_now(&self) {
        *lock(&self.health_since) = SystemTime::now();
    }

    /// Starts its slow start now (it came back or was added).
    pub fn start_ramp(&self) {
        self.ramp_started.store(now_ms(), Relaxed);
    }

    /// The share of its full traffic it takes now, from `RAMP_FLOOR` (2%) to
    /// 1, rising linearly over `slow_start` since it came back or was
    /// added; 1 when it is not ramping, which costs one relaxed load.
    pub fn ramp_share(&self, slow_start: Duration) -> f64 {
        let started = self.ramp_started.load(Relaxed);
        if started == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(started) as f64;
        let ramp = slow_start.as_millis().max(1) as f64;
        if elapsed >= ramp {
            // Ramped: later selections pay only the load above.
            let _ = self
                .ramp_started
                .compare_exchange(started, 0, Relaxed, Relaxed);
            return 1.0;
        }
        (elapsed / ramp).max(RAMP_FLOOR)
    }

    /// The state of `addr` in the pool `upstream`, with its metric handles.
    fn new(upstream: &str, addr: SocketAddr, entry: String, host: String, weight: usize) -> Self {
        BackendState {
            sticky_id: sticky_id(&addr),
            addr,
            entry,
            host,
            weight,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            latency: super::ewma::PeakEwma::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            last_check: Mutex::new(None),
            metrics: metrics().for_backend(upstream, &addr.to_string()),
            health_since: Mutex::new(SystemTime::now()),
            ramp_started: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
impl BackendState {
    /// A fresh state for unit tests.
    pub fn for_test(addr: SocketAddr) -> Self {
        BackendState::new("test", addr, addr.to_string(), addr.ip().to_string(), 1)
    }
}

/// The address's FNV-1a hash: stable across processes and versions.
fn sticky_id(addr: &SocketAddr) -> u64 {
    fnv1a(addr.to_string().as_bytes())
}

/// 64-bit FNV-1a of `bytes`: cheap, and the same in every process.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The map of addresses to states that requests read.
pub type StateMap = HashMap<SocketAddr, Arc<BackendState>>;

/// The pool's membership: configured entries, their resolution, and states.
pub struct Members {
    /// The pool's name: the `upstream` label of its backends' metrics.
    upstream: String,
    entries: Mutex<Vec<Entry>>,
    /// `discovery`: the DNS server to ask (or the system's) and the hold of
    /// a missing name. A resolver is made for each round so it always lives
    /// on the runtime that uses it.
    discovery: ArcSwap<DiscoveryConfig>,
    /// What each name (`host:port` as written) did in the last rounds.
    names: Mutex<HashMap<String, NameState>>,
    states: ArcSwap<StateMap>,
    /// Whether the first resolution is done: addresses that appear later
    /// were added, and slow start ramps them.
    resolved_once: AtomicBool,
}

impl Members {
    /// Members of the pool `upstream` for `backends`, resolved as
    /// `discovery` says.
    pub fn new(upstream: &str, backends: &[BackendConfig], discovery: &DiscoveryConfig) -> Self {
        let entries = backends
            .iter()
            .map(|b| Entry {
                backend: b.clone(),
                origin: Origin::Config,
            })
            .collect();
        Members {
            upstream: upstream.to_string(),
            entries: Mutex::new(entries),
            discovery: ArcSwap::from_pointee(discovery.clone()),
            names: Mutex::new(HashMap::new()),
            states: ArcSwap::from_pointee(HashMap::new()),
            resolved_once: AtomicBool::new(false),
        }
    }

    /// The name of the pool these are the members of.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The states of the current addresses.
    pub fn states(&self) -> arc_swap::Guard<Arc<StateMap>> {
        self.states.load()
    }

    /// The state of `addr`, if it is in the pool.
    pub fn state(&self, addr: &SocketAddr) -> Option<Arc<BackendState>> {
        self.states.load().get(addr).cloned()
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        lock(&self.entries)
    }

    /// Replaces the configured entries (a reload); entries added through the
    /// admin API are dropped, as the README says.
    pub fn set_config(&self, backends: &[BackendConfig], discovery: &DiscoveryConfig) {
        *self.lock_entries() = backends
            .iter()
            .map(|b| Entry {
                backend: b.clone(),
                origin: Origin::Config,
            })
            .collect();
        self.discovery.store(Arc::new(discovery.clone()));
    }

    /// Adds an entry; false when it is already there.
    pub fn add(&self, backend: BackendConfig) -> bool {
        let mut entries = self.lock_entries();
        if entries
            .iter()
            .any(|e| e.backend.host == backend.host && e.backend.port == backend.port)
        {
            return false;
        }
        entries.push(Entry {
            backend,
            origin: Origin::Admin,
        });
        true
    }

    /// Removes the entry written `host:port`, or the entry that resolved to
    /// that address; false when there is none.
    pub fn remove(&self, label: &str) -> bool {
        let resolved_from = label
            .parse::<SocketAddr>()
            .ok()
            .and_then(|addr| self.state(&addr))
            .map(|state| state.entry.clone());
        let mut entries = self.lock_entries();
        let before = entries.len();
        entries.retain(|e| {
            let written = format!("{}:{}", e.backend.host, e.backend.port);
            written != label && Some(&written) != resolved_from.as_ref()
        });
        entries.len() != before
    }

    /// The entries as configured or added.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock_entries().clone()
    }

    /// What `label` did in the last rounds (nothing for a new entry).
    fn name_state(&self, label: &str) -> NameState {
        lock(&self.names).get(label).cloned().unwrap_or_default()
    }

    /// Resolves every entry; keeps existing states and makes new ones.
    async fn resolve(&self) -> BTreeSet<Backend> {
        let entries = self.entries();
        let discovery = self.discovery.load_full();
        let needs_dns = entries
            .iter()
            .any(|e| e.backend.host.parse::<IpAddr>().is_err());
        let resolver = if needs_dns {
            Resolver::new(discovery.resolver)
        } else {
            Resolver::System // addresses only: nothing is looked up
        };
        // All at once: a round waits one resolver timeout at most.
        let lookups = futures::future::join_all(
            entries
                .iter()
                .map(|e| resolver.lookup(&e.backend.host, e.backend.port)),
        )
        .await;
        let old = self.states.load_full();
        let added_later = self.resolved_once.swap(true, Relaxed);
        let mut states: StateMap = HashMap::with_capacity(entries.len());
        let mut backends = BTreeSet::new();
        let mut names = HashMap::new();
        for (entry, lookup) in entries.iter().zip(lookups) {
            let b = &entry.backend;
            let label = format!("{}:{}", b.host, b.port);
            let mut name = self.name_state(&label);
            let (verdict, change) = name.after(lookup, Instant::now(), discovery.hold_missing);
            names.insert(label.clone(), name);
            let last = || old.values().filter(|s| s.entry == label).map(|s| s.addr);
            if let Some(change) = change {
                log_name_change(&label, &change, last().count(), &discovery);
            }
            let addrs: Vec<SocketAddr> = match verdict {
                Verdict::Use(addrs) => addrs,
                Verdict::KeepLast => last().collect(),
                Verdict::Drop => Vec::new(),
            };
            for addr in addrs {
                if states.contains_key(&addr) {
                    continue;
                }
                let state = match old.get(&addr) {
                    Some(state) if state.weight == b.weight.get() && state.entry == label => {
                        Arc::clone(state)
                    }
                    _ => {
                        let state = BackendState::new(
                            &self.upstream,
                            addr,
                            label.clone(),
                            b.host.clone(),
                            b.weight.get(),
                        );
                        if added_later && !old.contains_key(&addr) {
                            state.start_ramp();
                        }
                        Arc::new(state)
                    }
                };
                states.insert(addr, state);
                backends.insert(Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                    weight: b.weight.get(),
                    ext: Extensions::new(),
                });
            }
        }
        *lock(&self.names) = names;
        log_changes(&old, &states);
        for addr in old.keys().filter(|a| !states.contains_key(a)) {
            metrics().remove_backend(&self.upstream, &addr.to_string());
        }
        self.states.store(Arc::new(states));
        backends
    }
}

/// One line for a name whose resolution changed; `last` addresses held.
fn log_name_change(label: &str, change: &Change, last: usize, discovery: &DiscoveryConfig) {
    let hold = humantime::format_duration(discovery.hold_missing);
    match change {
        Change::ResolvesAgain => log::info!("backend {label}: resolves again"),
        // A name that never resolved: the start's warning said so.
        Change::Missing | Change::Dropped if last == 0 => {}
        Change::Missing => log::warn!(
            "backend {label}: no such name; its {last} last address(es) stay in the pool \
             for discovery.hold_missing ({hold})"
        ),
        Change::Failed(why) => log::warn!(
            "backend {label}: cannot resolve ({why}); its {last} last address(es) stay \
             until the resolver answers"
        ),
        Change::Dropped => log::warn!(
            "backend {label}: no such name for discovery.hold_missing ({hold}); \
             its {last} address(es) leave the pool"
        ),
    }
}

fn log_changes(old: &StateMap, new: &StateMap) {
    for addr in new.keys().filter(|a| !old.contains_key(a)) {
        if !old.is_empty() {
            log::info!("backend {addr} added to the pool");
        }
    }
    for (addr, state) in old.iter().filter(|(a, _)| !new.contains_key(a)) {
        log::info!(
            "backend {addr} removed from the pool; its {} request(s) in flight finish",
            state.in_flight.load(Relaxed)
        );
    }
}

/// Pingora's view of [`Members`].
pub struct Discovery(pub Arc<Members>);

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((self.0.resolve().await, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_starts_small_and_ends_at_the_full_share() {
        let state = BackendState::for_test("127.0.0.1:1".parse().expect("an address"));
        let ramp = Duration::from_millis(200);
        assert_eq!(state.ramp_share(ramp), 1.0, "not ramping: full share");
        state.start_ramp();
        let share = state.ramp_share(ramp);
        assert!((RAMP_FLOOR..0.5).contains(&share), "{share}");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(state.ramp_share(ramp), 1.0);
        assert_eq!(state.ramp_started.load(Relaxed), 0, "the ramp is over");
    }
}
