//! `GET /status` (the page) and `GET /status.json` (its data). Who may read them:
//! with API keys, a key with `admin = true` (a tenant's ordinary key is 403
//! `admin_required`: it would see every tenant); in open mode, clients on loopback, or anyone
//! with `GATEWAY_STATUS_ACCESS=any`; `off` turns both into 404. The page holds no data of its
//! own: it asks for the key once, keeps it in the tab (`sessionStorage`) and sends it as a
//! Bearer header with each poll, since a browser cannot send one when it navigates.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
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
fn allowed(state: &AppState, headers: &HeaderMap, peer: Option<Peer>) -> Result<(), ApiError> {
    let access = state.config.status_access;
    if access == StatusAccess::Off {
        return Err(ApiError::RouteNotFound("/status".to_owned()));
    }
    if state.governance.admin(headers)? {
        return Ok(());
    }
    let local = peer.is_some_and(|Peer(address)| address.ip().is_loopback());
    if access == StatusAccess::Any || local {
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

fn is_keyed(state: &AppState) -> bool {
    state
        .governance
        .policy()
        .is_some_and(|p| p.auth == crate::governance::config::AuthMode::ApiKey)
}

/// `GET /status`: the page. With keys it is served to anyone (it holds no data: the key
/// typed into it unlocks `/status.json`).
pub async fn page(State(state): State<AppState>, peer: Option<axum::Extension<Peer>>) -> Response {
    let peer = peer.map(|axum::Extension(peer)| peer);
    let open_to_all = is_keyed(&state) && state.config.status_access != StatusAccess::Off;
    if !open_to_all && let Err(refused) = allowed(&state, &HeaderMap::new(), peer) {
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
pub async fn json(
    State(state): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let peer = peer.map(|axum::Extension(peer)| peer);
    if let Err(refused) = allowed(&state, &headers, peer) {
        return refused.into_response();
    }
    let view = snapshot::build(&state.scheduler, &state.governance, &state.refusals).await;
    let mut response = Json(view).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
