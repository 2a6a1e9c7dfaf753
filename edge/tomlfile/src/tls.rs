//! TLS files as both configurations name them (the appliance's `[uplink.tls]`, central's
//! `[broker.tls]`): the CA that signs the broker's certificate, and a client certificate with
//! its key where the broker knows clients by certificate. One type, one check at load and one
//! read at start, so that the two programs take the same keys and say the same thing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// PEM files for MQTT over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate(s) that sign the broker's certificate.
    pub ca_file: PathBuf,
    /// Client certificate, for brokers that authenticate the client by certificate.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1 PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// The files' contents: the CA, and the client's certificate and key.
pub type TlsPem = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

impl TlsFiles {
    /// The check at load: every file readable, certificate and key together. On failure the
    /// key within the table (`ca_file`) and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let readable = |key: &'static str, path: &Path| {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| (key, format!("{}: {e}", path.display())))
        };
        readable("ca_file", &self.ca_file)?;
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => {
                readable("client_cert_file", c)?;
                readable("client_key_file", k)
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err((
                "client_cert_file",
                "a client certificate needs client_key_file beside it".into(),
            )),
            (None, Some(_)) => Err((
                "client_key_file",
                "a client key needs client_cert_file beside it".into(),
            )),
        }
    }

    /// The files' contents, read at start; on failure the file and why.
    pub fn read(&self) -> Result<TlsPem, (PathBuf, std::io::Error)> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| (path.to_path_buf(), e));
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        Ok((read(&self.ca_file)?, client))
    }
}
