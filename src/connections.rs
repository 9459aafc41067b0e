//! The gRPC port's connections, bounded: at most [`GrpcLimits::max_connections`] at once (more
//! are closed at accept and counted), each must send the HTTP/2 connection preface within the
//! handshake timeout or it is closed, and at most [`GrpcLimits::max_open_requests`] requests
//! are open at once across all of them ([`OpenRequests`]). Per-stream and per-connection HTTP/2
//! bounds (streams, header size, resets, keepalive) are tonic's settings, applied in
//! `server.rs` from the same [`GrpcLimits`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What one client can hold of the gRPC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Open connections; more are closed at once (`paygate_shed_total{reason="connections"}`).
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at once
    /// (`paygate_shed_total{reason="client_connections"}`). With `max_concurrent_streams`, this
    /// bounds what one client can hold, however it spreads its streams.
    pub max_connections_per_client: usize,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Concurrent streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Requests open at once in the whole port, whatever connections they came on.
    pub max_open_requests: usize,
    /// Largest header list of a request, in bytes (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_list_bytes: u32,
    /// Streams a client may reset before the server accepted them (rapid reset); beyond it
    /// the connection is closed with GOAWAY.
    pub max_pending_reset_streams: usize,
    /// Streams the server may reset for a client's errors on one connection; beyond it the
    /// connection is closed with GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// How often an idle connection is pinged; one that does not answer within the timeout is
    /// closed.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 32,
            handshake_timeout: Duration::from_secs(5),
            max_concurrent_streams: 100,
            max_open_requests: 4096,
            max_header_list_bytes: 16 * 1024,
            max_pending_reset_streams: 20,
            max_local_error_reset_streams: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// The HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;

/// A connection of the gRPC port: it holds its slot, and fails its reads once the handshake
/// timeout passes before the preface arrived.
pub(crate) struct Conn {
    io: TcpStream,
    /// Until the preface has arrived: bytes still expected, and when that must have happened.
    handshake: Option<(usize, Pin<Box<Sleep>>)>,
    _slot: OwnedSemaphorePermit,
    _client: ClientSlot,
}

/// Open connections per client address.
type Clients = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of a client's connections, given back when dropped.
struct ClientSlot {
    clients: Clients,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(clients: &Clients, ip: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut open = clients.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A flood's memory goes back to the system once its connection ends.
        crate::telemetry::stream_ended();
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some((left, deadline)) = &mut this.handshake {
            match read {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled().len() - before;
                    *left = left.saturating_sub(got);
                    if *left == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        metrics::counter!("paygate_shed_total", "reason" => "handshake_timeout")
                            .increment(1);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface within the handshake timeout",
                        )));
                    }
                }
                Poll::Ready(Err(_)) => {}
            }
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections accepted on `listener`, within `limits`: a connection beyond the cap is
/// closed at once and counted; accept errors (out of file descriptors) are passed on, and the
/// server goes on accepting.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: GrpcLimits,
) -> impl Stream<Item = io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Clients::default();
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let io = match accepted {
            Ok(io) => io,
            Err(e) => return Some(Err(e)),
        };
        let ip = io
            .peer_addr()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                a.ip()
            });
        let Some(client) = ClientSlot::take(&clients, ip, limits.max_connections_per_client.max(1))
        else {
            metrics::counter!("paygate_shed_total", "reason" => "client_connections").increment(1);
            return None;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("paygate_shed_total", "reason" => "connections").increment(1);
            return None;
        };
        let _ = io.set_nodelay(true);
        let deadline = Box::pin(tokio::time::sleep(limits.handshake_timeout));
        Some(Ok(Conn {
            io,
            handshake: Some((PREFACE_LEN, deadline)),
            _slot: slot,
            _client: client,
        }))
    })
}

/// A tower layer that caps the requests open at once in the whole gRPC port (a request is
/// open from its headers until its answer's headers): beyond [`GrpcLimits::max_open_requests`]
/// a request is answered at once, `RESOURCE_EXHAUSTED` `OVERLOADED` with RetryInfo, and counted
/// (`paygate_shed_total{reason="open_requests"}`). A stream whose body never comes holds one
/// such slot, so no number of connections can make them hold unbounded memory.
#[derive(Debug, Clone)]
pub(crate) struct OpenRequests {
    slots: Arc<Semaphore>,
}

impl OpenRequests {
    /// At most `max` requests open at once.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<S> tower::Layer<S> for OpenRequests {
    type Service = Capped<S>;

    fn layer(&self, inner: S) -> Capped<S> {
        Capped {
            inner,
            slots: self.slots.clone(),
        }
    }
}

/// A service under [`OpenRequests`].
#[derive(Debug, Clone)]
pub(crate) struct Capped<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

type Http<B> = tonic::codegen::http::Request<B>;
type Answer = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tower::Service<Http<B>> for Capped<S>
where
    S: tower::Service<Http<B>, Response = Answer>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Answer;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Answer, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Http<B>) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let a = answer.await;
                    drop(slot);
                    a
                })
            }
            Err(_) => {
                metrics::counter!("paygate_shed_total", "reason" => "open_requests").increment(1);
                let status: tonic::Status = crate::error::GatewayError::Overloaded {
                    retry_after: crate::retry::GATEWAY_OVERLOADED,
                }
                .into();
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
