//! Counts and positions stay exact under concurrency: after 50 parallel changes of one user's
//! tray the counts equal those computed from the listed notifications (and the last event's,
//! and a new stream's `ready`); a page's `position` continues on the stream while publishes
//! run, every notification on the page or streamed, once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_modes;
use crate::common::*;

both_modes!(
    counts_stay_exact_under_concurrent_changes,
    page_then_stream_while_publishing
);

/// Every notification of alice's tray listed with `query`, page after page.
async fn list_all(h: &Herald, token: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let page = h.list(token, &format!("?limit=200{query}{before}")).await;
        all.extend(page["notifications"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return all,
        }
    }
}

/// `{"unread", "unseen", "by_category"}` computed from the active notifications.
fn computed_counts(active: &[&Value]) -> Value {
    let unread = |n: &&&Value| n["read_at"].is_null();
    let unseen = |n: &&&Value| n["seen_at"].is_null();
    let mut by_category: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for n in active {
        if let Some(category) = n["category"].as_str() {
            let entry = by_category.entry(category.to_owned()).or_default();
            entry.0 += usize::from(n["read_at"].is_null());
            entry.1 += usize::from(n["seen_at"].is_null());
        }
    }
    let by_category: serde_json::Map<String, Value> = by_category
        .into_iter()
        .map(|(c, (r, s))| (c, json!({"unread": r, "unseen": s})))
        .collect();
    json!({
        "unread": active.iter().filter(unread).count(),
        "unseen": active.iter().filter(unseen).count(),
        "by_category": by_category,
    })
}

async fn counts_stay_exact_under_concurrent_changes(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let mut seeds = Vec::new();
    for i in 0..10 {
        seeds.push(h.notify("alice", &format!("seed {i}")).await);
    }
    let mut sse = h.events(&token, "").await;
    let (h, token, seeds) = (&h, &token, &seeds);
    let ops = (0..50).map(|i| async move {
        let id = &seeds[i % 10];
        let path = format!("/notifications/{id}");
        let (status, body) = match i % 8 {
            0 => h.patch(&path, token, json!({"read": true})).await,
            1 => h.patch(&path, token, json!({"read": false})).await,
            2 => h.patch(&path, token, json!({"seen": true})).await,
            3 => {
                h.patch(&path, token, json!({"archived": i % 16 == 3}))
                    .await
            }
            4 => {
                h.publish(json!({"users": ["alice"], "notification": {"title": format!("op {i}"), "category": "ops"}}))
                    .await
            }
            5 => {
                h.publish(json!({"users": ["alice"], "notification": {"title": format!("collapse {i}"), "category": "ci", "collapse_key": "k"}}))
                    .await
            }
            6 => {
                h.patch(&path, token, json!({"snoozed_until": in_secs(3600)}))
                    .await
            }
            _ => {
                let both = json!({"ids": [id, seeds[(i + 1) % 10]], "read": true});
                h.patch("/notifications", token, both).await
            }
        };
        assert!(status == 200 || status == 202, "op {i}: {status} {body}");
    });
    futures_util::future::join_all(ops).await;
    // the counts from the listings: active = neither archived nor snoozed
    let listed = list_all(h, token, "&archived=include").await;
    let snoozed = list_all(h, token, "&snoozed=only").await;
    assert!(
        snoozed.iter().all(|n| n["snoozed_until"].is_string()),
        "{snoozed:?}"
    );
    assert!(
        listed.iter().all(|n| n["snoozed_until"].is_null()),
        "{listed:?}"
    );
    // 10 seeds (none both archived and snoozed), 6 publishes, 6 collapsed into one
    assert_eq!(listed.len() + snoozed.len(), 17, "{listed:?} {snoozed:?}");
    let collapsed: Vec<&Value> = listed
        .iter()
        .chain(&snoozed)
        .filter(|n| n["collapse_key"] == "k")
        .collect();
    assert_eq!(collapsed.len(), 1, "{collapsed:?}");
    assert_eq!(collapsed[0]["count"], 6);
    let active: Vec<&Value> = listed
        .iter()
        .filter(|n| n["archived_at"].is_null())
        .collect();
    let want = computed_counts(&active);
    let (status, mut counts) = h.get("/notifications/counts", token).await;
    assert_eq!(status, 200, "{counts}");
    counts.as_object_mut().unwrap().remove("position");
    assert_eq!(counts, want);
    let want_pair = (want["unread"].as_u64(), want["unseen"].as_u64());
    for query in ["", "?archived=only", "?snoozed=only", "?unread=true"] {
        let page = h.list(token, query).await;
        assert_eq!(counts_of(&page), want_pair, "{query}");
    }
    // the last change event carries the same counts; so does a new stream's ready
    let mut last = None;
    let mut positions = Vec::new();
    while let Some(ev) = sse.try_next(Duration::from_secs(2)).await {
        positions.push(ev.position().1);
        if ev.json().get("unread_count").is_some() {
            last = Some(ev.json());
        }
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order: {positions:?}"
    );
    assert_eq!(counts_of(&last.expect("change events")), want_pair);
    let fresh = h.events(token, "").await;
    assert_eq!(counts_of(&fresh.ready.unwrap().json()), want_pair);
}

async fn page_then_stream_while_publishing(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let total = 40;
    let publisher = {
        let (http, url) = (h.http.clone(), h.url("/publish"));
        tokio::spawn(async move {
            let mut published = Vec::new();
            for i in 0..total {
                let mut n = json!({"title": format!("n{i}")});
                if i % 2 == 0 {
                    n["category"] = json!("even");
                }
                let r = http
                    .post(&url)
                    .bearer_auth(service_token())
                    .json(&json!({"users": ["alice"], "notification": n}))
                    .send()
                    .await
                    .unwrap();
                let (status, body) = status_json(r).await;
                assert_eq!(status, 202, "{body}");
                published.push(body["ids"]["alice"].as_str().unwrap().to_owned());
            }
            published
        })
    };
    // read the page while the publisher runs
    wait_for("nothing published", async || h.tray_len("alice").await >= 5).await;
    let page = h.list(&token, "?limit=200").await;
    let position = page["position"].as_str().unwrap().to_owned();
    let on_page = ids(&page);
    let mut sse = h
        .events(&token, &format!("?last_event_id={position}"))
        .await;
    let published = publisher.await.unwrap();
    let mut streamed = Vec::new();
    let mut last_unread = page["unread_count"].as_u64();
    while on_page.len() + streamed.len() < total {
        let ev = sse.next_event().await;
        assert_eq!(ev.event, "notification", "{ev:?}");
        streamed.push(ev.json()["id"].as_str().unwrap().to_owned());
        last_unread = ev.json()["unread_count"].as_u64();
    }
    let more = sse.try_next(Duration::from_millis(500)).await;
    assert!(more.is_none(), "{more:?}");
    for id in &published {
        let seen = on_page.iter().chain(&streamed).filter(|s| *s == id).count();
        assert_eq!(
            seen, 1,
            "{id}: on the page {on_page:?}, streamed {streamed:?}"
        );
    }
    assert_eq!(last_unread, Some(total as u64));
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(counts["unread"], total);
    assert_eq!(counts["by_category"]["even"]["unread"], total / 2);
}
