//! `GET /status` (the page) and `GET /status.json` (its data). Who may read them:
//! with API keys, a key with `admin = true` (a tenant's ordinary key is 403
//! `admin_required`: it would see every tenant); in open mode, clients on loopback, or anyone
//! with `GATEWAY_STATUS_ACCESS=any`; `off` turns both into 404. The page holds no data of its
//! own: it asks for the key once, keeps it in the tab (`sessionStorage`) and sends it as a
//! Bearer header with each poll, since a browser cannot send one when it navigates.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::StatusAccess;
use crate::error::{ApiError, Refusal};
use crate::status_page::{PAGE, snapshot};

/// The client's address, set by the edge on `/status` requests only.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Whether this request may see the page.
fn allowed(state: &AppState, request: &Parts, peer: Option<Peer>) -> Result<(), ApiError> {
    let headers = &request.headers;
    let access = state.config.status_access;
    if access == StatusAccess::Off {
        return Err(ApiError::RouteNotFound("/status".to_owned()));
    }
    if state.governance.admin(headers)? {
        return Ok(());
    }
    if access == StatusAccess::Any || local_client(peer, headers, host_of(request)) {
        return Ok(());
    }
    Err(ApiError::Refused(Box::new(Refusal {
        status: StatusCode::FORBIDDEN,
        reason: llmgw_proto::Reason::AdminRequired,
        message: "In open mode the status page is served to clients on this machine only (GATEWAY_STATUS_ACCESS=any serves everyone)".to_owned(),
        param: None,
        retry_after_s: None,
        headers: HeaderMap::new(),
    })))
}

/// A client on this machine: connected over loopback (an IPv4-mapped address too), not relayed
/// by a proxy on this machine (which would make every remote client look local), and naming a
/// loopback host (a page on another site whose name was rebound to 127.0.0.1 names its own).
fn local_client(peer: Option<Peer>, headers: &HeaderMap, host: &str) -> bool {
    let Some(Peer(address)) = peer else {
        return false;
    };
    let relayed = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    address.ip().to_canonical().is_loopback() && !relayed && loopback_host(host)
}

/// The host the client named: HTTP/1.1's `Host`, HTTP/2's `:authority`.
fn host_of(request: &Parts) -> &str {
    request
        .headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn is_keyed(state: &AppState) -> bool {
    state
        .governance
        .policy()
        .is_some_and(|p| p.auth == crate::governance::config::AuthMode::ApiKey)
}

/// `GET /status`: the page. With keys it is served to anyone (it holds no data: the key
/// typed into it unlocks `/status.json`).
pub async fn page(State(state): State<AppState>, request: Parts) -> Response {
    let peer = request.extensions.get::<Peer>().copied();
    let open_to_all = is_keyed(&state) && state.config.status_access != StatusAccess::Off;
    if !open_to_all && let Err(refused) = allowed(&state, &request, peer) {
        return refused.into_response();
    }
    let mut response = PAGE.into_response();
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything the page needs is inline: nothing else may load, and no one may frame it.
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /status.json`: the document the page draws ([`snapshot::StatusView`]).
pub async fn json(State(state): State<AppState>, request: Parts) -> Response {
    let peer = request.extensions.get::<Peer>().copied();
    if let Err(refused) = allowed(&state, &request, peer) {
        return refused.into_response();
    }
    let body = state
        .status_cache
        .get_or_build(async {
            let view = snapshot::build(&state.scheduler, &state.governance, &state.refusals).await;
            // Serializing plain data cannot fail; an empty body would say so if it did.
            serde_json::to_vec(&view)
                .map(Bytes::from)
                .unwrap_or_default()
        })
        .await;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(peer: Option<Peer>, host: &str, extra: Option<(&'static str, &'static str)>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = extra {
            headers.insert(name, HeaderValue::from_static(value));
        }
        local_client(peer, &headers, host)
    }

    fn peer(address: &str) -> Option<Peer> {
        Some(Peer(address.parse().unwrap()))
    }

    #[test]
    fn only_clients_on_this_machine_naming_it_are_local() {
        let here = peer("127.0.0.1:5000");
        assert!(local(here, "127.0.0.1:8080", None));
        assert!(local(here, "localhost:8080", None));
        assert!(local(peer("[::1]:5000"), "[::1]:8080", None));
        assert!(local(peer("[::ffff:127.0.0.1]:5000"), "localhost", None));
        assert!(!local(peer("192.0.2.2:5000"), "localhost", None));
        assert!(!local(None, "localhost", None));
        // A proxy on this machine relays remote clients; a rebound name is not ours.
        assert!(!local(
            here,
            "localhost",
            Some(("x-forwarded-for", "203.0.113.9"))
        ));
        assert!(!local(
            here,
            "localhost",
            Some(("forwarded", "for=203.0.113.9"))
        ));
        assert!(!local(here, "attacker.example:8080", None));
        assert!(!local(here, "", None));
    }
}
