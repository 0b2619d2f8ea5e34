//! `access:`: CIDR lists of client addresses, IPv4 and IPv6; deny wins,
//! and an empty allow list allows every address not denied.

use std::net::IpAddr;

use ipnet::IpNet;

use super::client::is_in;
use crate::config::AccessConfig;

/// A compiled access rule.
#[derive(Debug, Clone)]
pub struct Access {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Access {
    pub fn new(config: &AccessConfig) -> Access {
        Access {
            allow: config.allow.clone(),
            deny: config.deny.clone(),
        }
    }

    /// Whether `client` may pass.
    pub fn allows(&self, client: IpAddr) -> bool {
        !is_in(&self.deny, client) && (self.allow.is_empty() || is_in(&self.allow, client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        let nets = |l: &[&str]| l.iter().map(|n| n.parse().unwrap()).collect();
        Access::new(&AccessConfig {
            allow: nets(allow),
            deny: nets(deny),
        })
    }

    #[test]
    fn deny_wins_over_allow_for_v4_and_v6() {
        let rule = access(&["10.0.0.0/8", "fd00::/8"], &["10.9.0.0/16"]);
        assert!(rule.allows("10.1.2.3".parse().unwrap()));
        assert!(!rule.allows("10.9.2.3".parse().unwrap()));
        assert!(rule.allows("fd12::1".parse().unwrap()));
        assert!(!rule.allows("192.0.2.1".parse().unwrap()));
        assert!(!rule.allows("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn a_deny_list_alone_allows_the_rest() {
        let rule = access(&[], &["127.0.0.3/32"]);
        assert!(rule.allows("127.0.0.2".parse().unwrap()));
        assert!(!rule.allows("127.0.0.3".parse().unwrap()));
        assert!(!rule.allows("::ffff:127.0.0.3".parse().unwrap()));
    }
}
