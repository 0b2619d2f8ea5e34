//! Turning backend host names into addresses, again every discovery
//! interval, and what to do when a name stops resolving.
//!
//! Names are looked up with a DNS client reading `/etc/resolv.conf` and
//! `/etc/hosts` (Docker's and Kubernetes' DNS included), or asking the
//! server named in `discovery.resolver`. Unlike getaddrinfo it tells "no
//! such name" (NXDOMAIN, or no address record) from "no answer" (timeout,
//! SERVFAIL), and [`NameState`] treats them as HAProxy's resolvers do with
//! `hold nx` and `hold timeout`: a missing name keeps its last addresses for
//! `discovery.hold_missing`, then loses them; a resolver that does not
//! answer changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioAsyncResolver;

/// What one lookup of a name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name's addresses now (never empty).
    Found(Vec<SocketAddr>),
    /// The name does not exist, or has no address record.
    Missing,
    /// No answer to go by (timeout, SERVFAIL, no resolver): nothing is known.
    Failed(String),
}

/// Where host names are looked up.
pub enum Resolver {
    /// The operating system's resolver (getaddrinfo), when the system's
    /// DNS configuration cannot be read: every error is a [`Lookup::Failed`].
    System,
    /// A DNS client: the system's servers, or the user's choice.
    Dns(Box<TokioAsyncResolver>),
}

impl Resolver {
    /// A DNS client asking `server`, or else the servers of
    /// `/etc/resolv.conf` (with `/etc/hosts` first).
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        let (config, mut opts) = match server {
            None => match hickory_resolver::system_conf::read_system_conf() {
                Ok(system) => system,
                Err(_) => return Resolver::System,
            },
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                let mut opts = ResolverOpts::default();
                // One try of 2 s per record type (A, then AAAA), not 5 s.
                opts.attempts = 1;
                opts.timeout = std::time::Duration::from_secs(2);
                (ResolverConfig::from_parts(None, vec![], servers), opts)
            }
        };
        // Discovery asks again every interval; a cache would hide changes.
        opts.cache_size = 0;
        Resolver::Dns(Box::new(TokioAsyncResolver::tokio(config, opts)))
    }

    /// Every address of `host` (A and AAAA records), with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Lookup {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Lookup::Found(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = match self {
            Resolver::System => match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => return Lookup::Failed(e.to_string()),
            },
            Resolver::Dns(resolver) => match resolver.lookup_ip(host).await {
                Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                Err(e) => return failure(&e),
            },
        };
        if found.is_empty() {
            Lookup::Missing
        } else {
            Lookup::Found(found)
        }
    }
}

/// An authoritative "no such name" or "no address" is [`Lookup::Missing`];
/// anything else says nothing about the name.
fn failure(error: &ResolveError) -> Lookup {
    match error.kind() {
        ResolveErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        } => Lookup::Missing,
        _ => Lookup::Failed(error.to_string()),
    }
}

/// What to do with a name's addresses after a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// These are its addresses now.
    Use(Vec<SocketAddr>),
    /// Keep the addresses it had.
    KeepLast,
    /// It has none any more.
    Drop,
}

/// A change worth one log line; repeats of the same state log nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It resolves again after being missing or unanswered.
    ResolvesAgain,
    /// It stopped existing: its last addresses are held.
    Missing,
    /// The resolver stopped answering for it.
    Failed(String),
    /// It has been missing for the whole hold: its addresses go.
    Dropped,
}

/// What discovery remembers of one host name between rounds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameState {
    /// Since when the name has been missing, with every lookup since saying so.
    missing_since: Option<Instant>,
    /// Whether the last lookup went unanswered.
    failing: bool,
    /// Whether its addresses were dropped after the hold.
    dropped: bool,
}

impl NameState {
    /// The verdict on `lookup`, made at `now` with the hold `hold`, and the
    /// change to log if this lookup changed the name's state.
    pub fn after(
        &mut self,
        lookup: Lookup,
        now: Instant,
        hold: Duration,
    ) -> (Verdict, Option<Change>) {
        match lookup {
            Lookup::Found(addrs) => {
                let was_off = self.missing_since.is_some() || self.failing;
                *self = NameState::default();
                (
                    Verdict::Use(addrs),
                    was_off.then_some(Change::ResolvesAgain),
                )
            }
            Lookup::Failed(why) => {
                let change = (!self.failing).then_some(Change::Failed(why));
                self.failing = true;
                (Verdict::KeepLast, change)
            }
            Lookup::Missing => {
                self.failing = false;
                let since = *self.missing_since.get_or_insert(now);
                let first = since == now;
                if now.saturating_duration_since(since) < hold {
                    (Verdict::KeepLast, first.then_some(Change::Missing))
                } else if self.dropped {
                    (Verdict::Drop, None)
                } else {
                    self.dropped = true;
                    (Verdict::Drop, Some(Change::Dropped))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(30);

    fn addrs() -> Vec<SocketAddr> {
        vec!["10.0.0.7:8080".parse().unwrap()]
    }

    #[test]
    fn a_missing_name_keeps_its_addresses_for_the_hold_then_loses_them() {
        let start = Instant::now();
        let mut name = NameState::default();
        assert_eq!(
            name.after(Lookup::Found(addrs()), start, HOLD),
            (Verdict::Use(addrs()), None)
        );
        assert_eq!(
            name.after(Lookup::Missing, start + HOLD / 3, HOLD),
            (Verdict::KeepLast, Some(Change::Missing))
        );
        assert_eq!(
            name.after(Lookup::Missing, start + HOLD, HOLD),
            (Verdict::KeepLast, None)
        );
        let end = start + HOLD / 3 + HOLD;
        assert_eq!(
            name.after(Lookup::Missing, end, HOLD),
            (Verdict::Drop, Some(Change::Dropped))
        );
        assert_eq!(
            name.after(Lookup::Missing, end + HOLD, HOLD),
            (Verdict::Drop, None)
        );
        assert_eq!(
            name.after(Lookup::Found(addrs()), end + HOLD, HOLD),
            (Verdict::Use(addrs()), Some(Change::ResolvesAgain))
        );
    }

    #[test]
    fn an_unanswered_lookup_keeps_the_addresses_for_as_long_as_it_lasts_and_says_so_once() {
        let start = Instant::now();
        let mut name = NameState::default();
        let failed = || Lookup::Failed("timed out".into());
        assert_eq!(
            name.after(failed(), start, HOLD),
            (Verdict::KeepLast, Some(Change::Failed("timed out".into())))
        );
        assert_eq!(
            name.after(failed(), start + HOLD * 10, HOLD),
            (Verdict::KeepLast, None)
        );
        assert_eq!(
            name.after(Lookup::Found(addrs()), start + HOLD * 11, HOLD),
            (Verdict::Use(addrs()), Some(Change::ResolvesAgain))
        );
    }

    #[test]
    fn a_name_that_comes_back_within_the_hold_starts_a_new_hold_when_it_goes_again() {
        let start = Instant::now();
        let mut name = NameState::default();
        name.after(Lookup::Missing, start, HOLD);
        name.after(Lookup::Found(addrs()), start + HOLD / 2, HOLD);
        let again = start + HOLD;
        assert_eq!(
            name.after(Lookup::Missing, again, HOLD),
            (Verdict::KeepLast, Some(Change::Missing))
        );
        assert_eq!(
            name.after(Lookup::Missing, again + HOLD / 2, HOLD),
            (Verdict::KeepLast, None)
        );
    }

    #[test]
    fn a_zero_hold_drops_a_missing_name_at_once() {
        let mut name = NameState::default();
        assert_eq!(
            name.after(Lookup::Missing, Instant::now(), Duration::ZERO),
            (Verdict::Drop, Some(Change::Dropped))
        );
    }

    #[tokio::test]
    async fn an_address_needs_no_lookup() {
        let found = Resolver::System.lookup("127.0.0.1", 80).await;
        assert_eq!(found, Lookup::Found(vec!["127.0.0.1:80".parse().unwrap()]));
    }
}
