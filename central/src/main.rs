//! `acsgd-central`: the command line. Errors are one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use acsgd_central::config::Config;
use acsgd_central::store::{Post, Store};
use acsgd_central::{service, store};
use acsgd_contract::declaration::valid_post_id;
use acsgd_contract::envelope::from_hex;
use clap::{Parser, Subcommand};

// mimalloc instead of glibc's malloc: ingest allocates and frees many small strings and rows
// an event (envelopes, arguments, rows), and glibc's malloc and free were 13 % of the
// process's time in the ingest bench; with mimalloc the bench took about a tenth more events
// a second.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "acsgd-central",
    version,
    about = "ACSGD central: every post's events, each transit from post to post"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create or upgrade the database and exit.
    Migrate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Hash a board password for `[[accounts]] password` (reads one line from stdin).
    HashPassword,
    /// The registry of posts and their pinned keys.
    Post {
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: PostCommand,
    },
}

#[derive(Subcommand)]
enum PostCommand {
    /// Pin a post's public key (64 hex digits, as the box publishes on acsgd/v1/{post}/key;
    /// check it with the technician at the box) and print what the box needs.
    Add {
        /// Post id, [a-z0-9-]+ (the box's `post`).
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        key: String,
        #[arg(long, requires = "lon", allow_negative_numbers = true)]
        lat: Option<f64>,
        #[arg(long, requires = "lat", allow_negative_numbers = true)]
        lon: Option<f64>,
    },
    /// List the posts.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not into journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("acsgd-central: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(command(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("acsgd-central: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn command(c: Command) -> Result<(), String> {
    match c {
        Command::Run { config } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            service::run(config).await.map_err(|e| e.to_string())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password: {e}"))?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.chars().count() < 10 {
                return Err("the password needs at least 10 characters".into());
            }
            println!("{}", acsgd_central::auth::hash_password(pw)?);
            Ok(())
        }
        Command::Migrate { config } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            Store::open(&config.store.url)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "database {} is up to date",
                store::redact(&config.store.url)
            );
            Ok(())
        }
        Command::Post { config, command } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let store = Store::open(&config.store.url)
                .await
                .map_err(|e| e.to_string())?;
            match command {
                PostCommand::Add {
                    id,
                    name,
                    key,
                    lat,
                    lon,
                } => {
                    if !valid_post_id(&id) {
                        return Err(format!("post id {id:?}: use [a-z0-9-]+, at most 64"));
                    }
                    let key = key.trim().to_ascii_lowercase();
                    let bytes = from_hex(&key)
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or("--key: expected 64 hex digits (an Ed25519 public key)")?;
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                        .map_err(|e| format!("--key: not an Ed25519 public key: {e}"))?;
                    if let (Some(la), Some(lo)) = (lat, lon) {
                        if !((-90.0..=90.0).contains(&la) && (-180.0..=180.0).contains(&lo)) {
                            return Err("--lat/--lon: not a position".into());
                        }
                    }
                    store
                        .put_post(&Post {
                            id: id.clone(),
                            name,
                            public_key: key,
                            lat,
                            lon,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("post {id} pinned. On the box, /etc/acsgd/acsgd.toml needs:\n");
                    println!("post = \"{id}\"\n\n[uplink]");
                    println!(
                        "broker = \"mqtt://{}:{}\"   # the address the box reaches central's broker at",
                        config.broker.host, config.broker.port
                    );
                    Ok(())
                }
                PostCommand::List => {
                    for p in store.posts().await.map_err(|e| e.to_string())? {
                        let at = match (p.lat, p.lon) {
                            (Some(a), Some(o)) => format!("{a:.4},{o:.4}"),
                            _ => "-".into(),
                        };
                        println!("{}\t{}\t{}\t{}", p.id, p.name, at, p.public_key);
                    }
                    Ok(())
                }
            }
        }
    }
}
