//! `--max-connect-rate`: new connections per second per client address. A fixed one-second
//! window per address; the table is swept as windows roll over, so it holds only addresses
//! seen in the current second.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

pub struct ConnectLimit {
    /// Connections allowed per address per second; 0 disables the limit.
    per_second: u32,
    /// Address → (window second, connections in it).
    seen: DashMap<IpAddr, (u64, u32)>,
    /// The window second of the last sweep.
    swept: AtomicU64,
}

impl ConnectLimit {
    pub fn new(per_second: u32) -> Self {
        ConnectLimit {
            per_second,
            seen: DashMap::new(),
            swept: AtomicU64::new(0),
        }
    }

    /// Count a new connection from `addr` at `now_secs`; false when it exceeds the rate.
    pub fn admit(&self, addr: IpAddr, now_secs: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        // Windows only move forward: a thread that read the clock just before a second
        // turned neither sweeps the new second's counts nor restarts one.
        if self.swept.fetch_max(now_secs, Ordering::Relaxed) < now_secs {
            self.seen.retain(|_, (second, _)| *second >= now_secs);
        }
        let mut entry = self.seen.entry(addr).or_insert((now_secs, 0));
        if entry.0 < now_secs {
            *entry = (now_secs, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond the rate within one second, connections are refused; the next second resets.
    #[test]
    fn limits_per_address_per_second() {
        let limit = ConnectLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limit.admit(a, 100) && limit.admit(a, 100));
        assert!(!limit.admit(a, 100));
        assert!(limit.admit(b, 100));
        assert!(limit.admit(a, 101));
        // a connection counted late, as of the second before, counts in the current one
        // and sweeps nothing
        assert!(limit.admit(a, 100));
        assert!(!limit.admit(a, 101));
        assert!(limit.admit(b, 101) && limit.seen.len() == 2);
    }

    /// Zero means no limit.
    #[test]
    fn zero_disables() {
        let limit = ConnectLimit::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..100).all(|_| limit.admit(a, 1)));
    }
}
