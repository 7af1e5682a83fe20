//! Who is calling and how urgent it is. Open mode reads `x-tenant-id` and `x-priority`; with
//! API keys, [`crate::governance::Governance::identify`] lets the key decide.

use std::sync::Arc;

use axum::http::HeaderMap;
use llmgw_proto::v1::Priority;

use crate::error::ApiError;
use crate::governance::policy::Tenant;

/// The caller's identity and class for one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    pub priority: Priority,
    pub request_id: String,
    /// The configured tenant's rules (with keys: always; open mode: if the tenant is listed).
    pub tenant_rules: Option<Arc<Tenant>>,
    /// The configured label of the key used, for logs; never the key.
    pub key_name: Option<String>,
    /// The tenant as metric labels show it: a configured tenant's name, `other` for unlisted
    /// tenants under a config file (so clients cannot mint series), the header's tenant id
    /// without one.
    pub metrics_tenant: String,
    /// The first-token objective the client asked for (`x-slo-ttft-ms`); 0 = none.
    pub slo_ttft_ms: u32,
    /// The time-per-output-token objective it asked for (`x-slo-tpot-ms`); 0 = none.
    pub slo_tpot_ms: u32,
}

impl Caller {
    /// The model globs the configured tenant may be served by (fallbacks included); empty =
    /// any model.
    pub fn allowed_models(&self) -> Vec<String> {
        self.tenant_rules
            .as_ref()
            .and_then(|tenant| tenant.model_globs())
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    /// Reads and checks the headers; a bad value is a 400 naming the header. `request_id` is
    /// the one the request-id layer settled on.
    pub fn from_headers(headers: &HeaderMap, request_id: String) -> Result<Self, ApiError> {
        let tenant = match header(headers, "x-tenant-id")? {
            None => llmgw_proto::ANONYMOUS_TENANT.to_owned(),
            Some(tenant) if valid_token(tenant) => tenant.to_owned(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "x-tenant-id",
                    "header `x-tenant-id` must be 1 to 64 characters of letters, digits, `.`, `_` or `-`",
                ));
            }
        };
        let priority = match header(headers, "x-priority")? {
            None => Priority::Interactive,
            Some(value) => parse_priority(value).ok_or_else(|| {
                ApiError::invalid(
                    "x-priority",
                    format!(
                        "header `x-priority` must be critical, interactive or batch; got `{value}`"
                    ),
                )
            })?,
        };
        Ok(Self {
            metrics_tenant: tenant.clone(),
            tenant,
            priority,
            request_id,
            tenant_rules: None,
            key_name: None,
            slo_ttft_ms: slo_ttft_ms(headers)?,
            slo_tpot_ms: slo_tpot_ms(headers)?,
        })
    }
}

/// The longest first-token objective a client may ask for: an hour.
const MAX_SLO_TTFT_MS: u32 = 3_600_000;
/// The longest time-per-output-token objective a client may ask for: a minute.
const MAX_SLO_TPOT_MS: u32 = 60_000;

/// `x-slo-ttft-ms`: the client's first-token objective in milliseconds (1 to 3,600,000), in
/// every auth mode — it asks to be refused early, it chooses nothing about who it is.
pub fn slo_ttft_ms(headers: &HeaderMap) -> Result<u32, ApiError> {
    objective_ms(headers, "x-slo-ttft-ms", MAX_SLO_TTFT_MS)
}

/// `x-slo-tpot-ms`: the client's objective for the time between output tokens, in
/// milliseconds (1 to 60,000); like the first-token one, it only asks to be refused early.
pub fn slo_tpot_ms(headers: &HeaderMap) -> Result<u32, ApiError> {
    objective_ms(headers, "x-slo-tpot-ms", MAX_SLO_TPOT_MS)
}

/// An objective header's milliseconds; 0 when absent.
fn objective_ms(headers: &HeaderMap, name: &'static str, max: u32) -> Result<u32, ApiError> {
    let Some(value) = header(headers, name)? else {
        return Ok(0);
    };
    value
        .parse::<u32>()
        .ok()
        .filter(|ms| (1..=max).contains(ms))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("header `{name}` must be a whole number of milliseconds from 1 to {max}"),
            )
        })
}

/// `critical` | `interactive` | `batch`, case-insensitive.
pub fn parse_priority(value: &str) -> Option<Priority> {
    match value.trim().to_ascii_lowercase().as_str() {
        "critical" => Some(Priority::Critical),
        "interactive" => Some(Priority::Interactive),
        "batch" => Some(Priority::Batch),
        _ => None,
    }
}

/// The header word for a priority.
pub fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "critical",
        Priority::Interactive | Priority::Unspecified => "interactive",
        Priority::Batch => "batch",
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| ApiError::invalid(name, format!("header `{name}` must be visible ASCII"))),
    }
}

pub use llmgw_proto::valid_token;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn reads_a_first_token_objective_and_names_the_header_when_it_is_wrong() {
        let caller =
            Caller::from_headers(&headers(&[("x-slo-ttft-ms", "250")]), "r".into()).unwrap();
        assert_eq!(caller.slo_ttft_ms, 250);
        // Found by the `headers` fuzz target: a value that is not visible ASCII.
        let not_ascii = axum::http::HeaderValue::from_bytes(b"n\x9f").unwrap();
        let bad_values = ["0", "-5", "fast", "3600001"].map(axum::http::HeaderValue::from_static);
        for bad in bad_values.into_iter().chain([not_ascii]) {
            let mut map = HeaderMap::new();
            map.insert("x-slo-ttft-ms", bad.clone());
            let err = Caller::from_headers(&map, "r".into()).unwrap_err();
            assert_eq!(
                err.envelope().error.param.as_deref(),
                Some("x-slo-ttft-ms"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn defaults_to_anonymous_interactive() {
        let caller = Caller::from_headers(&HeaderMap::new(), "r".into()).unwrap();
        assert_eq!(caller.tenant, "anonymous");
        assert_eq!(caller.priority, Priority::Interactive);
    }

    #[test]
    fn reads_tenant_priority_and_request_id() {
        let caller = Caller::from_headers(
            &headers(&[("x-tenant-id", "team-a"), ("x-priority", "Batch")]),
            "abc-123".into(),
        )
        .unwrap();
        assert_eq!(
            (
                caller.tenant.as_str(),
                caller.priority,
                caller.request_id.as_str()
            ),
            ("team-a", Priority::Batch, "abc-123")
        );
    }

    #[test]
    fn bad_values_name_the_header() {
        let err =
            Caller::from_headers(&headers(&[("x-priority", "urgent")]), String::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header `x-priority` must be critical, interactive or batch; got `urgent`"
        );
        let err =
            Caller::from_headers(&headers(&[("x-tenant-id", "a b")]), String::new()).unwrap_err();
        assert!(err.to_string().contains("x-tenant-id"));
    }
}
