//! A tray's change log in the memory store: its last `LOG_CAPACITY` changes, for replay after
//! a `Last-Event-ID`. A published notification is kept as what renders it again (the publish's
//! shared template, the id, its collapse state and the counts then, ~100 bytes) instead of its
//! JSON (~500): that JSON is most of a busy tray's memory, and the template renders the same
//! bytes every time. Any other change is kept as its JSON.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::{Change, ChangeKind, Counts, Epoch, ItemState, NotificationId, Template};
use crate::store::LOG_CAPACITY;

/// What a change's data is kept as.
pub(super) enum Data {
    Json(String),
    /// A `notification` change: the item as published (fresh state but for a collapse's count
    /// and the id it replaced), with the tray's counts beside it.
    Published {
        template: Arc<Template>,
        id: NotificationId,
        count: u64,
        replaces: Option<NotificationId>,
        counts: Counts,
    },
}

impl Data {
    /// The change's JSON, as the event's `data:` carries it.
    pub(super) fn render(&self, user: &str) -> String {
        match self {
            Data::Json(json) => json.clone(),
            Data::Published {
                template,
                id,
                count,
                replaces,
                counts,
            } => {
                let state = ItemState {
                    count: *count,
                    replaces: replaces.map(|r| r.to_string()),
                    ..ItemState::default()
                };
                counts.append_to(&template.json(id.as_str(), user, &state))
            }
        }
    }
}

struct Entry {
    seq: u64,
    kind: ChangeKind,
    at_ms: u64,
    data: Data,
}

#[derive(Default)]
pub(super) struct ChangeLog(VecDeque<Entry>);

impl ChangeLog {
    /// Keep a change, as `compact` when given (else as its JSON), dropping the oldest past
    /// `LOG_CAPACITY`.
    pub(super) fn push(&mut self, change: Change, compact: Option<Data>) {
        let data = compact.unwrap_or(Data::Json(change.data));
        self.0.push_back(Entry {
            seq: change.seq,
            kind: change.kind,
            at_ms: change.at_ms,
            data,
        });
        while self.0.len() > LOG_CAPACITY {
            self.0.pop_front();
        }
    }

    /// Forget the changes committed before `at_ms` (retention: what they name is gone, or
    /// old enough to be); a replay from before them resets.
    pub(super) fn drop_before(&mut self, at_ms: u64) {
        while self.0.front().is_some_and(|e| e.at_ms < at_ms) {
            self.0.pop_front();
        }
        if self.0.is_empty() {
            self.0.shrink_to_fit();
        }
    }

    /// The oldest change kept.
    pub(super) fn first_seq(&self) -> Option<u64> {
        self.0.front().map(|e| e.seq)
    }

    /// The changes from `from` on, rendered for `user`.
    pub(super) fn since(&self, from: u64, epoch: Epoch, user: &str) -> Vec<Change> {
        self.0
            .iter()
            .filter(|e| e.seq >= from)
            .map(|e| Change {
                epoch,
                seq: e.seq,
                kind: e.kind,
                data: e.data.render(user),
                at_ms: e.at_ms,
            })
            .collect()
    }
}
