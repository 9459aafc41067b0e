//! An Antom account's keys, by version: the merchant's private keys (the highest version signs,
//! and the `keyVersion` a request names is its number) and Antom's public keys (an answer or a
//! notification is verified with the key of the version its `Signature` header names; one that
//! names none, with each key in turn). Each side comes from a directory of `<version>.pem`
//! files (a mounted Secret) or from one file (`private_key_file` with `key_version`,
//! `antom_public_key_file`: a one-version directory). The set in use is swapped whole when the
//! files change and load (see `crate::reload`); a call keeps the set it started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::signing::{Signer, Verifier};
use crate::reload::{Reload, Seen, contents_of};

/// Where one side's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One file; its version (the merchant key's `key_version`; `None` for an Antom public
    /// key file, which verifies whatever version an answer names).
    File(PathBuf, Option<u32>),
    /// A directory of `<version>.pem` files (other names, such as Kubernetes' `..data`, are
    /// not keys).
    Dir(PathBuf),
}

impl KeySource {
    /// The key files it holds now, with their versions, lowest first.
    fn files(&self) -> Result<Vec<(Option<u32>, PathBuf)>, String> {
        match self {
            KeySource::File(p, v) => Ok(vec![(*v, p.clone())]),
            KeySource::Dir(dir) => {
                let entries =
                    std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let mut out = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                    let name = entry.file_name();
                    let Some(version) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".pem"))
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    out.push((Some(version), entry.path()));
                }
                if out.is_empty() {
                    return Err(format!("{}: no <version>.pem key files", dir.display()));
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// What is watched for changes.
    fn watched(&self) -> PathBuf {
        match self {
            KeySource::File(p, _) | KeySource::Dir(p) => p.clone(),
        }
    }
}

/// The keys one call uses.
#[derive(Debug)]
pub struct KeyRing {
    /// The version that signs.
    pub signing_version: u32,
    signer: Signer,
    /// Every merchant key version held (the highest signs).
    pub private_versions: Vec<u32>,
    verifiers: Vec<(Option<u32>, Verifier)>,
}

impl KeyRing {
    /// One merchant key of `version` and one Antom public key for any version.
    pub fn single(version: u32, signer: Signer, verifier: Verifier) -> Self {
        Self {
            signing_version: version,
            signer,
            private_versions: vec![version],
            verifiers: vec![(None, verifier)],
        }
    }

    /// Signs `content` with the signing key: its version and the signature.
    pub fn sign(&self, content: &[u8]) -> (u32, Vec<u8>) {
        (self.signing_version, self.signer.sign(content))
    }

    /// Whether `signature` of `content` verifies with Antom's key of the version `named`
    /// (or a key held without a version); with none named, with any key held.
    pub fn verify(&self, named: Option<u32>, content: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .filter(|(v, _)| named.is_none() || v.is_none() || *v == named)
            .any(|(_, k)| k.verify(content, signature))
    }

    /// Antom's public key versions held (`None`: a key file without a version).
    pub fn public_versions(&self) -> Vec<Option<u32>> {
        self.verifiers.iter().map(|(v, _)| *v).collect()
    }

    /// Loads both sides; an error says which side (`Err((true, why))`: the private keys).
    pub fn load(private: &KeySource, public: &KeySource) -> Result<Self, (bool, String)> {
        let (signing_version, signer, private_versions) =
            load_private(private).map_err(|e| (true, e))?;
        let verifiers = load_public(public).map_err(|e| (false, e))?;
        Ok(Self {
            signing_version,
            signer,
            private_versions,
            verifiers,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every merchant key must load; the highest version signs.
fn load_private(source: &KeySource) -> Result<(u32, Signer, Vec<u32>), String> {
    let mut best: Option<(u32, Signer)> = None;
    let mut versions = Vec::new();
    for (v, path) in source.files()? {
        let signer =
            Signer::from_bytes(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        let v = v.unwrap_or(1);
        versions.push(v);
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, signer));
        }
    }
    let (v, signer) = best.ok_or("no merchant private key")?;
    Ok((v, signer, versions))
}

/// Every Antom public key must load.
fn load_public(source: &KeySource) -> Result<Vec<(Option<u32>, Verifier)>, String> {
    let mut out = Vec::new();
    for (v, path) in source.files()? {
        let verifier =
            Verifier::from_bytes(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push((v, verifier));
    }
    Ok(out)
}

/// An account's keys in use, swapped whole when their files change and load.
pub struct Keys {
    account: String,
    sources: Option<(KeySource, KeySource)>,
    live: ArcSwap<KeyRing>,
    seen: Seen,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("account", &self.account)
            .field("sources", &self.sources)
            .field("current", &self.live.load())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Fixed keys, never reloaded (tests, benches, the dev mode's generated keys).
    pub fn fixed(ring: KeyRing) -> Arc<Self> {
        Arc::new(Self {
            account: String::new(),
            sources: None,
            live: ArcSwap::from_pointee(ring),
            seen: Seen::default(),
        })
    }

    /// `account`'s keys from `private` and `public`, loaded now; an error says which side
    /// (`Err((true, why))`: the private keys).
    pub fn load(
        account: &str,
        private: KeySource,
        public: KeySource,
    ) -> Result<Arc<Self>, (bool, String)> {
        let ring = KeyRing::load(&private, &public)?;
        let seen = Seen::default();
        if let Ok(files) = Self::paths(&private, &public)
            && let Ok(contents) = contents_of(&files)
        {
            seen.changed(&contents);
        }
        Ok(Arc::new(Self {
            account: account.to_owned(),
            sources: Some((private, public)),
            live: ArcSwap::from_pointee(ring),
            seen,
        }))
    }

    fn paths(private: &KeySource, public: &KeySource) -> Result<Vec<PathBuf>, String> {
        let mut files: Vec<PathBuf> = private.files()?.into_iter().map(|(_, p)| p).collect();
        files.extend(public.files()?.into_iter().map(|(_, p)| p));
        Ok(files)
    }

    /// The keys a call starting now uses.
    pub fn current(&self) -> Arc<KeyRing> {
        self.live.load_full()
    }
}

impl Reload for Keys {
    fn name(&self) -> String {
        format!("accounts.{} keys", self.account)
    }

    fn watched(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|(a, b)| [a.watched(), b.watched()])
            .collect()
    }

    fn reload(&self) -> Result<bool, String> {
        let Some((private, public)) = &self.sources else {
            return Ok(false);
        };
        let files = Self::paths(private, public)?;
        if !self.seen.changed(&contents_of(&files)?) {
            return Ok(false);
        }
        let ring = KeyRing::load(private, public).map_err(|(_, e)| e)?;
        tracing::info!(account = %self.account, signing_version = ring.signing_version,
            antom_versions = ?ring.public_versions(), "antom keys loaded");
        self.live.store(Arc::new(ring));
        Ok(true)
    }
}

/// `dir/<version>.pem`, as the directories hold them.
pub fn key_file(dir: &Path, version: u32) -> PathBuf {
    dir.join(format!("{version}.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// The highest merchant version signs and names itself; an answer is verified with the
    /// Antom key of the version it names (or with each key when it names none); names that are
    /// not `<version>.pem` (Kubernetes' `..data`) are not keys; a file that does not load
    /// fails the whole load.
    #[test]
    fn versions_come_from_file_names_and_pick_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("p"), dir.path().join("a"));
        std::fs::create_dir_all(private.join("..data")).unwrap();
        std::fs::create_dir_all(&public).unwrap();
        let (m1, m2) = (Signer::generate().unwrap(), Signer::generate().unwrap());
        let (a1, a2) = (Signer::generate().unwrap(), Signer::generate().unwrap());
        write(&private, "1.pem", m1.private_key_pem().as_bytes());
        write(&private, "2.pem", m2.private_key_pem().as_bytes());
        write(&private, "README", b"not a key");
        write(&public, "1.pem", a1.public_key_pem().as_bytes());
        write(&public, "2.pem", a2.public_key_pem().as_bytes());
        let ring = KeyRing::load(
            &KeySource::Dir(private.clone()),
            &KeySource::Dir(public.clone()),
        )
        .unwrap();
        assert_eq!(
            (ring.signing_version, ring.private_versions.clone()),
            (2, vec![1, 2])
        );
        let (v, sig) = ring.sign(b"m");
        assert_eq!(v, 2);
        assert!(
            Verifier::from_der(&m2.public_key_der())
                .unwrap()
                .verify(b"m", &sig)
        );
        let by_a2 = a2.sign(b"answer");
        assert!(ring.verify(Some(2), b"answer", &by_a2));
        assert!(
            !ring.verify(Some(1), b"answer", &by_a2),
            "the named version only"
        );
        assert!(
            ring.verify(None, b"answer", &by_a2),
            "no version named: any key"
        );
        assert!(!ring.verify(Some(3), b"answer", &by_a2));

        write(&private, "3.pem", b"not a key");
        let e =
            KeyRing::load(&KeySource::Dir(private.clone()), &KeySource::Dir(public)).unwrap_err();
        assert!(e.0 && e.1.contains("3.pem"), "{e:?}");
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(KeySource::Dir(empty).files().is_err());
    }

    /// A reload takes new files whole, keeps the previous keys when a file does not load, and
    /// reads nothing again while the files are unchanged.
    #[test]
    fn a_reload_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("p"), dir.path().join("a"));
        std::fs::create_dir_all(&private).unwrap();
        std::fs::create_dir_all(&public).unwrap();
        write(
            &private,
            "1.pem",
            Signer::generate().unwrap().private_key_pem().as_bytes(),
        );
        write(
            &public,
            "1.pem",
            Signer::generate().unwrap().public_key_pem().as_bytes(),
        );
        let keys = Keys::load(
            "antom",
            KeySource::Dir(private.clone()),
            KeySource::Dir(public),
        )
        .unwrap();
        assert_eq!(keys.reload(), Ok(false), "unchanged");
        write(
            &private,
            "2.pem",
            Signer::generate().unwrap().private_key_pem().as_bytes(),
        );
        assert_eq!(keys.reload(), Ok(true));
        assert_eq!(keys.current().signing_version, 2);
        write(&private, "3.pem", b"garbage");
        assert!(keys.reload().is_err());
        assert_eq!(keys.current().signing_version, 2, "the previous keys stay");
        assert_eq!(
            keys.reload(),
            Ok(false),
            "the same bad files are not counted twice"
        );
    }
}
