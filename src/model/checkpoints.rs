//! The official SAM 2 / SAM 2.1 checkpoints: names, sizes and published sha256 values, and
//! identifying a file the user picked.
//!
//! The byte size is a reliable first check. The published hashes could not all be confirmed
//! (see `shared/docs/checkpoints.md`), so a hash mismatch is reported as a warning with both
//! values, not treated as corruption.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::config::HieraSize;

/// SAM 2 release a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Release {
    /// SAM 2.0 (July 2024), what SAM4EM was trained from.
    Sam2,
    /// SAM 2.1 (September 2024).
    Sam21,
}

/// One official file.
#[derive(Clone, Copy, Debug)]
pub struct OfficialCheckpoint {
    /// File name as published.
    pub file_name: &'static str,
    /// Release.
    pub release: Release,
    /// Trunk size.
    pub size: HieraSize,
    /// Size in bytes.
    pub bytes: u64,
    /// Published sha256: the full hex value, or a known prefix and suffix.
    pub sha256: Sha256Known,
    /// Download address.
    pub url: &'static str,
}

/// What is known of a published hash.
#[derive(Clone, Copy, Debug)]
pub enum Sha256Known {
    /// The full value.
    Full(&'static str),
    /// Only the first and last hex digits were recorded.
    Partial(&'static str, &'static str),
}

/// The eight official checkpoints.
pub const OFFICIAL: [OfficialCheckpoint; 8] = [
    OfficialCheckpoint {
        file_name: "sam2_hiera_tiny.pt",
        release: Release::Sam2,
        size: HieraSize::Tiny,
        bytes: 155_906_050,
        sha256: Sha256Known::Partial("65b50056", "5d1125"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2_hiera_small.pt",
        release: Release::Sam2,
        size: HieraSize::Small,
        bytes: 184_309_650,
        sha256: Sha256Known::Partial("95949964", "7dce3"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2_hiera_base_plus.pt",
        release: Release::Sam2,
        size: HieraSize::BasePlus,
        bytes: 323_493_298,
        sha256: Sha256Known::Full("d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2_hiera_large.pt",
        release: Release::Sam2,
        size: HieraSize::Large,
        bytes: 897_952_466,
        sha256: Sha256Known::Partial("7442e4e9", "df87b"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2.1_hiera_tiny.pt",
        release: Release::Sam21,
        size: HieraSize::Tiny,
        bytes: 156_008_466,
        sha256: Sha256Known::Full("7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2.1_hiera_small.pt",
        release: Release::Sam21,
        size: HieraSize::Small,
        bytes: 184_416_285,
        sha256: Sha256Known::Full("6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2.1_hiera_base_plus.pt",
        release: Release::Sam21,
        size: HieraSize::BasePlus,
        bytes: 323_606_802,
        sha256: Sha256Known::Full("a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
    },
    OfficialCheckpoint {
        file_name: "sam2.1_hiera_large.pt",
        release: Release::Sam21,
        size: HieraSize::Large,
        bytes: 898_083_611,
        sha256: Sha256Known::Full("2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
    },
];

/// How a file compares with the official list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    /// Size and full published hash agree.
    Verified,
    /// Size agrees and the recorded prefix/suffix of the hash agree.
    PartiallyVerified,
    /// Size agrees but the hash does not: shown to the user as a warning with both values.
    HashMismatch {
        /// What was published.
        expected: String,
    },
    /// Not one of the official files (a conversion, a fine-tuned model, …).
    Unofficial,
}

/// What [`identify`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Identity {
    /// The file's sha256, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The official file it matches by size, if any.
    pub official: Option<&'static str>,
    /// The verdict.
    pub verdict: Verdict,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes `path` and compares it with the official list.
pub fn identify(path: &Path) -> std::io::Result<Identity> {
    let bytes = std::fs::metadata(path)?.len();
    let sha256 = sha256_file(path)?;
    let official = OFFICIAL.iter().find(|c| c.bytes == bytes);
    let verdict = match official {
        None => Verdict::Unofficial,
        Some(c) => match c.sha256 {
            Sha256Known::Full(h) if h == sha256 => Verdict::Verified,
            Sha256Known::Partial(a, b) if sha256.starts_with(a) && sha256.ends_with(b) => Verdict::PartiallyVerified,
            Sha256Known::Full(h) => Verdict::HashMismatch { expected: h.to_string() },
            Sha256Known::Partial(a, b) => Verdict::HashMismatch { expected: format!("{a}…{b}") },
        },
    };
    Ok(Identity { sha256, bytes, official: official.map(|c| c.file_name), verdict })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_flags_unofficial_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pt");
        std::fs::write(&p, b"abc").unwrap();
        let id = identify(&p).unwrap();
        assert_eq!(id.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(id.verdict, Verdict::Unofficial);
        assert_eq!(OFFICIAL.iter().filter(|c| c.size == HieraSize::BasePlus).count(), 2);
    }
}
