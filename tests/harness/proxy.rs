//! A TCP proxy for fault injection: in front of a real server (ClickHouse),
//! it can hang (keep connections, forward nothing) or go down (refuse and
//! cut every connection), and come back.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Hang,
    Down,
}

/// A TCP proxy to `upstream` on an ephemeral loopback port.
pub struct Proxy {
    /// The proxy's address.
    pub addr: std::net::SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`); lives as long as the runtime.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Forward);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *rx.borrow() == Mode::Down {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, rx.clone()), pump(sr, cw, rx));
                });
            }
        });
        Proxy { addr, mode }
    }

    /// The proxy as an HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Hang (`true`: connections stay open, no byte is forwarded) or resume.
    pub fn pause(&self, on: bool) {
        self.mode.send_replace(if on { Mode::Hang } else { Mode::Forward });
    }

    /// Go down (`true`: new connections are refused, open ones cut) or come back.
    pub fn down(&self, on: bool) {
        self.mode.send_replace(if on { Mode::Down } else { Mode::Forward });
    }
}

/// Copies `from` to `to`: holds each chunk while hung, stops when down.
async fn pump(
    mut from: impl AsyncReadExt + Unpin + Send,
    mut to: impl AsyncWriteExt + Unpin + Send,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = mode.wait_for(|m| *m == Mode::Down) => None,
        };
        let n = match read {
            None => return,
            Some(Ok(0)) | Some(Err(_)) => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Ok(n)) => n,
        };
        let down = match mode.wait_for(|m| *m != Mode::Hang).await {
            Ok(m) => *m == Mode::Down,
            Err(_) => true,
        };
        if down {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
