//! A simulator's HTTP server: started on a listener, stopped on demand or when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::task::Background;

/// A running simulator.
#[derive(Debug)]
pub struct SimServer<S> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub sim: Arc<S>,
    task: Background<()>,
}

impl<S: Send + Sync + 'static> SimServer<S> {
    /// Serves `app` on `listener` in the background.
    pub fn start(sim: Arc<S>, listener: TcpListener, app: axum::Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let task = Background::spawn(|stop| async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(SimServer { addr, sim, task })
    }

    /// `http://addr`, for the gateway's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}
