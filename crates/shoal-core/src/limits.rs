//! Explicit limits on everything a client can make the node hold.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default key size limit: 16 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 16 * 1024;
/// Default value size limit: 8 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;

/// Size limits applied to every write, on every front end and again at apply time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn check_value_len(&self, len: usize) -> Result<(), Error> {
        if len > self.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len,
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}
