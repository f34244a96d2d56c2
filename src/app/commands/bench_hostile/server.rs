//! The server under test: `changetrail serve`, this same executable, as a child process in a
//! scratch directory of its own.

use anyhow::{Context, bail};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The server's directory: a temporary one, or `--keep DIR`.
pub(super) enum Scratch {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Scratch {
    pub(super) fn new(keep: Option<&Path>) -> anyhow::Result<Scratch> {
        let Some(dir) = keep else {
            return Ok(Scratch::Temp(tempfile::tempdir()?));
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if std::fs::read_dir(dir)?.next().is_some() {
            bail!("--keep {}: the directory is not empty", dir.display());
        }
        Ok(Scratch::Kept(std::fs::canonicalize(dir)?))
    }

    pub(super) fn path(&self) -> &Path {
        match self {
            Scratch::Temp(t) => t.path(),
            Scratch::Kept(p) => p,
        }
    }

    pub(super) fn kept(&self) -> Option<&Path> {
        match self {
            Scratch::Temp(_) => None,
            Scratch::Kept(p) => Some(p),
        }
    }
}

/// The `serve` child: this same executable, on free ports, its log in `server.log`.
pub(super) struct Server {
    child: std::process::Child,
    log: PathBuf,
    /// The bootstrap admin token.
    pub(super) admin: String,
    pub(super) http: SocketAddr,
    pub(super) grpc: SocketAddr,
    pub(super) otlp: SocketAddr,
}

impl Server {
    pub(super) fn start(
        dir: &Path,
        config: Option<&Path>,
        db_url: &str,
        key_file: &Path,
    ) -> anyhow::Result<Server> {
        let exe =
            std::env::current_exe().context("cannot find this executable to start `serve`")?;
        let log = dir.join("server.log");
        let mut c = std::process::Command::new(exe);
        c.current_dir(dir);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CHANGETRAIL_") {
                c.env_remove(k);
            }
        }
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        c.arg("serve")
            // Info for the "is serving" line with the bound ports; sqlx as `serve` has it.
            .env("RUST_LOG", "info,sqlx=warn")
            .env("CHANGETRAIL_DATABASE_URL", db_url)
            .env("CHANGETRAIL_LEDGER__KEY_FILE", key_file)
            // A key inline in --config would win over the key file, and its verifier key is not
            // the one pinned when the chain is verified.
            .env("CHANGETRAIL_LEDGER__SIGNING_KEY", "")
            .env("CHANGETRAIL_HTTP__LISTEN", "127.0.0.1:0")
            .env("CHANGETRAIL_OTLP__GRPC_LISTEN", "127.0.0.1:0")
            .env("CHANGETRAIL_OTLP__HTTP_LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = c.spawn().context("cannot start `changetrail serve`")?;
        // The bootstrap admin token is the second line on stdout; the rest is read and dropped
        // so the child can never block on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child
            .stdout
            .take()
            .context("the server's stdout is not piped")?;
        std::thread::spawn(move || {
            for (i, line) in std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .enumerate()
            {
                if i == 1 {
                    let _ = tx.send(line.trim().to_owned());
                }
            }
        });
        let admin = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(t) => t,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the server printed no bootstrap token; its log:\n{}",
                    tail(&log, 30)
                );
            }
        };
        Ok(Server {
            child,
            log,
            admin,
            http: unbound(),
            grpc: unbound(),
            otlp: unbound(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn status_file(&self) -> String {
        format!("/proc/{}/status", self.pid())
    }

    /// Reads the bound addresses from the "is serving" log line.
    pub(super) async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("changetrail is serving")) {
                let addr = |key: &str| -> anyhow::Result<SocketAddr> {
                    line.split(&format!(" {key}="))
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("no {key} address in {line:?}"))
                };
                self.http = addr("http")?;
                self.grpc = addr("otlp_grpc")?;
                self.otlp = addr("otlp_http")?;
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the server exited ({status}); its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the server did not start within 60 s; its log:\n{}",
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as a service manager stops it, and its exit status (killed after two minutes).
    pub(super) async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(120) {
                self.child.kill()?;
                bail!("the server did not stop within 120 s of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    /// An error half way must not leave a server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The last `n` lines of a log file, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A token of `role`, created through the server's admin API.
pub(super) async fn create_token(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    role: &str,
    name: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/v1/admin/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "role": role, "name": name }))
        .send()
        .await
        .with_context(|| format!("cannot create a {role} token"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("creating a {role} token: {status} {v}"))
}
