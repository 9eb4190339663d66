use socket2::{SockRef, TcpKeepalive};
use std::time::Duration;
use tokio::net::TcpStream;

/// TCP keepalive on broker connections (patched in from upstream, see PATCHED.md).
///
/// A connection that idles while its peer vanished (a NAT flow dropped, a VM paused) is
/// otherwise only found dead when the next request times out; keepalive probes find it
/// while idle, and keep NAT mappings on the path alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepaliveConfig {
    /// The amount of time after which TCP keepalive probes will be sent on
    /// idle connections.
    pub time: Option<Duration>,

    /// The time interval between TCP keepalive probes.
    pub interval: Option<Duration>,

    /// The value of the `TCP_KEEPCNT` option.
    pub retries: Option<u32>,
}

impl KeepaliveConfig {
    pub(super) fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        let mut keepalive = TcpKeepalive::new();
        if let Some(time) = self.time {
            keepalive = keepalive.with_time(time);
        }
        if let Some(interval) = self.interval {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = self.retries {
            keepalive = keepalive.with_retries(retries);
        }
        SockRef::from(stream).set_tcp_keepalive(&keepalive)
    }
}
