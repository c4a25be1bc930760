//! `hugeguard-inspect serve` against a known child (the C batch of
//! `tests/c/sparse.c` under glibc with `malloc_trim`): its series in
//! `/metrics` carry its allocator and an exposure within 5 % of what
//! `hugeguard-inspect PID --json` says; a real Prometheus (Debian's
//! `prometheus` package) scraping the exporter answers a PromQL query with
//! the same figure; the shipped rules pass `promtool`; and the deployment
//! files parse and ask for what the exporter needs and no more. Tests that
//! need a tool skip with a message where it is not installed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hugeguard_testkit::paths::target_dir;

/// Kills and reaps the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy")
}

fn compile(name: &str) -> PathBuf {
    hugeguard_testkit::c::compile_once(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        name,
        &target_dir().join(format!("inspect-c-{name}")),
        &["-O2", "-w"],
    )
}

/// The C batch: 64 MB, 63 of 64 objects freed, `malloc_trim`, then idle.
fn start_batch() -> Proc {
    let mut cmd = Command::new(compile("sparse"));
    cmd.args(["64", "trim"]).stdout(Stdio::piped());
    let mut p = Proc(cmd.spawn().unwrap());
    let out = p.0.stdout.take().unwrap();
    for line in BufReader::new(out).lines() {
        if line.unwrap().contains("READY") {
            return p;
        }
    }
    panic!("the batch ended without READY");
}

/// Starts the exporter on a free loopback port; its address.
fn start_exporter() -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hugeguard-inspect"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1",
        "--always",
        "--top",
        "1000",
        "--min-anon-mb",
        "1",
    ])
    .stdout(Stdio::piped());
    let mut p = Proc(cmd.spawn().unwrap());
    let mut first = String::new();
    BufReader::new(p.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // "listening on http://127.0.0.1:PORT/metrics"
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (p, addr)
}

/// `GET path` from `addr`: status line and body.
fn get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// The value of `metric` for `pid` in a scrape, and that line.
fn sample(text: &str, metric: &str, pid: u32) -> Option<(f64, String)> {
    let prefix = format!("{metric}{{pid=\"{pid}\",");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    Some((line.rsplit(' ').next()?.parse().ok()?, line.to_string()))
}

/// What `hugeguard-inspect PID --json --always` says the exposure is.
fn cli_exposure(pid: u32) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_hugeguard-inspect"))
        .args([&pid.to_string(), "--json", "--always"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["exposure_bytes"].as_f64().unwrap()
}

fn within_5_percent(got: f64, want: f64) -> bool {
    (got - want).abs() <= 0.05 * want
}

/// Scrapes until the batch's series appear (the first scan takes a moment).
fn scrape_until_seen(addr: &str, pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, body)) = get(addr, "/metrics") {
            if status.contains("200")
                && sample(&body, "hugeguard_process_exposure_bytes", pid).is_some()
            {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no series for pid {pid} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_exporter_serves_the_batch_with_its_allocator_and_exposure() {
    let batch = start_batch();
    let pid = batch.0.id();
    let (_exporter, addr) = start_exporter();
    let body = scrape_until_seen(&addr, pid);
    let (exposure, line) = sample(&body, "hugeguard_process_exposure_bytes", pid).unwrap();
    assert!(line.contains("allocator=\"glibc\""), "{line}");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert!(
        line.contains(&format!("comm=\"{}\"", comm.trim())),
        "{line}"
    );
    let want = cli_exposure(pid);
    assert!(want > 16e6, "the batch should be exposed: {want}");
    assert!(
        within_5_percent(exposure, want),
        "exporter {exposure} against inspect --json {want}"
    );
    let (rss, _) = sample(&body, "hugeguard_process_rss_bytes", pid).unwrap();
    let (predicted, _) = sample(&body, "hugeguard_process_predicted_rss_bytes", pid).unwrap();
    assert_eq!(predicted, rss + exposure);
    let (_, info) = sample(&body, "hugeguard_process_info", pid).unwrap();
    assert!(info.contains("protected=\"no\""), "{info}");
    assert!(
        info.contains("LD_PRELOAD=libhugeguard_preload.so"),
        "{info}"
    );
    // The host's part: settings, totals, khugepaged's counters, the scan.
    for name in [
        "hugeguard_thp_enabled{mode=",
        "hugeguard_thp_max_ptes_none ",
        "hugeguard_host_exposure_bytes ",
        "hugeguard_khugepaged_full_scans_total ",
        "hugeguard_scan_duration_seconds ",
    ] {
        assert!(body.contains(name), "no {name} in the scrape");
    }
    // Anything but /metrics and / is not found.
    assert!(get(&addr, "/nope").unwrap().0.contains("404"));
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `s` with what a URL query may not hold percent-encoded.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_the_exporter_and_answers_a_query() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no prometheus here (Debian: apt-get install prometheus)");
        return;
    }
    let batch = start_batch();
    let pid = batch.0.id();
    let (_exporter, addr) = start_exporter();
    let dir = target_dir().join(format!("prometheus-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        docs().join("prometheus-rules.yml"),
        dir.join("prometheus-rules.yml"),
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - prometheus-rules.yml\n\
         scrape_configs:\n  - job_name: hugeguard-inspect\n    static_configs:\n      - targets: ['{addr}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address={web}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let prometheus = Proc(cmd.spawn().unwrap());
    let query = format!("hugeguard_process_exposure_bytes{{pid=\"{pid}\"}}");
    let path = format!("/api/v1/query?query={}", url_encode(&query));
    let deadline = Instant::now() + Duration::from_secs(90);
    let value = loop {
        if let Ok((status, body)) = get(&web, &path) {
            if status.contains("200") {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                    assert_eq!(r["metric"]["allocator"], "glibc", "{body}");
                    break r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus had no answer within 90 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let want = cli_exposure(pid);
    println!("PromQL {query} = {value}; hugeguard-inspect {pid} --json --always: {want}");
    assert!(
        within_5_percent(value, want),
        "Prometheus {value} against inspect --json {want}"
    );
    // The recording rule is evaluated on the scraped series too.
    let ratio = format!(
        "/api/v1/query?query={}",
        url_encode(&format!(
            "hugeguard:process_exposure_ratio{{pid=\"{pid}\"}}"
        ))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(&web, &ratio).unwrap();
        if body.contains("\"result\":[{") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recording rule result: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Prometheus is a Go program: the exporter reads its version from the
    // binary's build info.
    let prom_pid = prometheus.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let (_, body) = get(&addr, "/metrics").unwrap();
        if let Some((_, line)) = sample(&body, "hugeguard_process_info", prom_pid) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus (pid {prom_pid}) not in the scrape"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        info.contains("allocator=\"go\",runtime=\"go\",go_version=\"go1."),
        "{info}"
    );
    println!("{info}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `promtool ARGS` in `docs/deploy`; `None` where promtool is absent,
/// else whether it passed and what it printed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(docs())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn the_shipped_rules_pass_promtool() {
    let Some(check) = promtool(&["check", "rules", "prometheus-rules.yml"]) else {
        eprintln!("skipped: no promtool here (Debian: apt-get install prometheus)");
        return;
    };
    for (ok, text) in [
        check,
        promtool(&["test", "rules", "prometheus-rules.test.yml"]).unwrap(),
        promtool(&["check", "config", "prometheus.yml"]).unwrap(),
    ] {
        assert!(ok, "{text}");
    }
}

#[test]
fn the_daemonset_asks_for_host_pids_and_two_capabilities_only() {
    let text = std::fs::read_to_string(docs().join("hugeguard-inspect-daemonset.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["kind"], "DaemonSet");
    assert_eq!(doc["apiVersion"], "apps/v1");
    let spec = &doc["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    let listen = args.iter().position(|a| *a == "--listen").unwrap();
    let port: u64 = args[listen + 1]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port));
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(
        caps["drop"],
        serde_yaml::from_str::<serde_yaml::Value>("[ALL]").unwrap()
    );
    let mut add: Vec<&str> = caps["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    add.sort();
    assert_eq!(add, ["DAC_READ_SEARCH", "SYS_PTRACE"]);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // The selector selects the pods it makes.
    assert_eq!(
        doc["spec"]["selector"]["matchLabels"],
        doc["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn the_systemd_unit_runs_the_exporter_with_two_capabilities_only() {
    let text = std::fs::read_to_string(docs().join("hugeguard-inspect.service")).unwrap();
    // An INI file: sections, then key=value lines.
    let mut section = String::new();
    let mut keys = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.insert(format!("{section}.{k}"), v.to_string());
    }
    let exec = &keys["Service.ExecStart"];
    assert!(exec.contains("hugeguard-inspect serve --listen"), "{exec}");
    for key in [
        "Service.AmbientCapabilities",
        "Service.CapabilityBoundingSet",
    ] {
        let mut caps: Vec<&str> = keys[key].split_whitespace().collect();
        caps.sort();
        assert_eq!(caps, ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"], "{key}");
    }
    assert_eq!(keys["Service.NoNewPrivileges"], "yes");
    assert_eq!(keys["Install.WantedBy"], "multi-user.target");
    // systemd's own check where it is installed.
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(docs().join("hugeguard-inspect.service"))
        .output()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        // What it says about the unit: that the binary is not installed
        // here, and nothing else.
        let other: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("hugeguard-inspect.service:"))
            .filter(|l| !l.contains("/usr/local/bin/hugeguard-inspect"))
            .collect();
        assert!(other.is_empty(), "systemd-analyze: {err}");
    } else {
        eprintln!("note: no systemd-analyze here; the unit was parsed only");
    }
}

/// `hugeguard-inspect scan` run as user 65534 through `setpriv`, with the
/// capabilities `caps` (`+a,+b`) if given; its output.
fn scan_as_nobody(caps: Option<&str>) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if let Some(c) = caps {
        cmd.arg(format!("--inh-caps={c}"))
            .arg(format!("--ambient-caps={c}"));
    }
    cmd.arg(env!("CARGO_BIN_EXE_hugeguard-inspect"))
        .args(["scan", "--top", "5"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn without_the_two_capabilities_it_scans_its_own_user_and_says_so() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv (util-linux) to run as another user");
        return;
    }
    let own = scan_as_nobody(None);
    assert!(
        own.contains("hugeguard_scan_scope{scope=\"uid 65534\"} 1"),
        "{own}"
    );
    // Other users' processes are left out, not counted as errors.
    assert!(own.contains("hugeguard_scan_errors 0"), "{own}");
    let with_ptrace_only = scan_as_nobody(Some("+sys_ptrace"));
    assert!(
        with_ptrace_only.contains("scope=\"uid 65534\""),
        "{with_ptrace_only}"
    );
    let all = scan_as_nobody(Some("+sys_ptrace,+dac_read_search"));
    assert!(
        all.contains("hugeguard_scan_scope{scope=\"all\"} 1"),
        "{all}"
    );
}
