//! A real headless Chromium for the tests of the pages the appliance and central serve:
//! Debian's `chromium`, driven over WebDriver by its `chromedriver` (fantoccini).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// chromedriver on a free port, and a headless Chromium session through it; both end with it,
/// and so does everything Chromium wrote (its profile and temporary files).
pub struct Browser {
    driver: Child,
    client: Option<Client>,
    /// Chromium's profile, temporary files and crash database, removed with the browser.
    _home: tempfile::TempDir,
}

impl Browser {
    /// Starts one; `args` are added to Chromium's (a language, a window size).
    pub async fn start(args: &[&str]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let home = tempfile::Builder::new()
            .prefix("acsgd-chromium")
            .tempdir()
            .expect("a temporary directory for Chromium");
        // In a process group of its own, so that the browser it starts ends with it (see
        // `Drop`); Chromium's temporary files and crash database in `home`, so that they do too.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = format!("--user-data-dir={}", home.path().join("profile").display());
        let mut all = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            profile.as_str(),
        ];
        all.extend_from_slice(args);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": all}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            driver,
            client: Some(client),
            _home: home,
        }
    }

    /// The WebDriver session.
    pub fn c(&self) -> &Client {
        self.client.as_ref().expect("a session until dropped")
    }

    /// Runs a script in the page; its `return` value.
    pub async fn js(&self, script: &str) -> Value {
        self.c().execute(script, vec![]).await.unwrap()
    }

    /// Waits until the JS expression is truthy and returns its value; after `secs`, panics
    /// with what the page says.
    pub async fn until(&self, secs: u64, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(&format!("return ({expr});")).await;
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .js("return document.body.innerText.slice(0, 2000);")
                    .await;
                panic!("timed out waiting for {what}; the page says: {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the element `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.c().find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
}

impl Drop for Browser {
    #[allow(unsafe_code)] // kill(2) of a process group: std signals one process only
    fn drop(&mut self) {
        // Chromium is chromedriver's child, and killing chromedriver alone left every browser
        // running (five of them after one CI run, holding memory and a share of the cores
        // until the machine stopped): the whole group goes, and then its directory.
        let group = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.driver.wait();
        // The group's other processes die asynchronously; their files go only once they are
        // gone (or after 5 s, when the directory is removed as far as it can be).
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: as above; signal 0 only asks whether the group still has a process.
        while unsafe { libc::kill(-group, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
