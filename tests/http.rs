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
    assert_eq!(sample(&metrics, "kai_request_duration_seconds_count{op=\"set\"} "), 20.0);
    assert_eq!(sample(&metrics, "kai_request_duration_seconds_bucket{op=\"set\",le=\"+Inf\"} "), 20.0);
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
