//! Runner mode (DESIGN §9 `STUDIO_LOAD_TEST_RUNNER_*`): a started run executes in a process of
//! its own, launched from `STUDIO_LOAD_TEST_RUNNER_COMMAND`, which publishes through the same
//! log. And the executor identity every `load_test.run_started` records, so a restarted
//! instance can tell a run whose executing process died from one that still runs.

use eventlog::catalogue::Executor;
use std::path::Path;
use std::process::Stdio;

/// The placeholder a runner command may contain; replaced by the run id. A command without it
/// gets `--run-id <id>` appended.
pub const RUN_ID_PLACEHOLDER: &str = "{run_id}";

/// How a started run is executed out of process: `STUDIO_LOAD_TEST_RUNNER_COMMAND`, run by
/// `/bin/sh -c` with the run id in place of `{run_id}` (or appended as `--run-id <id>`) and in
/// the environment as `STUDIO_RUN_ID`. The process inherits this process's environment, so it
/// reads the same database, configuration and providers; e.g. `studio run-load-test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCommand {
    pub command: String,
}

impl RunnerCommand {
    /// `None` when the variable is unset or blank (the run then executes inline).
    pub fn from_env_value(value: Option<String>) -> Option<Self> {
        value
            .filter(|v| !v.trim().is_empty())
            .map(|command| Self { command })
    }

    /// The shell command line for `run_id`. Run ids are checked by the catalogue's grammar
    /// (letters, digits, `_`), so they need no quoting.
    pub fn command_line(&self, run_id: &str) -> String {
        if self.command.contains(RUN_ID_PLACEHOLDER) {
            self.command.replace(RUN_ID_PLACEHOLDER, run_id)
        } else {
            format!("{} --run-id {run_id}", self.command)
        }
    }

    /// Launches the runner for `run_id`. The child is not killed with this process: a runner
    /// outlives a restart of the instance that started it.
    pub fn spawn(&self, run_id: &str) -> std::io::Result<tokio::process::Child> {
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(self.command_line(run_id))
            .env("STUDIO_RUN_ID", run_id)
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
    }
}

/// This host's name, as the kernel knows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The executor identity of this process.
pub fn this_process() -> Executor {
    Executor {
        host: host_name(),
        pid: std::process::id(),
    }
}

/// Whether `executor` can be seen to be gone: it ran on this host and no process with its pid
/// exists any more. An executor on another host cannot be checked from here and is never
/// declared gone. (A pid reused by an unrelated process makes a dead executor look alive; the
/// run then stays `running` until an operator cancels it, which is the safe side.)
pub fn executor_gone(executor: &Executor) -> bool {
    executor.host == host_name() && !Path::new("/proc").join(executor.pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_replaces_the_placeholder_or_is_appended() {
        let with = RunnerCommand {
            command: "studio run-load-test --run-id {run_id} --quiet".into(),
        };
        assert_eq!(
            with.command_line("lt_1"),
            "studio run-load-test --run-id lt_1 --quiet"
        );
        let without = RunnerCommand {
            command: "/usr/bin/studio run-load-test".into(),
        };
        assert_eq!(
            without.command_line("lt_2"),
            "/usr/bin/studio run-load-test --run-id lt_2"
        );
    }

    #[test]
    fn a_blank_runner_command_means_inline() {
        assert_eq!(RunnerCommand::from_env_value(None), None);
        assert_eq!(RunnerCommand::from_env_value(Some("  ".into())), None);
        assert!(RunnerCommand::from_env_value(Some("studio run-load-test".into())).is_some());
    }

    #[test]
    fn this_process_is_alive_and_a_dead_pid_or_another_host_is_judged_right() {
        assert!(!executor_gone(&this_process()));
        // pid_max on Linux is at most 2^22; this pid cannot exist.
        let dead = Executor {
            host: host_name(),
            pid: 4_194_305,
        };
        assert!(executor_gone(&dead));
        let elsewhere = Executor {
            host: format!("{}-other", host_name()),
            pid: 4_194_305,
        };
        assert!(!executor_gone(&elsewhere));
    }
}
