//! A long-lived OS thread inside a network namespace that runs a single-threaded tokio
//! runtime: every socket its tasks make belongs to that namespace.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::join::enter_current_thread;

/// A thread that entered a network namespace and runs a current-thread tokio runtime until it
/// is stopped or dropped; stopping cancels every task on it (closing their sockets) and joins
/// the thread.
#[derive(Debug)]
pub struct RuntimeThread {
    handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RuntimeThread {
    /// Starts the thread `name` inside the network namespace `ns` (the caller's own when
    /// `None`) and returns once its runtime is up (a millisecond or so). Fails if the thread
    /// cannot be started, cannot enter the namespace or cannot build its runtime.
    pub fn start(name: &str, ns: Option<BorrowedFd<'_>>) -> io::Result<RuntimeThread> {
        let ns = ns.map(|fd| fd.try_clone_to_owned()).transpose()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<Handle>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let entered = ns.map_or(Ok(()), |fd| enter_current_thread(fd.as_fd()));
                let runtime = entered.and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx.send(Ok(runtime.handle().clone())).is_ok() {
                    runtime.block_on(async {
                        let _ = shutdown_rx.await;
                    });
                }
            })?;
        let started = ready_rx.recv().unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "the runtime thread {name} ended while starting"
            )))
        });
        match started {
            Ok(handle) => Ok(RuntimeThread {
                handle,
                shutdown: Some(shutdown_tx),
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The runtime's handle, to spawn tasks on it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime and joins the thread without blocking the calling async task.
    pub async fn stop(mut self) {
        if let Some(thread) = self.signal_shutdown() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Tells the runtime to stop; the thread to join, unless it is the calling thread (the
    /// last owner dropped by a task of the runtime itself), which ends by itself.
    fn signal_shutdown(&mut self) -> Option<JoinHandle<()>> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.thread
            .take()
            .filter(|thread| thread.thread().id() != std::thread::current().id())
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(thread) = self.signal_shutdown() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn tasks_run_on_the_thread_and_stop_with_it() {
        let runtime = RuntimeThread::start("mxlab-test-rt", None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.handle().spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("mxlab-test-rt"));

        // A task still pending when the runtime stops is dropped, not run on.
        let dropped = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = SetOnDrop(dropped.clone());
        runtime.handle().spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        drop(runtime);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the pending task outlived the runtime"
        );
    }

    #[test]
    fn a_namespace_it_cannot_enter_is_an_error() {
        // A descriptor that is not a namespace: setns refuses it.
        let not_a_namespace = std::fs::File::open("/proc/self/status").unwrap();
        let err = RuntimeThread::start("mxlab-test-rt", Some(not_a_namespace.as_fd())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}
