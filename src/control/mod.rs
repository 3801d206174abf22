//! Control without a daemon: the running runtime serves a local Unix socket and the same binary
//! is the client (`pm-runtime ls` from `docker exec`).

pub mod client;
pub mod home;
pub mod protocol;
pub mod server;
pub mod target;
