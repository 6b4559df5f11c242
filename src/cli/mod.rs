//! The command line: `serve` (default), `token`, `publish`, `health` and `vapid-keys`. Every
//! flag has its `HERALD_*` env twin. The top layer: the clap types (`args.rs`), their value
//! parsers (`values.rs`) and turning them into the library's plain values (`config.rs`:
//! `ServeArgs` → `Config`, `KeyArgs` → `Keys`) live here; nothing below ever sees a clap type.
//! This file parses and runs: usage errors exit with status 2 (clap's usage status), as do
//! start-up errors.

use std::ffi::OsString;
use std::process::ExitCode;

use self::args::{Cli, Command, LogFormat, ServeArgs};
use crate::error::StartupError;

mod args;
mod commands;
mod config;
mod logs;
#[cfg(test)]
mod props;
mod push;
mod values;

/// Parse the command line and run it. A usage error is one line naming the flag, exit 2
/// (`--help` and `--version` print as usual).
pub fn main() -> ExitCode {
    use clap::error::ErrorKind;
    unset_empty_env_twins();
    let args = join_negative_values(std::env::args_os());
    unset_rival_key_env_twins(&args);
    match parse(args) {
        Ok(cli) => run(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald: {}", usage_error(&e));
            ExitCode::from(2)
        }
    }
}

/// Parse, noting for `herald publish` which of `--redis-url` and `--kafka-brokers` were given
/// on the command line rather than by their env twins.
fn parse<T: Into<OsString> + Clone>(args: impl IntoIterator<Item = T>) -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Some(Command::Publish(publish)), Some(given)) =
        (&mut cli.command, matches.subcommand_matches("publish"))
    {
        let typed = |id| given.value_source(id) == Some(ValueSource::CommandLine);
        publish.typed_redis_url = typed("redis_url");
        publish.typed_kafka_brokers = typed("kafka_brokers");
    }
    Ok(cli)
}

/// An env twin set to the empty string counts as unset, as a compose file's `HERALD_UPSTREAM=`
/// or `${REDIS_URL:-}` means (clap would take `""` as the flag's value and refuse it). A flag
/// given empty on the command line is still a bad value. Runs first, before any thread of ours
/// reads the environment.
fn unset_empty_env_twins() {
    let empty: Vec<OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_str().is_some_and(|k| k.starts_with("HERALD_")))
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

/// A key flag on the command line wins over the env twin of its rival, as any flag wins over
/// its own env twin: `--jwt-public-key` beside an exported `HERALD_JWT_SECRET` verifies with
/// the public key (clap would refuse the pair as a conflict). Both on the command line are
/// still refused. Runs with [`unset_empty_env_twins`], before any thread reads the environment.
fn unset_rival_key_env_twins(args: &[OsString]) {
    const RIVALS: [(&str, &[&str]); 3] = [
        (
            "--jwt-secret",
            &["HERALD_JWT_PUBLIC_KEY", "HERALD_JWT_PRIVATE_KEY"],
        ),
        ("--jwt-public-key", &["HERALD_JWT_SECRET"]),
        ("--jwt-private-key", &["HERALD_JWT_SECRET"]),
    ];
    let given = |flag: &str| {
        args.iter().skip(1).take_while(|a| *a != "--").any(|a| {
            a.to_str()
                .and_then(|a| a.strip_prefix(flag))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
    };
    for (flag, twins) in RIVALS {
        if given(flag) {
            for twin in twins {
                std::env::remove_var(twin);
            }
        }
    }
}

/// `--flag -5s` as `--flag=-5s`. A word that starts with `-` and a digit (a negative number or
/// duration) is never a flag, yet clap would report it as an unexpected argument instead of
/// naming the flag whose value it is (`--heartbeat -5s`: "unexpected argument '-5' found").
/// Words after `--` are left alone.
fn join_negative_values(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    let mut rest = false;
    for arg in args {
        let negative = arg.to_str().is_some_and(|a| {
            let mut chars = a.chars();
            chars.next() == Some('-') && chars.next().is_some_and(|c| c.is_ascii_digit())
        });
        let joins = |flag: &OsString| {
            flag.to_str()
                .is_some_and(|f| f.starts_with("--") && f.len() > 2 && !f.contains('='))
        };
        match out.last_mut() {
            Some(flag) if negative && !rest && joins(flag) => {
                flag.push("=");
                flag.push(&arg);
            }
            _ => {
                rest |= arg == "--";
                out.push(arg);
            }
        }
    }
    out
}

/// A clap error as one line: a bad value is quoted as Rust would (clap prints it raw, and a
/// value may hold a line break); anything else is [`one_line`] of clap's own text.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let arg = e.get(ContextKind::InvalidArg);
    let value = e.get(ContextKind::InvalidValue);
    if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (arg, value) {
        if let Some(cause) = std::error::Error::source(e) {
            return format!("invalid value {value:?} for '{arg}': {cause}");
        }
    }
    one_line(&e.render().to_string())
}

/// clap's text in one line: its first line, with its tips and possible values kept
/// (`unexpected argument '--lisen' found (tip: a similar argument exists: '--listen')`).
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut out = first.trim_start_matches("error: ").to_owned();
    // "the following required arguments were not provided:" lists the flags on the lines
    // below, up to the usage line.
    let mut listing = out.ends_with(':');
    for line in lines {
        if listing && !line.starts_with("Usage:") {
            out.push_str(&format!(" {line}"));
            continue;
        }
        listing = false;
        if line.starts_with("tip:") || line.starts_with("[possible values:") {
            out.push_str(&format!(" ({line})"));
        }
    }
    out
}

/// Run the parsed command line; the exit code is 2 for any start-up or usage failure.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(match &cli.command {
        Some(Command::Serve(args)) => args.log_format,
        None => cli.serve.log_format,
        Some(_) => LogFormat::Human,
    });
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => commands::token(&args),
        Some(Command::VapidKeys) => push::vapid_keys(),
        Some(Command::Health(args)) => {
            // Docker reads 1 as unhealthy (2 is reserved there).
            let checked = runtime().and_then(|rt| rt.block_on(commands::health(&args)));
            return match checked {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Command::Publish(args)) => {
            runtime().and_then(|rt| rt.block_on(commands::publish(&args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, also when a cause spans several (a server that is not Redis).
            let message = e.to_string();
            eprintln!(
                "herald: {}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), StartupError> {
    let config = args.config()?;
    runtime()?.block_on(crate::server::serve(config))
}

fn runtime() -> Result<tokio::runtime::Runtime, StartupError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError(format!("cannot start the runtime: {e}")))
}

/// Logs on stderr: human text (colour only on a terminal, and never when `NO_COLOR` is set)
/// or JSON, one object a line. `HERALD_LOG` (or `RUST_LOG`) picks the levels.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // The redis crate logs every retry of a reconnect at warn; its errors are enough, but
        // for its cluster client's, which logs each failed reconnect to a node at error, up to
        // ~900 lines a second in an outage: Herald's link says what matters itself
        // (`herald::redis_conn`). The rdkafka crate logs every failed reconnect at error: the
        // Kafka consumer says what matters itself (`herald::ingest::kafka`, librdkafka's own
        // lines at debug).
        .unwrap_or_else(|_| {
            EnvFilter::new(
                "info,redis=error,redis::cluster_handling=off,rdkafka=off,librdkafka=off",
            )
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .event_format(logs::FlatJson::new())
            .try_init(),
        LogFormat::Human => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .try_init()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A negative value is joined to the flag before it, so clap's error names that flag.
    #[test]
    fn negative_values_join_their_flag() {
        let joined = |args: &[&str]| -> Vec<String> {
            join_negative_values(args.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            joined(&["herald", "--heartbeat", "-5s", "--dev"]),
            ["herald", "--heartbeat=-5s", "--dev"]
        );
        assert_eq!(
            joined(&["herald", "--heartbeat=1s", "-5", "-x", "--", "--a", "-1"]),
            ["herald", "--heartbeat=1s", "-5", "-x", "--", "--a", "-1"]
        );
        assert_eq!(joined(&["herald", "--a", "-v"]), ["herald", "--a", "-v"]);
        let err = parse(joined(&["herald", "--heartbeat", "-5s"])).unwrap_err();
        assert!(err.to_string().contains("--heartbeat"), "{err}");
    }
}
