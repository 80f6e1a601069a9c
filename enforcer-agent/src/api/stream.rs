//! `GET /v1/verdicts`: past records (`since`, `last`), then live ones (`follow`), as JSON
//! lines. Live records come from a broadcast channel, so a slow or dead client only loses
//! its own records (and is told how many) and never holds up the agent.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use tokio::sync::{broadcast, mpsc};

use super::{VerdictFilter, error};
use crate::daemon::{command::Handles, verdict_log::Line};

/// Records a follower may fall behind by before it is told it lost some.
const BUFFERED_LINES: usize = 1024;

impl VerdictFilter {
    fn matches_line(&self, line: &Line) -> bool {
        self.matches(&line.kind, |field| match field {
            "identity" => line.identity.as_deref(),
            "policy" => line.policy.as_deref(),
            "decision" => line.decision.as_deref(),
            "hook" => line.hook.as_deref(),
            _ => None,
        })
    }
}

pub(super) async fn verdicts(
    State(h): State<Handles>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |name: &str| query.get(name).cloned();
    let filter = VerdictFilter {
        identity: get("identity"),
        policy: get("policy"),
        decision: get("decision"),
        hook: get("hook"),
    };
    let since: Option<jiff::Timestamp> = match query.get("since").map(|s| s.parse::<jiff::Timestamp>()) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("since must be an RFC 3339 time: {e}"));
        }
    };
    let last: Option<usize> = match query.get("last").map(|l| l.parse()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "last must be a whole number"),
    };
    let follow = query.get("follow").is_some_and(|v| v.is_empty() || v == "true" || v == "1");
    // Subscribe before reading the history so nothing falls between the two.
    let live = h.verdicts.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_LINES);
    tokio::spawn(feed(tx, live, Arc::clone(&h.history), filter, since, last, follow));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

/// Sends the past records that pass, then (with `follow`) each new one, until the client
/// goes away.
async fn feed(
    tx: mpsc::Sender<Bytes>,
    mut live: broadcast::Receiver<Arc<Line>>,
    history: crate::daemon::command::History,
    filter: VerdictFilter,
    since: Option<jiff::Timestamp>,
    last: Option<usize>,
    follow: bool,
) {
    // Reading rotated logs is file I/O: kept off the thread that drains the ring.
    let Ok(lines) = tokio::task::spawn_blocking(move || history()).await else { return };
    let mut past: Vec<Line> = lines
        .into_iter()
        .filter_map(Line::from_json)
        .filter(|l| filter.matches_line(l) && since.is_none_or(|s| l.at.is_some_and(|at| at >= s)))
        .collect();
    if since.is_none() {
        let keep = last.unwrap_or(0);
        past.drain(..past.len().saturating_sub(keep));
    }
    let newest = past.last().and_then(|l| l.at);
    for line in past {
        if tx.send(Bytes::from(line.json + "\n")).await.is_err() {
            return;
        }
    }
    if !follow {
        return;
    }
    loop {
        let text = match live.recv().await {
            Ok(record) if record.at > newest && filter.matches_line(&record) => record.json.clone() + "\n",
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => format!(
                "{{\"type\":\"dropped\",\"count\":{missed},\"reason\":\"this follower fell behind\"}}\n"
            ),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(Bytes::from(text)).await.is_err() {
            return; // the client went away
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_dropped_notices() {
        let line = |json: &str| Line::from_json(json.to_owned()).unwrap();
        let f = VerdictFilter {
            identity: Some("a".into()),
            policy: None,
            decision: Some("deny".into()),
            hook: None,
        };
        assert!(f.matches_line(&line(r#"{"type":"verdict","identity":"a","decision":"deny"}"#)));
        assert!(!f.matches_line(&line(r#"{"type":"verdict","identity":"b","decision":"deny"}"#)));
        assert!(!f.matches_line(&line(r#"{"type":"policy"}"#)));
        assert!(f.matches_line(&line(r#"{"type":"dropped","count":3}"#)));
    }

    #[test]
    fn record_times_compare_as_instants() {
        let at = |t: &str| Line::from_json(format!("{{\"type\":\"verdict\",\"time\":\"{t}\"}}")).unwrap().at;
        let whole = at("2026-11-22T10:00:00Z");
        let later = at("2026-11-22T10:00:00.1Z");
        assert!(whole.is_some() && later > whole, "as text, the later record would sort first");
        assert!(at("2026-11-22T11:00:00+02:00") < whole, "offsets are honoured");
    }
}
