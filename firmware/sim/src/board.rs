//! The real firmware on its emulated board: builds `firmware/qemu` for the Cortex-M4F and
//! starts it in `qemu-system-arm -M mps2-an386` on a scenario folder (`node.cfg`, `raw.bin`).
//! The QEMU test and the HIL runner both start it through here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Where UART0, the lane bus, goes.
pub enum Uart0 {
    /// Into a file (the frames, for a test to read after the run).
    File(PathBuf),
    /// A TCP server on this loopback port; the guest waits until a client connects, so
    /// nothing it sends is lost (the HIL runner relays it to the appliance's pty).
    TcpServer(u16),
}

/// Why the firmware could not be started.
#[derive(Debug)]
pub enum BoardError {
    /// `cargo build` of the board crate failed (is `thumbv7em-none-eabihf` installed?).
    Build(String),
    /// `qemu-system-arm` could not be run.
    Qemu(std::io::Error),
}

impl std::fmt::Display for BoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardError::Build(e) => write!(
                f,
                "building the firmware failed ({e}); `rustup target add thumbv7em-none-eabihf`"
            ),
            BoardError::Qemu(e) => write!(
                f,
                "qemu-system-arm: {e} (`apt-get install qemu-system-arm`)"
            ),
        }
    }
}

impl std::error::Error for BoardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BoardError::Qemu(e) => Some(e),
            BoardError::Build(_) => None,
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The firmware ELF, built once per process (release, `thumbv7em-none-eabihf`, in the board
/// crate's own target directory).
pub fn firmware() -> Result<&'static Path, BoardError> {
    static ELF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = ELF.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "thumbv7em-none-eabihf",
                "--manifest-path",
            ])
            .arg(root().join("firmware/qemu/Cargo.toml"))
            .stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(err.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
        }
        Ok(root().join("firmware/qemu/target/thumbv7em-none-eabihf/release/lane-node-qemu"))
    });
    built.as_deref().map_err(|e| BoardError::Build(e.clone()))
}

/// Starts the firmware on `dir`'s scenario, under `timeout` so that no run outlives
/// `limit_s`. Its semihosting output (the summary line, or why it failed) goes to the child's
/// stdout.
pub fn start(dir: &Path, uart0: Uart0, limit_s: u32) -> Result<Child, BoardError> {
    let elf = firmware()?;
    let serial = match uart0 {
        Uart0::File(p) => format!("file:{}", p.display()),
        Uart0::TcpServer(port) => format!("tcp:127.0.0.1:{port},server=on,wait=on"),
    };
    Command::new("timeout")
        .arg(limit_s.to_string())
        .args([
            "qemu-system-arm",
            "-M",
            "mps2-an386",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-semihosting-config", "enable=on,target=native", "-serial"])
        .arg(serial)
        .arg("-kernel")
        .arg(elf)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BoardError::Qemu)
}
