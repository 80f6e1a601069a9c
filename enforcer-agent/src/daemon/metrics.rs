//! Prometheus metrics: counters kept by the agent, rendered in the text exposition format
//! and served over HTTP on a TCP address (off unless `--metrics-addr` is given).

use std::{collections::BTreeMap, convert::Infallible, fmt::Write as _, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::command::Command;

/// Counters the agent updates as it works.
#[derive(Default)]
pub struct Metrics {
    /// (identity, hook, decision) → verdicts written.
    pub verdicts: BTreeMap<(String, String, String), u64>,
    pub apply_errors: u64,
}

/// A point-in-time view for rendering.
pub struct Snapshot<'a> {
    pub metrics: &'a Metrics,
    pub generation: u64,
    pub kernel_counters: &'a [(&'static str, u64)],
    pub maps: &'a [(&'static str, usize, u32)],
    pub uptime_seconds: u64,
    /// Cgroups a selector picks that are not bound (retried on every rescan).
    pub failed_bindings: usize,
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP enforcer_verdicts_total Verdicts written, by identity, hook and decision.");
    let _ = writeln!(out, "# TYPE enforcer_verdicts_total counter");
    for ((identity, hook, decision), n) in &s.metrics.verdicts {
        let _ = writeln!(
            out,
            "enforcer_verdicts_total{{identity=\"{}\",hook=\"{}\",decision=\"{}\"}} {n}",
            label(identity),
            label(hook),
            label(decision)
        );
    }
    let _ = writeln!(out, "# HELP enforcer_kernel_events_total Counters kept by the kernel programs.");
    let _ = writeln!(out, "# TYPE enforcer_kernel_events_total counter");
    for (name, n) in s.kernel_counters {
        let _ = writeln!(out, "enforcer_kernel_events_total{{counter=\"{name}\"}} {n}");
    }
    let dropped = s.kernel_counters.iter().find(|(n, _)| *n == "events_dropped").map_or(0, |(_, v)| *v);
    let _ =
        writeln!(out, "# HELP enforcer_events_dropped_total Verdict events the kernel could not deliver.");
    let _ = writeln!(out, "# TYPE enforcer_events_dropped_total counter");
    let _ = writeln!(out, "enforcer_events_dropped_total {dropped}");
    let _ = writeln!(out, "# HELP enforcer_policy_generation Generation of the policy set in force.");
    let _ = writeln!(out, "# TYPE enforcer_policy_generation gauge");
    let _ = writeln!(out, "enforcer_policy_generation {}", s.generation);
    let _ = writeln!(out, "# HELP enforcer_map_entries Entries in use per map (both slots).");
    let _ = writeln!(out, "# TYPE enforcer_map_entries gauge");
    for (map, used, _) in s.maps {
        let _ = writeln!(out, "enforcer_map_entries{{map=\"{map}\"}} {used}");
    }
    let _ = writeln!(out, "# HELP enforcer_map_capacity Capacity per map.");
    let _ = writeln!(out, "# TYPE enforcer_map_capacity gauge");
    for (map, _, capacity) in s.maps {
        let _ = writeln!(out, "enforcer_map_capacity{{map=\"{map}\"}} {capacity}");
    }
    let _ = writeln!(out, "# HELP enforcer_apply_errors_total Policy applies refused.");
    let _ = writeln!(out, "# TYPE enforcer_apply_errors_total counter");
    let _ = writeln!(out, "enforcer_apply_errors_total {}", s.metrics.apply_errors);
    let _ =
        writeln!(out, "# HELP enforcer_failed_bindings Selected cgroups that could not be bound (retried).");
    let _ = writeln!(out, "# TYPE enforcer_failed_bindings gauge");
    let _ = writeln!(out, "enforcer_failed_bindings {}", s.failed_bindings);
    let _ = writeln!(out, "# HELP enforcer_uptime_seconds Seconds since the agent started.");
    let _ = writeln!(out, "# TYPE enforcer_uptime_seconds gauge");
    let _ = writeln!(out, "enforcer_uptime_seconds {}", s.uptime_seconds);
    out
}

async fn scrape(commands: &mpsc::Sender<Command>) -> Response<Full<Bytes>> {
    let (reply, answer) = oneshot::channel();
    if commands.send(Command::Metrics(reply)).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    match answer.await {
        Ok(body) => text(StatusCode::OK, body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "no answer\n".to_owned()),
    }
}

/// How long the main loop may take to answer a probe before the agent counts as hung.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Liveness: the main loop answers. Readiness: it also says it is ready (enforcing, and
/// with `--kubernetes` both watches listed).
async fn health(commands: &mpsc::Sender<Command>, readiness: bool) -> Response<Full<Bytes>> {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        commands.send(Command::Ready(reply)).await.map_err(|_| ())?;
        answer.await.map_err(|_| ())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(Ok(Err(why))) if readiness => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Ok(Ok(_)) => text(StatusCode::OK, "ok\n".to_owned()),
        Ok(Err(())) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned()),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the main loop did not answer in time\n".to_owned()),
    }
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` on `addr`, asking the main loop.
pub async fn serve(addr: SocketAddr, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let commands = Arc::new(commands);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let commands = Arc::clone(&commands);
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let commands = Arc::clone(&commands);
                    async move {
                        Ok::<_, Infallible>(match request.uri().path() {
                            "/metrics" => scrape(&commands).await,
                            "/healthz" => health(&commands, false).await,
                            "/readyz" => health(&commands, true).await,
                            _ => {
                                text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n".to_owned())
                            }
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut metrics = Metrics::default();
        metrics.verdicts.insert(("ci\"x".into(), "exec".into(), "deny".into()), 3);
        let text = render(&Snapshot {
            metrics: &metrics,
            generation: 4,
            kernel_counters: &[("deny", 3), ("events_dropped", 1)],
            maps: &[("PATH_RULES", 10, 65536)],
            uptime_seconds: 9,
            failed_bindings: 0,
        });
        assert!(
            text.contains(
                "enforcer_verdicts_total{identity=\"ci\\\"x\",hook=\"exec\",decision=\"deny\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("enforcer_events_dropped_total 1\n"));
        assert!(text.contains("enforcer_policy_generation 4\n"));
        assert!(text.contains("enforcer_map_capacity{map=\"PATH_RULES\"} 65536\n"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "undeclared {name}");
        }
    }
}
