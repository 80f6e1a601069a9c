//! The agent's local API: HTTP/1.1 with JSON bodies on a Unix socket.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`Status`] |
//! | GET | `/v1/policies` | | [`PolicyList`] |
//! | GET | `/v1/policies/{name}` | | the policy document (JSON) |
//! | POST | `/v1/policies?dryRun=true` | YAML or JSON documents | [`ApplyResult`] |
//! | DELETE | `/v1/policies/{name}?dryRun=true` | | [`ApplyResult`] |
//! | GET | `/v1/identities` | | `[`[`IdentityInfo`]`]` |
//! | POST | `/v1/check` | [`CheckRequest`] | [`crate::policy::evaluate::Explanation`] |
//! | GET | `/v1/verdicts?follow=true&since=…&identity=…&policy=…&decision=…&hook=…` | | JSON lines |
//! | POST | `/v1/containers` | [`ContainerStart`] (from `enforcer oci-hook`) | [`ContainerBound`] |
//!
//! Errors answer `{"error": "..."}` with 400 (bad request), 403 (caller not allowed),
//! 404 (no such policy or path), 405, 413 (body over [`MAX_BODY`]) or 500.

pub mod client;
pub mod routes;
pub mod server;
pub mod stream;

use serde::{Deserialize, Serialize};

pub use crate::daemon::{
    command::{ApprovalAnswer, GrantBody, QuarantineBody, RevokeBody},
    live::GrantTarget,
    reports::{
        ApplyResult, CgroupInfo, CheckRequest, ContainerBound, ContainerStart, IdentityInfo, MapUsage,
        PolicyList, PolicySummary, ProgramStatus, RuleCounts, Status,
    },
    verdict_log::Line,
};

pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";
/// Largest request body accepted: a policy set at its limits (131,072 path rules or
/// 65,536 CIDRs) is about 8 MiB of YAML.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `{"error": message}` with `status`.
pub fn error(status: axum::http::StatusCode, message: impl Into<String>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (status, axum::Json(ApiError { error: message.into() })).into_response()
}

/// Which records a reader of verdicts wants: the same rules for the API's stream and for
/// `enforcer verdicts show` on a log file.
#[derive(Debug, Clone, Default)]
pub struct VerdictFilter {
    pub identity: Option<String>,
    pub policy: Option<String>,
    pub decision: Option<String>,
    pub hook: Option<String>,
}

impl VerdictFilter {
    /// Whether a record of type `kind` whose fields `field` returns passes. Notices of
    /// lost records always pass; other non-verdict records only when nothing is filtered.
    pub fn matches<'a>(&self, kind: &str, field: impl Fn(&str) -> Option<&'a str>) -> bool {
        if kind == "dropped" {
            return true;
        }
        let wanted = [
            ("identity", &self.identity),
            ("policy", &self.policy),
            ("decision", &self.decision),
            ("hook", &self.hook),
        ];
        if kind != "verdict" {
            return wanted.iter().all(|(_, w)| w.is_none());
        }
        wanted.iter().all(|(name, w)| w.as_deref().is_none_or(|w| field(name) == Some(w)))
    }
}
