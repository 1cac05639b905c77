//! HTTP/JSON front end.
