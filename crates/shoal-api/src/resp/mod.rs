//! RESP (Redis protocol) front end.
