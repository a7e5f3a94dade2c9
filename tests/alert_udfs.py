"""The same alert rule as a Python, a Node and a Rust UDF: every row
``[block_number, value]`` with ``value >= 1000`` becomes one alert whose dedupe key is
derived from the data (so a retried attempt produces the same keys)."""

from __future__ import annotations

THRESHOLD = 1000

PYTHON_ALERTS = b"""
def main(event, context):
    alerts = []
    for block, value in event["inputs"]["rows"]:
        if value >= 1000:
            alerts.append({
                "dedupe_key": f"large-transfer-{block}",
                "event_time": "2026-01-01T00:00:00Z",
                "severity": "warning",
                "chain_id": 1,
                "block_number": block,
                "payload": {"value": value, "runtime": "python"},
            })
    return {"alerts": alerts}
"""

NODE_ALERTS = b"""
exports.handler = async (event) => ({
  alerts: event.inputs.rows
    .filter(([, value]) => value >= 1000)
    .map(([block, value]) => ({
      dedupe_key: `large-transfer-${block}`,
      event_time: "2026-01-01T00:00:00Z",
      severity: "warning",
      chain_id: 1,
      block_number: block,
      payload: { value, runtime: "node" },
    })),
});
"""

# std only: scan the integers of "rows" in pairs.
RUST_ALERTS = rb"""
use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let rows = &input[input.find("\"rows\":").expect("rows") + 7..];
    let rows = &rows[..rows.find("]]").map(|i| i + 2).unwrap_or(2)];
    let mut numbers: Vec<i64> = Vec::new();
    let mut current = String::new();
    for c in rows.chars() {
        if c.is_ascii_digit() || (c == '-' && current.is_empty()) {
            current.push(c);
        } else if !current.is_empty() {
            numbers.push(current.parse().expect("number"));
            current.clear();
        }
    }
    let mut alerts: Vec<String> = Vec::new();
    for pair in numbers.chunks(2) {
        if pair.len() == 2 && pair[1] >= 1000 {
            alerts.push(format!(
                "{{\"dedupe_key\":\"large-transfer-{}\",\"event_time\":\"2026-01-01T00:00:00Z\",\"severity\":\"warning\",\"chain_id\":1,\"block_number\":{},\"payload\":{{\"value\":{},\"runtime\":\"rust\"}}}}",
                pair[0], pair[0], pair[1]
            ));
        }
    }
    let out = format!("{{\"alerts\":[{}]}}", alerts.join(","));
    std::io::stdout().write_all(out.as_bytes()).expect("stdout");
}
"""
