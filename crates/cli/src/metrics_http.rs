//! The `/metrics` endpoint: a deliberately tiny HTTP/1.1 server on tokio, enough for a
//! Prometheus scraper or curl. One request per connection (`Connection: close`), request
//! heads bounded to 8 KiB and 5 s, at most 16 scrapes served at once.

use std::sync::Arc;
use std::time::Duration;

use rill_broker::metrics::encode_prometheus;
use rill_broker::state::BrokerState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head read; scrapers send a few hundred bytes.
const REQUEST_HEAD_MAX_BYTES: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait for a permit.
const CONCURRENT_SCRAPES_MAX: usize = 16;

/// The content type of prometheus-client's text encoding.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the endpoint's listener.
///
/// # Errors
/// The address cannot be bound (in use, not local, bad syntax).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes until the process ends.
pub async fn run(listener: TcpListener, state: Arc<BrokerState>) {
    let limit = Arc::new(Semaphore::new(CONCURRENT_SCRAPES_MAX));
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &state)).await {
                tracing::debug!(error = %e, "metrics endpoint: request timed out");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, state: &Arc<BrokerState>) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > REQUEST_HEAD_MAX_BYTES {
            let _ = respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
            return;
        }
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            // Reading storage gauges takes locks storage also takes; keep it off the async
            // workers.
            let state = Arc::clone(state);
            let body = match tokio::task::spawn_blocking(move || encode_prometheus(&state)).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = respond(
                        &mut stream,
                        "500 Internal Server Error",
                        "text/plain",
                        e.to_string().as_bytes(),
                    )
                    .await;
                    return;
                }
            };
            let _ = respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes()).await;
        }
        ("GET", "/") => {
            let _ = respond(&mut stream, "200 OK", "text/plain", b"rill: see /metrics\n").await;
        }
        ("GET", _) => {
            let _ = respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found; try /metrics\n",
            )
            .await;
        }
        _ => {
            let _ = respond(&mut stream, "405 Method Not Allowed", "text/plain", b"").await;
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
