use crate::app::config::Config;
use crate::app::startup::App;

pub async fn run(cfg: Config) -> anyhow::Result<i32> {
    let app = App::build(cfg).await?;
    if let Some(token) = &app.bootstrap_token {
        // Printed once to stdout, never logged: the only time this secret is visible.
        println!(
            "Bootstrap admin token (shown once; create narrower tokens with it, then revoke it):"
        );
        println!("  {token}");
    }
    tracing::info!(
        http = %app.http_addr,
        otlp_grpc = %app.otlp_grpc_addr,
        otlp_http = %app.otlp_http_addr,
        "changetrail is serving."
    );
    let stop = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutting down: closing listeners, draining the queue.");
        stop.cancel();
    });
    app.run().await?;
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
