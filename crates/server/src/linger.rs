//! Lingering close: the listener's connections read what the client still
//! sends before they are closed, so that an answer given before the whole
//! request was read (a 413 for a body over the limit) reaches the client.
//!
//! When the server answers a request whose body it did not read to the end
//! (the body was announced or streamed past the limit), the connection cannot
//! be reused and is closed. Closing a socket with unread data makes the kernel
//! send a reset (RST) instead of a normal end, and a client that receives the
//! reset before reading the answer loses the answer: it sees "connection
//! reset" instead of the 413. So each connection, once the server is done
//! with it, ends its own side (FIN, after the answer) and then reads and
//! discards what the client still sends, until the client closes, for at most
//! [`LINGER_TIME`] and [`LINGER_BYTES`]: the same as nginx's `lingering_close`.
//! A client that closed first (the common end of a keep-alive connection)
//! costs one `shutdown` and one `read` that returns 0.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Longest a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Most bytes a closing connection reads (and discards) before it closes
/// anyway.
pub const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// A TCP listener whose connections linger when closed (see the module
/// documentation).
#[derive(Debug)]
pub struct LingeringListener(TcpListener);

impl LingeringListener {
    pub fn new(listener: TcpListener) -> LingeringListener {
        LingeringListener(listener)
    }
}

impl Listener for LingeringListener {
    type Io = Lingering;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Lingering, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (Lingering(Some(stream)), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that lingers when dropped. (`None` only once dropped.)
#[derive(Debug)]
pub struct Lingering(Option<TcpStream>);

impl Lingering {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(stream), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(linger(stream));
        }
    }
}

/// Ends our side of `stream`, then reads until the client closes (or the
/// limits are reached) and closes it.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0usize;
    while read <= LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
}
