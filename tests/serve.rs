//! The real `tollgate` binary: `serve` (first start prints an admin key once,
//! SIGTERM stops it cleanly with exit 0, a restart prints no new key),
//! `keys` on the data directory while the server runs, `migrate`, and clear
//! configuration errors.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    // Only what the test sets: no configuration leaks in from the environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalogs/voca.toml")
}

/// A running `tollgate serve`, killed if the test fails before stopping it.
struct Server {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// What it printed before it was ready.
    printed: Vec<String>,
    base: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--catalog"])
            .arg(catalog())
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            lines,
            printed: Vec::new(),
            base: String::new(),
        };
        loop {
            let line = server
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the server prints its address within 30 s");
            server.printed.push(line.clone());
            if let Some(addr) = line.strip_prefix("tollgate listening on ") {
                server.base = addr.to_string();
                break;
            }
        }
        server
    }

    fn admin_key(&self) -> Option<String> {
        self.printed.iter().find_map(|l| {
            l.strip_prefix("admin API key (shown once, store it now): ")
                .map(str::to_string)
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn status(client: &reqwest::Client, url: &str, key: &str) -> u16 {
    client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `url` answers `want` with `key` (keys changed by the CLI reach
/// a running server at its next reload, every 5 s).
async fn eventually(client: &reqwest::Client, url: &str, key: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = status(client, url, key).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: still {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cli(args: &[&str], data_dir: &Path) -> (i32, String, String) {
    let out = bin()
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_an_admin_key_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    let server = Server::start(&data);
    let key = server
        .admin_key()
        .expect("a first start prints an admin key");
    assert!(key.starts_with("tg_"), "{key}");
    let r = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&client, &server.url("/v1/keys"), &key).await, 200);
    assert_eq!(
        status(&client, &server.url("/v1/keys"), "tg_wrong").await,
        401
    );
    // Some state to carry across the restart.
    let r = client
        .post(server.url("/v1/customers"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"id": "acme", "plan": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // An operator mints a key on the data directory while the server runs.
    let (code, out, err) = cli(
        &[
            "keys", "create", "--scope", "server", "--name", "backend", "--json",
        ],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let server_key = created["secret"].as_str().unwrap().to_string();
    let server_key_id = created["id"].as_str().unwrap().to_string();
    eventually(&client, &server.url("/v1/customers/acme"), &server_key, 200).await;

    let status_code = server.terminate();
    assert!(status_code.success(), "exit status {status_code:?}");

    // Restart: no new key; the old ones work; the data is there.
    let server = Server::start(&data);
    assert_eq!(server.admin_key(), None, "printed: {:?}", server.printed);
    assert_eq!(server.printed.len(), 1, "{:?}", server.printed);
    assert_eq!(
        status(&client, &server.url("/v1/customers/acme"), &key).await,
        200
    );
    assert_eq!(
        status(&client, &server.url("/v1/customers/acme"), &server_key).await,
        200
    );

    // Listing and revoking from the command line.
    let (code, out, _) = cli(&["keys", "list"], &data);
    assert_eq!(code, 0);
    assert!(out.contains(&server_key_id), "{out}");
    assert!(out.contains("backend") && out.contains("admin"), "{out}");
    assert!(!out.contains(&server_key), "a secret is never listed");
    let (code, out, err) = cli(&["keys", "revoke", &server_key_id], &data);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    eventually(&client, &server.url("/v1/customers/acme"), &server_key, 401).await;
    let (code, _, err) = cli(&["keys", "revoke", "key_nope"], &data);
    assert_eq!(code, 2);
    assert!(err.contains("no key \"key_nope\""), "{err}");

    let status_code = server.terminate();
    assert!(status_code.success(), "exit status {status_code:?}");
}

#[test]
fn migrate_prepares_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = cli(&["migrate"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is up to date"), "{out}");
    assert!(dir.path().join("tollgate.db").is_file());
    let (code, out, _) = cli(&["migrate", "--json"], dir.path());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backend"], "sqlite");
    // No key yet: the list says how one is made.
    let (code, out, _) = cli(&["keys", "list"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("no keys"), "{out}");
    let (code, _, err) = cli(&["keys", "create", "--scope", "customer"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--customer"), "{err}");
}

#[test]
fn configuration_errors_say_exactly_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();

    // No catalog: say how to pass one.
    let out = bin()
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("catalog:") && err.contains("--catalog"),
        "{err}"
    );

    // Several problems at once, from the environment and flags.
    let out = bin()
        .args(["serve", "--catalog", "/no/such/catalog.toml"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("TOLLGATE_LISTEN", "localhost")
        .env("TOLLGATE_STORAGE_URL", "mysql://db/tollgate")
        .env("TOLLGATE_WORKER_THREADS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("listen: \"localhost\""), "{err}");
    assert!(err.contains("worker_threads: must be at least 1"), "{err}");
    assert!(err.contains("unknown storage scheme \"mysql\""), "{err}");
    assert!(
        err.contains("/no/such/catalog.toml does not exist"),
        "{err}"
    );

    // An invalid catalog: every error with its path.
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/broken/ten-mistakes.toml");
    let out = bin()
        .args(["serve", "--catalog"])
        .arg(&broken)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is invalid"), "{err}");
    assert!(
        err.lines()
            .filter(|l| l.contains("ten-mistakes.toml:"))
            .count()
            >= 10,
        "{err}"
    );

    // tollgate.toml in the working directory is read; a typo is named.
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "lisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = bin().arg("serve").current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("lisen: unknown setting"), "{err}");
    assert!(err.contains("tollgate.toml"), "{err}");

    // An explicit --config that does not exist.
    let out = bin()
        .args(["serve", "--config", "/no/such/tollgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--config: the file /no/such/tollgate.toml does not exist"),
        "{err}"
    );

    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin()
        .args(["serve", "--listen", &addr, "--catalog"])
        .arg(catalog())
        .arg("--data-dir")
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    // No admin key was minted (and lost) by the failed first start.
    let (_, out, _) = cli(&["keys", "list"], &dir.path().join("d2"));
    assert!(out.contains("no keys"), "{out}");
}
