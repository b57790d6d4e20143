//! A background task that records what a SUT instance writes until it is asked to stop.

use std::future::Future;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A spawned task with a stop signal: [`finish`](Self::finish) lets it record what is still
/// pending and waits for it; dropping it unfinished aborts the task.
pub(crate) struct BackgroundTask {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl BackgroundTask {
    /// Spawns `body`, handing it the receiver that fires when [`finish`](Self::finish) is
    /// called.
    pub(crate) fn spawn<F>(body: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop: Some(stop),
            task: Some(tokio::spawn(body(stopped))),
        }
    }

    /// Signals the task to stop and waits until it has.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
