//! Request parameters: the key from the path and each endpoint's query string, parsed into
//! typed structs with a precise 400 for anything unknown, repeated or malformed.
//!
//! We parse the raw query ourselves instead of using axum's `Query`: values such as a
//! prefix are bytes (not necessarily UTF-8), and a typo like `?tll=5` must be refused
//! rather than silently ignored.

use bytes::Bytes;
use shoal_core::command::ScanCursor;
use shoal_core::{Condition, Consistency, Expiry, Limits, TtlError};

use super::cursor::decode_cursor;
use super::encoding::{form_decode, percent_decode};
use super::error::ApiError;

/// Where keys live in the URL space; everything after it is the percent-encoded key.
pub const KEY_PATH_PREFIX: &str = "/v1/kv/";

/// Takes the key from a request path under `/v1/kv/` and checks it against the limits.
///
/// The raw path is decoded here rather than by axum's `Path`, so that keys may be any
/// bytes (`%FF` included) and may contain `/`.
pub fn key_from_path(path: &str, limits: &Limits) -> Result<Bytes, ApiError> {
    let encoded = path.strip_prefix(KEY_PATH_PREFIX).unwrap_or_default();
    let key =
        percent_decode(encoded).map_err(|e| ApiError::invalid(format!("key in path: {e}")))?;
    limits.check_key(&key)?;
    Ok(Bytes::from(key))
}

/// A query string split into decoded `(name, value)` pairs, checked against a whitelist.
struct Query {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Query {
    /// Parses `raw`, refusing names outside `allowed` and names given twice.
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = form_decode(name)
                .ok()
                .and_then(|n| String::from_utf8(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid(format!("malformed query parameter name `{name}`"))
                })?;
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::invalid(if allowed.is_empty() {
                    format!("unknown query parameter `{name}`: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter `{name}`; this endpoint takes: {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::invalid(format!(
                    "query parameter `{name}` given twice"
                )));
            }
            let value = form_decode(value)
                .map_err(|e| ApiError::invalid(format!("query parameter `{name}`: {e}")))?;
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value as text; parameters other than `prefix` are all ASCII when valid.
    fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.bytes(name)
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| {
                    ApiError::invalid(format!("query parameter `{name}` is not valid UTF-8"))
                })
            })
            .transpose()
    }

    /// A whole number; `what` completes "must be ..." in the error.
    fn u64(&self, name: &str, what: &str) -> Result<Option<u64>, ApiError> {
        self.text(name)?
            .map(|v| {
                // `parse` accepts a leading `+`; insist on plain digits.
                v.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "query parameter `{name}` must be {what}, got `{v}`"
                        ))
                    })
            })
            .transpose()
    }

    /// `true`/`1`/bare name, or `false`/`0`; absent is `false`.
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name)? {
            None => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(ApiError::invalid(format!(
                "query parameter `{name}` must be true or false, got `{other}`"
            ))),
        }
    }

    fn consistency(&self) -> Result<Consistency, ApiError> {
        match self.text("consistency")? {
            None | Some("linearizable") => Ok(Consistency::Linearizable),
            Some("stale") => Ok(Consistency::Stale),
            Some(other) => Err(ApiError::invalid(format!(
                "query parameter `consistency` must be `linearizable` or `stale`, got `{other}`"
            ))),
        }
    }
}

/// `GET /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadParams {
    pub consistency: Consistency,
}

impl ReadParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let query = Query::parse(raw, &["consistency"])?;
        Ok(Self {
            consistency: query.consistency()?,
        })
    }
}

/// `PUT`/`POST /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PutParams {
    pub condition: Condition,
    pub expiry: Expiry,
}

impl PutParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let query = Query::parse(raw, &["ttl", "ttl_ms", "if_version", "if_absent"])?;
        let ttl = query.u64("ttl", "a whole number of seconds")?;
        let ttl_ms = query.u64("ttl_ms", "a whole number of milliseconds")?;
        let expiry = match (ttl, ttl_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("give either `ttl` or `ttl_ms`, not both"));
            }
            (Some(secs), None) => {
                let ms = secs.checked_mul(1000).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "query parameter `ttl` is too large: {secs} seconds"
                    ))
                })?;
                checked_ttl("ttl", ms)?
            }
            (None, Some(ms)) => checked_ttl("ttl_ms", ms)?,
            // A plain put replaces the whole record, expiry included (as Redis SET does).
            (None, None) => Expiry::Clear,
        };
        let if_version = query.u64("if_version", "a version number (0 = only if absent)")?;
        let condition = match (if_version, query.flag("if_absent")?) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "give either `if_version` or `if_absent`, not both (`if_version=0` also means \
                     only if absent)",
                ));
            }
            (Some(version), false) => Condition::IfVersion(version),
            (None, true) => Condition::IfAbsent,
            (None, false) => Condition::None,
        };
        Ok(Self { condition, expiry })
    }
}

/// A ttl of `ms` milliseconds from now, validated as every front end does (`Expiry::after_millis`).
pub(crate) fn checked_ttl(name: &str, ms: u64) -> Result<Expiry, ApiError> {
    Expiry::after_millis(ms, crate::now_ms()).map_err(|e| match e {
        TtlError::Zero => ApiError::invalid(format!(
            "`{name}` must be positive; to keep a key forever, omit it"
        )),
        TtlError::TooLarge { .. } => ApiError::invalid(format!("`{name}` {e}")),
    })
}

/// `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteParams {
    pub if_version: Option<u64>,
}

impl DeleteParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let query = Query::parse(raw, &["if_version"])?;
        Ok(Self {
            if_version: query.u64("if_version", "a version number")?,
        })
    }
}

/// `GET /v1/kv` (listing).
#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    pub prefix: Option<Bytes>,
    pub limit: usize,
    pub cursor: ScanCursor,
    pub consistency: Consistency,
}

impl ListParams {
    pub fn parse(
        raw: Option<&str>,
        default_limit: usize,
        max_limit: usize,
    ) -> Result<Self, ApiError> {
        let query = Query::parse(raw, &["prefix", "limit", "cursor", "consistency"])?;
        // An empty prefix or cursor is what a client sends for "none" (`?prefix=&cursor=`).
        let prefix = query
            .bytes("prefix")
            .filter(|p| !p.is_empty())
            .map(Bytes::copy_from_slice);
        let limit = match query.u64("limit", &format!("a whole number from 1 to {max_limit}"))? {
            None => default_limit,
            Some(0) => {
                return Err(ApiError::invalid(format!(
                    "query parameter `limit` must be from 1 to {max_limit}, got 0"
                )));
            }
            Some(n) if n > max_limit as u64 => {
                return Err(ApiError::invalid(format!(
                    "query parameter `limit` is {n}, over the maximum page size of {max_limit}; \
                     page with `cursor` instead"
                )));
            }
            Some(n) => n as usize,
        };
        let cursor = match query.text("cursor")? {
            None | Some("") => ScanCursor::default(),
            Some(text) => decode_cursor(text).map_err(|e| ApiError::invalid(e.to_string()))?,
        };
        Ok(Self {
            prefix,
            limit,
            cursor,
            consistency: query.consistency()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ApiError) -> String {
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        err.message
    }

    #[test]
    fn key_from_path_decodes_bytes_and_checks_limits() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 10,
        };
        assert_eq!(key_from_path("/v1/kv/a%2Fb", &limits).unwrap(), &b"a/b"[..]);
        assert_eq!(key_from_path("/v1/kv/a/b", &limits).unwrap(), &b"a/b"[..]);
        assert_eq!(key_from_path("/v1/kv/%FF", &limits).unwrap(), &[0xff][..]);
        assert_eq!(
            key_from_path("/v1/kv/", &limits).unwrap_err().code,
            "empty_key"
        );
        assert_eq!(
            key_from_path("/v1/kv/abcde", &limits).unwrap_err().code,
            "key_too_large"
        );
        assert!(message(key_from_path("/v1/kv/%G0", &limits).unwrap_err()).contains("percent"));
    }

    #[test]
    fn put_params() {
        let p = PutParams::parse(None).unwrap();
        assert_eq!((p.condition, p.expiry), (Condition::None, Expiry::Clear));
        let p = PutParams::parse(Some("ttl=5&if_version=3")).unwrap();
        assert_eq!(
            (p.condition, p.expiry),
            (Condition::IfVersion(3), Expiry::AfterMillis(5000))
        );
        let p = PutParams::parse(Some("ttl_ms=250&if_absent")).unwrap();
        assert_eq!(
            (p.condition, p.expiry),
            (Condition::IfAbsent, Expiry::AfterMillis(250))
        );
        let p = PutParams::parse(Some("if_absent=false")).unwrap();
        assert_eq!(p.condition, Condition::None);
    }

    #[test]
    fn put_params_errors_name_the_problem() {
        let cases = [
            (
                "ttl=abc",
                "`ttl` must be a whole number of seconds, got `abc`",
            ),
            ("ttl=-1", "got `-1`"),
            ("ttl=%2B1", "got `+1`"),
            ("ttl=0", "`ttl` must be positive"),
            ("ttl=1&ttl_ms=1", "not both"),
            ("ttl=18446744073709551615", "too large"),
            // Fits in u64 once in milliseconds, but not as a signed expiry time.
            ("ttl=9223372036854775", "`ttl` is too large"),
            ("ttl_ms=18446744073709551615", "`ttl_ms` is too large"),
            ("ttl_ms=9223372036854775807", "at most"),
            ("ttl_ms=0", "`ttl_ms` must be positive"),
            ("if_version=1&if_absent=true", "not both"),
            ("if_absent=yes", "must be true or false"),
            (
                "tll=5",
                "unknown query parameter `tll`; this endpoint takes: ttl, ttl_ms",
            ),
            ("ttl=1&ttl=2", "`ttl` given twice"),
            ("ttl=%zz", "malformed percent-escape"),
        ];
        for (query, expected) in cases {
            let msg = message(PutParams::parse(Some(query)).unwrap_err());
            assert!(msg.contains(expected), "{query}: {msg}");
        }
    }

    #[test]
    fn read_and_delete_params() {
        assert_eq!(
            ReadParams::parse(None).unwrap().consistency,
            Consistency::Linearizable
        );
        assert_eq!(
            ReadParams::parse(Some("consistency=stale"))
                .unwrap()
                .consistency,
            Consistency::Stale
        );
        let msg = message(ReadParams::parse(Some("consistency=eventual")).unwrap_err());
        assert!(
            msg.contains("`linearizable` or `stale`, got `eventual`"),
            "{msg}"
        );
        assert_eq!(
            DeleteParams::parse(Some("if_version=7"))
                .unwrap()
                .if_version,
            Some(7)
        );
        assert!(message(DeleteParams::parse(Some("ttl=1")).unwrap_err()).contains("`ttl`"));
    }

    #[test]
    fn list_params() {
        let p = ListParams::parse(None, 100, 1000).unwrap();
        assert_eq!(
            (p.prefix, p.limit, p.cursor),
            (None, 100, ScanCursor::default())
        );
        let p =
            ListParams::parse(Some("prefix=a+b%FF&limit=1000&cursor=0001ff"), 100, 1000).unwrap();
        assert_eq!(p.prefix.as_deref(), Some(&b"a b\xff"[..]));
        assert_eq!(p.limit, 1000);
        assert_eq!(
            p.cursor,
            ScanCursor {
                slot: 1,
                after: Some(Bytes::from_static(&[0xff]))
            }
        );
        let p = ListParams::parse(Some("prefix=&cursor="), 100, 1000).unwrap();
        assert_eq!((p.prefix, p.cursor), (None, ScanCursor::default()));
    }

    #[test]
    fn list_params_errors() {
        let msg = message(ListParams::parse(Some("limit=1001"), 100, 1000).unwrap_err());
        assert!(msg.contains("maximum page size of 1000"), "{msg}");
        let msg = message(ListParams::parse(Some("limit=0"), 100, 1000).unwrap_err());
        assert!(msg.contains("from 1 to 1000"), "{msg}");
        let msg = message(ListParams::parse(Some("cursor=xyz"), 100, 1000).unwrap_err());
        assert!(msg.contains("malformed cursor"), "{msg}");
        let msg = message(ListParams::parse(Some("cursor=%FF%FF%FF%FF"), 100, 1000).unwrap_err());
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(raw in ".{0,64}") {
            let _ = PutParams::parse(Some(&raw));
            let _ = ListParams::parse(Some(&raw), 100, 1000);
            let _ = key_from_path(&format!("/v1/kv/{raw}"), &Limits::default());
        }
    }
}
