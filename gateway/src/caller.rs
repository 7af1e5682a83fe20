//! Who is calling and how urgent it is, from request headers (open mode: `x-tenant-id`,
//! `x-priority`; the auth issue makes the API key decide). Also the request id.

use axum::http::HeaderMap;
use llmgw_proto::v1::Priority;

use crate::error::ApiError;

/// Tenant used when the request names none.
pub const ANONYMOUS: &str = "anonymous";

/// The caller's identity and class for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub priority: Priority,
    pub request_id: String,
}

impl Caller {
    /// Reads and checks the headers; a bad value is a 400 naming the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let tenant = match header(headers, "x-tenant-id")? {
            None => ANONYMOUS.to_owned(),
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
        let request_id = header(headers, "x-request-id")?
            .filter(|id| valid_token(id))
            .map_or_else(|| format!("req_{:016x}", fastrand::u64(..)), str::to_owned);
        Ok(Self {
            tenant,
            priority,
            request_id,
        })
    }
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

fn valid_token(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

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
    fn defaults_to_anonymous_interactive_with_a_fresh_id() {
        let caller = Caller::from_headers(&HeaderMap::new()).unwrap();
        assert_eq!(caller.tenant, "anonymous");
        assert_eq!(caller.priority, Priority::Interactive);
        assert!(caller.request_id.starts_with("req_"));
    }

    #[test]
    fn reads_tenant_priority_and_request_id() {
        let caller = Caller::from_headers(&headers(&[
            ("x-tenant-id", "team-a"),
            ("x-priority", "Batch"),
            ("x-request-id", "abc-123"),
        ]))
        .unwrap();
        assert_eq!(
            caller,
            Caller {
                tenant: "team-a".into(),
                priority: Priority::Batch,
                request_id: "abc-123".into()
            }
        );
    }

    #[test]
    fn bad_values_name_the_header() {
        let err = Caller::from_headers(&headers(&[("x-priority", "urgent")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header `x-priority` must be critical, interactive or batch; got `urgent`"
        );
        let err = Caller::from_headers(&headers(&[("x-tenant-id", "a b")])).unwrap_err();
        assert!(err.to_string().contains("x-tenant-id"));
    }
}
