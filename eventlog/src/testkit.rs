//! Real stores for tests: a throw-away PostgreSQL cluster (one per test process, or the one
//! `STUDIO_TEST_PG_URL` names) with one fresh database per test, and SQLite files in temporary
//! directories. Tests never skip: when PostgreSQL cannot be had, they fail and say how to get it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Set to a superuser URL (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) to use a running
/// server instead of starting one.
pub const PG_URL_VAR: &str = "STUDIO_TEST_PG_URL";
/// Non-root user that owns throw-away clusters when tests run as root (initdb refuses root).
pub const PG_OS_USER: &str = "studiotest";

static CLUSTER: OnceCell<String> = OnceCell::const_new();

/// A fresh, empty database on the test cluster; returns its URL.
pub async fn postgres_database() -> String {
    let admin_url = CLUSTER.get_or_init(|| async { cluster_url() }).await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = connect_admin(admin_url).await;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create test database on {admin_url}: {e}"));
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => {
                panic!("PostgreSQL at {url} does not answer: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn cluster_url() -> String {
    if let Ok(url) = std::env::var(PG_URL_VAR) {
        return url;
    }
    start_cluster()
}

/// Where Debian keeps the server binaries, or wherever `initdb` is on PATH.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Starts a cluster owned by this test process: a watchdog shell stops it and removes its
/// directory when the process exits, so nothing is left behind.
fn start_cluster() -> String {
    let bin = postgres_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH). \
             Install them with `apt-get install -y postgresql`, or point {PG_URL_VAR} at a running server."
        )
    });
    let dir = tempfile::Builder::new()
        .prefix("studio-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let port = free_port();
    let as_user: Vec<String> = if is_root() {
        ensure_os_user();
        let _ = Command::new("chown")
            .args(["-R", PG_OS_USER, &dir.to_string_lossy()])
            .status();
        vec![
            "runuser".into(),
            "-u".into(),
            PG_OS_USER.into(),
            "--".into(),
        ]
    } else {
        vec![]
    };
    let data = dir.join("data");
    run(
        &as_user,
        &bin.join("initdb"),
        &[
            "-D",
            &data.to_string_lossy(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    let opts = format!(
        "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300",
        dir.display()
    );
    let prefix = as_user.join(" ");
    let script = format!(
        "{prefix} {pg_ctl} -D {data} -o '{opts}' -l {dir}/log -w start >/dev/null || exit 1\n\
         while kill -0 {pid} 2>/dev/null; do sleep 1; done\n\
         {prefix} {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1\n\
         rm -rf {dir}\n",
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    // The watchdog outlives this function on purpose: it stops the cluster when the test
    // process exits, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the PostgreSQL watchdog");
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    wait_for_port(port, &dir);
    url
}

fn wait_for_port(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("PostgreSQL did not start on port {port}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ensure_os_user() {
    let exists = Command::new("id")
        .arg(PG_OS_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let status = Command::new("useradd").args(["-m", PG_OS_USER]).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "cannot create the OS user {PG_OS_USER} that owns test clusters (initdb refuses root)"
        );
    }
}

fn run(as_user: &[String], program: &Path, args: &[&str]) {
    let mut cmd = match as_user.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SQLite URL in a fresh temporary directory, and the directory (kept alive by the caller).
pub fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("studio.db").display());
    (url, dir)
}
