//! Image input. An OpenAI `image_url` part with a `data:` URL (and an Ollama `images` entry,
//! plain base64) becomes an [`Image`]: its media type and decoded bytes, at most
//! [`MAX_IMAGE_BYTES`] each. A remote `http(s)` URL is refused: the gateway fetches nothing on
//! a client's behalf (a fetch would let any client make the gateway reach any address it can,
//! and hold a slot while a slow host answers). Each image counts
//! [`llmgw_proto::IMAGE_PROMPT_TOKENS`] in the prompt estimate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use llmgw_proto::v1::Image;

use crate::error::ApiError;

/// The largest image taken, decoded (the request body's own limit applies first).
pub const MAX_IMAGE_BYTES: usize = 8 << 20;

/// The image of a `data:` URL at `path` (the field named in errors).
pub fn from_url(path: &str, url: &str) -> Result<Image, ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        let why = if url.starts_with("http://") || url.starts_with("https://") {
            "remote image URLs are not fetched; send the image inline as a `data:` URL (base64)"
        } else {
            "must be a `data:image/...;base64,...` URL"
        };
        return Err(ApiError::invalid(path, format!("`{path}` {why}")));
    };
    let Some((header, data)) = rest.split_once(',') else {
        return Err(ApiError::invalid(
            path,
            format!("`{path}` has no `,` before its data"),
        ));
    };
    let Some(media_type) = header.strip_suffix(";base64") else {
        return Err(ApiError::invalid(
            path,
            format!("`{path}` must be base64 (`;base64,`)"),
        ));
    };
    if !media_type.starts_with("image/") {
        return Err(ApiError::invalid(
            path,
            format!("`{path}` must be an image (`data:image/...`), not `{media_type}`"),
        ));
    }
    Ok(Image {
        media_type: media_type.to_owned(),
        data: decode(path, data)?,
    })
}

/// The image of a plain base64 string (Ollama's `images`), its type read from its first bytes.
pub fn from_base64(path: &str, data: &str) -> Result<Image, ApiError> {
    let data = decode(path, data)?;
    Ok(Image {
        media_type: sniff(&data).to_owned(),
        data,
    })
}

fn decode(path: &str, data: &str) -> Result<Vec<u8>, ApiError> {
    // Refused before decoding: base64 is 4 characters for 3 bytes.
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(too_large(path));
    }
    let bytes = STANDARD
        .decode(data.trim())
        .map_err(|err| ApiError::invalid(path, format!("`{path}` is not valid base64: {err}")))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            path,
            format!("`{path}` is an empty image"),
        ));
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_large(path));
    }
    Ok(bytes)
}

fn too_large(path: &str) -> ApiError {
    ApiError::invalid(
        path,
        format!("`{path}` is larger than {} MiB", MAX_IMAGE_BYTES >> 20),
    )
}

/// The media type of an image by its magic bytes; PNG when unknown (engines read the bytes).
fn sniff(data: &[u8]) -> &'static str {
    match data {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        _ => "image/png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    fn param(err: ApiError) -> String {
        match err {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_data_url_is_decoded_with_its_type() {
        let image = from_url("p", &format!("data:image/png;base64,{PNG}")).unwrap();
        assert_eq!(image.media_type, "image/png");
        assert_eq!(&image.data[1..4], b"PNG");
        assert_eq!(from_base64("p", PNG).unwrap().media_type, "image/png");
    }

    #[test]
    fn remote_and_malformed_urls_are_refused_naming_the_field() {
        for url in [
            "https://example.com/cat.png",
            "http://10.0.0.1/x.png",
            "file:///etc/passwd",
            "data:image/png,notbase64",
            "data:text/plain;base64,aGk=",
            "data:image/png;base64,@@@",
            "data:image/png;base64,",
        ] {
            let err = from_url("messages[0].content[1].image_url.url", url).unwrap_err();
            assert_eq!(param(err), "messages[0].content[1].image_url.url", "{url}");
        }
        let huge = "A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8);
        let err = from_url("p", &format!("data:image/png;base64,{huge}")).unwrap_err();
        assert!(format!("{err:?}").contains("larger than"), "{err:?}");
    }
}
