//! The OpenAI request fields every route shares, taken out of the JSON object one by one so
//! every error names its path (`messages[1].content`, `input[2]`): the body as an object, the
//! model, sampling parameters, and typed, ranged and positive fields.

use llmgw_proto::v1::SamplingParams;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::request::Stop;

/// The body as a JSON object.
pub fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid_body("request body must be a JSON object")),
        Err(err) => Err(invalid_body(&format!(
            "request body is not valid JSON: {err}"
        ))),
    }
}

/// `model`: required, not blank.
pub fn model(object: &mut Map<String, Value>) -> Result<String, ApiError> {
    let model: String = required(object, "model")?;
    if model.trim().is_empty() {
        return Err(ApiError::invalid("model", "`model` must not be empty"));
    }
    Ok(model)
}

/// The remaining fields as the engine's extra options (empty when none are left): each must
/// be on the engine-option allow-list ([`llmgw_proto::engine_options`]), else a 400 naming it
/// as `{prefix}{name}`.
pub fn engine_options(mut object: Map<String, Value>, prefix: &str) -> Result<String, ApiError> {
    // `null` is absent, as for every other field (clients that write out every optional field).
    object.retain(|_, value| !value.is_null());
    if let Some(unknown) = object
        .keys()
        .find(|name| !llmgw_proto::engine_options::is_engine_option(name))
    {
        let options: Vec<&str> = llmgw_proto::engine_options::all().collect();
        return Err(ApiError::invalid(
            format!("{prefix}{unknown}"),
            format!(
                "`{prefix}{unknown}` is not a field this gateway takes or an engine option it passes on (engine options: {})",
                options.join(", ")
            ),
        ));
    }
    Ok(if object.is_empty() {
        String::new()
    } else {
        Value::Object(object).to_string()
    })
}

pub fn sampling(object: &mut Map<String, Value>) -> Result<SamplingParams, ApiError> {
    let temperature = ranged(object, "temperature", 0.0, 2.0)?;
    let top_p = ranged(object, "top_p", 0.0, 1.0)?;
    let presence_penalty = ranged(object, "presence_penalty", -2.0, 2.0)?;
    let frequency_penalty = ranged(object, "frequency_penalty", -2.0, 2.0)?;
    let max_completion_tokens = positive(object, "max_completion_tokens")?;
    let max_tokens = positive(object, "max_tokens")?.or(max_completion_tokens);
    let stop = match field::<Stop>(object, "stop")? {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one],
        Some(Stop::Many(many)) if many.len() <= 4 => many,
        Some(Stop::Many(many)) => {
            return Err(ApiError::invalid(
                "stop",
                format!("`stop` may hold at most 4 sequences, got {}", many.len()),
            ));
        }
    };
    let seed = field::<i64>(object, "seed")?;
    Ok(SamplingParams {
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
        presence_penalty,
        frequency_penalty,
    })
}

pub fn invalid_body(message: &str) -> ApiError {
    ApiError::InvalidRequest {
        message: message.to_owned(),
        param: None,
    }
}

/// Removes `name` from the object and deserializes it; `null` counts as absent.
pub fn field<T: DeserializeOwned>(
    object: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_path_to_error::deserialize(value)
            .map(Some)
            .map_err(|err| {
                let path = format!("{name}{}", render_path(err.path()));
                ApiError::invalid(path.clone(), format!("`{path}`: {}", err.inner()))
            }),
    }
}

pub fn required<T: DeserializeOwned>(
    object: &mut Map<String, Value>,
    name: &str,
) -> Result<T, ApiError> {
    field(object, name)?.ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
}

pub fn ranged(
    object: &mut Map<String, Value>,
    name: &str,
    min: f64,
    max: f64,
) -> Result<Option<f32>, ApiError> {
    match field::<f64>(object, name)? {
        Some(value) if !(min..=max).contains(&value) => Err(ApiError::invalid(
            name,
            format!("`{name}` must be between {min} and {max}, got {value}"),
        )),
        value => Ok(value.map(|v| v as f32)),
    }
}

pub fn positive(object: &mut Map<String, Value>, name: &str) -> Result<Option<u32>, ApiError> {
    match field::<i64>(object, name)? {
        Some(value) if value < 1 || value > i64::from(u32::MAX) => Err(ApiError::invalid(
            name,
            format!("`{name}` must be a positive integer, got {value}"),
        )),
        value => Ok(value.map(|v| v as u32)),
    }
}

fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|segment| match segment {
            Segment::Seq { index } => format!("[{index}]"),
            Segment::Map { key } => format!(".{key}"),
            Segment::Enum { variant } => format!(".{variant}"),
            Segment::Unknown => String::new(),
        })
        .collect()
}

/// The string `name` of the JSON object at `at` (a content block, an item, a tool), or a 400
/// naming `at.name`.
pub fn string_at(value: &Value, name: &str, at: &str) -> Result<String, ApiError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(
                format!("{at}.{name}"),
                format!("`{at}.{name}` must be a string"),
            )
        })
}

/// A function tool from an API's tool object at `at` (its `name` and optional
/// `description`) with the JSON Schema of its arguments.
pub fn function_tool(
    tool: &Value,
    at: &str,
    parameters_json: String,
) -> Result<llmgw_proto::v1::Tool, ApiError> {
    Ok(llmgw_proto::v1::Tool {
        r#type: "function".to_owned(),
        name: string_at(tool, "name", at)?,
        description: tool
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        parameters_json,
    })
}
