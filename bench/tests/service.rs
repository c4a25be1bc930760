//! The service demonstration's server, started in this test process on an
//! ephemeral loopback port: real HTTP requests (ingest, query, record,
//! end of batch, stats, metrics), checked responses, then a clean shutdown.

use hugeguard_bench::batch::Rng;
use hugeguard_bench::service::{records_json, serve, Conn, Service, KEEP_ONE_IN};
use std::net::SocketAddr;
use std::time::Duration;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[test]
fn the_service_answers_real_requests_and_shuts_down() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Service::new("hugeguard", true), async {
            let _ = stopped.await;
        }));

        let mut c = Conn::connect(addr).await.unwrap();
        let mut rng = Rng::new(5);
        // Two requests of 128 records, ids 0..256.
        for first in [0u64, 128] {
            let v = c
                .json("POST", "/ingest", &records_json(&mut rng, first, 128))
                .await
                .unwrap();
            assert_eq!(v["ingested"], 128);
        }
        let v = c.json("GET", "/stats", b"").await.unwrap();
        assert_eq!(v["batch_records"], 256);
        assert_eq!(v["allocator"], "hugeguard");
        // hugeguard's Stats, serialised with the library's `serde` feature.
        assert!(
            v["hugeguard"]["allocated_bytes"].as_u64().unwrap() > 0,
            "{v}"
        );
        assert!(
            v["hugeguard"]["advice"]["marking_degraded"].is_boolean(),
            "{v}"
        );

        // A record comes back as it was sent.
        let r = c.json("GET", "/record/200", b"").await.unwrap();
        assert_eq!(r["id"], 200);
        assert_eq!(r["tags"].as_array().unwrap().len(), 3);
        let (status, _) = c.request("GET", "/record/999999", b"").await.unwrap();
        assert_eq!(status, 404);
        // The tag index counts the record's own tag.
        let tag = r["tags"][0].as_str().unwrap().to_string();
        let q = c
            .json("GET", &format!("/query?tag={tag}"), b"")
            .await
            .unwrap();
        assert!(q["batch"].as_u64().unwrap() >= 1, "{q}");
        // Bad JSON is refused with 400, and the service keeps working.
        let (status, _) = c.request("POST", "/ingest", b"[{\"id\":").await.unwrap();
        assert_eq!(status, 400);

        // The batch ends: 1 in 64 kept (ids 0, 64, 128, 192).
        let end = c.json("POST", "/end-batch", b"").await.unwrap();
        assert_eq!(end["kept_records"], 256 / KEEP_ONE_IN);
        assert!(end["kept_bytes"].as_u64().unwrap() > 4 * 500, "{end}");
        assert_eq!(c.json("GET", "/record/192", b"").await.unwrap()["id"], 192);
        let (status, _) = c.request("GET", "/record/193", b"").await.unwrap();
        assert_eq!(status, 404, "an unkept record is gone");
        let v = c.json("GET", "/stats", b"").await.unwrap();
        assert_eq!(
            (v["batch_records"].as_u64(), v["snapshot_records"].as_u64()),
            (Some(0), Some(4))
        );

        // Metrics in the Prometheus text format, with live figures.
        let (status, m) = c.request("GET", "/metrics", b"").await.unwrap();
        assert_eq!(status, 200);
        let m = String::from_utf8(m).unwrap();
        let value = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(name) && !l.starts_with('#'))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{m}"))
        };
        assert!(m.contains("# TYPE hugeguard_allocated_bytes gauge"));
        assert_eq!(value("hugeguard_active "), 1.0);
        assert!(value("hugeguard_allocated_bytes ") > 0.0);
        assert!(value("process_resident_memory_bytes ") > 0.0);
        assert_eq!(value("service_snapshot_records "), 4.0);
        assert!(m.contains("hugeguard_huge_pages{state=\"backed\"}"));
        assert!(m.contains("hugeguard_marking_degraded 0"));
        assert!(m.contains("hugeguard_held_back_bytes "));
        // The RSS breakdown's parts add up to the RSS within 5 %, or 1 MiB
        // in a process this small: objects the thread caches hold may lie
        // on pages never touched (batches of up to 32 KiB per class and
        // thread), counted but not resident.
        let total = value("hugeguard_rss_bytes{part=\"total\"} ");
        let parts: f64 = m
            .lines()
            .filter(|l| l.starts_with("hugeguard_rss_bytes{") && !l.contains("\"total\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(
            total > 0.0 && (parts - total).abs() <= (0.05 * total).max(1048576.0),
            "parts {parts} of {total}:\n{m}"
        );
        assert!(value("hugeguard_rss_bytes{part=\"live\"} ") > 0.0);

        // Shut down: the server task ends, and the port refuses.
        stop.send(()).unwrap();
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops within 5 s")
            .unwrap()
            .unwrap();
        assert!(Conn::connect(addr).await.is_err());
    });
}
