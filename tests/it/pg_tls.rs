//! TLS to PostgreSQL: a throwaway server of the test's own (ssl=on, a certificate from a test CA,
//! TCP only over TLS), the CLI migrating, appending and verifying through
//! `sslmode=verify-full&sslrootcert=…`, and the refusals: a server certificate from another CA,
//! `sslmode=require` against a server without TLS. No message shows the URL's password.

use crate::support::server::{bin, pg_base};
use changetrail::storage::{StorageError, Store};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// In every URL below; the server trusts local connections, so it is never asked for, and
/// any output that contains it has leaked it.
const PASSWORD: &str = "pw-never-shown-4711";

/// The PostgreSQL server binaries (initdb, pg_ctl), newest version first; `None` when absent.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn id(args: &[&str]) -> u32 {
    let o = Command::new("id").args(args).output().unwrap();
    assert!(o.status.success(), "id {args:?} failed");
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// A throwaway cluster in a temp dir, stopped (immediately) when dropped.
struct PgServer {
    bin: PathBuf,
    /// initdb and postgres refuse to run as root: then they run as the `postgres` user.
    as_postgres: bool,
    data: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl PgServer {
    /// initdb with the CA's server certificate in place; not started yet.
    fn init(bin: PathBuf, server_cert: &str, server_key: &str) -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = id(&["-u"]) == 0;
        let p = dir.path();
        std::fs::write(p.join("server.crt"), server_cert).unwrap();
        std::fs::write(p.join("server.key"), server_key).unwrap();
        // PostgreSQL refuses a key file others can read.
        std::fs::set_permissions(p.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        // TCP only over TLS (so the CLI's round trip below cannot have gone in clear), or, for
        // the server started with ssl=off, in clear.
        std::fs::write(
            p.join("hba_tls.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        std::fs::write(
            p.join("hba_plain.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
        )
        .unwrap();
        if as_postgres {
            let (uid, gid) = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
            for f in [
                "",
                "server.crt",
                "server.key",
                "hba_tls.conf",
                "hba_plain.conf",
            ] {
                std::os::unix::fs::chown(p.join(f), Some(uid), Some(gid)).unwrap();
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            bin,
            as_postgres,
            data: p.join("data"),
            port,
            dir,
        };
        let data = server.data.display().to_string();
        let o = server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        server
    }

    /// One of the server's programs, as the postgres user when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The postgres user may not be allowed into the test's working directory.
        c.current_dir(self.dir.path()).args(args).output().unwrap()
    }

    /// Starts the server (pg_ctl -w polls until it accepts connections); `ssl` on or off.
    fn start(&self, ssl: bool) {
        let p = self.dir.path();
        let opts = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl={ssl} \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
             -c hba_file={dir}/{hba}",
            port = self.port,
            dir = p.display(),
            ssl = if ssl { "on" } else { "off" },
            hba = if ssl {
                "hba_tls.conf"
            } else {
                "hba_plain.conf"
            },
        );
        let data = self.data.display().to_string();
        let log = p.join("server.log").display().to_string();
        let o = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let port = self.port.to_string();
        let o = self.run("pg_isready", &["-h", "127.0.0.1", "-p", &port]);
        assert!(o.status.success(), "pg_isready after pg_ctl -w: {o:?}");
    }

    fn stop(&self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Before the temp dir goes; harmless when it is already stopped.
        self.stop();
    }
}

/// A CA and, signed by it, a certificate for localhost and 127.0.0.1: (CA PEM, cert, key).
fn pki() -> (String, String, String) {
    let ca = ca("changetrail test CA");
    let mut p =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A CA named `name`: distinct names make "another CA" an unknown issuer, as in real life, rather
/// than a same-named issuer whose signature does not match.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// `changetrail` in `dir` with no changetrail settings from the environment; its output, which
/// must never contain the password.
fn ct(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CHANGETRAIL_") || k.starts_with("PG") {
            c.env_remove(k);
        }
    }
    let o = c
        .env("RUST_LOG", "info")
        .env("CHANGETRAIL_LEDGER__KEY_FILE", "k.key")
        .args(args)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    eprintln!("$ changetrail {}\n{out}{err}", args.join(" "));
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "the password was shown"
    );
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls() {
    // PostgreSQL is known to be installed where TEST_DATABASE_URL is set (CI); this test starts
    // a server of its own, since it needs ssl=on with a certificate it made.
    if pg_base("postgres_over_verified_tls").is_none() {
        return;
    }
    let Some(bin_dir) = pg_bin_dir() else {
        eprintln!("SKIPPED postgres_over_verified_tls: no /usr/lib/postgresql/*/bin/initdb");
        return;
    };
    let (ca_pem, cert, key) = pki();
    let pg = PgServer::init(bin_dir, &cert, &key);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(w.join("other-ca.pem"), ca("another CA").pem()).unwrap();
    let ca_file = w.join("ca.pem").display().to_string();
    let other_ca_file = w.join("other-ca.pem").display().to_string();
    pg.start(true);

    // The round trip through the binary: migrations, appends, verification, all verify-full.
    let url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    );
    let o = ct(
        w,
        &[
            "keys",
            "generate",
            "--out",
            "k.key",
            "--origin",
            "pgtls.example/ledger",
        ],
    );
    assert!(o.status.success());
    let vkey = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = ct(w, &["migrate", "--database-url", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(":***@localhost"),
        "the URL is shown redacted"
    );
    let o = ct(
        w,
        &[
            "bench",
            "ledger",
            "--entries",
            "300",
            "--database-url",
            &url,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ct(
        w,
        &["verify", "--database-url", &url, "--trusted-key", &vkey],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Result: OK"));

    // The same code path in process: the session really is TLS (hba allows nothing else over
    // TCP, and PostgreSQL says so), to 127.0.0.1 too (the certificate names the address).
    for host in ["localhost", "127.0.0.1"] {
        let url = pg.url(host, &format!("sslmode=verify-full&sslrootcert={ca_file}"));
        let store = Store::connect(&url, &Default::default()).await.unwrap();
        let Store::Postgres(pool) = &store else {
            panic!("a postgres:// URL opens PostgreSQL")
        };
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(ssl, "the session to {host} is not TLS");
        assert!(
            store.head().await.unwrap().is_some(),
            "the CLI's ledger is there"
        );
        store.close().await;
    }
    let plain = Store::connect(&pg.url("localhost", "sslmode=disable"), &Default::default()).await;
    assert!(plain.is_err(), "the server takes TCP only over TLS");

    // A server certificate from another CA: refused, saying TLS and certificate.
    let wrong = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_ca_file}"),
    );
    let o = ct(
        w,
        &["verify", "--database-url", &wrong, "--trusted-key", &vkey],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("TLS") && e.contains("invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    match Store::connect(&wrong, &Default::default()).await {
        Err(e @ StorageError::Tls(_)) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        Err(e) => panic!("not reported as TLS: {e}"),
        Ok(_) => panic!("a certificate from another CA was accepted"),
    }
    // A CA file that is not there: TLS again, not a puzzle about the network.
    let missing = pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            w.join("nope.pem").display()
        ),
    );
    let o = ct(w, &["migrate", "--database-url", &missing]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));

    // The same server without TLS: `require` is refused, not quietly sent in clear.
    pg.stop();
    pg.start(false);
    let o = ct(
        w,
        &[
            "migrate",
            "--database-url",
            &pg.url("localhost", "sslmode=require"),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
    // ... while the server is up and answers in clear to whoever allows that.
    let o = ct(
        w,
        &[
            "migrate",
            "--database-url",
            &pg.url("localhost", "sslmode=disable"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Messages show database URLs redacted: the userinfo password, a `password=` in the query.
#[tokio::test]
async fn database_url_passwords_are_never_shown() {
    use changetrail::app::startup::redact_url;
    let cases = [
        ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
        (
            "postgres://u:secret@h:5432/db?sslmode=verify-full&sslrootcert=/etc/a@b/ca.pem",
            "postgres://u:***@h:5432/db?sslmode=verify-full&sslrootcert=/etc/a@b/ca.pem",
        ),
        (
            "postgres://u@h/db?password=secret&sslmode=require",
            "postgres://u@h/db?password=***&sslmode=require",
        ),
        ("postgres://u:se/cr#et@h/db", "postgres://u:***@h/db"),
        ("postgres://u:se?cret@h/db", "postgres://***"),
        ("sqlite://ledger.db", "sqlite://ledger.db"),
    ];
    for (url, shown) in cases {
        assert_eq!(redact_url(url), shown, "{url}");
    }
    let e = Store::connect("postgre://u:secret@h/db", &Default::default())
        .await
        .err()
        .unwrap();
    assert!(!e.to_string().contains("secret"), "{e}");
}
