//! The limits of `berth_http::serve` against real sockets: idle clients
//! beyond the connection cap wait and are then closed, and a real request
//! still gets its answer.

use axum::routing::{get, post};
use berth_http::{serve, Limits};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(400);
const IDLE_TIMEOUT: Duration = Duration::from_millis(400);
/// Far longer than any timeout here: what "never" means in these tests.
const PATIENCE: Duration = Duration::from_secs(20);

fn router() -> axum::Router {
    axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/big", get(|| async { vec![b'x'; 64 * 1024 * 1024] }))
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
}

/// Serves [`router`] on a fresh port until the returned sender is dropped.
async fn start(max_connections: usize) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        max_connections,
        header_timeout: HEADER_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
    };
    tokio::spawn(serve(listener, router(), limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// One `GET path` on a fresh connection; the status line and the body.
async fn get_once(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, body.as_bytes().to_vec())
}

/// Waits until the server closes `stream` (EOF or reset); how long it took.
async fn closed_by_server(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept an idle connection open for {PATIENCE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            // A 408 or similar before closing is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_cap_wait_then_close_and_requests_still_answer() {
    const CAP: usize = 8;
    let (addr, _stop) = start(CAP).await;
    // Three times the cap, none sending a byte.
    let mut idle = Vec::new();
    for _ in 0..3 * CAP {
        idle.push((TcpStream::connect(addr).await.unwrap(), Instant::now()));
    }
    // A real client, behind the idle ones: answered once slots free up.
    let real = tokio::spawn(async move {
        let started = Instant::now();
        let answer = get_once(addr, "/ok").await;
        (answer, started.elapsed())
    });
    // Every idle connection is closed, none before the header timeout.
    let mut waited = Vec::new();
    for (stream, connected) in &mut idle {
        closed_by_server(stream).await;
        waited.push(connected.elapsed());
    }
    let shortest = waited.iter().min().unwrap();
    assert!(
        *shortest >= HEADER_TIMEOUT - Duration::from_millis(50),
        "an idle connection was closed after {shortest:?}"
    );
    let ((status, body), took) = real.await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"ok");
    eprintln!("idle connections closed after {shortest:?}..; the real request took {took:?}");
    // And the server goes on answering.
    let (status, _) = get_once(addr, "/ok").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_when_no_next_request_comes() {
    let (addr, _stop) = start(4).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    let waited = closed_by_server(&mut stream).await;
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_millis(50),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_or_a_stalled_body_does_not_hold_a_slot() {
    // One slot: each stalled client below would block every other client.
    let (addr, _stop) = start(1).await;

    // A head sent a byte at a time, each within the timeout, never done.
    let mut dribble = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /ok HTTP/1.1\r\nX-Slow: ".iter().cycle() {
        if dribble.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > PATIENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cut, "a head dribbled for {PATIENCE:?} was not cut");
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50));

    // A body promised and never sent.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let waited = closed_by_server(&mut stalled).await;
    assert!(
        waited >= IDLE_TIMEOUT - Duration::from_millis(50),
        "{waited:?}"
    );

    let (status, body) = get_once(addr, "/ok").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_a_slot() {
    let (addr, _stop) = start(1).await;
    // Asks for 64 MiB and reads none of it: the server's writes stall.
    let mut sluggish = TcpStream::connect(addr).await.unwrap();
    sluggish
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(PATIENCE, get_once(addr, "/ok"))
        .await
        .expect("the one slot was never given back");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"ok");
    assert!(started.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(50));
    drop(sluggish);
}
