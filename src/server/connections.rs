//! A cap on open admission connections, applied before the TLS handshake.
//!
//! Every connection costs a task, buffers and a TLS session; without a cap, a client that
//! opens connections and never sends a request (or an HTTP/2 peer that stays idle but
//! answers pings) could exhaust memory and file descriptors, and with them the API
//! server's write path. A connection over the cap is closed at once: the kernel's backlog,
//! not our memory, absorbs a flood, and the API server retries on another replica.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::State;

/// Accepts a TCP connection only while fewer than the cap are open; sets `TCP_NODELAY`
/// (answers are small and written at once: Nagle's delay would only add latency).
#[derive(Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    state: Arc<State>,
}

impl ConnectionLimit {
    pub fn new(max: usize, state: Arc<State>) -> ConnectionLimit {
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            state,
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for ConnectionLimit {
    type Stream = Counted<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.state.metrics.connection_refused();
            tracing::debug!("connection refused: --max-connections reached");
            // Dropping the stream closes it.
            return std::future::ready(Err(io::Error::other("connection cap reached")));
        };
        let _ = stream.set_nodelay(true);
        self.state.metrics.connections_open().inc();
        std::future::ready(Ok((
            Counted {
                inner: stream,
                _permit: permit,
                state: Arc::clone(&self.state),
            },
            service,
        )))
    }
}

/// A connection holding its place under the cap until it is dropped.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    state: Arc<State>,
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.state.metrics.connections_open().dec();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
