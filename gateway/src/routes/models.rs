//! `GET /v1/models`: the scheduler's models in OpenAI's list shape.

use axum::Json;
use axum::extract::State;
use llmgw_proto::v1::ListModelsRequest;

use super::AppState;
use crate::error::ApiError;
use crate::openai::response::{ModelEntry, ModelList};

pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let response = state
        .scheduler
        .scheduler()
        .list_models({
            let mut call = tonic::Request::new(ListModelsRequest {});
            state.scheduler.authorize(&mut call);
            call
        })
        .await
        .map_err(ApiError::Scheduler)?;
    let data = response
        .into_inner()
        .models
        .into_iter()
        .map(|m| ModelEntry {
            id: m.id,
            object: "model",
            created: m.created,
            owned_by: m.owned_by,
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}
