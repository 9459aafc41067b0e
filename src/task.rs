//! A task in the background that stops gracefully when asked and is aborted when dropped: the
//! servers that tests, dev mode and the simulators run.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Resolves when the task is asked to stop.
pub(crate) type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A spawned task and the means to stop it.
#[derive(Debug)]
pub(crate) struct Background<T> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Spawns `run`, handing it the signal that resolves when [`Background::stop`] is called.
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let signal: StopSignal = Box::pin(async {
            let _ = rx.await;
        });
        Self {
            stop: Some(tx),
            task: Some(tokio::spawn(run(signal))),
        }
    }

    /// Asks the task to stop and waits for it to end.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}
