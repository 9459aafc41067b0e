//! Real gateway processes (the `paygate` binary) and throwaway PostgreSQL databases.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::providers::antom::signing::Signer;
use tonic::transport::Channel;

use super::{CLIENT_ID, antom_pem, merchant_pem};

/// A gateway child process; killed when dropped.
pub struct GatewayProcess {
    pub child: Child,
    pub port: u16,
}

impl GatewayProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> RefundServiceClient<Channel> {
        for _ in 0..150 {
            if let Ok(c) = RefundServiceClient::connect(self.url()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway on port {} never came up", self.port);
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm_and_wait(&mut self) {
        super::provision::sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A port for a child process to listen on. It comes from below Linux's ephemeral range
/// (32768–60999), so no server this test binary binds to port 0 (simulators, in-process
/// gateways) can take it between this check and the child's bind; each call in a binary gets
/// a different port, from a start that differs between binaries.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Writes the key files a gateway process needs into `dir`.
pub fn write_keys(dir: &Path) {
    std::fs::write(dir.join("merchant.pem"), merchant_pem()).unwrap();
    let antom = Signer::from_bytes(antom_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("antom_public.pem"), antom.public_key_pem()).unwrap();
}

/// Starts `paygate serve` against the simulator at `sim_url` with the store at `store_url`.
pub fn spawn_gateway(dir: &Path, sim_url: &str, store_url: &str) -> GatewayProcess {
    spawn_gateway_with(dir, sim_url, store_url, &[], Stdio::inherit())
}

/// The same, with extra environment variables and a choice of stderr.
pub fn spawn_gateway_with(
    dir: &Path,
    sim_url: &str,
    store_url: &str,
    extra_env: &[(&str, String)],
    stderr: Stdio,
) -> GatewayProcess {
    write_keys(dir);
    let port = free_port();
    let mut cmd = Command::new(gateway_binary());
    cmd.env("PAYGATE_NOTIFY_ADDR", "127.0.0.1:0");
    // No load balancer to drain from: SIGTERM stops taking calls at once, unless a test says.
    cmd.env("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "0");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd
        .arg("serve")
        .env_remove("PAYGATE_CONFIG")
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYGATE_ANTOM_BASE_URL", sim_url)
        .env("PAYGATE_ANTOM_CLIENT_ID", CLIENT_ID)
        .env("PAYGATE_ANTOM_PRIVATE_KEY_FILE", dir.join("merchant.pem"))
        .env(
            "PAYGATE_ANTOM_PUBLIC_KEY_FILE",
            dir.join("antom_public.pem"),
        )
        .env("PAYGATE_STORE_URL", store_url)
        .env("PAYGATE_SHUTDOWN_GRACE_MS", "1000")
        .env(
            "RUST_LOG",
            extra_env
                .iter()
                .find(|(k, _)| *k == "RUST_LOG")
                .map_or("warn".to_string(), |(_, v)| v.clone()),
        )
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    GatewayProcess { child, port }
}

/// The binary under test: this build's, or another one named by `PAYGATE_TEST_BINARY` (to
/// watch a test fail on an older build).
pub fn gateway_binary() -> String {
    std::env::var("PAYGATE_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_paygate").into())
}

/// The PayXpert simulator's credentials in process tests.
pub const PX_ORIGINATOR: &str = "ORIG1";
pub const PX_PASSWORD: &str = "px-password";

/// Starts `paygate serve` with one PayXpert account (`payxpert`, the default) at `px_url`,
/// with the given attempt timeout and quiet period.
pub fn spawn_payxpert_gateway(
    dir: &Path,
    px_url: &str,
    store_url: &str,
    timeout: Duration,
    quiet: Duration,
    extra_env: &[(&str, String)],
) -> GatewayProcess {
    let binary = gateway_binary();
    spawn_payxpert_binary(
        Path::new(&binary),
        dir,
        px_url,
        store_url,
        timeout,
        quiet,
        extra_env,
    )
}

/// The same, with the `paygate` binary at `binary` (another release's).
pub fn spawn_payxpert_binary(
    binary: &Path,
    dir: &Path,
    px_url: &str,
    store_url: &str,
    timeout: Duration,
    quiet: Duration,
    extra_env: &[(&str, String)],
) -> GatewayProcess {
    std::fs::write(dir.join("px-password"), PX_PASSWORD).unwrap();
    let config = dir.join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "default_account = \"payxpert\"\n\
             [accounts.payxpert]\n\
             provider = \"payxpert\"\n\
             base_url = \"{px_url}\"\n\
             originator_id = \"{PX_ORIGINATOR}\"\n\
             password_file = \"{}\"\n\
             timeout_ms = {}\n",
            dir.join("px-password").display(),
            timeout.as_millis()
        ),
    )
    .unwrap();
    let mut env = vec![(
        "PAYGATE_PAYXPERT_RECONCILE_QUIET_PERIOD_MS",
        quiet.as_millis().to_string(),
    )];
    env.extend(extra_env.iter().cloned());
    spawn_configured_binary(binary, &config, store_url, &env)
}

/// Starts `paygate serve` on the TOML file `config`, the store at `store_url` and `env`.
pub fn spawn_configured(config: &Path, store_url: &str, env: &[(&str, String)]) -> GatewayProcess {
    spawn_configured_binary(Path::new(&gateway_binary()), config, store_url, env)
}

/// The same, with the `paygate` binary at `binary`.
pub fn spawn_configured_binary(
    binary: &Path,
    config: &Path,
    store_url: &str,
    env: &[(&str, String)],
) -> GatewayProcess {
    let port = free_port();
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env("PAYGATE_CONFIG", config)
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYGATE_NOTIFY_ADDR", "off")
        .env("PAYGATE_STORE_URL", store_url)
        .env("PAYGATE_SHUTDOWN_GRACE_MS", "1000")
        .env("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    GatewayProcess {
        child: cmd.spawn().unwrap(),
        port,
    }
}

/// The environment that runs a gateway process with its wall clock `offset` away
/// (libfaketime, Debian package `faketime`; the monotonic clock, which deadlines and timers
/// use, stays true).
pub fn faketime(offset: &str) -> Vec<(&'static str, String)> {
    let lib = super::provision::provisioned(&["libfaketime"]);
    vec![
        ("LD_PRELOAD", lib.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ]
}

/// The server the PostgreSQL tests use: PAYGATE_TEST_POSTGRES_URL when set (a URL of an
/// existing database on a server where the user may create databases), else a server of this
/// test process's own, started on first use and stopped when the process exits.
pub fn postgres_admin_url() -> String {
    if let Ok(url) = std::env::var("PAYGATE_TEST_POSTGRES_URL") {
        return url;
    }
    static SHARED: std::sync::OnceLock<(String, Child)> = std::sync::OnceLock::new();
    SHARED.get_or_init(OwnPostgres::start_for_process).0.clone()
}

/// A fresh database, dropped when the value is dropped. Fails (never skips) when PostgreSQL
/// is not reachable.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for this test ({admin}): {e}"));
        let mut b = [0u8; 6];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let name = format!(
            "paygate_test_{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let name = self.name.clone();
        // Drop on a separate thread with its own runtime: Drop cannot be async.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A PostgreSQL server of the test's own (initdb into a temporary directory, its own port), so
/// a test can kill it; never the shared one. Stopped when dropped.
pub struct OwnPostgres {
    pub url: String,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// Creates and starts it. PostgreSQL refuses to run as root, so the server runs as the
    /// `postgres` user when the test runs as root.
    pub fn start() -> Self {
        let bin = std::path::PathBuf::from(super::provision::provisioned(&["postgres"]));
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pg = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            port,
        };
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(pg.dir.path())
            .status();
        let data = pg.dir.path().join("data");
        let ok = pg
            .as_postgres(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        pg.pg_ctl(&["start", "-w"]);
        pg
    }

    /// Starts one for the rest of this process: a supervisor (`bash`, reading its standard
    /// input, which only this process holds) stops the server and removes its folder when the
    /// process exits, however it exits. Returns the server's URL and the supervisor.
    fn start_for_process() -> (String, Child) {
        let pg = Self::start();
        let mut stop = pg.as_postgres(&pg.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(pg.dir.path().join("data"))
            .args(["stop", "-m", "fast"]);
        let argv: Vec<String> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let supervisor = Command::new("bash")
            .arg("-c")
            .arg(
                r#"trap '' INT TERM HUP; read -r _ || true; dir=$1; shift; "$@" >/dev/null 2>&1; rm -rf "$dir""#,
            )
            .arg("supervisor")
            .arg(pg.dir.path())
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash");
        let url = pg.url.clone();
        // The supervisor owns the server and its folder from here.
        let _ = std::mem::ManuallyDrop::new(pg);
        (url, supervisor)
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let ok = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl {args:?} failed");
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Writes the Antom key files into `dir` and returns the environment that gives a gateway
/// process the Antom account (`antom`) at `antom_url`.
pub fn antom_env(dir: &Path, antom_url: &str) -> Vec<(&'static str, String)> {
    write_keys(dir);
    let d = |f: &str| dir.join(f).display().to_string();
    vec![
        ("PAYGATE_ANTOM_BASE_URL", antom_url.to_string()),
        ("PAYGATE_ANTOM_CLIENT_ID", CLIENT_ID.to_string()),
        ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", d("merchant.pem")),
        ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", d("antom_public.pem")),
    ]
}
