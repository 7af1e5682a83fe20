//! [`Validated`]: a request (chat, completion or embeddings) checked once at the scheduler's
//! door. Later phases take only
//! this type and never parse the same field again. The gateway validates the OpenAI shape
//! first, but direct gRPC callers (grpcurl, other services) get the same clear messages.

use std::time::Duration;

use llmgw_proto::v1::Priority;
use tokio::time::Instant;

use crate::admission::{Ask, Class};
use crate::error::SchedulerError;
use crate::work::Work;

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A request the scheduler can route and admit, with what admission needs parsed out.
#[derive(Debug)]
pub struct Validated {
    pub request: Work,
    /// Tenant, class and size, as admission sees them.
    pub ask: Ask,
    /// The caller's own deadline (`deadline_ms` after `received`), if any.
    pub deadline: Option<Instant>,
}

impl Validated {
    /// The caller's deadline in milliseconds as sent (0 = none), for messages.
    pub fn deadline_ms(&self) -> u64 {
        self.request.common().deadline_ms
    }
}

/// Checks `request` and parses what admission needs; the error names the field.
pub fn validate(request: Work, received: Instant) -> Result<Validated, SchedulerError> {
    let invalid = |message: String| Err(SchedulerError::InvalidArgument(message));
    let common = request.common();
    if common.model.trim().is_empty() {
        return invalid("`model` must not be empty".to_owned());
    }
    match &request {
        Work::Chat(chat) => {
            if chat.messages.is_empty() {
                return invalid("`messages` must not be empty".to_owned());
            }
            for (index, message) in chat.messages.iter().enumerate() {
                if !ROLES.contains(&message.role.as_str()) {
                    return invalid(format!(
                        "`messages[{index}].role` must be one of system, user, assistant, tool; got `{}`",
                        message.role
                    ));
                }
            }
        }
        Work::Completion(_) => {}
        Work::Embedding(embed) => {
            if embed.input.is_empty() {
                return invalid("`input` must hold at least one text".to_owned());
            }
        }
    }
    let class = match Priority::try_from(common.priority) {
        Ok(Priority::Critical) => Class::Critical,
        Ok(Priority::Batch) => Class::Batch,
        Ok(Priority::Interactive | Priority::Unspecified) => Class::Interactive,
        Err(_) => {
            return invalid(format!(
                "`priority` {} is not a known priority",
                common.priority
            ));
        }
    };
    let tenant = if common.tenant.is_empty() {
        llmgw_proto::ANONYMOUS_TENANT
    } else if llmgw_proto::valid_token(common.tenant) {
        common.tenant
    } else {
        return invalid(
            "`tenant` must be 1 to 64 characters of letters, digits, `.`, `_` or `-`".to_owned(),
        );
    };
    if !common.extra_json.is_empty() {
        let Ok(serde_json::Value::Object(options)) =
            serde_json::from_str::<serde_json::Value>(common.extra_json)
        else {
            return invalid("`extra_json` must be a JSON object".to_owned());
        };
        // An allow-list, not a deny-list: engines read fields we do not know.
        if let Some(refused) = options
            .keys()
            .find(|key| !llmgw_proto::engine_options::is_engine_option(key))
        {
            return invalid(format!(
                "`extra_json` may not set `{refused}`: not an engine option the scheduler passes on (the request's own fields set the model, messages, sampling and output)"
            ));
        }
    }
    let ask = Ask {
        tenant: tenant.into(),
        class,
        bytes: request.encoded_len(),
        cost: request.cost(),
        completion_capped: request.completion_capped(),
        slo: request.slo_ttft(),
        slo_tpot: request.slo_tpot(),
    };
    let deadline_ms = common.deadline_ms;
    let deadline = (deadline_ms > 0).then(|| received + Duration::from_millis(deadline_ms));
    Ok(Validated {
        request,
        ask,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{ChatRequest, EmbedRequest, Message};

    fn request(role: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: role.into(),
                content: "hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn check(request: ChatRequest) -> Result<Validated, String> {
        validate(Work::Chat(request), Instant::now()).map_err(|err| err.to_string())
    }

    #[test]
    fn validation_names_the_field() {
        assert!(check(request("user")).is_ok());
        assert_eq!(
            check(request("robot")).unwrap_err(),
            "`messages[0].role` must be one of system, user, assistant, tool; got `robot`"
        );
        let empty = ChatRequest {
            messages: vec![],
            ..request("user")
        };
        assert_eq!(check(empty).unwrap_err(), "`messages` must not be empty");
        let bad_priority = ChatRequest {
            priority: 42,
            ..request("user")
        };
        assert!(check(bad_priority).unwrap_err().contains("`priority`"));
        let bad_tenant = ChatRequest {
            tenant: "a b".into(),
            ..request("user")
        };
        assert!(check(bad_tenant).unwrap_err().contains("`tenant`"));
        for key in [
            "model",
            "num_predict",
            "max_tokens",
            "n_predict",
            "id_slot",
            "num_ctx",
        ] {
            let colliding = ChatRequest {
                extra_json: format!(r#"{{"top_k": 4, "{key}": 1}}"#),
                ..request("user")
            };
            assert!(
                check(colliding)
                    .unwrap_err()
                    .starts_with(&format!("`extra_json` may not set `{key}`")),
                "{key}"
            );
        }
    }

    #[test]
    fn parses_class_tenant_and_deadline_once() {
        let now = Instant::now();
        let validated = validate(
            Work::Chat(ChatRequest {
                priority: Priority::Batch as i32,
                tenant: "team-a".into(),
                deadline_ms: 1500,
                ..request("user")
            }),
            now,
        )
        .unwrap();
        assert_eq!(validated.ask.class, Class::Batch);
        assert_eq!(&*validated.ask.tenant, "team-a");
        assert_eq!(validated.deadline, Some(now + Duration::from_millis(1500)));
        let defaults = validate(Work::Chat(request("user")), now).unwrap();
        assert_eq!(defaults.ask.class, Class::Interactive);
        assert_eq!(&*defaults.ask.tenant, llmgw_proto::ANONYMOUS_TENANT);
        assert_eq!(defaults.deadline, None);
    }

    #[test]
    fn embeddings_need_an_input() {
        let embed = |input: Vec<String>| {
            validate(
                Work::Embedding(EmbedRequest {
                    model: "m".into(),
                    input,
                    ..Default::default()
                }),
                Instant::now(),
            )
            .map_err(|err| err.to_string())
        };
        assert!(embed(vec!["a".into()]).is_ok());
        assert_eq!(
            embed(vec![]).unwrap_err(),
            "`input` must hold at least one text"
        );
    }
}
