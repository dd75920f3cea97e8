//! The `pophook` command: parses arguments, sets up logging, loads the configuration
//! and hands over to `pophook::service`. Signals become a shutdown value here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use pophook::secret::Secret;
use pophook::state::{Record, State};
use pophook::{config, parked, receive, service, shutdown, webhook};

#[derive(Parser)]
#[command(
    name = "pophook",
    version,
    about = "Turns POP3 mailboxes into webhooks"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "POPHOOK_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// YAML configuration file; `POPHOOK_*` environment variables override it.
    #[arg(long, env = "POPHOOK_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Poll every mailbox until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// One cycle over every mailbox; exit 0 only if everything fetched was delivered.
    Once(ConfigArg),
    /// Validate the configuration and log in to each mailbox; changes nothing.
    Check(ConfigArg),
    /// A debug webhook receiver: verifies signatures, prints each event, answers 204.
    Receive(ReceiveArgs),
    /// Messages whose retries ran out: they stay on the server until replayed or dropped.
    #[command(subcommand)]
    Parked(ParkedCommand),
}

#[derive(Subcommand)]
enum ParkedCommand {
    /// List parked messages, oldest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mailbox: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deliver parked messages now (all, or the given ids); deleted after a 2xx as usual.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        mailbox: Option<String>,
        /// Event ids (`msg_...`, as in `parked list`); none means every parked message.
        ids: Vec<String>,
    },
    /// Stop tracking parked messages: never posted, left on the server.
    Drop {
        #[command(flatten)]
        config: ConfigArg,
        /// Event ids (`msg_...`, as in `parked list`).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Standard Webhooks secret (`whsec_...`); events with a bad signature get 401.
    #[arg(long, env = "POPHOOK_RECEIVE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Print each whole event as JSON instead of a summary line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let config = config::load(args.config.as_deref())?;
            let grace = config.shutdown_timeout;
            let (trigger, shutdown) = shutdown::channel();
            let mut service = tokio::spawn(service::run(config, shutdown));
            tokio::select! {
                joined = &mut service => {
                    // The service only returns early on a startup error (state locked...).
                    joined.context("the service task failed")??;
                    return Ok(ExitCode::SUCCESS);
                }
                _ = wait_for_signal() => {}
            }
            tracing::info!("shutting down: finishing the message in hand");
            trigger.trigger();
            match tokio::time::timeout(grace, service).await {
                Ok(joined) => joined.context("the service task failed")??,
                Err(_) => anyhow::bail!(
                    "shutdown took longer than `shutdown_timeout` ({grace:?}); exiting without waiting further (nothing unacknowledged was deleted)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Once(args) => {
            let config = config::load(args.config.as_deref())?;
            let outcomes = service::once(&config).await?;
            let ok = outcomes.iter().all(|o| o.is_success());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Receive(args) => {
            let signing_key = args
                .secret
                .map(|s| webhook::signing_key(&Secret::new(s)))
                .transpose()
                .map_err(|reason| anyhow::anyhow!("--secret: {reason}"))?;
            let listener = receive::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            eprintln!(
                "receiving webhooks on http://{}/ ({})",
                args.listen,
                if signing_key.is_some() {
                    "verifying signatures"
                } else {
                    "signatures not checked"
                }
            );
            let (trigger, shutdown) = shutdown::channel();
            let options = receive::ReceiveOptions {
                signing_key,
                json: args.json,
            };
            let server = tokio::spawn(receive::serve(listener, options, shutdown));
            wait_for_signal().await;
            trigger.trigger();
            server.await.context("the receiver task failed")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Parked(command) => parked_command(command).await,
        Command::Check(args) => {
            let config = config::load(args.config.as_deref())?;
            println!("configuration: ok ({} mailboxes)", config.mailboxes.len());
            let mut ok = true;
            for report in service::check(&config).await {
                match report.result {
                    Ok(details) => println!(
                        "{}: ok, {} — {} messages, {} octets; capabilities: {}",
                        report.mailbox,
                        report.address,
                        details.messages,
                        details.octets,
                        details.capabilities.join(", ")
                    ),
                    Err(error) => {
                        ok = false;
                        println!("{}: FAILED, {} — {error}", report.mailbox, report.address);
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn parked_command(command: ParkedCommand) -> anyhow::Result<ExitCode> {
    match command {
        ParkedCommand::List {
            config,
            mailbox,
            json,
        } => {
            let config = config::load(config.config.as_deref())?;
            let state = State::open(&config.state_dir)?;
            let messages = parked::list(&state, mailbox.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&messages)?);
            } else if messages.is_empty() {
                println!("no parked messages");
            } else {
                println!(
                    "{:<36}  {:<16}  {:>8}  {:<20}  LAST ERROR",
                    "ID", "MAILBOX", "ATTEMPTS", "PARKED AT"
                );
                for m in &messages {
                    println!(
                        "{:<36}  {:<16}  {:>8}  {:<20}  {}",
                        m.id,
                        m.mailbox,
                        m.attempts,
                        format_unix(m.parked_at),
                        m.last_error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ParkedCommand::Replay {
            config,
            mailbox,
            ids,
        } => {
            let config = config::load(config.config.as_deref())?;
            let (selected, outcomes) = service::replay(&config, mailbox.as_deref(), &ids).await?;
            if selected.is_empty() {
                println!("no parked messages to replay");
                return Ok(ExitCode::SUCCESS);
            }
            let state = State::open(&config.state_dir)?;
            let mut ok = true;
            for m in &selected {
                let status = state.get(&m.mailbox, &m.uidl)?;
                let delivered = matches!(
                    status,
                    Some(Record::Delivered { .. } | Record::Announced { .. }) | None
                );
                ok &= delivered;
                let what = status.map_or("delivered and deleted", |r| r.status());
                println!("{} [{}]: {what}", m.id, m.mailbox);
            }
            ok &= outcomes.iter().all(|o| o.result.is_ok());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ParkedCommand::Drop { config, ids } => {
            let config = config::load(config.config.as_deref())?;
            let state = State::open(&config.state_dir)?;
            let selected = parked::select(&state, None, &ids)?;
            parked::drop(&state, &selected).await?;
            for m in &selected {
                println!(
                    "{} [{}]: dropped; it stays on the server and is never posted",
                    m.id, m.mailbox
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn format_unix(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
