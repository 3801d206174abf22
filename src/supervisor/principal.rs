//! Who an app's processes run as: its `uid`/`gid`, names looked up at each start (users may
//! appear later), for the app itself and for its exec probes alike.

use crate::config::{App, Principal};

/// A `uid`/`gid` name the system does not know (checked at each start: users may appear later).
#[derive(Debug, thiserror::Error)]
pub enum UnknownId {
    #[error("unknown user {0:?}")]
    User(String),
    #[error("unknown group {0:?}")]
    Group(String),
}

pub fn resolve_ids(app: &App) -> Result<(Option<u32>, Option<u32>), UnknownId> {
    let uid = match &app.uid {
        None => None,
        Some(Principal::Id(u)) => Some(*u),
        Some(Principal::Name(n)) => {
            Some(nix::unistd::User::from_name(n).ok().flatten().ok_or_else(|| UnknownId::User(n.clone()))?.uid.as_raw())
        }
    };
    let gid = match &app.gid {
        None => None,
        Some(Principal::Id(g)) => Some(*g),
        Some(Principal::Name(n)) => {
            Some(nix::unistd::Group::from_name(n).ok().flatten().ok_or_else(|| UnknownId::Group(n.clone()))?.gid.as_raw())
        }
    };
    Ok((uid, gid))
}
