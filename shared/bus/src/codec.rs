//! Payload encoding. MessagePack with named fields is the default, so that
//! adding a field stays compatible; a message whose `Content-Type` header is
//! `application/json` is read as JSON, and its reply is JSON too.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Header naming the payload encoding.
pub const CONTENT_TYPE: &str = "Content-Type";
/// `Content-Type` value for JSON payloads.
pub const JSON: &str = "application/json";
/// `Content-Type` value for MessagePack payloads.
pub const MSGPACK: &str = "application/msgpack";

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// MessagePack with named fields (rmp-serde).
    MsgPack,
    /// JSON.
    Json,
}

impl Encoding {
    /// The encoding a message's headers declare; MessagePack when they say nothing.
    pub fn of(headers: Option<&HeaderMap>) -> Self {
        let declared = headers
            .and_then(|h| h.get(CONTENT_TYPE))
            .map(|v| v.as_str().trim().to_ascii_lowercase());
        match declared.as_deref() {
            Some(v) if v.starts_with(JSON) => Encoding::Json,
            _ => Encoding::MsgPack,
        }
    }

    /// The `Content-Type` value of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::MsgPack => MSGPACK,
            Encoding::Json => JSON,
        }
    }

    /// Headers declaring this encoding.
    pub fn headers(self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, self.content_type());
        h
    }
}

/// Encode a value.
pub fn encode<T: Serialize + ?Sized>(value: &T, encoding: Encoding) -> Result<Bytes> {
    match encoding {
        Encoding::MsgPack => rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode(e.to_string())),
        Encoding::Json => serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode(e.to_string())),
    }
}

/// Decode a value; `what` names the expected message type in the error.
pub fn decode<T: DeserializeOwned>(
    payload: &[u8],
    encoding: Encoding,
    what: &'static str,
) -> Result<T> {
    let detail = match encoding {
        Encoding::MsgPack => match rmp_serde::from_slice(payload) {
            Ok(v) => return Ok(v),
            Err(e) => format!("{e} (payload is not valid MessagePack for this message; send Content-Type: application/json for JSON)"),
        },
        Encoding::Json => match serde_json::from_slice(payload) {
            Ok(v) => return Ok(v),
            Err(e) => e.to_string(),
        },
    };
    Err(Error::Decode { what, detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::command::Deploy;

    #[test]
    fn json_header_selects_json_and_default_is_msgpack() {
        assert_eq!(Encoding::of(None), Encoding::MsgPack);
        assert_eq!(
            Encoding::of(Some(&Encoding::Json.headers())),
            Encoding::Json
        );
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "application/json; charset=utf-8");
        assert_eq!(Encoding::of(Some(&h)), Encoding::Json);
    }

    #[test]
    fn round_trips_in_both_encodings() {
        let d = Deploy {
            command_id: None,
            signature: None,
            service: "web".into(),
            image: "v2".into(),
            strategy: None,
            override_rollout: false,
            actor: Some("ana".into()),
            reason: None,
        };
        for enc in [Encoding::MsgPack, Encoding::Json] {
            let bytes = encode(&d, enc).expect("encode");
            let back: Deploy = decode(&bytes, enc, "Deploy").expect("decode");
            assert_eq!(back, d);
        }
    }

    #[test]
    fn decode_error_names_the_problem() {
        let err = decode::<Deploy>(br#"{"service":"web"}"#, Encoding::Json, "Deploy")
            .expect_err("missing image must fail");
        let text = err.to_string();
        assert!(matches!(err, Error::Decode { what: "Deploy", .. }));
        assert!(text.contains("image"), "{text}");
    }
}
