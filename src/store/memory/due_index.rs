//! The memory store's due-time index: for each user with something due (a delivery, a snooze
//! end, an expiry, a Web Push escalation), the earliest time it may be, never later than the
//! tray's own first due time. One entry per user, as `herald:due` on Redis (`ZADD LT`): a
//! user who snoozes again and again moves the entry, never adds one.

use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub(super) struct DueIndex {
    /// (due time in Unix ms, user), in time order.
    by_time: BTreeSet<(u64, String)>,
    /// user → that user's entry's time.
    of_user: HashMap<String, u64>,
}

impl DueIndex {
    /// `user` has something due at `at`: the entry moves earlier, never later.
    pub(super) fn hint(&mut self, user: &str, at: u64) {
        match self.of_user.get_mut(user) {
            Some(known) if *known <= at => {}
            Some(known) => {
                self.by_time.remove(&(*known, user.to_owned()));
                *known = at;
                self.by_time.insert((at, user.to_owned()));
            }
            None => {
                self.of_user.insert(user.to_owned(), at);
                self.by_time.insert((at, user.to_owned()));
            }
        }
    }

    /// The users due at `now` or before, earliest first, at most `limit`: (user, its entry).
    pub(super) fn due(&self, now: u64, limit: usize) -> Vec<(String, u64)> {
        (self.by_time.iter())
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(at, user)| (user.clone(), *at))
            .collect()
    }

    /// `user`'s entry `hint` was handled: it becomes `next` (the tray's first due time now),
    /// or goes. An entry moved earlier meanwhile stays.
    pub(super) fn handled(&mut self, user: &str, hint: u64, next: Option<u64>) {
        if self.of_user.get(user) == Some(&hint) {
            self.by_time.remove(&(hint, user.to_owned()));
            self.of_user.remove(user);
        }
        if let Some(next) = next {
            self.hint(user, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry per user, at its earliest time; handling it leaves the tray's next time.
    #[test]
    fn one_entry_per_user() {
        let mut index = DueIndex::default();
        for at in (100..200).rev().chain(150..250) {
            index.hint("a", at);
        }
        index.hint("b", 120);
        assert_eq!(index.by_time.len(), 2);
        assert_eq!(
            index.due(1_000, 10),
            vec![("a".into(), 100), ("b".into(), 120)]
        );
        index.handled("a", 100, Some(300));
        assert_eq!(
            index.due(1_000, 10),
            vec![("b".into(), 120), ("a".into(), 300)]
        );
        // moved earlier meanwhile: an older handled entry leaves it
        index.hint("b", 110);
        index.handled("b", 120, None);
        assert_eq!(index.due(1_000, 1), vec![("b".into(), 110)]);
        index.handled("b", 110, None);
        assert_eq!(index.due(1_000, 10), vec![("a".into(), 300)]);
        assert_eq!(index.of_user.len(), 1);
    }
}
