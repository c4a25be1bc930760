//! A small real HTTP service (tokio + axum) and its load generator, for the
//! service demonstration (`examples/service.rs`) and its test.
//!
//! The service ingests batches of records as JSON (`POST /ingest`, a JSON
//! array parsed into `serde_json::Value` trees), indexes them by tag,
//! answers queries (`GET /query?tag=`, `GET /record/{id}`), and when a batch
//! ends (`POST /end-batch`) copies 1 record in 64 into its long-lived
//! snapshot and drops the rest, as a service that publishes a compacted
//! snapshot of each night's batch does. `GET /stats` gives the bytes it
//! keeps (its own count, [`value_bytes`]); `GET /metrics` gives hugeguard's
//! `Stats` in the Prometheus text format ([`metrics_text`]);
//! `POST /simulate-khugepaged` runs the in-process worst-case khugepaged;
//! `GET /debug/pprof/heap` gives hugeguard's heap profile (with
//! `HUGEGUARD_PROF=on`), and `GET /query?tag=T&leak=N` keeps N bytes for
//! good, a leak to find in it.
//!
//! The load generator speaks HTTP/1.1 over loopback with keep-alive
//! ([`Conn`]): a minimal client, so that the client side allocates little and
//! the measured process is the server.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One in this many records of a batch is kept when the batch ends.
pub const KEEP_ONE_IN: u64 = 64;

#[derive(Default)]
struct Records {
    by_id: HashMap<u64, Value>,
    by_tag: HashMap<String, Vec<u64>>,
}

impl Records {
    fn insert(&mut self, v: Value) -> bool {
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return false;
        };
        if let Some(tags) = v.get("tags").and_then(Value::as_array) {
            for t in tags.iter().filter_map(Value::as_str) {
                self.by_tag.entry(t.to_string()).or_default().push(id);
            }
        }
        self.by_id.insert(id, v);
        true
    }
}

/// The service's state: the batch being ingested and the snapshot kept
/// from earlier batches.
#[derive(Default)]
pub struct Service {
    batch: Mutex<Records>,
    snapshot: Mutex<Records>,
    kept_bytes: Mutex<usize>,
    /// What `GET /query?leak=N` kept: blocks no one frees (a leak put in on
    /// purpose, for the heap profile's demonstration).
    leaked: Mutex<Vec<Box<[u8]>>>,
    /// The global allocator's name, and whether it is hugeguard.
    allocator: &'static str,
    hugeguard_active: bool,
}

impl Service {
    pub fn new(allocator: &'static str, hugeguard_active: bool) -> Service {
        Service {
            allocator,
            hugeguard_active,
            ..Service::default()
        }
    }
}

/// Approximate heap bytes of a JSON tree: strings' capacities, arrays'
/// element slots, and for an object (serde_json's `Map` is a `BTreeMap`) a
/// leaf node of 11 key and value slots per 11 entries, plus its keys.
pub fn value_bytes(v: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<Value>();
    const NODE: usize = 11 * (std::mem::size_of::<String>() + SLOT) + 16;
    match v {
        Value::String(s) => s.capacity(),
        Value::Array(a) => a.capacity() * SLOT + a.iter().map(value_bytes).sum::<usize>(),
        Value::Object(m) => {
            m.len().div_ceil(11) * NODE
                + m.iter()
                    .map(|(k, v)| k.capacity() + value_bytes(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// What one kept record costs beyond its tree: its slot in the id map
/// (key, value, control byte, at the map's load factor) and its id in the
/// index of each of its tags.
fn index_bytes(v: &Value) -> usize {
    let tags = v.get("tags").and_then(Value::as_array).map_or(0, Vec::len);
    (8 + std::mem::size_of::<Value>() + 1) * 8 / 7 + tags * 8
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn ingest(State(s): State<Arc<Service>>, body: Bytes) -> impl IntoResponse {
    // Parse outside the lock: the JSON trees are built by the request's
    // worker thread, as in any service.
    let records: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
        }
    };
    let mut b = locked(&s.batch);
    let mut taken = 0;
    for r in records {
        taken += usize::from(b.insert(r));
    }
    let total = b.by_id.len();
    (
        StatusCode::OK,
        Json(json!({"ingested": taken, "batch_records": total})),
    )
}

#[derive(serde::Deserialize)]
struct TagQuery {
    tag: String,
    /// Bytes this query keeps for good, in blocks of 4 KiB (a leak on
    /// purpose: the heap profile's demonstration, [`heap_profile`]).
    #[serde(default)]
    leak: usize,
}

async fn query(State(s): State<Arc<Service>>, Query(q): Query<TagQuery>) -> Json<Value> {
    if q.leak > 0 {
        let blocks = q.leak.div_ceil(4096);
        let mut leaked = locked(&s.leaked);
        leaked.extend((0..blocks).map(|i| vec![i as u8; 4096].into_boxed_slice()));
    }
    let count = |r: &Records| r.by_tag.get(&q.tag).map_or(0, Vec::len);
    let batch = count(&locked(&s.batch));
    let snapshot = count(&locked(&s.snapshot));
    Json(json!({"tag": q.tag, "batch": batch, "snapshot": snapshot}))
}

async fn record(State(s): State<Arc<Service>>, Path(id): Path<u64>) -> impl IntoResponse {
    let found = locked(&s.batch)
        .by_id
        .get(&id)
        .cloned()
        .or_else(|| locked(&s.snapshot).by_id.get(&id).cloned());
    match found {
        Some(v) => (StatusCode::OK, Json(v)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such record"})),
        ),
    }
}

async fn end_batch(State(s): State<Arc<Service>>) -> Json<Value> {
    let batch = std::mem::take(&mut *locked(&s.batch));
    let mut snap = locked(&s.snapshot);
    let mut kept = 0;
    let mut bytes = 0;
    for (id, v) in batch.by_id.iter() {
        if id % KEEP_ONE_IN == 0 {
            // A copy: the snapshot's records are allocated now, together.
            let copy = v.clone();
            bytes += value_bytes(&copy) + index_bytes(&copy);
            snap.insert(copy);
            kept += 1;
        }
    }
    *locked(&s.kept_bytes) += bytes;
    drop(snap);
    drop(batch);
    let total = *locked(&s.kept_bytes);
    Json(json!({"kept_records": kept, "kept_bytes": total}))
}

/// The process's resident set, from `/proc/self/statm`.
pub fn own_rss() -> usize {
    crate::batch::rss_of(std::process::id())
}

async fn stats(State(s): State<Arc<Service>>) -> Json<Value> {
    let batch = locked(&s.batch).by_id.len();
    let snapshot = locked(&s.snapshot).by_id.len();
    let kept = *locked(&s.kept_bytes);
    Json(json!({
        "batch_records": batch,
        "snapshot_records": snapshot,
        "kept_bytes": kept,
        "rss_bytes": own_rss(),
        "allocator": s.allocator,
        // hugeguard's counters (zero under another allocator), through the
        // library's `serde` feature.
        "hugeguard": hugeguard::stats(),
    }))
}

async fn simulate() -> Json<Value> {
    let r = tokio::task::spawn_blocking(crate::batch::simulate_khugepaged)
        .await
        .unwrap_or_default();
    Json(json!({"chunks": r.chunks, "collapsed": r.collapsed, "refused": r.refused}))
}

/// hugeguard's [`hugeguard::Stats`] and the process's RSS in the Prometheus
/// text format (docs/SERVICE.md lists the names). `hugeguard_active` says
/// whether hugeguard is the allocator serving this process: when it is
/// not, its counters are zero.
pub fn metrics_text(hugeguard_active: bool, service: Option<(usize, usize, usize)>) -> String {
    let st = hugeguard::stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let active = hugeguard_active;
    let u = |v: usize| v as u64;
    metric(
        "hugeguard_active",
        "gauge",
        "1 when hugeguard is this process's allocator.",
        &[("", u64::from(active))],
    );
    metric("hugeguard_allocated_bytes", "gauge", "Bytes handed out (small objects at their class size, including thread-cached ones; large at their page size).", &[("", u(st.allocated_bytes))]);
    metric(
        "hugeguard_resident_bytes",
        "gauge",
        "Heap bytes that may be resident: written and not released since.",
        &[("", u(st.resident_bytes))],
    );
    metric(
        "hugeguard_mapped_bytes",
        "gauge",
        "Heap address space made read-write.",
        &[("", u(st.mapped_bytes))],
    );
    metric(
        "hugeguard_released_bytes_total",
        "counter",
        "Bytes returned to the OS since start.",
        &[("", u(st.released_bytes))],
    );
    metric(
        "hugeguard_held_back_bytes",
        "gauge",
        "Free heap bytes that may still be resident, waiting for the hold-back and the next release pass.",
        &[("", u(st.held_back_bytes))],
    );
    metric(
        "hugeguard_thread_cache_bytes",
        "gauge",
        "Bytes of free objects in threads' caches.",
        &[("", u(st.thread_cache_bytes))],
    );
    metric(
        "hugeguard_thread_cache_reclaimed_bytes_total",
        "counter",
        "Bytes taken back from threads' caches without their help since start.",
        &[("", u(st.thread_cache_reclaimed_bytes))],
    );
    metric(
        "hugeguard_parked_objects",
        "gauge",
        "Free objects parked in the central transfer caches.",
        &[("", u(st.parked_objects))],
    );
    metric(
        "hugeguard_huge_pages",
        "gauge",
        "Huge pages of the heap by state.",
        &[
            ("state=\"backed\"", u(st.backed_huge_pages)),
            ("state=\"partial\"", u(st.partial_huge_pages)),
            ("state=\"released\"", u(st.released_huge_pages)),
            ("state=\"free\"", u(st.free_huge_pages)),
            ("state=\"nohugepage\"", u(st.nohugepage_huge_pages)),
            ("state=\"collapsed\"", u(st.collapsed_huge_pages)),
        ],
    );
    metric("hugeguard_marking_degraded", "gauge", "1 when MADV_NOHUGEPAGE marking stopped after ENOMEM (VMA limit): khugepaged may re-inflate released ranges.", &[("", u64::from(st.advice.marking_degraded))]);
    metric(
        "hugeguard_span_records",
        "gauge",
        "Span records in use (120 bytes of metadata each).",
        &[("", u(st.span_records))],
    );
    metric("hugeguard_metadata_released_bytes_total", "counter", "Metadata bytes given back to the OS since start (empty pages of span records, span entries of released huge pages).", &[("", u(st.metadata_released_bytes))]);
    metric(
        "hugeguard_os_refusals_total",
        "counter",
        "Times the OS refused memory.",
        &[("", u(st.os_refusals))],
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
        &[("", u(own_rss()))],
    );
    // The RSS breakdown: the measured RSS and the parts that make it up.
    let b = hugeguard::rss_breakdown();
    metric(
        "hugeguard_rss_bytes",
        "gauge",
        "The process's RSS (part=\"total\", measured) and what holds it: the program's live objects, free objects in caches, free space in spans, held-back pages, allocator metadata, the heap profile, and memory outside the heap (code, stacks).",
        &[
            ("part=\"total\"", u(b.rss_bytes)),
            ("part=\"live\"", u(b.live_bytes)),
            ("part=\"cached\"", u(b.cached_bytes)),
            ("part=\"span_free\"", u(b.span_free_bytes)),
            ("part=\"held_back\"", u(b.held_back_bytes)),
            ("part=\"metadata\"", u(b.metadata_bytes)),
            ("part=\"profile\"", u(b.profile_bytes)),
            ("part=\"outside_heap\"", u(b.outside_heap_bytes)),
        ],
    );
    // Signed, so not through `metric`; appended at the end.
    let unaccounted = format!(
        "# HELP hugeguard_rss_unaccounted_bytes Heap memory resident beyond what the parts count (positive: huge-page inflation; negative: memory handed out and never written).\n# TYPE hugeguard_rss_unaccounted_bytes gauge\nhugeguard_rss_unaccounted_bytes {}\n",
        b.unaccounted_bytes
    );
    if b.profile.on {
        metric(
            "hugeguard_profile_estimated_live_bytes",
            "gauge",
            "Live bytes estimated from the heap profile's samples, and one standard deviation of the estimate.",
            &[
                ("kind=\"estimate\"", u(b.profile.estimated_live_bytes)),
                ("kind=\"error\"", u(b.profile.estimate_error_bytes)),
            ],
        );
    }
    if let Some((batch, snapshot, kept)) = service {
        metric(
            "service_batch_records",
            "gauge",
            "Records of the batch being ingested.",
            &[("", u(batch))],
        );
        metric(
            "service_snapshot_records",
            "gauge",
            "Records kept from earlier batches.",
            &[("", u(snapshot))],
        );
        metric(
            "service_kept_bytes",
            "gauge",
            "Heap bytes of the kept records, as the service counts them.",
            &[("", u(kept))],
        );
    }
    out.push_str(&unaccounted);
    out
}

async fn metrics(State(s): State<Arc<Service>>) -> impl IntoResponse {
    let batch = locked(&s.batch).by_id.len();
    let snapshot = locked(&s.snapshot).by_id.len();
    let kept = *locked(&s.kept_bytes);
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics_text(s.hugeguard_active, Some((batch, snapshot, kept))),
    )
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    /// `proto`: pprof's protobuf format instead of text.
    #[serde(default)]
    format: String,
}

/// `GET /debug/pprof/heap`: the heap profile (gperftools text format, as
/// jemalloc-based Rust services serve it; with `?format=proto`, pprof's
/// protobuf format), when the service runs on hugeguard with profiling on
/// (`HUGEGUARD_PROF=on`); read it with `google-pprof --text SERVER_BINARY
/// PROFILE` or `go tool pprof SERVER_BINARY PROFILE`. 404 with the reason
/// otherwise.
async fn heap_profile(
    State(s): State<Arc<Service>>,
    Query(q): Query<ProfileQuery>,
) -> impl IntoResponse {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    if !s.hugeguard_active || !hugeguard::profile::is_on() {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain")],
            "heap profiling is off: run the service on hugeguard with HUGEGUARD_PROF=on\n"
                .as_bytes()
                .to_vec(),
        );
    }
    let path = std::env::temp_dir().join(format!(
        "hugeguard-heap-{}-{}.prof",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let proto = q.format == "proto";
    let written = tokio::task::spawn_blocking(move || {
        if proto {
            hugeguard::profile::write_pprof(&path)?;
        } else {
            hugeguard::profile::write(&path)?;
        }
        let bytes = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        bytes
    })
    .await;
    match written {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [(
                "content-type",
                if proto {
                    "application/octet-stream"
                } else {
                    "text/plain"
                },
            )],
            bytes,
        ),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("writing the heap profile: {e}\n").into_bytes(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("writing the heap profile: {e}\n").into_bytes(),
        ),
    }
}

/// The service's routes.
pub fn router(state: Arc<Service>) -> Router {
    Router::new()
        .route("/ingest", post(ingest))
        .route("/query", get(query))
        .route("/record/{id}", get(record))
        .route("/end-batch", post(end_batch))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/simulate-khugepaged", post(simulate))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(state)
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(Arc::new(service)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A keep-alive HTTP/1.1 connection to the service.
pub struct Conn {
    stream: BufReader<TcpStream>,
    head: String,
}

impl Conn {
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(s),
            head: String::new(),
        })
    }

    /// Sends one request and reads the whole response: (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(self.head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(|_| bad("bad content-length"))?;
                }
            }
        }
        let mut out = vec![0; len];
        self.stream.read_exact(&mut out).await?;
        Ok((status, out))
    }

    /// A request whose response must be 200 and JSON.
    pub async fn json(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Value> {
        let (status, out) = self.request(method, path, body).await?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "{method} {path}: status {status}: {}",
                String::from_utf8_lossy(&out)
            )));
        }
        serde_json::from_slice(&out).map_err(io::Error::other)
    }
}

const WORDS: [&str; 16] = [
    "order", "payment", "user", "cart", "shipping", "refund", "invoice", "stock", "price",
    "review", "session", "search", "coupon", "address", "basket", "ticket",
];

/// (`Rng::range` includes both ends.)
/// A JSON array of `n` records with ids from `first`: a user, a free text of
/// 10-60 words, 3 tags out of 200, 8 scores and a small nested object (what
/// an order or event record looks like).
pub fn records_json(rng: &mut crate::batch::Rng, first: u64, n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 600);
    s.push('[');
    for i in 0..n as u64 {
        if i > 0 {
            s.push(',');
        }
        let id = first + i;
        let _ = write!(
            s,
            "{{\"id\":{id},\"user\":\"user{}\",\"text\":\"",
            rng.range(0, 100_000)
        );
        for w in 0..rng.range(10, 60) {
            if w > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[rng.range(0, WORDS.len() - 1)]);
        }
        let _ = write!(
            s,
            "\",\"tags\":[\"t{}\",\"t{}\",\"t{}\"],\"scores\":[",
            rng.range(0, 200),
            rng.range(0, 200),
            rng.range(0, 200)
        );
        for k in 0..8 {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(s, "{}.{}", rng.range(0, 100), rng.range(0, 1000));
        }
        let _ = write!(
            s,
            "],\"meta\":{{\"region\":\"eu-{}\",\"flags\":[true,false],\"version\":{}}}}}",
            rng.range(0, 9),
            rng.range(0, 5)
        );
    }
    s.push(']');
    s.into_bytes()
}

/// Latency percentile `p` (0-100) of sorted samples, in milliseconds.
pub fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The server side of the demonstration, for the `service_server_*`
/// examples (one per global allocator): binds an ephemeral loopback port,
/// prints `LISTEN <port>`, serves until its standard input closes.
pub fn server_main(allocator: &'static str, hugeguard_active: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        println!("LISTEN {}", listener.local_addr().expect("address").port());
        let shutdown = async {
            // The driver closes our stdin when it is done (or dies).
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            })
            .await;
        };
        serve(
            listener,
            Service::new(allocator, hugeguard_active),
            shutdown,
        )
        .await
        .expect("serve");
    });
}
