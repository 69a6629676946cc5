//! Share sessions (KIP-932's `ShareSessionCache`), as pure state: per (group, member) the
//! next expected epoch and the partitions the member fetches from. Epoch 0 opens (or
//! replaces) a session, -1 closes it, any other must be the expected one, which then moves
//! on (wrapping from `i32::MAX` to 1). At most `max_sessions` sessions exist.
//!
//! A session belongs to the connection that last stepped it: when that connection closes,
//! the session ends and what the member acquired through it is released at once (Kafka's
//! `ShareSessionCache` connection-disconnect listener), instead of waiting for the locks.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

/// A share-partition of a session: topic id and partition.
pub type SessionPartition = (Uuid, i32);

#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    pub partitions: BTreeSet<SessionPartition>,
    /// The connection that last stepped the session (a broker-unique id, see the listener).
    pub connection_id: u64,
}

/// Why a session step was refused (Kafka's top-level codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// SHARE_SESSION_NOT_FOUND.
    NotFound,
    /// INVALID_SHARE_SESSION_EPOCH.
    InvalidEpoch,
    /// SHARE_SESSION_LIMIT_REACHED.
    LimitReached,
}

/// The sessions of one broker.
#[derive(Debug)]
pub struct ShareSessions {
    sessions: HashMap<(String, String), Session>,
    max_sessions: usize,
}

fn next(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl ShareSessions {
    pub fn new(max_sessions: usize) -> ShareSessions {
        ShareSessions {
            sessions: HashMap::new(),
            max_sessions,
        }
    }

    /// Checks `epoch` for (group, member) and advances the session. Epoch 0 opens a new
    /// session (replacing an old one, whose partitions are returned so the caller can release
    /// what the member held there); -1 is checked by [`ShareSessions::close`]. The session
    /// then belongs to `connection_id`.
    ///
    /// # Errors
    /// [`SessionError`].
    pub fn step(
        &mut self,
        group: &str,
        member: &str,
        epoch: i32,
        connection_id: u64,
    ) -> Result<Option<Session>, SessionError> {
        let key = (group.to_string(), member.to_string());
        match epoch {
            0 => {
                if !self.sessions.contains_key(&key) && self.sessions.len() >= self.max_sessions {
                    return Err(SessionError::LimitReached);
                }
                Ok(self.sessions.insert(
                    key,
                    Session {
                        next_epoch: 1,
                        partitions: BTreeSet::new(),
                        connection_id,
                    },
                ))
            }
            e if e < 0 => Err(SessionError::InvalidEpoch),
            e => {
                let session = self.sessions.get_mut(&key).ok_or(SessionError::NotFound)?;
                if session.next_epoch != e {
                    return Err(SessionError::InvalidEpoch);
                }
                session.next_epoch = next(e);
                session.connection_id = connection_id;
                Ok(None)
            }
        }
    }

    /// Closes (group, member)'s session (a request with epoch -1).
    ///
    /// # Errors
    /// [`SessionError::NotFound`].
    pub fn close(&mut self, group: &str, member: &str) -> Result<Session, SessionError> {
        self.sessions
            .remove(&(group.to_string(), member.to_string()))
            .ok_or(SessionError::NotFound)
    }

    /// Whether (group, member) has a session.
    pub fn contains(&self, group: &str, member: &str) -> bool {
        self.sessions
            .contains_key(&(group.to_string(), member.to_string()))
    }

    /// Adds and forgets partitions of a session; returns its partitions after the change.
    pub fn update(
        &mut self,
        group: &str,
        member: &str,
        add: &[SessionPartition],
        forget: &[SessionPartition],
    ) -> BTreeSet<SessionPartition> {
        let Some(s) = self
            .sessions
            .get_mut(&(group.to_string(), member.to_string()))
        else {
            return BTreeSet::new();
        };
        s.partitions.extend(add.iter().copied());
        for p in forget {
            s.partitions.remove(p);
        }
        s.partitions.clone()
    }

    /// Drops the sessions of a member that left the group (their partitions are returned).
    pub fn remove_member(&mut self, group: &str, member: &str) -> Option<Session> {
        self.sessions
            .remove(&(group.to_string(), member.to_string()))
    }

    /// Ends every session of a closed connection; returns (group, member, session) of each
    /// so the caller can release what the members hold. Bounded by `max_sessions`.
    pub fn remove_connection(&mut self, connection_id: u64) -> Vec<(String, String, Session)> {
        let keys: Vec<(String, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.connection_id == connection_id)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let session = self.sessions.remove(&k)?;
                Some((k.0, k.1, session))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs() {
        let mut s = ShareSessions::new(1);
        assert_eq!(s.step("g", "m", 1, 7).unwrap_err(), SessionError::NotFound);
        assert!(s.step("g", "m", 0, 7).unwrap().is_none());
        assert_eq!(
            s.step("g", "x", 0, 7).unwrap_err(),
            SessionError::LimitReached
        );
        assert_eq!(
            s.step("g", "m", 2, 7).unwrap_err(),
            SessionError::InvalidEpoch
        );
        s.step("g", "m", 1, 7).unwrap();
        s.step("g", "m", 2, 7).unwrap();
        assert_eq!(
            s.step("g", "m", 2, 7).unwrap_err(),
            SessionError::InvalidEpoch
        );
        assert_eq!(
            s.step("g", "m", -2, 7).unwrap_err(),
            SessionError::InvalidEpoch
        );
        let p = (Uuid::from_u128(1), 0);
        assert_eq!(s.update("g", "m", &[p], &[]).len(), 1);
        assert!(s.step("g", "m", 0, 7).unwrap().is_some());
        assert!(s.close("g", "m").is_ok());
        assert_eq!(s.close("g", "m").unwrap_err(), SessionError::NotFound);
        assert_eq!(next(i32::MAX), 1);
    }

    #[test]
    fn a_closed_connection_ends_only_the_sessions_it_last_stepped() {
        let mut s = ShareSessions::new(10);
        s.step("g", "a", 0, 1).unwrap();
        s.step("g", "b", 0, 1).unwrap();
        s.step("g", "c", 0, 2).unwrap();
        // b moved to connection 3 (a client that reconnected and kept its epoch).
        s.step("g", "b", 1, 3).unwrap();
        let ended = s.remove_connection(1);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].0.as_str(), ended[0].1.as_str()), ("g", "a"));
        assert!(!s.contains("g", "a"));
        assert!(s.contains("g", "b") && s.contains("g", "c"));
        assert!(s.remove_connection(1).is_empty());
        assert_eq!(s.remove_connection(3).len(), 1);
        assert_eq!(s.len(), 1);
    }
}
