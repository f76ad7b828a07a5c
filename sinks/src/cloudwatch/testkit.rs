//! A real CloudWatch emulator for tests: LocalStack community core (SERVICES.md).
//!
//! [`LocalStack::endpoint`] answers `STUDIO_TEST_CLOUDWATCH_ENDPOINT` when it is set (`.ci/run`
//! starts one emulator for the whole run), and otherwise starts one LocalStack for this test
//! process on first use. A test that needs to stop and restart the emulator (a fault test)
//! starts a private one with [`LocalStack::start`].
//!
//! Each instance binds 127.0.0.1 on a free port and keeps its files (`FILESYSTEM_ROOT`,
//! `TMPDIR`, its log) in a directory of its own, so instances run side by side. A small shell
//! watchdog owns the Python process: it stops LocalStack when asked, when the Python process
//! dies, or when the test process that started it exits (statics are never dropped, and a
//! test binary that panics must not leave an emulator behind).
//!
//! When LocalStack cannot start, the test fails and says how to install it: a skipped test
//! would hide a broken install.

use super::config::{CloudWatchClients, CloudWatchSettings};
use aws_config::Region;
use aws_sdk_cloudwatch::config::Credentials;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An emulator already running for the whole test run (set by `.ci/run`).
pub const TEST_ENDPOINT_ENV: &str = "STUDIO_TEST_CLOUDWATCH_ENDPOINT";
/// `sns` too: LocalStack answers SetAlarmState with a 500 without it (SERVICES.md quirk).
pub const LOCALSTACK_SERVICES: &str = "cloudwatch,logs,sns";
/// Where SERVICES.md installs the emulator, under `$HOME`.
pub const VENV_DIR: &str = ".cache/studio-localstack";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub const INSTALL_HINT: &str = "install LocalStack as SERVICES.md says (`.ci/run` does it): \
python3 -m venv ~/.cache/studio-localstack && ~/.cache/studio-localstack/bin/pip install \
'localstack-core[base-runtime]==4.13.1' 'moto-ext>=5.1.12.post22,!=5.1.19.post44,!=5.1.19.post57,!=5.1.19.post61' \
'cbor2<6' 'pyopenssl<26' 'cryptography<47' service_identity — or point \
STUDIO_TEST_CLOUDWATCH_ENDPOINT at a running emulator";

/// The shell that owns one LocalStack process; `$1` is the Python interpreter.
const WATCHDOG: &str = r#"
"$1" -m localstack.runtime.main >>"$LS_LOG" 2>&1 &
ls=$!
stop() {
  kill -TERM "$ls" 2>/dev/null
  i=0
  while kill -0 "$ls" 2>/dev/null && [ "$i" -lt 75 ]; do sleep 0.2; i=$((i+1)); done
  kill -KILL "$ls" 2>/dev/null
  wait "$ls" 2>/dev/null
}
trap 'stop; exit 0' TERM INT HUP
while kill -0 "$OWNER_PID" 2>/dev/null && kill -0 "$ls" 2>/dev/null; do
  sleep 1 & wait $!
done
stop
if [ -n "$CLEAN_DIR" ]; then rm -rf "$CLEAN_DIR"; fi
"#;

/// One LocalStack process (through its watchdog), stopped when dropped.
pub struct LocalStack {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Set for the process-wide instance, whose watchdog removes the directory at exit.
    clean_dir_on_exit: bool,
}

impl LocalStack {
    /// The endpoint tests of this process share: `STUDIO_TEST_CLOUDWATCH_ENDPOINT`, or one
    /// LocalStack started on first use and stopped when the process exits. Panics with an
    /// install hint when neither works.
    pub fn endpoint() -> String {
        static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            if let Some(endpoint) = std::env::var(TEST_ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.trim().is_empty())
            {
                return Ok(endpoint);
            }
            let mut emulator = LocalStack::launch(true)?;
            let url = emulator.url();
            // Never dropped: the watchdog stops it when this process exits.
            emulator.child.take();
            Ok(url)
        });
        match shared {
            Ok(endpoint) => endpoint.clone(),
            Err(why) => panic!("no CloudWatch emulator: {why}"),
        }
    }

    /// A private emulator on a free port, for a test that stops and restarts it. Blocks until
    /// it is ready (a few seconds); call it through `spawn_blocking` from async code.
    pub fn start() -> Result<Self, String> {
        Self::launch(false)
    }

    fn launch(clean_dir_on_exit: bool) -> Result<Self, String> {
        let python = python()?;
        let dir = fresh_dir()?;
        let port = free_port()?;
        let mut emulator = LocalStack {
            port,
            dir,
            child: None,
            clean_dir_on_exit,
        };
        emulator.spawn(&python)?;
        Ok(emulator)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("localstack.log")
    }

    /// The emulator's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the emulator and waits until its port refuses connections. Its state (log
    /// groups, metrics, alarms) is gone, as after a crash of the real service's frontend.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the emulator again on the same port (empty, like a fresh deployment). Blocks
    /// until it is ready.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let python = python()?;
        self.spawn(&python)
    }

    fn spawn(&mut self, python: &Path) -> Result<(), String> {
        let log = self.log_path();
        let already = std::fs::metadata(&log).map_or(0, |m| m.len());
        let fs_root = self.dir.join("filesystem");
        let tmp = self.dir.join("tmp");
        for d in [&fs_root, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let listen = format!("127.0.0.1:{}", self.port);
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("localstack-watchdog")
            .arg(python)
            .env("LS_LOG", &log)
            .env("OWNER_PID", std::process::id().to_string())
            .env(
                "CLEAN_DIR",
                if self.clean_dir_on_exit {
                    self.dir.as_os_str()
                } else {
                    std::ffi::OsStr::new("")
                },
            )
            .env("GATEWAY_LISTEN", &listen)
            .env("LOCALSTACK_HOST", &listen)
            .env("SERVICES", LOCALSTACK_SERVICES)
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DNS_ADDRESS", "0")
            .env("FILESYSTEM_ROOT", &fs_root)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start LocalStack: {e}; {INSTALL_HINT}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log) {
                let _ = f.read_to_string(&mut text);
            }
            let fresh = text.get(already as usize..).unwrap_or("");
            if fresh.lines().any(|l| l.trim() == "Ready.") {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "LocalStack on {listen} did not print `Ready.` ({}); its log:\n{fresh}\n{INSTALL_HINT}",
                    if exited { "it exited" } else { "timed out after 120 s" }
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.stop();
        if !self.clean_dir_on_exit {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn python() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let python = Path::new(&home).join(VENV_DIR).join("bin/python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!("{} is missing; {INSTALL_HINT}", python.display()))
    }
}

fn fresh_dir() -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "studio-localstack-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Settings for a test against `endpoint`: region `us-east-1`, the default log group,
/// namespace and dashboard, and a log stream and alarm prefix of its own, so tests sharing
/// one emulator never see (or reconcile away) each other's data.
pub fn settings(endpoint: &str) -> CloudWatchSettings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    CloudWatchSettings {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        log_stream: format!("test-{}", &id[..12]),
        alarm_prefix: format!("studio-t{}-", &id[..8]),
        // A stopped emulator should fail a call quickly, not after the SDK's backoff.
        operation_timeout_s: 10,
        sdk_max_attempts: 1,
        ..CloudWatchSettings::default()
    }
}

/// Clients for `settings` with static test credentials (`test`/`test`) and an explicit
/// region, so tests never depend on the environment's AWS variables.
pub async fn clients(settings: &CloudWatchSettings) -> CloudWatchClients {
    let config = settings
        .sdk_config_loader()
        .region(Region::new(
            settings
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
        ))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "studio-testkit",
        ))
        .load()
        .await;
    CloudWatchClients::from_sdk_config(&config)
}
