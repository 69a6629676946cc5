//! SCRAM credentials (RFC 5802, KIP-554): what AlterUserScramCredentials stores and
//! DescribeUserScramCredentials reports, and what SASL/SCRAM authentication will check.
//!
//! The client does the PBKDF2 (it sends a salt and the salted password); the broker keeps, per
//! user and mechanism, only what RFC 5802 lets a server keep: the salt, the iteration count,
//! `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. Neither the password nor the salted
//! password is stored. Kafka's controller keeps the same four values
//! (`UserScramCredentialRecord`).
//!
//! The rules are Kafka 4.4's `ScramControlManager`: a user named twice in one request is
//! refused (DUPLICATE_RESOURCE) and nothing is done for that user; iterations must be in
//! 4096..=16384; a mechanism other than SCRAM-SHA-256/512 is UNSUPPORTED_SASL_MECHANISM;
//! deleting a credential that does not exist is RESOURCE_NOT_FOUND. The valid alterations of a
//! request are applied together, in one file write.
//!
//! File `scram-credentials` in the data directory, replaced atomically on every change
//! ([`crate::atomic_file`]), one credential a line:
//!
//! ```text
//! # rill SCRAM credentials; rewritten by the broker
//! alice SCRAM-SHA-256 8192 <salt hex> <stored key hex> <server key hex>
//! ```
//!
//! User names are escaped as the other line files are ([`crate::line_field`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

use crate::line_field::{escape, unescape};

/// The file in the data directory.
pub const FILE_NAME: &str = "scram-credentials";

/// Fewest PBKDF2 iterations Kafka accepts for either mechanism (`ScramMechanism.minIterations`).
pub const ITERATIONS_MIN: i32 = 4096;

/// Most PBKDF2 iterations Kafka accepts (`ScramControlManager.MAX_ITERATIONS`).
pub const ITERATIONS_MAX: i32 = 16384;

/// Most credentials held (users × mechanisms): the file is read whole at start and rewritten
/// on every change. Kafka has no such limit; an upsertion past it is refused.
pub const CREDENTIALS_MAX: usize = 10_000;

/// Longest salt accepted, in bytes (Kafka's client sends 64 random bytes; this bounds the file).
pub const SALT_BYTES_MAX: usize = 1024;

/// The SCRAM mechanisms, with Kafka's wire type codes (`org.apache.kafka.clients.admin.ScramMechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The mechanism of a wire type code (1, 2); `None` for UNKNOWN (0) and anything else.
    pub fn from_type(code: i8) -> Option<ScramMechanism> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The wire type code.
    pub fn type_code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn from_name(name: &str) -> Option<ScramMechanism> {
        [ScramMechanism::Sha256, ScramMechanism::Sha512]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// `HMAC(key, data)` with this mechanism's hash.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length, so new_from_slice cannot fail.
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `H(data)` with this mechanism's hash.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// What the broker keeps of one user's password for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    /// Keys stay out of logs, as Kafka's `ScramCredentialValue.toString` hides them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the stored values from the salted password, as RFC 5802 section 3 says.
    pub fn derive(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }
}

/// One alteration of an AlterUserScramCredentials request.
#[derive(Debug, Clone)]
pub enum Alteration {
    Delete {
        user: String,
        /// The wire type code, checked here.
        mechanism: i8,
    },
    Upsert {
        user: String,
        mechanism: i8,
        iterations: i32,
        salt: Vec<u8>,
        salted_password: Vec<u8>,
    },
}

impl Alteration {
    fn user(&self) -> &str {
        match self {
            Alteration::Delete { user, .. } | Alteration::Upsert { user, .. } => user,
        }
    }
}

/// Why one user's alteration was refused; the API module maps each to Kafka's code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("A user credential cannot be altered twice in the same request")]
    Duplicate,
    #[error("Username must not be empty")]
    EmptyUser,
    #[error("Unknown SCRAM mechanism")]
    UnknownMechanism,
    #[error("Too few iterations")]
    TooFewIterations,
    #[error("Too many iterations")]
    TooManyIterations,
    #[error("Attempt to delete a user credential that does not exist")]
    NotFound,
    /// Rill's own bounds ([`CREDENTIALS_MAX`], [`SALT_BYTES_MAX`]).
    #[error("{0}")]
    Limit(String),
    /// The file could not be written; nothing of the request was applied.
    #[error("{0}")]
    Storage(String),
}

/// Why the credentials file cannot be loaded or written.
pub type ScramError = crate::atomic_file::FileError;

type Key = (String, ScramMechanism);

/// One user's answer to an alteration request.
pub type UserResult = (String, Result<(), Refusal>);

/// The broker's SCRAM credentials, persisted in the data directory.
pub struct ScramCredentials {
    path: PathBuf,
    /// Serializes changes; held across the file write so file and memory agree.
    current: Mutex<BTreeMap<Key, ScramCredential>>,
}

impl ScramCredentials {
    /// Loads `data_dir`'s file (none yet: no credentials). Blocks.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn load(data_dir: &Path) -> Result<ScramCredentials, ScramError> {
        let path = data_dir.join(FILE_NAME);
        let current = match crate::atomic_file::read_optional(&path)? {
            Some(text) => parse(&path, &text)?,
            None => BTreeMap::new(),
        };
        Ok(ScramCredentials {
            path,
            current: Mutex::new(current),
        })
    }

    /// No credentials, stored at `data_dir` once some are (for a state built before load).
    pub fn empty(data_dir: &Path) -> ScramCredentials {
        ScramCredentials {
            path: data_dir.join(FILE_NAME),
            current: Mutex::new(BTreeMap::new()),
        }
    }

    /// The credential SASL/SCRAM authentication checks a client's proof against.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.current
            .lock()
            .get(&(user.to_string(), mechanism))
            .cloned()
    }

    /// The users with at least one credential, each once, in name order.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.current.lock().keys().map(|(u, _)| u.clone()).collect();
        users.dedup();
        users
    }

    /// A user's mechanisms and their iteration counts (empty: no such user).
    pub fn describe(&self, user: &str) -> Vec<(ScramMechanism, i32)> {
        self.current
            .lock()
            .range(
                (user.to_string(), ScramMechanism::Sha256)
                    ..=(user.to_string(), ScramMechanism::Sha512),
            )
            .map(|((_, m), c)| (*m, c.iterations))
            .collect()
    }

    /// Applies a request's alterations: each user's is checked as Kafka checks it, and the
    /// valid ones are applied together and written once. Blocks.
    ///
    /// # Returns
    /// One result per user named in the request, accepted users first.
    pub fn alter(&self, alterations: &[Alteration]) -> Vec<UserResult> {
        let mut current = self.current.lock();
        let (accepted, mut refused) = check(&current, alterations);
        let mut next = current.clone();
        for alteration in &accepted {
            apply(&mut next, alteration);
        }
        let result = if next.len() > CREDENTIALS_MAX {
            Err(Refusal::Limit(format!(
                "rill holds at most {CREDENTIALS_MAX} SCRAM credentials"
            )))
        } else if next == *current {
            Ok(())
        } else {
            crate::atomic_file::write(&self.path, render(&next).as_bytes())
                .map(|()| *current = next)
                .map_err(|(op, e)| {
                    tracing::error!(path = %self.path.display(), op, error = %e, "cannot write SCRAM credentials");
                    Refusal::Storage(format!("cannot store the credentials: {op}: {e}"))
                })
        };
        let mut results: Vec<UserResult> = accepted
            .iter()
            .map(|a| (a.user().to_string(), result.clone()))
            .collect();
        results.append(&mut refused);
        results
    }
}

/// Splits a request into the alterations to apply and the users refused (Kafka's order of
/// checks: deletions first, then upsertions; a user seen twice is refused whole).
fn check<'a>(
    current: &BTreeMap<Key, ScramCredential>,
    alterations: &'a [Alteration],
) -> (Vec<&'a Alteration>, Vec<UserResult>) {
    let mut accepted: HashMap<&str, &Alteration> = HashMap::new();
    let mut refused: Vec<UserResult> = Vec::new();
    let deletions = alterations
        .iter()
        .filter(|a| matches!(a, Alteration::Delete { .. }));
    let upsertions = alterations
        .iter()
        .filter(|a| matches!(a, Alteration::Upsert { .. }));
    for alteration in deletions.chain(upsertions) {
        let user = alteration.user();
        if refused.iter().any(|(u, _)| u == user) {
            continue;
        }
        let verdict = if accepted.remove(user).is_some() {
            Err(Refusal::Duplicate)
        } else {
            validate(current, alteration)
        };
        match verdict {
            Ok(()) => {
                accepted.insert(user, alteration);
            }
            Err(refusal) => refused.push((user.to_string(), Err(refusal))),
        }
    }
    // Request order, so answers are stable.
    let accepted = alterations
        .iter()
        .filter(|a| {
            accepted
                .get(a.user())
                .is_some_and(|kept| std::ptr::eq(*kept, *a))
        })
        .collect();
    (accepted, refused)
}

fn validate(
    current: &BTreeMap<Key, ScramCredential>,
    alteration: &Alteration,
) -> Result<(), Refusal> {
    let (user, mechanism) = match alteration {
        Alteration::Delete { user, mechanism }
        | Alteration::Upsert {
            user, mechanism, ..
        } => (user, *mechanism),
    };
    if user.is_empty() {
        return Err(Refusal::EmptyUser);
    }
    let mechanism = ScramMechanism::from_type(mechanism).ok_or(Refusal::UnknownMechanism)?;
    match alteration {
        Alteration::Delete { .. } => {
            if !current.contains_key(&(user.clone(), mechanism)) {
                return Err(Refusal::NotFound);
            }
        }
        Alteration::Upsert {
            iterations, salt, ..
        } => {
            if *iterations < ITERATIONS_MIN {
                return Err(Refusal::TooFewIterations);
            }
            if *iterations > ITERATIONS_MAX {
                return Err(Refusal::TooManyIterations);
            }
            if salt.len() > SALT_BYTES_MAX {
                return Err(Refusal::Limit(format!(
                    "the salt is longer than {SALT_BYTES_MAX} bytes"
                )));
            }
        }
    }
    Ok(())
}

fn apply(credentials: &mut BTreeMap<Key, ScramCredential>, alteration: &Alteration) {
    match alteration {
        Alteration::Delete { user, mechanism } => {
            if let Some(m) = ScramMechanism::from_type(*mechanism) {
                credentials.remove(&(user.clone(), m));
            }
        }
        Alteration::Upsert {
            user,
            mechanism,
            iterations,
            salt,
            salted_password,
        } => {
            if let Some(m) = ScramMechanism::from_type(*mechanism) {
                let credential = ScramCredential::derive(m, salt, salted_password, *iterations);
                credentials.insert((user.clone(), m), credential);
            }
        }
    }
}

fn render(credentials: &BTreeMap<Key, ScramCredential>) -> String {
    let mut text = String::from("# rill SCRAM credentials; rewritten by the broker\n");
    for ((user, mechanism), c) in credentials {
        text.push_str(&format!(
            "{} {} {} {} {} {}\n",
            escape(user),
            mechanism.name(),
            c.iterations,
            hex(&c.salt),
            hex(&c.stored_key),
            hex(&c.server_key)
        ));
    }
    text
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<Key, ScramCredential>, ScramError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let error = |reason: &str| ScramError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = line.split(' ').collect();
        let [user, mechanism, iterations, salt, stored_key, server_key] = parts[..] else {
            return Err(error(
                "expected: user mechanism iterations salt stored-key server-key",
            ));
        };
        let user = unescape(user).ok_or_else(|| error("bad escape"))?;
        let mechanism =
            ScramMechanism::from_name(mechanism).ok_or_else(|| error("unknown mechanism"))?;
        let iterations: i32 = iterations
            .parse()
            .ok()
            .filter(|n| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(n))
            .ok_or_else(|| error("bad iteration count"))?;
        let credential = ScramCredential {
            salt: unhex(salt).ok_or_else(|| error("bad salt"))?,
            stored_key: unhex(stored_key).ok_or_else(|| error("bad stored key"))?,
            server_key: unhex(server_key).ok_or_else(|| error("bad server key"))?,
            iterations,
        };
        if out.len() >= CREDENTIALS_MAX {
            return Err(error("too many credentials"));
        }
        out.insert((user, mechanism), credential);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        // A field must not be empty.
        return "-".to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, mechanism: i8, iterations: i32) -> Alteration {
        Alteration::Upsert {
            user: user.into(),
            mechanism,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: b"salted".to_vec(),
        }
    }

    fn delete(user: &str, mechanism: i8) -> Alteration {
        Alteration::Delete {
            user: user.into(),
            mechanism,
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations: its ServerSignature checks out only if
    /// StoredKey and ServerKey are right, so check the keys against values computed from it.
    #[test]
    fn derives_rfc_5802_keys() {
        // SaltedPassword of the RFC 7677 example (PBKDF2 done by the client).
        let salted =
            unhex("c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d").expect("hex");
        let c = ScramCredential::derive(ScramMechanism::Sha256, b"s", &salted, 4096);
        let client_key = ScramMechanism::Sha256.hmac(&salted, b"Client Key");
        assert_eq!(c.stored_key, ScramMechanism::Sha256.hash(&client_key));
        assert_ne!(c.stored_key, c.server_key);
        // RFC 7677: ServerSignature = HMAC(ServerKey, AuthMessage) = 6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = ScramMechanism::Sha256.hmac(&c.server_key, auth_message.as_bytes());
        assert_eq!(
            hex(&signature),
            "eabae24d1062db75a9451ff0b6ea7e98c8546549ff741e672d3251b2397de46e"
        );
    }

    #[test]
    fn refuses_as_kafka_and_applies_the_rest() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ScramCredentials::load(dir.path()).expect("load");
        let results = store.alter(&[
            upsert("ok", 1, 4096),
            upsert("few", 1, 4095),
            upsert("many", 2, 16385),
            upsert("mech", 3, 8192),
            upsert("", 1, 8192),
            upsert("twice", 1, 8192),
            upsert("twice", 2, 8192),
            delete("missing", 1),
        ]);
        let get = |u: &str| results.iter().find(|(n, _)| n == u).map(|(_, r)| r.clone());
        assert_eq!(get("ok"), Some(Ok(())));
        assert_eq!(get("few"), Some(Err(Refusal::TooFewIterations)));
        assert_eq!(get("many"), Some(Err(Refusal::TooManyIterations)));
        assert_eq!(get("mech"), Some(Err(Refusal::UnknownMechanism)));
        assert_eq!(get(""), Some(Err(Refusal::EmptyUser)));
        assert_eq!(get("twice"), Some(Err(Refusal::Duplicate)));
        assert_eq!(get("missing"), Some(Err(Refusal::NotFound)));
        assert_eq!(results.len(), 7);
        assert_eq!(store.users(), vec!["ok".to_string()]);
        assert_eq!(store.describe("ok"), vec![(ScramMechanism::Sha256, 4096)]);
        assert!(store.describe("twice").is_empty());
    }

    #[test]
    fn survives_a_reload_and_deletes() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ScramCredentials::load(dir.path()).expect("load");
        let odd_user = "a b%c\u{e9}";
        let r = store.alter(&[upsert(odd_user, 1, 8192), upsert("bob", 2, 4096)]);
        assert!(r.iter().all(|(_, r)| r.is_ok()), "{r:?}");
        let want = store.get(odd_user, ScramMechanism::Sha256).expect("stored");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("file");
        assert!(
            !text.contains(&hex(b"salted")),
            "the salted password is not stored"
        );
        let reloaded = ScramCredentials::load(dir.path()).expect("reload");
        assert_eq!(reloaded.get(odd_user, ScramMechanism::Sha256), Some(want));
        assert_eq!(
            reloaded.describe("bob"),
            vec![(ScramMechanism::Sha512, 4096)]
        );
        let r = reloaded.alter(&[delete("bob", 2)]);
        assert_eq!(r, vec![("bob".to_string(), Ok(()))]);
        let again = ScramCredentials::load(dir.path()).expect("reload");
        assert!(again.describe("bob").is_empty());
        assert_eq!(again.users(), vec![odd_user.to_string()]);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE_NAME), "alice SCRAM-SHA-256 12 zz\n").expect("write");
        assert!(matches!(
            ScramCredentials::load(dir.path()),
            Err(ScramError::Parse { line: 1, .. })
        ));
    }
}
