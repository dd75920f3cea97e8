//! The `pophook` command: parses arguments, sets up logging, loads the configuration
//! and hands over to `pophook::service`. Signals become a shutdown value here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use pophook::delivery::signing;
use pophook::ops::manage::{self, Manager};
use pophook::ops::{receive, shard, status};
use pophook::watchdog::Watchdog;
use pophook::{config, service, shutdown};

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
    /// YAML configuration file [default: /etc/pophook/config.yaml if it exists];
    /// `POPHOOK_*` environment variables override it.
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
    /// A debug webhook receiver: verifies signatures, prints one line per message in any
    /// `webhook.format`, answers 204.
    Receive(ReceiveArgs),
    /// Messages whose retries ran out: they stay on the server until replayed or dropped.
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Per mailbox: last cycle, its result, delivered total, retries, parked, last error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a new ed25519 key pair for `v1a` signatures: the `whsk_` secret key for
    /// `webhook.secret`, and the `whpk_` public key receivers verify with.
    Keygen,
    /// GET the running service's /healthz: exit 0 on 200, 1 otherwise (for HEALTHCHECK).
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// The URL to check instead of `http://<http.listen>/healthz`.
        #[arg(long)]
        url: Option<String>,
    },
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
    /// Keys to verify with: a `whsec_...` secret (`v1` signatures) or a `whpk_...`
    /// public key (`v1a`); repeat it or separate keys with commas to accept any of
    /// several. Events without a matching signature get 401.
    #[arg(
        long,
        env = "POPHOOK_RECEIVE_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    secret: Vec<String>,
    /// Print each whole event as JSON instead of a summary line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Everything pophook writes is its state (sled's files, snapshots written later
    // by flushes, the marker): private to its user from the moment it is created,
    // whatever umask the supervisor passed on.
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    // glibc gives each thread that allocates an arena of its own, each keeping the
    // memory it once held: with 100,000 remembered UIDLs the extra arenas held 17 MiB
    // of an idle service's RSS (BENCHMARKS.md, scenario 5; two arenas kept it too).
    // pophook's few threads wait on the network, not on malloc.
    // Fixed thresholds, because glibc's sliding ones keep what a cycle frees: once the
    // ledger's growing map (megabytes) was freed, every later block up to its size came
    // from the heap, and up to twice that stayed there unused; each cycle's listing of
    // 100,000 UIDLs (a few MiB) then stayed resident between cycles. Blocks from 256 KiB
    // are mapped and given back when freed, and more than 1 MiB free at the heap's top
    // is returned: 5 MiB less peak RSS in scenario 5 (BENCHMARKS.md).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Never wait on a task or thread that is stuck (a hung flush, a silent server):
    // whatever is still running after the command ended is abandoned.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Ends the process `after` from now, whatever is still running: SIGTERM must end
/// pophook within `shutdown_timeout` even when a dependency hangs. A real thread, so a
/// frozen async runtime cannot hold it up.
fn exit_after(after: Duration) {
    let _ = std::thread::Builder::new()
        .name("pophook-exit".into())
        .spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "error: shutdown took longer than `shutdown_timeout` ({after:?}); exiting now (nothing unacknowledged was deleted)"
            );
            std::process::exit(1);
        });
}

/// Starts `watchdog`'s thread, which ends the process (status 70) when the state
/// stalls for good, so that a supervisor or the next cron run starts afresh instead
/// of a silent freeze: `run`, `once`, and `status`/`parked` on a state opened here.
fn watched(watchdog: Watchdog) -> Watchdog {
    watchdog.spawn(|_reason| std::process::exit(pophook::watchdog::EXIT_CODE));
    watchdog
}

/// Opens the state for `status` and `parked`, watched like the service's when it is
/// opened here (a replay runs cycles on it; a drop flushes it).
fn manager(config: &config::Config) -> Result<Manager, manage::ManageError> {
    let manager = Manager::open(&config.state_dir, config.http.as_ref())?;
    if let Manager::Local(ledger) = &manager {
        watched(ledger.watchdog().clone());
    }
    Ok(manager)
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let config = config::load(args.config.as_deref())?;
            let grace = config.shutdown_timeout;
            let (trigger, shutdown) = shutdown::channel();
            let watchdog = watched(Watchdog::default());
            let path = args.config.clone();
            let (reload, reloader) = service::reloader(move || config::load(path.as_deref()));
            tokio::spawn(reload_on_sighup(reload.clone()));
            let mut service = tokio::spawn(service::run_watched(
                config,
                shutdown,
                watchdog.clone(),
                Some((reload, reloader)),
            ));
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
            exit_after(grace + Duration::from_secs(1));
            match tokio::time::timeout(grace, service).await {
                Ok(joined) => joined.context("the service task failed")??,
                Err(_) => anyhow::bail!(
                    "shutdown took longer than `shutdown_timeout` ({grace:?}); exiting without waiting further (nothing unacknowledged was deleted)"
                ),
            }
            let abandoned = watchdog.abandoned_work();
            if !abandoned.is_empty() {
                // Each was logged as it was cut; this line is why the status is 1.
                tracing::error!(
                    abandoned = ?abandoned,
                    "shutdown abandoned {} unfinished POST(s) when `shutdown_timeout` ran out; those messages stay on the server and are posted again (same webhook-id) after restart; exiting with status 1",
                    abandoned.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Once(args) => {
            let config = config::load(args.config.as_deref())?;
            let outcomes = service::once_watched(&config, watched(Watchdog::default())).await?;
            let ok = outcomes.iter().all(|o| o.is_success());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Receive(args) => {
            let keys = args
                .secret
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| signing::VerifyingKey::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| anyhow::anyhow!("--secret: {reason}"))?;
            let listener = receive::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            eprintln!(
                "receiving webhooks on http://{}/ ({})",
                args.listen,
                match keys.len() {
                    0 => "signatures not checked".to_string(),
                    1 => "verifying signatures".to_string(),
                    n => format!("verifying signatures with any of {n} keys"),
                }
            );
            let (trigger, shutdown) = shutdown::channel();
            let options = receive::ReceiveOptions {
                keys,
                json: args.json,
            };
            let server = tokio::spawn(receive::serve(listener, options, shutdown));
            wait_for_signal().await;
            trigger.trigger();
            server.await.context("the receiver task failed")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Parked(command) => parked_command(command).await,
        Command::Keygen => {
            let (secret, public) = signing::keygen();
            println!("# webhook.secret (private: pophook signs with it; keep it like a password)");
            println!("{}", secret.expose());
            println!("# public key for receivers (e.g. pophook receive --secret whpk_...)");
            println!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let config = config::load(args.config.as_deref())?;
            let total = config.mailboxes.len() + config.other_shards.len();
            let shard_note = match config.shard {
                Some(shard) => format!("; shard {shard} polls {}", config.mailboxes.len()),
                None => String::new(),
            };
            println!("configuration: ok ({total} mailboxes{shard_note})");
            let owner = |name: &str| match config.shard {
                Some(s) => format!(" [shard {}/{}]", shard::owner(name, s.count), s.count),
                None => String::new(),
            };
            let mut ok = true;
            for report in service::check(&config).await {
                let owner = owner(&report.mailbox);
                // Which format goes where, so a wrong `format` shows before mail moves;
                // the URL prints without credentials or query.
                let webhook = config
                    .mailboxes
                    .iter()
                    .find(|m| m.name == report.mailbox)
                    .map(|m| {
                        format!(
                            "; webhook: {} to {}{}",
                            m.webhook.format.name(),
                            m.webhook.url,
                            if m.webhook.basic_auth.is_some() {
                                " with basic auth"
                            } else {
                                ""
                            }
                        )
                    })
                    .unwrap_or_default();
                match report.result {
                    Ok(details) => println!(
                        "{}{owner}: ok, {} — {} messages, {} octets; capabilities: {}{webhook}",
                        report.mailbox,
                        report.address,
                        details.messages,
                        details.octets,
                        details.capabilities.join(", ")
                    ),
                    Err(error) => {
                        ok = false;
                        println!(
                            "{}{owner}: FAILED, {} — {error}{webhook}",
                            report.mailbox, report.address
                        );
                    }
                }
            }
            // A small put and delete under the prefix: what delivery needs of the store.
            if let Some(storage) = &config.storage {
                match storage.check().await {
                    Ok(()) => println!(
                        "storage: ok, {} (put and deleted a test object)",
                        storage.describe()
                    ),
                    Err(error) => {
                        ok = false;
                        println!("storage: FAILED — {error}");
                    }
                }
            }
            if let Some(shard) = config.shard {
                for (name, index) in &config.other_shards {
                    println!(
                        "{name} [shard {index}/{}]: polled by another instance, not checked here",
                        shard.count
                    );
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { config, json } => {
            let config = config::load(config.config.as_deref())?;
            let manager = manager(&config)?;
            let report = manager.status(&config.mailboxes, config.shard).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let source = match (&config.http, report.running) {
                    (Some(http), true) => {
                        format!("running (read from {})", http.local_url("/api/status"))
                    }
                    _ => format!("not running (read from {})", config.state_dir.display()),
                };
                let shard = report
                    .shard
                    .as_deref()
                    .map(|s| format!(", shard {s}"))
                    .unwrap_or_default();
                println!("pophook {source}{shard}\n");
                print!(
                    "{}",
                    status::table(&report.mailboxes, pophook::ledger::now())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { config, url } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let config = config::load(config.config.as_deref())?;
                    let Some(http) = config.http else {
                        anyhow::bail!("`http.listen` is not configured, so there is no /healthz to check; set it (e.g. POPHOOK_HTTP__LISTEN=127.0.0.1:9090) or pass --url");
                    };
                    http.local_url("/healthz")
                }
            };
            match manage::healthcheck(&url).await {
                Ok(message) => {
                    println!("{message}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(message) => {
                    println!("{message}");
                    Ok(ExitCode::FAILURE)
                }
            }
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
            let messages = manager(&config)?.parked(mailbox.as_deref()).await?;
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
            let manager = manager(&config)?;
            let running = manager.is_running();
            let offline = async |ledger| {
                service::replay(&config, ledger, mailbox.as_deref(), &ids)
                    .await
                    .map_err(|e| e.to_string())
            };
            let report = manager.replay(mailbox.as_deref(), &ids, offline).await?;
            if report.messages.is_empty() {
                println!("no parked messages to replay");
                return Ok(ExitCode::SUCCESS);
            }
            for m in &report.messages {
                let note = match (m.status.as_str(), running) {
                    ("queued", true) => ": the running service delivers it with its next cycle",
                    ("queued", false) => ": delivered by the next cycle of its mailbox",
                    _ => "",
                };
                println!("{} [{}]: {}{note}", m.id, m.mailbox, m.status);
            }
            for e in &report.errors {
                eprintln!("{}: {}", e.mailbox, e.error);
            }
            Ok(if report.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ParkedCommand::Drop { config, ids } => {
            let config = config::load(config.config.as_deref())?;
            let dropped = manager(&config)?.drop(&ids).await?;
            for m in &dropped {
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

/// SIGHUP reads the configuration again; the service logs what changed, or why the
/// new configuration was refused.
async fn reload_on_sighup(reload: pophook::ops::reload::ReloadHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /api/reload instead");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reading the configuration again");
        // The service logs the outcome itself.
        let _ = reload.reload().await;
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
