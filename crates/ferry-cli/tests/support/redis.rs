//! A real `redis-server` on a loopback port, started by the test and killed when dropped (the
//! shared-cache tests of ISR, the data cache and images).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// Where scripts/test.sh installs it (apt's redis-server).
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running redis-server with no persistence.
pub struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a port the OS picks (probing a fixed range races with parallel tests).
    pub fn start() -> Result<Redis> {
        Redis::start_on(super::free_port()?)
    }

    /// Starts one on `port` (a fault test restarts Redis where the servers expect it) and waits
    /// until it listens.
    pub fn start_on(port: u16) -> Result<Redis> {
        ensure!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: the shared-cache tests need a real redis-server \
             (apt-get install redis-server; scripts/test.sh installs it)"
        );
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server")?;
        let redis = Redis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--cache-url` that reaches it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it now (a fault test: Redis gone mid-run).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
