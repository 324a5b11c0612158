//! The real `ledger-server` binary as a child process, for what an in-process app cannot
//! show: its process limits and what it writes to stderr.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ledger-server`; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Every line it has written to stderr so far.
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the server on the embedded store in `data_dir` with `args` and `env` (JSON logs
    /// unless `env` says otherwise), under a descriptor limit (soft and hard) of `nofile` when
    /// given, and waits until it logs that it is serving.
    pub fn start(
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let limit = nofile.map_or_else(String::new, |n| format!("ulimit -n {n} && "));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ledger-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("RUST_LOG")
            .env("ELEANOR_LEDGER_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ledger-server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (serving, started) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("\"serving\"") {
                    let _ = serving.send(());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.recv_timeout(Duration::from_millis(100)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "ledger-server exited during startup ({status}): {:?}",
                    lines.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ledger-server did not start within 30 s"
            );
        }
        ServerProcess {
            child,
            address: format!("127.0.0.1:{port}"),
            lines,
        }
    }

    #[allow(dead_code, reason = "not every test binary reads the logs")]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The stderr lines so far, parsed (the JSON log format).
    #[allow(dead_code, reason = "not every test binary reads the logs")]
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
            })
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
