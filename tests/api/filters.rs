//! Listing filters combined: `category=a,b` with `archived`, `snoozed`, `unread` and `unseen`;
//! the counts ignore the filter; a filtered listing pages with its cursor and keeps one
//! position; `GET /notifications/counts` per category counts active notifications only.

use serde_json::json;

use crate::both_modes;
use crate::common::*;

both_modes!(
    filters_combine_and_counts_ignore_them,
    a_category_with_a_comma_is_filtered_by_its_encoded_name,
);

/// Publish `title` (in `category` when given) to alice; its id.
async fn publish_in(h: &Herald, title: &str, category: Option<&str>) -> String {
    let mut n = json!({"title": title});
    if let Some(c) = category {
        n["category"] = json!(c);
    }
    let (status, body) = h
        .publish(json!({"users": ["alice"], "notification": n}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["ids"]["alice"].as_str().unwrap().to_owned()
}

async fn filters_combine_and_counts_ignore_them(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let b1 = publish_in(&h, "b1", Some("builds")).await;
    let b2 = publish_in(&h, "b2", Some("builds")).await;
    let c1 = publish_in(&h, "c1", Some("chat")).await;
    let d1 = publish_in(&h, "d1", Some("deploy")).await;
    let n1 = publish_in(&h, "n1", None).await;
    for (id, change) in [
        (&b2, json!({"archived": true})),
        (&c1, json!({"snoozed_until": in_secs(3600)})),
        (&d1, json!({"read": true})),
    ] {
        let (status, body) = h
            .patch(&format!("/notifications/{id}"), &token, change)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // active: b1, d1 (read), n1
    let want_counts = (Some(2), Some(2));
    let cases: [(&str, Vec<&String>); 10] = [
        ("?category=builds", vec![&b1]),
        ("?category=builds,chat", vec![&b1]),
        ("?category=builds,chat&archived=include", vec![&b2, &b1]),
        ("?category=builds&archived=only", vec![&b2]),
        ("?category=builds,chat&snoozed=only", vec![&c1]),
        ("?category=deploy", vec![&d1]),
        ("?category=deploy&unread=true", vec![]),
        ("?category=nope", vec![]),
        ("?unseen=true", vec![&n1, &b1]),
        ("?unread=true&archived=include", vec![&n1, &b2, &b1]),
    ];
    for (query, want) in cases {
        let page = h.list(&token, query).await;
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(ids(&page), want, "{query}");
        assert_eq!(counts_of(&page), want_counts, "{query}");
    }
    // a filtered listing pages with its cursor; every page has the same position
    let mut builds = vec![b1.clone()];
    for i in 3..=5 {
        builds.insert(0, publish_in(&h, &format!("b{i}"), Some("builds")).await);
    }
    let (mut listed, mut positions, mut before) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = h
            .list(&token, &format!("?category=builds&limit=2{before}"))
            .await;
        listed.extend(ids(&page));
        positions.push(page["position"].clone());
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    assert_eq!(listed, builds);
    assert!(positions.len() >= 2, "{positions:?}");
    assert!(
        positions.iter().all(|p| *p == positions[0]),
        "{positions:?}"
    );
    // per category: active notifications only (chat is snoozed, b2 archived)
    let (_, counts) = h.get("/notifications/counts", &token).await;
    assert_eq!(
        (counts["unread"].clone(), counts["unseen"].clone()),
        (json!(5), json!(5))
    );
    assert_eq!(
        counts["by_category"]["builds"],
        json!({"unread": 4, "unseen": 4})
    );
    assert!(counts["by_category"].get("chat").is_none(), "{counts}");
    assert_eq!(counts["position"], positions[0]);
    // deploy's one active notification is read: listed, with zeros
    assert_eq!(
        counts["by_category"]["deploy"],
        json!({"unread": 0, "unseen": 0}),
        "{counts}"
    );
}

/// `category` is a comma list: a category with a comma in it is named with the comma encoded
/// (`%2C`), and the plain comma still separates categories.
async fn a_category_with_a_comma_is_filtered_by_its_encoded_name(mode: Mode) {
    let h = Setup::new(mode, &[]);
    let token = user_token("alice");
    let both = publish_in(&h, "both", Some("ops,alerts")).await;
    let ops = publish_in(&h, "ops", Some("ops")).await;
    for (query, want) in [
        ("?category=ops%2Calerts", vec![&both]),
        ("?category=ops,alerts", vec![&ops]),
        ("?category=ops%2Calerts,ops", vec![&ops, &both]),
    ] {
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(ids(&h.list(&token, query).await), want, "{query}");
    }
}
