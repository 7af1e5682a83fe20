//! A real `redis-server` (Debian's package; `scripts/test.sh` installs it) on a free loopback
//! port, for the limit-store tests. Killed on drop; `kill` and `restart` simulate an outage.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::eventually_async;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = port_outside_the_ephemeral_range();
        let mut server = Self { child: None, port };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let url = self.url();
        eventually_async("redis-server answers PING", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (an outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, commands queue in the sockets and
    /// run when it is resumed — a store that answers too late.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run the commands queued meanwhile (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Keys matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up by default). A port
/// from bind(0), closed and handed to redis-server, can meanwhile become the source port of any
/// process's outgoing connection (and again before `restart`), so redis-server would fail to
/// bind; below the range only an explicit bind takes a port.
fn port_outside_the_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let first = low.saturating_sub(12000).max(1024);
    let span = u32::from(low.saturating_sub(first)).max(1);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
    (0..span)
        .map(|step| first + ((seed.wrapping_add(step.wrapping_mul(7919))) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}
