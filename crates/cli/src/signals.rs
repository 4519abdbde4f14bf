//! The stop signal every long-running role obeys: SIGTERM (Kubernetes stopping the pod) or
//! Ctrl-C. `duckmesh dev` counts signals itself (once drains, twice stops).

/// Completes on the first SIGTERM or Ctrl-C.
pub async fn terminated() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
