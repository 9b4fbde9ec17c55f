//! The HTTP port as operators and their tools use it: Prometheus scrapes
//! `/metrics`, people open `/status`, load balancers ask `/health`.

mod common;

use common::{TestCluster, TestNode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plain HTTP/1.0 GET: (status code, content type, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let content_type =
        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string)).unwrap_or_default();
    (code, content_type, body.to_string())
}

fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
}

#[test]
fn metrics_status_and_health_on_a_cluster() {
    let cluster = TestCluster::start(3, &[]);
    let node = &cluster.nodes[0];
    let c = node.client();
    for i in 0..20 {
        c.set(&format!("h{i}"), "v", 0).unwrap();
        c.get::<String>(&format!("h{i}")).unwrap();
    }
    c.get::<String>("absent").unwrap();

    let (code, content_type, metrics) = get(node.http_port, "/metrics");
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert_eq!(sample(&metrics, "kai_requests_total{command=\"get\",outcome=\"hit\"} "), 20.0);
    assert_eq!(sample(&metrics, "kai_requests_total{command=\"get\",outcome=\"miss\"} "), 1.0);
    assert_eq!(sample(&metrics, "kai_members{state=\"up\"} "), 3.0);
    assert_eq!(sample(&metrics, "kai_request_duration_seconds_count{command=\"set\"} "), 20.0);
    assert_eq!(sample(&metrics, "kai_request_duration_seconds_bucket{command=\"set\",le=\"+Inf\"} "), 20.0);
    assert!(sample(&metrics, "kai_items{engine=\"disk\"} ") >= 20.0);
    assert_eq!(sample(&metrics, "kai_actor_restarts_total{module=\"coordinator\"} "), 0.0);

    let (code, content_type, json) = get(node.http_port, "/status.json");
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert_eq!(status["members"].as_array().unwrap().iter().map(|m| m["buckets_first"].as_u64().unwrap()).sum::<u64>(), 1024);
    assert!(!status["latency"][0][1].as_array().unwrap().is_empty());

    let (code, content_type, page) = get(node.http_port, "/status");
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for part in ["<svg id=\"ring\"", "id=\"members\"", "id=\"transfers\"", "id=\"latency\"", "/status.json", "setInterval"] {
        assert!(page.contains(part), "the page has no {part}");
    }
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from outside the node");

    let (code, _, body) = get(node.http_port, "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(get(node.http_port, "/nothing").0, 404);
}

#[test]
fn http_port_zero_turns_it_off() {
    let node = TestNode::start(&["http_port=0"]);
    assert!(TcpStream::connect(("127.0.0.1", node.http_port)).is_err());
    assert!(node.client().set("k", "v", 0).is_ok());
}

/// The exposition parsed by Prometheus' own Python client library: its
/// families with the types they declare, and values that move with traffic.
fn parsed_metrics(port: u16) -> serde_json::Value {
    let (_, _, text) = get(port, "/metrics");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/parse_metrics.py");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (bash tests/clients/install.sh installs its Prometheus parser)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the exposition does not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(families: &serde_json::Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .find(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][k] == *v))
        .unwrap_or_else(|| panic!("no {sample} {labels:?}"))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn a_prometheus_parser_reads_the_metrics_and_they_move_with_traffic() {
    let node = TestNode::start(&[]);
    let before = parsed_metrics(node.http_port);
    for (family, kind) in [
        ("kai_requests", "counter"),
        ("kai_request_duration_seconds", "histogram"),
        ("kai_quorum_failures", "counter"),
        ("kai_hints_pending", "gauge"),
        ("kai_members", "gauge"),
        ("kai_items", "gauge"),
        ("kai_actor_restarts", "counter"),
        ("kai_load_shed", "counter"),
    ] {
        assert_eq!(before[family]["type"], kind, "{family}: {}", before[family]);
    }
    let c = node.client();
    for i in 0..25 {
        c.set(&format!("p{i}"), "v", 0).unwrap();
        c.get::<String>(&format!("p{i}")).unwrap();
    }
    let after = parsed_metrics(node.http_port);
    let hits = |m: &serde_json::Value| value(m, "kai_requests", "kai_requests_total", &[("command", "get"), ("outcome", "hit")]);
    assert_eq!(hits(&after) - hits(&before), 25.0);
    let sets = |m: &serde_json::Value| {
        value(m, "kai_request_duration_seconds", "kai_request_duration_seconds_count", &[("command", "set")])
    };
    assert_eq!(sets(&after) - sets(&before), 25.0);
    assert_eq!(value(&after, "kai_items", "kai_items", &[("engine", "disk")]), 25.0);
    assert_eq!(value(&after, "kai_members", "kai_members", &[("state", "up")]), 1.0);
}

/// `/status` in a real browser (Debian's headless Chromium): the rendered
/// page names every live member with its state; a screenshot is kept
/// under the target directory.
#[test]
fn the_status_page_renders_the_cluster_in_a_browser() {
    let cluster = TestCluster::start(3, &[]);
    cluster.nodes[0].client().set("big", "x".repeat(3000).as_str(), 0).unwrap();
    let url = format!("http://127.0.0.1:{}/status", cluster.nodes[0].http_port);
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        let out = std::process::Command::new("timeout")
            .args(["60", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--virtual-time-budget=5000")
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (bash tests/clients/install.sh installs it)");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    for node in &cluster.nodes {
        let row = dom.split("<tr>").find(|r| r.contains(&format!("<td>{}</td>", node.api_addr())));
        let row = row.unwrap_or_else(|| panic!("{} not on the rendered page:\n{dom}", node.api_addr()));
        assert!(row.contains(">up</span>"), "{} not shown up: {row}", node.api_addr());
        let phi = row.split("</div></div> ").nth(1).unwrap_or_default();
        assert!(phi.starts_with(|c: char| c.is_ascii_digit()), "{} shows no phi figure: {row}", node.api_addr());
    }
    assert!(dom.contains("KiB</b>"), "bytes in human units:\n{dom}");
    assert!(dom.contains("1024 buckets"), "the ring is drawn");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {}", shot.display());
    println!("status page screenshot: {}", shot.display());
}

/// A load balancer's question is readiness: this node can coordinate.
/// Peers going down leave the survivor ready (its quorum failures are in
/// `/status.json` and a metric), so a load balancer never drops every
/// surviving node at once; liveness is the process alone.
#[test]
fn readiness_is_this_node_and_quorum_reachability_is_reported_apart() {
    let mut cluster = TestCluster::start(3, &[]);
    let port = cluster.nodes[0].http_port;
    for path in ["/livez", "/readyz", "/health"] {
        assert_eq!(get(port, path).0, 200, "{path}");
    }
    let (_, _, json) = get(port, "/status.json");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((status["buckets_without_quorum"].as_u64(), status["quorum_reachable"].as_bool()), (Some(0), Some(true)));
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    let (b, c) = (cluster.nodes[1].api_addr(), cluster.nodes[2].api_addr());
    cluster.nodes[0].wait_for_member(&b, false, Duration::from_secs(15));
    cluster.nodes[0].wait_for_member(&c, false, Duration::from_secs(15));
    for path in ["/livez", "/readyz", "/health"] {
        assert_eq!(get(port, path).0, 200, "{path} with two of three peers down");
    }
    let (_, _, json) = get(port, "/status.json");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((status["buckets_without_quorum"].as_u64(), status["quorum_reachable"].as_bool()), (Some(1024), Some(false)));
    let (_, _, metrics) = get(port, "/metrics");
    assert_eq!(sample(&metrics, "kai_buckets_without_quorum "), 1024.0);
    cluster.nodes[1].launch();
    common::wait_for("quorum back", Duration::from_secs(20), || {
        let (_, _, json) = get(port, "/status.json");
        json.contains("\"quorum_reachable\":true")
    });
}

/// A node that has not joined is alive but not ready, and says why.
#[test]
fn a_joining_node_is_alive_but_not_ready() {
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let node = TestNode::start(&[common::CLUSTER, &[&format!("seeds=[\"{nowhere}\"]")]].concat());
    assert_eq!(get(node.http_port, "/livez").0, 200);
    let (code, _, body) = get(node.http_port, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("joining"), "{body}");
    assert_eq!(get(node.http_port, "/health").0, 503, "/health is /readyz");
}
