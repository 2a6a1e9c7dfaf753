//! `acsgd diagnose`: one `.tar.gz` a technician can send when a box misbehaves: what the box
//! is (versions, kernel, uptime, memory, disks), what the appliance is configured to do (the
//! configuration summary, without credentials), what it is doing (the status the service last
//! wrote), what systemd and the journal say about it, which sensor devices exist, the data
//! directory's file list, and on an image the root slots and the boot loader's A/B state with
//! the health gate's journal (why an update was kept or rolled back).
//!
//! It works when the appliance does not: a configuration that cannot be loaded is recorded as
//! its one-line error, and every part that cannot be gathered is a line saying why, never a
//! failed bundle. It never copies the events, the signing key, the accounts or the
//! configuration file itself (tokens and passwords live there); every part is capped in size.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;

/// Where the service keeps its data when no configuration says (the unit's `StateDirectory`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/acsgd";
/// The unit whose state and journal are gathered.
pub const UNIT: &str = "acsgd.service";
/// Journal lines gathered (the newest).
const JOURNAL_LINES: &str = "5000";
/// The image's boot loader environment (images/grub.cfg: slot order, tries, good marks).
const GRUBENV: &str = "/boot/efi/EFI/acsgd/grubenv";
/// No part is larger than this (the journal's lines can be long).
const PART_MAX: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("diagnose: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`gather`] found: the bundle's files, and the post they are from when the
/// configuration loaded (it names the bundle).
pub struct Gathered {
    pub post: Option<String>,
    pub parts: Vec<Part>,
}

/// One file of the bundle.
pub struct Part {
    pub name: &'static str,
    pub text: String,
}

/// What goes into the bundle, gathered from `config` (a path that may not load) or, without
/// one, from `data_dir`.
pub fn gather(config: Option<&Path>, data_dir: Option<&Path>) -> Gathered {
    let mut parts = Vec::new();
    let loaded = config.map(Config::load);
    let (post, data_dir) = match &loaded {
        Some(Ok(c)) => (Some(c.post.clone()), c.storage.data_dir.clone()),
        _ => (
            None,
            data_dir.map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), Path::to_path_buf),
        ),
    };

    let mut about = String::new();
    let _ = writeln!(about, "acsgd        {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        about,
        "made         {}",
        crate::envelope::rfc3339_ms(time::OffsetDateTime::now_utc())
    );
    let _ = writeln!(
        about,
        "post         {}",
        post.as_deref().unwrap_or("(unknown)")
    );
    let _ = writeln!(about, "data dir     {}", data_dir.display());
    for (label, file) in [
        ("host", "/proc/sys/kernel/hostname"),
        ("kernel", "/proc/sys/kernel/osrelease"),
        ("uptime s", "/proc/uptime"),
        ("load", "/proc/loadavg"),
        ("boot id", "/proc/sys/kernel/random/boot_id"),
    ] {
        let v = std::fs::read_to_string(file)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("({file}: {e})"));
        let _ = writeln!(about, "{label:<12} {v}");
    }
    let _ = writeln!(about, "arch         {}", std::env::consts::ARCH);
    parts.push(Part {
        name: "about.txt",
        text: about,
    });
    parts.push(Part {
        name: "os-release.txt",
        text: read_or_why("/etc/os-release"),
    });
    parts.push(Part {
        name: "meminfo.txt",
        text: read_or_why("/proc/meminfo"),
    });

    parts.push(match &loaded {
        Some(Ok(c)) => Part {
            name: "config.json",
            text: serde_json::to_string_pretty(&c.summary()).expect("a JSON value serialises"),
        },
        Some(Err(e)) => Part {
            name: "config-error.txt",
            text: format!("{e}\n"),
        },
        None => Part {
            name: "config-error.txt",
            text: "no configuration given (--config)\n".into(),
        },
    });

    // The status file the service writes every second (and once more when it stops), not the
    // store: opening the store would hold its lock against a service starting meanwhile, and as
    // root could leave files the service's user cannot write.
    let status_file = data_dir.join(crate::outbox::STATUS_FILE);
    match std::fs::read(&status_file)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            serde_json::from_slice::<crate::status::Status>(&b).map_err(|e| e.to_string())
        }) {
        Ok(s) => {
            parts.push(Part {
                name: "status.txt",
                text: crate::status::render(&s),
            });
            parts.push(Part {
                name: "status.json",
                text: serde_json::to_string_pretty(&s).expect("status serialises"),
            });
        }
        Err(e) => parts.push(Part {
            name: "status.txt",
            text: format!("cannot read {}: {e}\n", status_file.display()),
        }),
    }
    parts.push(Part {
        name: "data-dir.txt",
        text: listing(&data_dir),
    });
    parts.push(Part {
        name: "disks.txt",
        text: run("df", &["-P", "-T", "-h"]),
    });
    parts.push(Part {
        name: "devices.txt",
        text: devices(),
    });
    parts.push(Part {
        name: "systemd.txt",
        text: format!(
            "{}\n{}",
            run(
                "systemctl",
                &[
                    "show",
                    UNIT,
                    "-p",
                    "ActiveState,SubState,Result,NRestarts,ExecMainStartTimestamp,ExecMainStatus,WatchdogUSec,MainPID",
                ],
            ),
            run("systemctl", &["--no-pager", "--failed"]),
        ),
    });
    parts.push(Part {
        name: "journal.txt",
        text: run(
            "journalctl",
            &[
                "-u",
                UNIT,
                "-n",
                JOURNAL_LINES,
                "--no-pager",
                "-o",
                "short-iso-precise",
            ],
        ),
    });
    parts.push(Part {
        name: "packages.txt",
        text: run(
            "dpkg-query",
            &["-W", "-f", "${Package}\t${Version}\t${Status}\n", "acsgd*"],
        ),
    });
    parts.push(Part {
        name: "slots.txt",
        text: run("rauc", &["status", "--detailed"]),
    });
    parts.push(Part {
        name: "boot.txt",
        text: format!(
            "{}\n{}\n{}",
            run("grub-editenv", &[GRUBENV, "list"]),
            run("journalctl", &["--list-boots", "--no-pager"]),
            run(
                "journalctl",
                &[
                    "-u",
                    "acsgd-boot-ok.service",
                    "-n",
                    "200",
                    "--no-pager",
                    "-o",
                    "short-iso"
                ],
            ),
        ),
    });
    for p in &mut parts {
        cap(&mut p.text);
    }
    Gathered { post, parts }
}

/// Writes `parts` as a gzip'd tar into `out`, in a folder named after the file.
pub fn write(parts: &[Part], out: &Path) -> Result<(), DiagnoseError> {
    let err = |source| DiagnoseError::Write {
        path: out.to_path_buf(),
        source,
    };
    let folder = out
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".tar.gz").to_string())
        .unwrap_or_else(|| "acsgd-diagnose".into());
    let file = std::fs::File::create(out).map_err(err)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for p in parts {
        let mut h = tar::Header::new_gnu();
        h.set_size(p.text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{folder}/{}", p.name), p.text.as_bytes())
            .map_err(err)?;
    }
    let gz = tar.into_inner().map_err(err)?;
    let mut file = gz.finish().map_err(err)?;
    file.flush().map_err(err)?;
    file.sync_all().map_err(err)
}

/// The bundle's default name: `acsgd-diagnose-<post>-<UTC time>.tar.gz` (`box` for a post
/// whose configuration did not load).
pub fn default_name(post: Option<&str>) -> String {
    let post = post.unwrap_or("box");
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    format!("acsgd-diagnose-{post}-{stamp}.tar.gz")
}

fn read_or_why(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("cannot read {path}: {e}\n"))
}

/// A command's output, or why there is none (not installed, failed).
fn run(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            if !o.status.success() {
                let _ = write!(
                    s,
                    "\n({program} exited with {}: {})\n",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            s
        }
        Err(e) => format!("({program} {}: {e})\n", args.join(" ")),
    }
}

/// Names, sizes and times of the files under `dir` (never their contents).
fn listing(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(out, "{}: {e}", d.display());
                continue;
            }
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > 10_000 {
                out.push_str("(more files not listed)\n");
                return out;
            }
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let _ = writeln!(out, "{}/", path.display());
                    stack.push(path);
                }
                Ok(m) => {
                    let age = m
                        .modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .map_or_else(|| "?".into(), |a| format!("{} s ago", a.as_secs()));
                    let _ = writeln!(out, "{}\t{} bytes\tmodified {age}", path.display(), m.len());
                }
                Err(err) => {
                    let _ = writeln!(out, "{}: {err}", path.display());
                }
            }
        }
    }
    out
}

/// The serial ports and video devices present, with their owner and mode: what the service's
/// user (in `dialout` and `video`) can open.
fn devices() -> String {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return "cannot read /dev\n".into();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| {
            ["ttyS", "ttyUSB", "ttyACM", "video", "watchdog"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    for n in names {
        let p = Path::new("/dev").join(&n);
        match std::fs::metadata(&p) {
            Ok(m) => {
                let _ = writeln!(
                    out,
                    "{}\tuid {}\tgid {}\tmode {:o}",
                    p.display(),
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{}: {e}", p.display());
            }
        }
    }
    if out.is_empty() {
        out.push_str("no serial, video or watchdog devices\n");
    }
    out
}

/// Keeps the last `PART_MAX` bytes (the newest journal lines), on a character boundary.
fn cap(text: &mut String) {
    if text.len() > PART_MAX {
        let mut cut = text.len() - PART_MAX;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.replace_range(..cut, "(cut: only the last 8 MiB)\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_over_its_cap_keeps_its_end() {
        let mut s = "é".repeat(PART_MAX);
        s.push_str("END");
        cap(&mut s);
        assert!(s.len() <= PART_MAX + 64);
        assert!(s.starts_with("(cut"));
        assert!(s.ends_with("END"));
    }
}
