//! The cases both stores must pass, one behaviour each (see `contract!` in `mod.rs`).

use super::*;
use crate::model::{now_ms, ChangeKind, Counts, Epoch};
use crate::store::{SessionState, LOG_CAPACITY, MAX_SESSIONS_PER_USER};

/// Pages of `before` cursors walk the tray newest first with no gap and no overlap, even
/// for ids minted within one millisecond; the last page has no cursor.
pub async fn pages_walk_the_tray_newest_first_once(s: &Subject) {
    let all = publish_many(s, "a", 7).await;
    assert_eq!(walk(s, "a", 3, false).await, newest_first(all.clone()));
    let first = list(s, "a", 7, None, false).await;
    assert_eq!((first.next, first.unread_count), (None, 7));
    assert!(list(s, "a", 3, Some(&all[0]), false)
        .await
        .notifications
        .is_empty());
    assert!(walk(s, "nobody", 3, false).await.is_empty());
}

/// A replayed `notification` change is the event as it was published: a collapse's count
/// and the id it replaced, and the counts of that moment (a later read changes none of it).
pub async fn replayed_notifications_are_as_published(s: &Subject) {
    let t = template(serde_json::json!({"title": "t", "collapse_key": "k"}));
    let first = publish_to(s, &t, &["a"], None).await[0].id.to_string();
    let second = publish_to(s, &t, &["a"], None).await[0].id.to_string();
    let other = publish(s, "a", None).await.id;
    mark(s, "a", &[&second, &other], Mark::Read).await;
    let epoch = s.store.head("a").await.expect("head").epoch;
    let Replay::Changes(changes) = replay(s, "a", EventId { epoch, seq: 0 }).await else {
        panic!("reset")
    };
    let data: Vec<serde_json::Value> = changes[..3]
        .iter()
        .map(|c| serde_json::from_str(&c.data).expect("JSON"))
        .collect();
    let shape = |d: &serde_json::Value| {
        serde_json::json!([
            d["id"],
            d["user"],
            d["title"],
            d["count"],
            d["replaces"],
            d["read_at"],
            d["unread_count"],
            d["unseen_count"]
        ])
    };
    assert_eq!(
        data.iter().map(shape).collect::<Vec<_>>(),
        [
            serde_json::json!([first, "a", "t", 1, null, null, 1, 1]),
            serde_json::json!([second, "a", "t", 2, first, null, 1, 1]),
            serde_json::json!([other, "a", "t", 1, null, null, 2, 2]),
        ]
    );
    assert_eq!(changes[3].kind, ChangeKind::Read);
}

/// `unread_only` pages over unread notifications only (cursors included), while read ones
/// still list, with their `read_at`, without the filter.
pub async fn unread_filter_pages_only_unread(s: &Subject) {
    let all = publish_many(s, "a", 6).await;
    mark(s, "a", &[&all[1], &all[4]], Mark::Read).await;
    let unread: Vec<String> = [5, 3, 2, 0].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(walk(s, "a", 2, true).await, unread);
    let page = list(s, "a", 10, None, false).await;
    assert_eq!(ids(&page), newest_first(all.clone()));
    assert_eq!(page.unread_count, 4);
    let read: Vec<&String> = page
        .notifications
        .iter()
        .filter(|n| n.state.read_at.is_some())
        .map(|n| &n.id)
        .collect();
    assert_eq!(read, [&all[4], &all[1]]);
}

/// One idempotency key stores once per user (the repeat returns the first id and commits
/// nothing); another user with the same key stores their own.
pub async fn idempotency_key_stores_once_per_user(s: &Subject) {
    let first = publish(s, "a", Some("k")).await;
    let again = publish(s, "a", Some("k")).await;
    let other = publish(s, "b", Some("k")).await;
    assert!(first.stored && !again.stored && other.stored);
    assert_eq!(first.id, again.id);
    assert_ne!(first.id, other.id);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (1, 1));
    assert_eq!(ids(&list(s, "a", 10, None, false).await), [first.id]);
    assert_eq!(ids(&list(s, "b", 10, None, false).await), [other.id]);
}

/// A key stored with a stamp (a Kafka record's position and timestamp) matches the same stamp
/// and no stamp (`POST /publish` naming the position); another stamp is another record (a
/// broker that lost its log gave out the offset again): stored anew, and that stamp kept.
pub async fn an_idempotency_key_stamped_anew_stores_anew(s: &Subject) {
    let at = |stamp| {
        Some(Idempotency {
            key: "t/0/0",
            stamp: Some(stamp),
        })
    };
    let first = publish_keyed(s, "a", at(1)).await;
    let redelivered = publish_keyed(s, "a", at(1)).await;
    let named = publish(s, "a", Some("t/0/0")).await;
    assert!(first.stored && !redelivered.stored && !named.stored);
    assert_eq!([&redelivered.id, &named.id], [&first.id, &first.id]);
    let reused = publish_keyed(s, "a", at(2)).await;
    assert!(reused.stored);
    assert_ne!(reused.id, first.id);
    let again = publish_keyed(s, "a", at(2)).await;
    assert!(!again.stored);
    assert_eq!(again.id, reused.id);
    // stored without a stamp, the key matches a stamped one
    let plain = publish(s, "a", Some("plain")).await;
    let stamped = publish_keyed(
        s,
        "a",
        Some(Idempotency {
            key: "plain",
            stamp: Some(3),
        }),
    )
    .await;
    assert!(plain.stored && !stamped.stored);
    assert_eq!(stamped.id, plain.id);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (3, 3));
}

/// Beyond `max_per_user` (3 here) the oldest notifications go, unread count included; the
/// drop itself commits no change.
pub async fn max_per_user_drops_the_oldest(s: &Subject) {
    let all = publish_many(s, "a", 5).await;
    assert_eq!(
        ids(&list(s, "a", 10, None, false).await),
        newest_first(all[2..].to_vec())
    );
    assert_eq!(s.store.get("a", &all[0]).await.expect("get"), None);
    // each publish past the cap commits its notification, then a `deleted` for the oldest
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (7, 3));
    let Replay::Changes(last) = replay(
        s,
        "a",
        EventId {
            seq: 5,
            ..head.id()
        },
    )
    .await
    else {
        panic!("reset")
    };
    assert_eq!(
        last.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [ChangeKind::Notification, ChangeKind::Deleted]
    );
    assert!(last[1].data.contains(&all[1]) && last[0].data.contains(&all[4]));
}

/// Past `max_per_user` (3 here) the oldest delivered notifications go before one held for
/// `deliver_at` (not in the tray yet), which is delivered when due; held ones go (the oldest
/// first, never the new one) only when too few delivered are left.
pub async fn max_per_user_drops_delivered_ones_before_held_ones(s: &Subject) {
    let later = scheduled(Schedule {
        deliver_ms: Some(now_ms() + 1_000),
        expire_ms: None,
    });
    let held = publish_to(s, &later, &["a"], None).await[0].id.to_string();
    let all = publish_many(s, "a", 4).await;
    assert_eq!(
        ids(&list(s, "a", 10, None, false).await),
        newest_first(all[2..].to_vec())
    );
    // a tray of held ones only: the oldest of them goes for a new one
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(publish_to(s, &later, &["b"], None).await[0].id.to_string());
    }
    let new = publish(s, "b", None).await;
    assert!(new.stored);
    assert_eq!(
        ids(&list(s, "b", 10, None, false).await),
        std::slice::from_ref(&new.id)
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for user in ["a", "b"] {
        s.store.process_due(user, 0).await.expect("due");
    }
    let mut listed = newest_first(all[2..].to_vec());
    listed.push(held);
    assert_eq!(ids(&list(s, "a", 10, None, false).await), listed);
    let listed = [new.id, waiting[2].clone(), waiting[1].clone()];
    assert_eq!(ids(&list(s, "b", 10, None, false).await), listed);
}

/// A notification whose delivery and expiry both passed before its tray's due times were
/// handled (no node ran meanwhile) goes without a trace: no `deleted` for an id no stream saw.
pub async fn an_expiry_before_delivery_is_not_announced(s: &Subject) {
    let later = scheduled(Schedule {
        deliver_ms: Some(now_ms() + 300),
        expire_ms: Some(now_ms() + 600),
    });
    publish_to(s, &later, &["a"], None).await;
    let before = s.store.head("a").await.expect("head");
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.store.process_due("a", 0).await.expect("due");
    assert_eq!(s.store.head("a").await.expect("head").seq, before.seq);
    assert!(ids(&list(s, "a", 10, None, false).await).is_empty());
}

/// A mark counts the named ids that exist (`found`) and lists those whose state it changed;
/// `get` shows the result (read_at set, cleared, or the notification gone).
pub async fn mark_reports_found_and_changed(s: &Subject) {
    let all = publish_many(s, "a", 2).await;
    let (x, y, missing) = (&all[0], &all[1], &new_id());
    let read = mark(s, "a", &[x, y, missing], Mark::Read).await;
    assert_eq!((read.found, read.changed.clone()), (2, all.clone()));
    let got = s
        .store
        .get("a", x)
        .await
        .expect("get")
        .expect("still there");
    assert!(got.state.read_at.is_some());
    let unread = mark(s, "a", &[y], Mark::Unread).await;
    assert_eq!((unread.found, unread.changed), (1, vec![y.clone()]));
    let got = s
        .store
        .get("a", y)
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(got.state.read_at, None);
    let deleted = mark(s, "a", &[x, y], Mark::Deleted).await;
    assert_eq!((deleted.found, deleted.changed), (2, all.clone()));
    assert_eq!(s.store.get("a", x).await.expect("get"), None);
    let again = mark(s, "a", &[x], Mark::Deleted).await;
    assert_eq!((again.found, again.changed.len()), (0, 0));
    assert_eq!(s.store.head("a").await.expect("head").unread_count, 0);
}

/// A mark that changes nothing (read on read, unread on unread, any mark on a missing id)
/// commits no change: the head's seq stays where it was.
pub async fn unchanged_marks_commit_nothing(s: &Subject) {
    let all = publish_many(s, "a", 2).await;
    let (x, y) = (&all[0], &all[1]);
    mark(s, "a", &[x], Mark::Read).await;
    let before = seq(s, "a").await;
    assert_eq!(before, 3);
    assert!(mark(s, "a", &[x], Mark::Read).await.changed.is_empty());
    assert!(mark(s, "a", &[y], Mark::Unread).await.changed.is_empty());
    for m in [Mark::Read, Mark::Unread, Mark::Deleted] {
        assert!(mark(s, "a", &[&new_id()], m).await.changed.is_empty());
    }
    assert_eq!(seq(s, "a").await, before);
}

/// `Target::All` with read changes every unread notification (oldest first) in one commit;
/// repeated, it changes and commits nothing. (`found` is not compared: for `All`, memory
/// counts every notification and Redis only the unread ones; no caller reads it there.)
pub async fn mark_all_read_reads_every_unread(s: &Subject) {
    let all = publish_many(s, "a", 3).await;
    mark(s, "a", &[&all[1]], Mark::Read).await;
    let marked = s
        .store
        .mark("a", &Target::All, Mark::Read)
        .await
        .expect("mark");
    assert_eq!(marked.changed, [all[0].clone(), all[2].clone()]);
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.seq, head.unread_count), (5, 0));
    let again = s
        .store
        .mark("a", &Target::All, Mark::Read)
        .await
        .expect("mark");
    assert!(again.changed.is_empty());
    assert_eq!(seq(s, "a").await, 5);
}

/// Replay after a seq returns exactly the later changes, in order, with their kinds and
/// data; after the head it returns none.
pub async fn replay_after_seq_returns_exactly_the_rest(s: &Subject) {
    let all = publish_many(s, "a", 4).await;
    mark(s, "a", &[&all[0]], Mark::Read).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!(head.seq, 5);
    let at = |seq| EventId {
        epoch: head.epoch,
        seq,
    };
    let rest = replay(s, "a", at(2)).await;
    assert_eq!(seqs(&rest), [3, 4, 5]);
    let Replay::Changes(changes) = rest else {
        unreachable!()
    };
    assert!(changes.iter().all(|c| c.epoch == head.epoch));
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Notification,
            ChangeKind::Notification,
            ChangeKind::Read
        ]
    );
    let third: Notification = serde_json::from_str(&changes[0].data).expect("notification");
    assert_eq!(third.id, all[2]);
    assert!(changes[2].data.contains(&all[0]));
    assert_eq!(seqs(&replay(s, "a", at(0)).await), [1, 2, 3, 4, 5]);
    assert_eq!(replay(s, "a", at(5)).await, Replay::Changes(Vec::new()));
}

/// A position beyond the head (a log that went back) resets.
pub async fn replay_beyond_head_resets(s: &Subject) {
    publish_many(s, "a", 2).await;
    let head = s.store.head("a").await.expect("head");
    let beyond = EventId {
        epoch: head.epoch,
        seq: head.seq + 1,
    };
    assert_eq!(replay(s, "a", beyond).await, Replay::Reset);
}

/// Once the log has dropped changes past [`LOG_CAPACITY`], a position before the retained
/// window resets, while one inside it still replays exactly the rest.
pub async fn replay_of_a_trimmed_window_resets(s: &Subject) {
    // Redis keeps up to 100 entries more than the capacity before it trims: go well past.
    // (Past the tray's cap of 10, each publish also commits a `deleted` for the oldest.)
    let published = LOG_CAPACITY as u64 / 2 + 300;
    for _ in 0..published {
        publish(s, "a", None).await;
    }
    let head = s.store.head("a").await.expect("head");
    let total = 2 * published - 10;
    assert_eq!(head.seq, total);
    let at = |seq| EventId {
        epoch: head.epoch,
        seq,
    };
    assert_eq!(replay(s, "a", at(1)).await, Replay::Reset);
    assert_eq!(
        seqs(&replay(s, "a", at(total - 10)).await),
        (total - 9..=total).collect::<Vec<_>>()
    );
    // exactly the last LOG_CAPACITY changes replay, in both stores (Redis still holds more)
    let cap = LOG_CAPACITY as u64;
    assert_eq!(
        seqs(&replay(s, "a", at(total - cap)).await),
        (total - cap + 1..=total).collect::<Vec<_>>()
    );
    assert_eq!(replay(s, "a", at(total - cap - 1)).await, Replay::Reset);
}

/// Each user's log has its own epoch: a position of another user's log, or of an epoch no
/// log has, resets even when its seq is in range.
pub async fn another_epoch_resets(s: &Subject) {
    publish_many(s, "a", 3).await;
    publish_many(s, "b", 3).await;
    let (a, b) = (
        s.store.head("a").await.expect("head"),
        s.store.head("b").await.expect("head"),
    );
    assert_ne!(a.epoch, b.epoch);
    let b_at_1 = EventId {
        epoch: b.epoch,
        seq: 1,
    };
    assert_eq!(replay(s, "a", b_at_1).await, Replay::Reset);
    assert_eq!(seqs(&replay(s, "b", b_at_1).await), [2, 3]);
    let stranger = EventId {
        epoch: Epoch::random(),
        seq: 1,
    };
    assert_eq!(replay(s, "a", stranger).await, Replay::Reset);
    assert_eq!(replay(s, "nobody", stranger).await, Replay::Reset);
}

/// A head read before any commit draws the epoch, and the first commit keeps it: a stream
/// that got `ready` on an empty log replays that log's first change, not a reset.
pub async fn head_epoch_is_kept_by_the_first_commit(s: &Subject) {
    let empty = s.store.head("a").await.expect("head");
    assert_eq!((empty.seq, empty.unread_count), (0, 0));
    assert_eq!(s.store.head("a").await.expect("head"), empty);
    publish(s, "a", None).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!(
        (head.epoch, head.seq, head.unread_count),
        (empty.epoch, 1, 1)
    );
    assert_eq!(seqs(&replay(s, "a", empty.id()).await), [1]);
}

/// A session reads back as stored until deleted, alone or among others in one read (in the
/// order asked); an ended one (ended, or past `exp`) reads as none, and stays ended when a
/// node would put it back, also one ended when its record was gone already.
pub async fn sessions_put_get_end(s: &Subject) {
    let record = session("a");
    assert!(s
        .store
        .put_session("s1", &record)
        .await
        .expect("put")
        .is_empty());
    assert_eq!(
        s.store.sessions(&["never", "s1", "s1"]).await.expect("get"),
        [None, Some(record.clone()), Some(record.clone())]
    );
    assert!(s.store.sessions(&[]).await.expect("get").is_empty());
    let state = async |id| s.store.session_state(id).await.expect("state");
    assert_eq!(state("s1").await, SessionState::Live);
    s.store.end_session("a", "s1").await.expect("end");
    assert_eq!(state("s1").await, SessionState::Ended);
    let restored = s.store.restore_session("s1", &record).await;
    assert!(!restored.expect("restore"));
    assert_eq!(state("s1").await, SessionState::Ended);
    assert_eq!(s.store.sessions(&["s1"]).await.expect("get"), [None]);
    // ended as its record was lost: no node puts it back either
    s.store.end_session("a", "lost").await.expect("end");
    let restored = s.store.restore_session("lost", &record).await;
    assert!(!restored.expect("restore"));
    assert_eq!(state("lost").await, SessionState::Ended);
    let ended = SessionRecord {
        ends_ms: now_ms() - 1,
        ..session("a")
    };
    s.store.put_session("s2", &ended).await.expect("put");
    assert_eq!(state("s2").await, SessionState::Ended);
    assert_eq!(
        s.store.sessions(&["s2", "s1"]).await.expect("get"),
        [None, None]
    );
}

/// The session beyond [`MAX_SESSIONS_PER_USER`] ends the user's oldest one (by creation,
/// whatever its id) and returns its id; other users' sessions are not counted.
pub async fn session_cap_evicts_the_oldest(s: &Subject) {
    // Ids sort in the reverse of creation order, so eviction by id would show.
    let id = |i: usize| format!("s{:04}", 9999 - i);
    s.store
        .put_session("other", &session("b"))
        .await
        .expect("put");
    for i in 0..MAX_SESSIONS_PER_USER {
        let evicted = s
            .store
            .put_session(&id(i), &session("a"))
            .await
            .expect("put");
        assert!(evicted.is_empty(), "session {i} evicted {evicted:?}");
    }
    let evicted = s
        .store
        .put_session(&id(MAX_SESSIONS_PER_USER), &session("a"))
        .await
        .expect("put");
    assert_eq!(evicted, [id(0)]);
    let state = async |id: &str| s.store.session_state(id).await.expect("state");
    assert_eq!(state(&id(0)).await, SessionState::Ended);
    assert_eq!(state(&id(1)).await, SessionState::Live);
    assert_eq!(state("other").await, SessionState::Live);
}

/// Members are added once, listed sorted, removed one by one (saying whether they were
/// members); an unknown or emptied group has none.
pub async fn groups_add_remove_and_list_sorted(s: &Subject) {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    s.store
        .add_members("g", &names(&["carol", "alice", "bob"]))
        .await
        .expect("add");
    s.store
        .add_members("g", &names(&["alice"]))
        .await
        .expect("add");
    s.store.add_members("g", &[]).await.expect("add");
    assert_eq!(
        s.store.members("g").await.expect("members"),
        names(&["alice", "bob", "carol"])
    );
    assert!(s.store.remove_member("g", "bob").await.expect("remove"));
    assert!(!s.store.remove_member("g", "bob").await.expect("remove"));
    assert!(!s.store.remove_member("none", "bob").await.expect("remove"));
    assert_eq!(
        s.store.members("g").await.expect("members"),
        names(&["alice", "carol"])
    );
    for user in ["alice", "carol"] {
        assert!(s.store.remove_member("g", user).await.expect("remove"));
    }
    assert!(s.store.members("g").await.expect("members").is_empty());
    assert!(s.store.members("none").await.expect("members").is_empty());
}

/// `purge_before` deletes, in every tray, exactly the ids that sort below the cutoff, and
/// commits each user's deletion as a `deleted` change.
pub async fn purge_before_deletes_only_older_ids(s: &Subject) {
    let (a_old, b_old) = (
        publish(s, "a", None).await.id,
        publish(s, "b", None).await.id,
    );
    let cutoff = new_id();
    let (a_new, b_new) = (
        publish(s, "a", None).await.id,
        publish(s, "b", None).await.id,
    );
    assert_eq!(s.store.purge_before(&cutoff, 0).await.expect("purge"), 2);
    assert_eq!(ids(&list(s, "a", 10, None, false).await), [a_new]);
    assert_eq!(ids(&list(s, "b", 10, None, false).await), [b_new]);
    let a = s.store.head("a").await.expect("head");
    assert_eq!((a.seq, a.unread_count), (3, 1));
    let Replay::Changes(changes) = replay(s, "a", EventId { seq: 2, ..a.id() }).await else {
        panic!("reset")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Deleted);
    assert!(changes[0].data.contains(&a_old) && !changes[0].data.contains(&b_old));
    assert_eq!(s.store.purge_before(&cutoff, 0).await.expect("purge"), 0);
}

/// With a log cut-off, `purge_before` also drops the changes committed before it (its own
/// `deleted` among them when the cut-off is later): a replay from before them resets, a user
/// who still has notifications keeps its head and goes on from it, and one left with nothing
/// resets too.
pub async fn purge_cuts_the_change_logs(s: &Subject) {
    publish(s, "a", None).await;
    publish(s, "b", None).await;
    let cutoff = new_id();
    publish(s, "b", None).await;
    let a = s.store.head("a").await.expect("head");
    assert_eq!(
        s.store
            .purge_before(&cutoff, now_ms() + 60_000)
            .await
            .expect("purge"),
        2
    );
    assert!(matches!(replay(s, "a", a.id()).await, Replay::Reset));
    let b = s.store.head("b").await.expect("head");
    assert_eq!((b.seq, b.unread_count), (3, 1));
    assert!(matches!(
        replay(s, "b", EventId { seq: 2, ..b.id() }).await,
        Replay::Reset
    ));
    let Replay::Changes(none) = replay(s, "b", b.id()).await else {
        panic!("reset at the head")
    };
    assert!(none.is_empty());
    let next = publish(s, "b", None).await.id;
    let Replay::Changes(changes) = replay(s, "b", b.id()).await else {
        panic!("reset after the cut")
    };
    assert_eq!(changes.len(), 1);
    assert!(changes[0].data.contains(&next));
}

/// One publish to many users (more than one Redis script call) stores exactly one
/// notification per user, under that user's id; repeated with the same idempotency key it
/// stores nothing and answers each user's first id.
pub async fn one_publish_stores_once_per_recipient(s: &Subject) {
    let users: Vec<String> = (0..150).map(|i| format!("u{i:03}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let t = template(serde_json::json!({"title": "everyone"}));
    let first = publish_to(s, &t, &users, Some(Idempotency::key("k"))).await;
    assert!(first.iter().all(|p| p.stored));
    let again = publish_to(s, &t, &users, Some(Idempotency::key("k"))).await;
    for ((user, first), again) in users.iter().zip(&first).zip(&again) {
        assert_eq!((again.id, again.stored), (first.id, false), "{user}");
    }
    for (user, p) in users.iter().zip(&first).step_by(7) {
        let page = list(s, user, 10, None, false).await;
        assert_eq!(ids(&page), [p.id.to_string()], "{user}");
        assert_eq!(page.notifications[0].user, *user);
        assert_eq!(seq(s, user).await, 1, "{user}");
    }
}

/// The change a publish commits carries the notification's JSON exactly as serde writes the
/// notification (ids spliced into the shared template), for users whose ids need escaping too.
pub async fn notification_json_is_what_serde_writes(s: &Subject) {
    let t = template(serde_json::json!({
        "title": "a \"quoted\" title \\ é 🎉", "body": "line\nbreak", "link": "/x",
        "data": {"z": 1, "a": [true, null], "nested": {"k": "v"}},
    }));
    let users = ["plain", "with \"quote\"", "back\\slash", "ünï cødé"];
    let published = publish_to(s, &t, &users, None).await;
    for (user, p) in users.iter().zip(&published) {
        let head = s.store.head(user).await.expect("head");
        let Replay::Changes(changes) = replay(
            s,
            user,
            EventId {
                seq: 0,
                ..head.id()
            },
        )
        .await
        else {
            panic!("reset")
        };
        let stored = s.store.get(user, p.id.as_str()).await.expect("get");
        let stored = stored.expect("stored");
        // The change carries the notification, then the tray's counts beside its fields.
        let counts = Counts {
            unread: 1,
            unseen: 1,
        };
        let json = serde_json::to_string(&stored).expect("json");
        assert_eq!(changes[0].data, counts.append_to(&json));
        assert_eq!(
            json,
            t.json(p.id.as_str(), user, &crate::model::ItemState::default())
        );
        assert_eq!(stored.user, *user);
    }
}

/// A muted category suppresses a publish for that user alone (nothing stored, nothing
/// committed), unless the notification is critical; an idempotency key that stored before
/// still answers with its id; unmuting lets publishes through again.
pub async fn muted_categories_suppress_all_but_critical(s: &Subject) {
    assert!(s.store.preferences("a").await.expect("prefs").is_empty());
    s.store.set_muted("a", "builds", true).await.expect("mute");
    s.store.set_muted("a", "chat", false).await.expect("unmute");
    let prefs = s.store.preferences("a").await.expect("prefs");
    assert_eq!(prefs.get("builds"), Some(&true));
    assert_eq!(prefs.get("chat"), Some(&false));
    let builds = template(serde_json::json!({"title": "t", "category": "builds"}));
    let out = publish_to(s, &builds, &["a", "b"], None).await;
    assert!(out[0].suppressed && !out[0].stored);
    assert!(out[1].stored && !out[1].suppressed);
    assert_eq!(seq(s, "a").await, 0);
    assert!(list(s, "a", 10, None, false).await.notifications.is_empty());
    let critical =
        template(serde_json::json!({"title": "t", "category": "builds", "critical": true}));
    assert!(publish_to(s, &critical, &["a"], None).await[0].stored);
    let chat = template(serde_json::json!({"title": "t", "category": "chat"}));
    assert!(publish_to(s, &chat, &["a"], None).await[0].stored);
    s.store
        .set_muted("a", "builds", false)
        .await
        .expect("unmute");
    assert!(publish_to(s, &builds, &["a"], None).await[0].stored);
    assert_eq!(list(s, "a", 10, None, false).await.notifications.len(), 3);
}

/// A page carries the change-log head it reflects: on an empty tray a position all the same
/// (the epoch the first change will keep), after changes the head, read in the same step.
pub async fn pages_carry_the_head_they_reflect(s: &Subject) {
    let empty = list(s, "a", 10, None, false).await.position;
    assert_eq!(empty.seq, 0);
    let ids = publish_many(s, "a", 3).await;
    let page = list(s, "a", 2, None, false).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!(page.position, head.id());
    assert_eq!(page.position.epoch, empty.epoch);
    assert_eq!(page.position.seq, 3);
    let next = list(s, "a", 2, Some(&ids[1]), false).await;
    assert_eq!(next.position, page.position);
}

/// Seen is its own state: new notifications are unseen; `seen` sees without reading; reading
/// sees too; the counts and the `unseen` filter follow, and each change says both counts.
pub async fn seen_is_counted_apart_from_read(s: &Subject) {
    let all = publish_many(s, "a", 4).await;
    let head = s.store.head("a").await.expect("head");
    assert_eq!((head.unread_count, head.unseen_count), (4, 4));
    let seen = mark(s, "a", &[&all[0], &all[1]], Mark::Seen).await;
    assert_eq!(seen.changed, [all[0].clone(), all[1].clone()]);
    // seeing again changes nothing
    assert!(mark(s, "a", &[&all[0]], Mark::Seen)
        .await
        .changed
        .is_empty());
    // reading an unseen one sees it too
    mark(s, "a", &[&all[2]], Mark::Read).await;
    let page = list(s, "a", 10, None, false).await;
    assert_eq!((page.unread_count, page.unseen_count), (3, 1));
    let n = |id: &String| {
        page.notifications
            .iter()
            .find(|n| &n.id == id)
            .unwrap()
            .clone()
    };
    assert!(n(&all[0]).state.seen_at.is_some() && n(&all[0]).state.read_at.is_none());
    assert!(n(&all[2]).state.seen_at.is_some() && n(&all[2]).state.read_at.is_some());
    assert!(n(&all[3]).state.seen_at.is_none());
    let query = ListQuery {
        limit: 10,
        before: None,
        unseen: true,
        ..ListQuery::default()
    };
    let unseen = s.store.list("a", &query).await.expect("list");
    assert_eq!(ids(&unseen), [all[3].clone()]);
    let Replay::Changes(changes) = replay(
        s,
        "a",
        EventId {
            seq: 4,
            ..head.id()
        },
    )
    .await
    else {
        panic!("reset")
    };
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Seen, ChangeKind::Read]);
    let last: serde_json::Value = serde_json::from_str(&changes[1].data).unwrap();
    assert_eq!(
        (last["unread_count"].as_u64(), last["unseen_count"].as_u64()),
        (Some(3), Some(1))
    );
    // all: every unseen one
    let everything = s
        .store
        .mark("a", &Target::All, Mark::Seen)
        .await
        .expect("mark");
    assert_eq!(everything.changed, [all[3].clone()]);
    assert_eq!(s.store.head("a").await.expect("head").unseen_count, 0);
}

/// The counts endpoint's numbers, per category too, and the head they reflect.
pub async fn counts_by_category(s: &Subject) {
    let empty = s.store.counts("a").await.expect("counts");
    assert_eq!(
        (empty.counts, empty.by_category.len()),
        (Counts::default(), 0)
    );
    let builds = template(serde_json::json!({"title": "t", "category": "builds"}));
    let chat = template(serde_json::json!({"title": "t", "category": "chat"}));
    let b1 = publish_to(s, &builds, &["a"], None).await[0].id.to_string();
    publish_to(s, &builds, &["a"], None).await;
    publish_to(s, &chat, &["a"], None).await;
    publish(s, "a", None).await;
    mark(s, "a", &[&b1], Mark::Read).await;
    let counts = s.store.counts("a").await.expect("counts");
    assert_eq!(
        counts.counts,
        Counts {
            unread: 3,
            unseen: 3
        }
    );
    assert_eq!(
        counts.by_category["builds"],
        Counts {
            unread: 1,
            unseen: 1
        }
    );
    assert_eq!(
        counts.by_category["chat"],
        Counts {
            unread: 1,
            unseen: 1
        }
    );
    assert_eq!(counts.by_category.len(), 2);
    assert_eq!(counts.position, s.store.head("a").await.expect("head").id());
    assert_eq!(counts.position.epoch, empty.position.epoch);
}
