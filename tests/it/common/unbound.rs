//! unbound, Debian's validating resolver, as a real DNS server on a loopback port: the
//! discovery tests' SRV and A records, the DNS probe's every answer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{TempDir, wait_for};

/// unbound on a loopback port, serving `records` in a static zone, until dropped.
pub struct Unbound {
    child: std::process::Child,
    pub addr: SocketAddr,
    conf: std::path::PathBuf,
    _dir: TempDir,
}

impl Unbound {
    fn config(port: u16, dir: &Path, records: &[&str], extra: &str) -> String {
        let data: String = records
            .iter()
            .map(|r| format!("  local-data: \"{r}\"\n"))
            .collect();
        format!(
            "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"svc.test.\" static\n  local-zone: \"broken.svc.test.\" refuse\n{extra}{data}remote-control:\n  control-enable: no\n",
            dir.display()
        )
    }

    pub async fn start(records: &[&str]) -> Unbound {
        Unbound::start_with(records, "").await
    }

    /// With `extra` lines in its `server:` section (each starting with two spaces). A port
    /// free for UDP may be taken for TCP by a connection of another test running meanwhile:
    /// unbound then exits, and it is started again on another port (three tries).
    pub async fn start_with(records: &[&str], extra: &str) -> Unbound {
        let dir = TempDir::new("unbound");
        let conf = dir.path().join("unbound.conf");
        let log = dir.path().join("unbound.stderr");
        for _ in 0..3 {
            let port = free_port();
            std::fs::write(&conf, Unbound::config(port, dir.path(), records, extra))
                .expect("write");
            let mut child = std::process::Command::new("unbound")
                .args(["-d", "-c"])
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("unbound runs (scripts/test installs it)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Ready when it answers over TCP (it listens on both).
            let up = wait_for(Duration::from_secs(10), || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
            if up {
                return Unbound {
                    child,
                    addr,
                    conf,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "unbound did not start in three tries; it said:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The zone becomes `records`; unbound reads its config again on SIGHUP.
    pub fn reload(&self, records: &[&str]) {
        let dir = self.conf.parent().expect("dir");
        std::fs::write(
            &self.conf,
            Unbound::config(self.addr.port(), dir, records, ""),
        )
        .expect("write");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
