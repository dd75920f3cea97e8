//! A TCP proxy between pophook and Dovecot that cuts connections at chosen points, for
//! "the network broke mid-session" tests. Cuts are decided by a seeded RNG so a failing
//! run can be replayed from its seed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct CuttingProxy {
    port: u16,
    cut: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards 127.0.0.1:port → 127.0.0.1:`upstream`. Each of the first `cuts`
    /// connections is cut after a random number of bytes in one random direction: up
    /// to `max_bytes` from the server, or up to a fiftieth of that from the client
    /// (commands are short). Later connections pass untouched.
    pub async fn start(upstream: u16, seed: u64, cuts: usize, max_bytes: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicUsize::new(0));
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        let counter = cut.clone();
        let task = tokio::spawn(async move {
            let mut accepted = 0usize;
            while let Ok((client, _)) = listener.accept().await {
                accepted += 1;
                let plan = if accepted <= cuts {
                    let mut rng = rng.lock().unwrap();
                    let down = rng.random_bool(0.7);
                    let limit = if down {
                        max_bytes
                    } else {
                        (max_bytes / 50).max(1)
                    };
                    Some((down, rng.random_range(0..limit)))
                } else {
                    None
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    if forward(client, server, plan).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        CuttingProxy { port, cut, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections actually cut so far.
    pub fn cuts(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways. `plan`: (cut the server→client direction?, after how many bytes).
/// Returns whether the connection was cut. Dropping both sockets is the cut.
async fn forward(client: TcpStream, server: TcpStream, plan: Option<(bool, usize)>) -> bool {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down_limit = plan.filter(|(down, _)| *down).map(|(_, n)| n);
    let up_limit = plan.filter(|(down, _)| !*down).map(|(_, n)| n);
    let down = pump(&mut server_read, &mut client_write, down_limit);
    let up = pump(&mut client_read, &mut server_write, up_limit);
    tokio::select! {
        cut = down => cut,
        cut = up => cut,
    }
}

/// Copies until EOF or until `limit` bytes went through (then returns true: cut).
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    limit: Option<usize>,
) -> bool {
    let mut buf = vec![0u8; 8192];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let n = match limit {
            Some(limit) if sent + n >= limit => {
                let _ = to.write_all(&buf[..limit - sent]).await;
                return true;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        sent += n;
    }
}
