//! The command line: `serve` (default), `token` and `publish`. Every flag has its `HERALD_*`
//! env twin. Parsing errors exit with status 2 (clap's usage status), as do start-up errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use url::Url;

use crate::config::{parse_cidr, parse_duration, Config};

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Real-time notification edge server")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a JWT signed with the configured key.
    Token(TokenArgs),
    /// Publish a notification, like POST /publish.
    Publish(PublishArgs),
}

/// Key material and token checks, shared by every sub-command.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// HS256 secret.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file (RS256 or ES256) instead of a secret.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[arg(long, env = "HERALD_JWT_LEEWAY", default_value = "0s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Redis URL; `redis+cluster://h1:p,h2:p` or a repeated flag for Redis Cluster. None: embedded mode.
    #[arg(long, env = "HERALD_REDIS_URL")]
    pub redis_url: Vec<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Development mode: random secret if none, cookies without Secure, demo page at `/`.
    #[arg(long, env = "HERALD_DEV")]
    pub dev: bool,
    /// Origin allowed for CORS and cookie-authenticated writes (repeatable).
    #[arg(long, env = "HERALD_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Backend base URL for the `/api/` reverse proxy.
    #[arg(long, env = "HERALD_UPSTREAM")]
    pub upstream: Option<Url>,
    /// Notifications older than this are purged.
    #[arg(long, env = "HERALD_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// A user's tray keeps at most this many notifications (oldest dropped).
    #[arg(long, env = "HERALD_MAX_PER_USER", default_value_t = 1000)]
    pub max_per_user: usize,
    /// Interval of SSE `: ping` comment lines.
    #[arg(long, env = "HERALD_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Time to the upstream's response headers before 504.
    #[arg(long, env = "HERALD_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// CIDR whose X-Forwarded-For/-Proto are believed (repeatable).
    #[arg(long, env = "HERALD_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxy: Vec<IpNet>,
    /// Prefix Herald is mounted under behind a proxy.
    #[arg(long, env = "HERALD_BASE_PATH", default_value = "/")]
    pub base_path: String,
    /// Longest time one write to a client may stay blocked (it does not read) before the
    /// connection is closed, like nginx's `send_timeout`.
    #[arg(long, env = "HERALD_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,
    /// Longest time to receive a whole JSON request body before 408 `request_timeout`.
    #[arg(long, env = "HERALD_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Only these client CIDRs may read `/metrics` (repeatable; default: any address).
    #[arg(long, env = "HERALD_METRICS_ALLOW", value_delimiter = ',', value_parser = parse_cidr)]
    pub metrics_allow: Vec<IpNet>,
    /// Longest SIGTERM drain before exit.
    #[arg(long, env = "HERALD_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Further streams of a user beyond this get 429 too_many_streams.
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_USER", default_value_t = 64)]
    pub max_streams_per_user: usize,
    /// New connections per second per client address (0: off).
    #[arg(long, env = "HERALD_MAX_CONNECT_RATE", default_value_t = 0)]
    pub max_connect_rate: u32,
    /// This node's name in presence and logs (default: random).
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The `sub` claim (user id).
    #[arg(long)]
    pub sub: Option<String>,
    /// The `scope` claim, e.g. `publish`.
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The `sid` claim (session id for Bearer-authenticated streams).
    #[arg(long)]
    pub sid: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Recipient user (repeatable).
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Recipient group (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    #[arg(long)]
    pub title: String,
    #[arg(long)]
    pub body: Option<String>,
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long)]
    pub link: Option<String>,
    /// A JSON object attached as `data`.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Herald to send `POST /publish` to when no `--redis-url` is given.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: Url,
    /// Write through Redis directly instead of calling a running Herald.
    #[arg(long, env = "HERALD_REDIS_URL")]
    pub redis_url: Vec<String>,
    #[arg(long, env = "HERALD_MAX_PER_USER", default_value_t = 1000)]
    pub max_per_user: usize,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Parse the command line and run it. A usage error is one line naming the flag, exit 2
/// (`--help` and `--version` print as usual).
pub fn main() -> ExitCode {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("herald: {}", line.trim_start_matches("error: "));
            ExitCode::from(2)
        }
    }
}

/// Run the parsed command line; the exit code is 2 for any start-up or usage failure.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => crate::commands::token(&args),
        Some(Command::Publish(args)) => {
            runtime().and_then(|rt| rt.block_on(crate::commands::publish(&args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), crate::config::StartupError> {
    let config = Config::from_args(&args)?;
    runtime()?.block_on(crate::server::serve(config))
}

fn runtime() -> Result<tokio::runtime::Runtime, crate::config::StartupError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::config::StartupError(format!("cannot start the runtime: {e}")))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // The redis crate logs every retry of a reconnect at warn; its errors are enough.
        .unwrap_or_else(|_| EnvFilter::new("info,redis=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
