//! `acsgd`: the command line. Parses arguments and calls into the library; errors become one
//! line on stderr and a non-zero exit (2 for configuration, 1 for everything else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "acsgd",
    version,
    about = "ACSGD edge appliance: transit-control events from lane sensors to central customs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Everything on one machine: a broker, a stream of events, forwarding, a live summary.
    Demo {
        /// Use this broker (mqtt://HOST:PORT) instead of starting a local mosquitto.
        #[arg(long)]
        broker: Option<String>,
        /// Keep the outbox here (default: a temporary directory, removed at the end).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Serve the officer display here (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// Run as this post's configuration (its broker and data directory; no local broker,
        /// no stand-in for central): a post of central's demo.
        #[arg(long, conflicts_with_all = ["broker", "data_dir"])]
        config: Option<PathBuf>,
        /// Play this trace once instead of the bundled one.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// The trace's offset 0, in Unix milliseconds (default: now); several posts given the
        /// same moment play their traces on one clock.
        #[arg(long)]
        start_at_ms: Option<i64>,
    },
    /// Manage the officer display's accounts file (`display.accounts_file`).
    Account {
        /// The accounts file; created by the first `add`.
        #[arg(long)]
        file: PathBuf,
        #[command(subcommand)]
        what: AccountCommand,
    },
    /// Decode a capture to JSON lines, one object per message (`-` or no FILE: stdin).
    Decode {
        /// nmea, egts, wialon, teltonika, galileosky, arnavi, rpm or lane.
        #[arg(long)]
        protocol: acsgd_drivers::decode::Protocol,
        /// Each input line is one captured packet in hex.
        #[arg(long)]
        hex: bool,
        file: Option<PathBuf>,
    },
    /// Run a recorded trace through drivers, fusion and rules in virtual time; events as JSON
    /// lines on stdout, a summary on stderr.
    Replay {
        /// Configuration file (TOML): lanes, sensors, rules.
        #[arg(long)]
        config: PathBuf,
        /// Trace file (TSV: offset_ms, sensor, text|hex, payload), `-` for stdin.
        trace: PathBuf,
        /// Print envelopes without `sig` (replay signs with a key made for the run only).
        #[arg(long)]
        unsigned: bool,
    },
    /// Capture what a device sends on a port into a trace (stdout, or --out FILE).
    Record {
        /// The sensor id to write in the trace (as the config will name it).
        #[arg(long)]
        sensor: String,
        /// nmea, egts, wialon, teltonika, galileosky, arnavi, rpm or lane: how to cut the bytes into frames.
        #[arg(long)]
        protocol: acsgd_drivers::decode::Protocol,
        /// A serial port to read.
        #[arg(long, conflicts_with_all = ["tcp", "udp"])]
        serial: Option<String>,
        /// Its baud rate.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// Listen for the device on this TCP address.
        #[arg(long, conflicts_with = "udp")]
        tcp: Option<std::net::SocketAddr>,
        /// Receive the device's datagrams on this UDP address.
        #[arg(long)]
        udp: Option<std::net::SocketAddr>,
        /// Stop after this many seconds (default: Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Write the trace here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read the plates in images: one JSON line per image on stdout.
    Anpr {
        /// Images (JPEG, PNG, anything opencv decodes).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// A directory with plate_loc.onnx and plate_ocr.onnx instead of the built-in models.
        #[arg(long)]
        models: Option<PathBuf>,
        /// libonnxruntime.so (default: $ORT_DYLIB_PATH, beside the binary, /usr/lib/acsgd).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// Threads per inference (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Inference threads spin between operators instead of sleeping ([anpr] spin).
        #[arg(long, default_value_t = acsgd::anpr::settings::SPIN, action = clap::ArgAction::Set)]
        spin: bool,
        /// Write each plate's rectified crop into this directory.
        #[arg(long)]
        crops: Option<PathBuf>,
    },
    /// Gather what a technician needs to look at a misbehaving box into one .tar.gz (no events,
    /// keys, accounts or credentials): versions, status, systemd's view, the journal, devices.
    Diagnose {
        /// Configuration file (TOML); a file that does not load is recorded as its error.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory, when the configuration cannot say (default /var/lib/acsgd).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write the bundle here (default: acsgd-diagnose-<post>-<time>.tar.gz in the current
        /// directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the post's public key for central's registry (`acsgd-central post add`). Reads
    /// the key the service made at its first start; makes none.
    Key {
        /// Configuration file (TOML): the post id and the data directory.
        #[arg(long)]
        config: PathBuf,
        /// Make the key now when there is none (as the service's first start would), so that
        /// central can pin it before the box first publishes.
        #[arg(long)]
        create: bool,
    },
    /// Inspect the outbox.
    Outbox {
        /// The data directory (storage.data_dir of the config).
        #[arg(long)]
        data_dir: PathBuf,
        #[command(subcommand)]
        what: OutboxCommand,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Add an account; the password is asked on the terminal (or read as one line of stdin).
    Add {
        user: String,
        #[arg(long, value_parser = ["officer", "supervisor", "technician"])]
        role: String,
        /// Full name shown on the screen.
        #[arg(long)]
        name: Option<String>,
        /// kk, ru, en or zh (default: the display's).
        #[arg(long)]
        lang: Option<String>,
        /// Set a new password (and role, name, language) for an existing account.
        #[arg(long)]
        replace: bool,
    },
    /// Remove an account.
    Remove { user: String },
    /// List the accounts (user, role, name; never the hashes).
    List,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Backlog size, oldest event, counters.
    Stat {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Replay { .. }
            | Command::Record { .. }
            | Command::Anpr { .. }
            | Command::Account { .. }
            | Command::Diagnose { .. }
            | Command::Key { .. }
    );
    acsgd::logging::init(if quiet { "warn" } else { "info" });
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("acsgd: {msg}");
            ExitCode::from(code)
        }
    }
}

fn account(
    file: &std::path::Path,
    what: AccountCommand,
) -> Result<(), acsgd::accounts::AccountError> {
    use acsgd::accounts;
    use acsgd::config::Role;
    match what {
        AccountCommand::Add {
            user,
            role,
            name,
            lang,
            replace,
        } => {
            let role = match role.as_str() {
                "officer" => Role::Officer,
                "supervisor" => Role::Supervisor,
                _ => Role::Technician,
            };
            let password = accounts::read_password()?;
            let new = accounts::NewAccount {
                user: user.clone(),
                name,
                role,
                lang,
                replace,
            };
            accounts::add(file, new, &password)?;
            eprintln!("acsgd account: {user} written to {}", file.display());
        }
        AccountCommand::Remove { user } => {
            accounts::remove(file, &user)?;
            eprintln!("acsgd account: {user} removed from {}", file.display());
        }
        AccountCommand::List => {
            for a in acsgd::config::AccountsFile::load(file, acsgd::config::DEFAULT_LANG)?.accounts
            {
                println!(
                    "{}\t{}\t{}",
                    a.user,
                    a.role.as_str(),
                    a.name.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn dispatch(command: Command) -> Result<(), (u8, String)> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| (1, format!("cannot start the runtime: {e}")))
    };
    match command {
        Command::Run { config } => {
            let config = acsgd::config::Config::load(&config).map_err(|e| (2, e.to_string()))?;
            runtime()?
                .block_on(acsgd::service::run(config))
                .map_err(|e| (1, e.to_string()))
        }
        Command::Demo {
            broker,
            data_dir,
            duration,
            http,
            config,
            trace,
            start_at_ms,
        } => runtime()?
            .block_on(acsgd::demo::run(acsgd::demo::Options {
                broker,
                data_dir,
                duration: duration.map(std::time::Duration::from_secs),
                http: Some(http),
                config,
                trace,
                start_at_ms,
            }))
            .map_err(|e| (1, e.to_string())),
        Command::Account { file, what } => account(&file, what).map_err(|e| (1, e.to_string())),
        Command::Decode {
            protocol,
            hex,
            file,
        } => acsgd::decode::run(protocol, hex, file.as_deref(), std::io::stdout().lock())
            .map_err(|e| (1, e)),
        Command::Replay {
            config,
            trace,
            unsigned,
        } => {
            let config = acsgd::config::Config::load(&config).map_err(|e| (2, e.to_string()))?;
            let s = acsgd::replay::run(config, &trace, !unsigned, std::io::stdout().lock())
                .map_err(|e| {
                    // A reader that went away (`| head`) is not an error worth a message.
                    match &e {
                        acsgd::replay::ReplayError::Write(io)
                            if io.kind() == std::io::ErrorKind::BrokenPipe =>
                        {
                            (0, String::new())
                        }
                        _ => (1, e.to_string()),
                    }
                });
            let s = match s {
                Ok(s) => s,
                Err((0, _)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let bad: u64 = s.bad.values().sum();
            eprintln!(
                "acsgd replay: {} lines, {} readings, {} events ({} passages, {} alerts, {} position), {} unmatched, {} bad lines {:?}",
                s.lines, s.fusion.readings, s.events, s.fusion.passages, s.fusion.alerts, s.fusion.positions, s.fusion.unmatched, bad, s.bad
            );
            for p in &s.first_problems {
                eprintln!("  {p}");
            }
            Ok(())
        }
        Command::Record {
            sensor,
            protocol,
            serial,
            baud,
            tcp,
            udp,
            duration,
            out,
        } => {
            use acsgd::record::Source;
            let source = match (serial, tcp, udp) {
                (Some(path), None, None) => Source::Serial { path, baud },
                (None, Some(a), None) => Source::Tcp(a),
                (None, None, Some(a)) => Source::Udp(a),
                _ => return Err((2, "record: give one of --serial, --tcp, --udp".into())),
            };
            let duration = duration.map(std::time::Duration::from_secs);
            let rt = runtime()?;
            let summary = match out {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .map_err(|e| (1, format!("{}: {e}", path.display())))?;
                    rt.block_on(acsgd::record::run(
                        &sensor,
                        protocol,
                        source,
                        duration,
                        std::io::BufWriter::new(f),
                    ))
                }
                None => rt.block_on(acsgd::record::run(
                    &sensor,
                    protocol,
                    source,
                    duration,
                    std::io::stdout().lock(),
                )),
            }
            .map_err(|e| (1, e.to_string()))?;
            eprintln!(
                "acsgd record: {} frames, {} noise runs, {} connections",
                summary.frames, summary.noise, summary.connections
            );
            Ok(())
        }
        Command::Anpr {
            images,
            models,
            onnxruntime,
            threads,
            spin,
            crops,
        } => {
            let o = acsgd::anpr::cli::Options {
                images,
                models,
                onnxruntime,
                threads,
                spin,
                crops,
            };
            let failed = acsgd::anpr::cli::run(&o, &mut std::io::stdout().lock())
                .map_err(|e| (1, e.to_string()))?;
            if failed > 0 && failed == o.images.len() {
                return Err((
                    1,
                    format!("anpr: none of the {failed} images could be read"),
                ));
            }
            if failed > 0 {
                eprintln!("acsgd anpr: {failed} of {} images not read", o.images.len());
            }
            Ok(())
        }
        Command::Diagnose {
            config,
            data_dir,
            out,
        } => {
            use acsgd::diagnose;
            let gathered = diagnose::gather(config.as_deref(), data_dir.as_deref());
            let out =
                out.unwrap_or_else(|| diagnose::default_name(gathered.post.as_deref()).into());
            diagnose::write(&gathered.parts, &out).map_err(|e| (1, e.to_string()))?;
            eprintln!("acsgd diagnose: wrote {}", out.display());
            Ok(())
        }
        Command::Key { config, create } => {
            let config = acsgd::config::Config::load(&config).map_err(|e| (2, e.to_string()))?;
            let dir = &config.storage.data_dir;
            let key = if create {
                std::fs::create_dir_all(dir).map_err(|e| (1, format!("{}: {e}", dir.display())))?;
                acsgd::envelope::Signer::load_or_create(dir, &config.post)
                    .map(|s| Some(s.verifying_key()))
            } else {
                acsgd::envelope::Signer::public_key_in(dir)
            };
            match key {
                Ok(Some(k)) => {
                    let hex = acsgd::envelope::to_hex(k.as_bytes());
                    println!("post {}\nkey  {hex}\n", config.post);
                    println!(
                        "At central: acsgd-central post --config central.toml add {} --name NAME --key {hex}",
                        config.post
                    );
                    Ok(())
                }
                Ok(None) => Err((
                    1,
                    format!(
                        "no signing key in {} yet: the service makes it at its first start (systemctl start acsgd), then run this again (or make it now with --create)",
                        dir.display()
                    ),
                )),
                Err(e) => Err((1, e.to_string())),
            }
        }
        Command::Outbox {
            data_dir,
            what: OutboxCommand::Stat { json },
        } => {
            let s = acsgd::status::read(&data_dir).map_err(|e| (1, e.to_string()))?;
            if json {
                println!("{}", serde_json::to_string(&s).expect("status serialises"));
            } else {
                print!("{}", acsgd::status::render(&s));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The Debian package's manual page names every command the binary has.
    #[test]
    fn the_manual_page_names_every_command() {
        let page = include_str!("../../images/debian/acsgd.1");
        for c in super::Cli::command().get_subcommands() {
            let name = c.get_name();
            assert!(
                page.contains(&format!(".B {name}\n"))
                    || page.contains(&format!(".B acsgd {name}")),
                "images/debian/acsgd.1 does not describe `acsgd {name}`"
            );
        }
    }
}
