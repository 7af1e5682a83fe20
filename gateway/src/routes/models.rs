//! `GET /v1/models`: the models of every scheduler, in OpenAI's list shape ([`served`] is
//! the list itself, which Ollama's `/api/tags` shows too).

use axum::Json;
use axum::extract::State;
use llmgw_proto::v1::ListModelsRequest;

use super::AppState;
use crate::error::ApiError;
use crate::openai::response::{ModelEntry, ModelList};

pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let data = served(&state)
        .await?
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

/// The models of every scheduler: the union over those that answer; the first failure is the
/// answer if none does.
pub(crate) async fn served(state: &AppState) -> Result<Vec<llmgw_proto::v1::Model>, ApiError> {
    let mut models: Vec<llmgw_proto::v1::Model> = Vec::new();
    let mut failure = None;
    let mut answered = false;
    for target in state.scheduler.targets() {
        let mut call = tonic::Request::new(ListModelsRequest {});
        state.scheduler.authorize(&mut call);
        match target.scheduler().list_models(call).await {
            Ok(listed) => {
                answered = true;
                for model in listed.into_inner().models {
                    if !models.iter().any(|known| known.id == model.id) {
                        models.push(model);
                    }
                }
            }
            Err(status) => {
                failure.get_or_insert(status);
            }
        }
    }
    if let (false, Some(status)) = (answered, failure) {
        return Err(ApiError::Scheduler(status));
    }
    Ok(models)
}
