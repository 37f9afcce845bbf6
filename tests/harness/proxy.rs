//! A TCP proxy for fault injection: in front of a real server (ClickHouse),
//! it can hang (keep connections, forward nothing) or go down (refuse and
//! cut every connection), and come back; or catch one request (a trap: the
//! next client chunk that contains given words is held, never forwarded, and
//! reported), so a test can kill its client in the middle of that request.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A set trap: the words a client chunk must all contain, and who to tell.
type Trap = Arc<Mutex<Option<(Vec<Vec<u8>>, oneshot::Sender<()>)>>>;

/// A TCP proxy to `upstream` on an ephemeral loopback port.
pub struct Proxy {
    /// The proxy's address.
    pub addr: std::net::SocketAddr,
    paused: watch::Sender<bool>,
    down: watch::Sender<bool>,
    trap: Trap,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`); lives as long as the runtime.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (paused, paused_rx) = watch::channel(false);
        let (down, down_rx) = watch::channel(false);
        let trap: Trap = Arc::default();
        let traps = trap.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *down_rx.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let (mut p, d, trap) = (paused_rx.clone(), down_rx.clone(), traps.clone());
                tokio::spawn(async move {
                    // Connect upstream only once not paused: a connection held idle at the
                    // server would be closed by its keep-alive timeout.
                    if p.wait_for(|paused| !*paused).await.is_err() || *d.borrow() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, p.clone(), d.clone(), Some(trap)), pump(sr, cw, p, d, None));
                });
            }
        });
        Proxy {
            addr,
            paused,
            down,
            trap,
        }
    }

    /// Sets a trap: the next chunk a client sends that contains every one of `words` (e.g. the
    /// `INSERT` and the table name of a ClickHouse request line) is held, and nothing more is
    /// forwarded on its connection; the receiver resolves then. Replaces a trap not yet sprung.
    pub fn trap(&self, words: &[&str]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let words = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        *self.trap.lock().expect("not poisoned") = Some((words, tx));
        rx
    }

    /// Removes a trap that has not sprung.
    pub fn clear_trap(&self) {
        self.trap.lock().expect("not poisoned").take();
    }

    /// The proxy as an HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Hang (`true`: connections stay open, no byte is forwarded) or resume.
    pub fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }

    /// Go down (`true`: new connections are refused, open ones cut) or come back.
    pub fn down(&self, on: bool) {
        self.down.send_replace(on);
    }
}

/// Copies `from` to `to`: reads nothing while paused (and holds a chunk read
/// just before a pause), stops when the proxy goes down. With a `trap`, a
/// chunk that springs it is held for good (the connection hangs until the
/// proxy goes down).
async fn pump(
    mut from: impl AsyncReadExt + Unpin + Send,
    mut to: impl AsyncWriteExt + Unpin + Send,
    mut paused: watch::Receiver<bool>,
    mut down: watch::Receiver<bool>,
    trap: Option<Trap>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() || *down.borrow() {
            return;
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = down.wait_for(|d| *d) => None,
        };
        let n = match read {
            None => return,
            Some(Ok(0)) | Some(Err(_)) => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Ok(n)) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() || *down.borrow() {
            return;
        }
        if let Some(trap) = &trap {
            let chunk = &buf[..n];
            let sprung = {
                let mut t = trap.lock().expect("not poisoned");
                let hit = t
                    .as_ref()
                    .is_some_and(|(words, _)| words.iter().all(|w| chunk.windows(w.len()).any(|x| x == w.as_slice())));
                if hit {
                    t.take()
                } else {
                    None
                }
            };
            if let Some((_, tell)) = sprung {
                let _ = tell.send(());
                let _ = down.wait_for(|d| *d).await;
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
