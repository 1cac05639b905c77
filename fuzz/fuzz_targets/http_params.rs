//! The HTTP front end's parsing of what a client controls: the key in the path, each
//! endpoint's query string, listing cursors, and the `POST /v1/txn` body.
//!
//! Input layout: byte 0 picks the parser, the rest is its input (as text where the server
//! gets text: invalid UTF-8 is replaced, as a URI could not carry it).
//!
//! Property: no panic; every refusal is a clean 400 (or 413 for a key over the limit) with
//! a message; and what is accepted round-trips where an encoder exists (keys through
//! `percent_encode_key`, cursors through `encode_cursor`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_api::http::ApiError;
use shoal_api::http::cursor::{decode_cursor, encode_cursor};
use shoal_api::http::encoding::{percent_decode, percent_encode_key};
use shoal_api::http::params::{
    DeleteParams, KEY_PATH_PREFIX, ListParams, PutParams, ReadParams, key_from_path,
};
use shoal_api::http::parse_txn_body;
use shoal_core::Limits;

fn clean<T>(result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            assert!(
                e.status.is_client_error(),
                "a parse error answered {}: {e:?}",
                e.status
            );
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            None
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let raw = (!text.is_empty()).then_some(text.as_ref());
    match which % 8 {
        0 => {
            clean(ReadParams::parse(raw));
        }
        1 => {
            clean(PutParams::parse(raw));
        }
        2 => {
            clean(DeleteParams::parse(raw));
        }
        3 => {
            if let Some(params) = clean(ListParams::parse(raw, 100, 1000)) {
                assert!((1..=1000).contains(&params.limit), "{params:?}");
            }
        }
        4 => {
            let limits = Limits {
                max_key_bytes: 64,
                max_value_bytes: 1024,
            };
            let path = format!("{KEY_PATH_PREFIX}{text}");
            if let Some(key) = clean(key_from_path(&path, &limits)) {
                assert!(!key.is_empty() && key.len() <= 64);
                let again = percent_encode_key(&key);
                assert_eq!(percent_decode(&again).ok().as_deref(), Some(&key[..]));
            }
        }
        5 => {
            if let Ok(cursor) = decode_cursor(&text) {
                let again = encode_cursor(&cursor);
                assert_eq!(decode_cursor(&again).ok(), Some(cursor), "{again}");
            }
        }
        _ => {
            clean(parse_txn_body(rest));
        }
    }
});
