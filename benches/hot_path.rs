//! Hot-path micro-benchmarks (criterion), no sockets: what one publish costs per change and
//! per recipient inside Herald. Encoding a change's SSE frame (once per change, shared by
//! every stream of the user), building one recipient's notification JSON from the publish's
//! template, the memory store's publish to a 1k-user group (ids, tray inserts, change log,
//! frame, hub lookup; no stream is open, so no queue is touched), and parsing a change message
//! as a node's broker reads it from Redis; routing a change through the hub to 1k users'
//! streams (sinks that only count), and writing one frame to a socket as a stream on the
//! socket transport does (one vectored write, chunk-framed; a thread drains the other end); and
//! verifying a publisher's HS256 token, the first time and once kept. Run:
//! `cargo bench --features bench-internals --bench hot_path`.
//! The feature exposes `herald::bench`, re-exports of the internals measured here; without it
//! (`cargo test --all-targets`) this bench is skipped, so `scripts/test` runs it once with the
//! feature (`cargo test --features bench-internals --bench hot_path`).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::bench::{
    encode_change, new_ids, Change, ChangeKind, Checks, Delivery, EndReason, Epoch, Hub, ItemState,
    Keys, MemoryStore, Message, Metrics, NotificationInput, Output, Recipient, Sink, Template,
};

const GROUP: usize = 1000;

fn template() -> Template {
    let input: NotificationInput = serde_json::from_value(serde_json::json!({
        "title": "Build finished", "body": "All green on main", "source": "ci",
        "link": "https://ci.example/42", "data": {"build": 42, "tags": ["a", "b"]},
    }))
    .expect("a valid notification");
    Template::new(&input, Default::default(), SystemTime::now()).expect("a template")
}

fn change(template: &Template) -> Change {
    let id = new_ids(1).next().expect("an id");
    Change {
        epoch: Epoch::parse("3f9a0c12d4e1").expect("an epoch"),
        seq: 1234,
        kind: ChangeKind::Notification,
        data: template.json(id.as_str(), "user-000123", &ItemState::default()),
        at_ms: 1_764_000_000_000,
    }
}

fn encode_once(c: &mut Criterion) {
    let change = change(&template());
    c.bench_function("sse::frame::change (a notification)", |b| {
        b.iter(|| encode_change(black_box(&change)))
    });
}

fn recipient_json(c: &mut Criterion) {
    let template = template();
    let id = new_ids(1).next().expect("an id");
    c.bench_function("Template::json (one recipient)", |b| {
        let fresh = ItemState::default();
        b.iter(|| template.json(black_box(id.as_str()), black_box("user-000123"), &fresh))
    });
}

/// Each sample publishes to a fresh store whose 1k trays exist already (so the log of a tray
/// holds at most one sample's changes), and times only the publishes.
fn memory_publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let template = Arc::new(template());
    let users: Vec<String> = (0..GROUP).map(|i| format!("user-{i:06}")).collect();
    let recipients = || -> Vec<Recipient<'_>> {
        users
            .iter()
            .zip(new_ids(GROUP))
            .map(|(user, id)| Recipient { user, id })
            .collect()
    };
    let mut group = c.benchmark_group("MemoryStore::publish");
    group.throughput(Throughput::Elements(GROUP as u64));
    group.bench_function("1k-user group", |b| {
        b.iter_custom(|iters| {
            let store = MemoryStore::new(Hub::new("bench".into(), Metrics::default()), 100, false);
            runtime.block_on(store.publish(&template, &recipients(), None));
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let batch = recipients();
                let outcomes = runtime.block_on(store.publish(&template, &batch, None));
                spent += started.elapsed();
                black_box(outcomes);
            }
            spent
        })
    });
    group.finish();
}

fn parse_message(c: &mut Criterion) {
    let text = Message::Change(change(&template())).encode();
    c.bench_function("broker::Message::parse (a change)", |b| {
        b.iter(|| Message::parse(black_box(&text)))
    });
}

/// A stream that only counts what it is handed: the hub's share of a delivery.
#[derive(Default)]
struct Counting(AtomicU64);

impl Sink for Counting {
    fn deliver(&self, _: &Delivery) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn end(&self, _: EndReason) {}
    fn catch_up(&self) {}
    fn tick(&self, _: tokio::time::Instant) -> Option<tokio::time::Instant> {
        None
    }
}

fn route(c: &mut Criterion) {
    let hub = Hub::new("bench".into(), Metrics::default());
    let users: Vec<String> = (0..GROUP).map(|i| format!("user-{i:06}")).collect();
    for user in &users {
        let id = hub.next_id();
        hub.register(
            user,
            (None, None),
            64,
            id,
            std::time::SystemTime::now(),
            Arc::new(Counting::default()),
        );
    }
    let delivery = Delivery::new(&change(&template()));
    let mut group = c.benchmark_group("Hub::dispatch");
    group.throughput(Throughput::Elements(GROUP as u64));
    group.bench_function("1k users, one stream each", |b| {
        b.iter(|| users.iter().for_each(|u| hub.dispatch(u, &delivery)))
    });
    group.finish();
}

/// One frame written to a socket as the socket transport writes it; the peer is drained by
/// a thread, so the socket never backs up.
fn write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut out = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        std::thread::spawn(move || std::io::copy(&mut &peer, &mut std::io::sink()));
        let mut out = Output::body();
        out.attach(Arc::new(server), true);
        out
    });
    let frame = encode_change(&change(&template()));
    c.bench_function("Output::send (one chunk to a socket)", |b| {
        b.iter(|| {
            let _guard = runtime.enter();
            if out.is_backed_up() {
                out.flush();
            }
            out.send(black_box(frame.clone()))
        })
    });
}

/// A publisher's token verified for the first time (signature and parse) and once kept.
fn verify(c: &mut Criterion) {
    let secret = b"bench-secret";
    let claims = serde_json::json!({"sub": "billing", "scope": "publish", "exp": 4_102_444_800u64});
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token");
    let mut group = c.benchmark_group("Keys::verify (HS256)");
    group.bench_function("first time", |b| {
        b.iter_batched(
            || Keys::secret(secret, Checks::default()),
            |keys| keys.verify(black_box(&token)).expect("valid"),
            criterion::BatchSize::SmallInput,
        )
    });
    let keys = Keys::secret(secret, Checks::default());
    group.bench_function("kept", |b| {
        b.iter(|| keys.verify(black_box(&token)).expect("valid"))
    });
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = encode_once, recipient_json, memory_publish, parse_message, route, write, verify
}
criterion_main!(hot_path);
