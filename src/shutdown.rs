//! The shutdown signal every long-running task of the operator waits on: one future, shared.

/// A shutdown signal every task can wait on.
pub type Shutdown = futures::future::Shared<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// Turns a future into a [`Shutdown`] signal.
pub fn shutdown_signal(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Shutdown {
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(signal);
    futures::FutureExt::shared(boxed)
}
