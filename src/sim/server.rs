//! A simulator's HTTP server: started on a listener, stopped on demand or when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running simulator.
#[derive(Debug)]
pub struct SimServer<S> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub sim: Arc<S>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl<S: Send + Sync + 'static> SimServer<S> {
    /// Serves `app` on `listener` in the background.
    pub fn start(sim: Arc<S>, listener: TcpListener, app: axum::Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(SimServer {
            addr,
            sim,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// `http://addr`, for the gateway's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl<S> Drop for SimServer<S> {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}
