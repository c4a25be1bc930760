//! `hugeguard-inspect serve`: a Prometheus exporter. One thread scans the
//! host every interval ([`crate::exporter::scan`]) and keeps the rendered
//! text; the listening thread answers `GET /metrics` with the latest one
//! (never waiting for a scan: a scrape costs a copy of the text). A small
//! HTTP/1.1 server of its own, one request per connection: no framework.

use crate::exporter::{render, scan, ExeCache, ScanOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `serve` does.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub scan: ScanOptions,
    /// Time between the starts of two scans.
    pub interval: Duration,
    /// Processes with series of their own.
    pub top: usize,
}

/// The latest rendering (empty until the first scan ends).
type Latest = Arc<Mutex<String>>;

/// Scans forever, `opts.interval` apart, keeping each rendering in `latest`.
fn scan_loop(opts: ServeOptions, latest: Latest) {
    let mut cache = ExeCache::default();
    loop {
        let started = std::time::Instant::now();
        let text = render(&scan(&opts.scan, &mut cache), opts.top);
        *latest.lock().unwrap_or_else(|e| e.into_inner()) = text;
        std::thread::sleep(opts.interval.saturating_sub(started.elapsed()));
    }
}

/// Answers one connection: `GET /metrics` with the latest scan (503 before
/// the first), `GET /` with a pointer to it, anything else 404.
fn answer(stream: TcpStream, latest: &Latest) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers up to the blank line (none is needed).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => {
            let text = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if text.is_empty() {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "the first scan is still running\n".to_string(),
                )
            } else {
                ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text)
            }
        }
        ("GET", "/") => (
            "200 OK",
            "text/html",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

/// Serves on `listener` forever (the caller bound it and said where).
pub fn serve(listener: TcpListener, opts: ServeOptions) -> std::io::Result<()> {
    let latest: Latest = Arc::default();
    {
        let latest = latest.clone();
        std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || scan_loop(opts, latest))?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let latest = latest.clone();
        // A thread per connection: a slow client holds up no one else.
        let _ = std::thread::Builder::new()
            .name("scrape".into())
            .spawn(move || {
                let _ = answer(stream, &latest);
            });
    }
    Ok(())
}
