//! The race (issue #9): the same scenarios against Herald and against nchan (nginx +
//! `libnginx-mod-nchan`, config in `benches/nchan/`), in embedded/memory mode and in Redis
//! mode, in one run, printed as one markdown table per mode (figure | nchan | Herald |
//! Herald/nchan) plus raw lines. Run it with `scripts/bench` (installs what it needs), or
//! `cargo bench --bench race -- [--scenario idle,max,targeted,ingest,group,broadcast,storm]
//! [--target herald|nchan] [--mode embedded|redis] [--streams N] [--storm N] [--max N]`.
//!
//! Without the `--bench` flag that `cargo bench` passes (under `cargo test --all-targets`) it
//! makes a smoke run: Herald embedded only, a few dozen streams, every scenario at toy size,
//! done in seconds. The streams are held by worker processes (this binary again, with
//! `--worker`; see `race/worker.rs`), so the load can pass one process's 20,000 open files.
//! `RACE_HERALD=path` runs another herald binary than the one cargo built with the bench;
//! `RACE_KEEP_LOGS=1` keeps the servers' logs (kept anyway when a phase fails).
//! Every wait is bounded; nothing here fails on timing.

#[path = "race/capacity.rs"]
mod capacity;
#[path = "race/fleet.rs"]
mod fleet;
#[path = "race/hist.rs"]
mod hist;
#[path = "race/procs.rs"]
mod procs;
#[path = "race/publish.rs"]
mod publish;
#[path = "race/report.rs"]
mod report;
#[path = "race/scenarios.rs"]
mod scenarios;
#[path = "race/stage.rs"]
mod stage;
#[path = "race/state.rs"]
mod state;
#[path = "race/stream.rs"]
mod stream;
#[path = "race/wire.rs"]
mod wire;
#[path = "race/worker.rs"]
mod worker;

use stage::{Config, Mode, Sizes};
use stream::Kind;

fn main() {
    procs::raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--worker") {
        worker::main(&args);
        return;
    }
    let config = config(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tables = runtime.block_on(race(&config));
    println!();
    for table in &tables {
        println!("{}", table.markdown());
    }
    if tables.iter().any(report::Table::failed) || std::env::var_os("RACE_KEEP_LOGS").is_some() {
        println!("logs kept in {}", config.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&config.dir);
    }
}

/// The value after `--name`, if given.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn number(args: &[String], name: &str) -> Option<usize> {
    flag(args, name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
    })
}

fn config(args: &[String]) -> Config {
    let full = args.iter().any(|a| a == "--bench");
    let mut sizes = if full { Sizes::full() } else { Sizes::smoke() };
    sizes.streams = number(args, "--streams").unwrap_or(sizes.streams);
    sizes.storm = number(args, "--storm").unwrap_or(sizes.storm);
    sizes.max_cap = number(args, "--max").unwrap_or(sizes.max_cap);
    let list = |name: &str| -> Vec<String> {
        flag(args, name).map_or(Vec::new(), |v| v.split(',').map(str::to_owned).collect())
    };
    let targets = match (full, list("--target").as_slice()) {
        (false, _) => vec![Kind::Herald],
        (true, [one]) if one == "herald" => vec![Kind::Herald],
        (true, [one]) if one == "nchan" => vec![Kind::Nchan],
        // Herald first, so its rows (some are Herald-only) set the table's order.
        _ => vec![Kind::Herald, Kind::Nchan],
    };
    let modes = match (full, list("--mode").as_slice()) {
        (false, _) => vec![Mode::Embedded],
        (true, [one]) if one == "embedded" => vec![Mode::Embedded],
        (true, [one]) if one == "redis" => vec![Mode::Redis],
        _ => vec![Mode::Embedded, Mode::Redis],
    };
    let dir = std::env::temp_dir().join(format!("herald-race-{}", std::process::id()));
    Config {
        sizes,
        scenarios: list("--scenario"),
        targets,
        modes,
        // RACE_HERALD: another build of herald (say, the release one under a debug bench).
        herald: std::env::var("RACE_HERALD").unwrap_or(env!("CARGO_BIN_EXE_herald").to_owned()),
        secret: "race-secret".to_owned(),
        dir,
    }
}

async fn race(config: &Config) -> Vec<report::Table> {
    if config.sizes.per_worker < 1000 {
        println!(
            "smoke run (no --bench flag): Herald embedded only, toy sizes, numbers not meaningful"
        );
    }
    let mut tables = Vec::new();
    for &mode in &config.modes {
        let title = format!(
            "{} mode ({} streams)",
            mode.name(),
            report::thousands(config.sizes.streams as u64)
        );
        let mut table = report::Table::new(title);
        for &kind in &config.targets {
            let mut out = scenarios::Out {
                table: &mut table,
                kind,
                mode,
            };
            scenarios::run_target(config, &mut out).await;
        }
        tables.push(table);
    }
    tables
}
