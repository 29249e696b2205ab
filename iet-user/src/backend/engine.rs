//! Which engine serves a file or block-device LUN: the per-LUN `engine`
//! (`auto`, `file`, `uring`) and `direct` (O_DIRECT) settings, the one
//! io_uring probe, and opening a local store with them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::uring::UringBackend;
use super::{BackendError, BlockBackend, FileBackend};

/// The I/O engine of a file or block-device LUN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// io_uring where the kernel allows it and measurement favours it, else `file`.
    #[default]
    Auto,
    /// Positional syscalls (pread/pwrite) on the calling thread.
    File,
    /// One io_uring per LU.
    Uring,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Auto, Engine::File, Engine::Uring];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::File => "file",
            Engine::Uring => "uring",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown engine {s:?} (auto, file or uring)"))
    }
}

/// What `auto` picks for buffered LUNs when io_uring works. Measured on
/// 2026-12-02 (docs/engines.md): see there before changing it.
const AUTO_BUFFERED: Engine = Engine::File;

/// How to open a local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    pub read_only: bool,
    /// Create a missing regular file (sparse) with this size.
    pub create_size: Option<u64>,
    pub engine: Engine,
    /// O_DIRECT: bypass the page cache (io_uring engine only).
    pub direct: bool,
    /// The LU's logical block size: O_DIRECT needs the store to accept it.
    pub block_size: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            create_size: None,
            engine: Engine::Auto,
            direct: false,
            block_size: 512,
        }
    }
}

/// Whether io_uring can be used here (probed once); `Err` says why not.
pub fn uring_available() -> Result<(), &'static str> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let probed = super::uring::probe();
            match &probed {
                Ok(()) => tracing::info!("io_uring available"),
                Err(why) => {
                    tracing::info!("io_uring unavailable ({why}): LUNs use the file engine");
                }
            }
            probed
        })
        .as_ref()
        .copied()
        .map_err(String::as_str)
}

/// The engine a LUN with these settings gets.
pub fn resolve(engine: Engine, direct: bool) -> Result<Engine, BackendError> {
    let invalid = |why: String| Err(BackendError::InvalidOption(why));
    match (engine, direct) {
        (Engine::File, true) => {
            invalid("direct = true needs engine \"uring\" (or \"auto\")".to_owned())
        }
        (Engine::File, false) => Ok(Engine::File),
        (Engine::Uring | Engine::Auto, true) | (Engine::Uring, false) => match uring_available() {
            Ok(()) => Ok(Engine::Uring),
            Err(why) if engine == Engine::Auto && !direct => Ok(Engine::File).inspect(|_| {
                tracing::debug!("engine auto: {why}");
            }),
            Err(why) => invalid(format!("engine uring: io_uring is not available ({why})")),
        },
        (Engine::Auto, false) => Ok(match uring_available() {
            Ok(()) => AUTO_BUFFERED,
            Err(_) => Engine::File,
        }),
    }
}

/// Opens a regular file or block device with the engine `opts` ask for.
pub fn open_local(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn BlockBackend>, BackendError> {
    let file = if opts.read_only {
        FileBackend::open_read_only(path)?
    } else {
        FileBackend::open(path, opts.create_size)?
    };
    match resolve(opts.engine, opts.direct)? {
        Engine::Uring => Ok(Arc::new(UringBackend::new(file, opts)?)),
        Engine::File | Engine::Auto => Ok(Arc::new(file)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Engine::ALL {
            assert_eq!(e.name().parse::<Engine>(), Ok(e));
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!("URING".parse::<Engine>(), Ok(Engine::Uring));
        assert!(
            "aio"
                .parse::<Engine>()
                .unwrap_err()
                .contains("auto, file or uring")
        );
    }

    /// `auto` as measured (docs/engines.md): `file` for buffered LUNs,
    /// io_uring (available on CI's kernel) for O_DIRECT ones.
    #[test]
    fn auto_follows_the_measurement() {
        assert_eq!(resolve(Engine::Auto, false).unwrap(), AUTO_BUFFERED);
        assert_eq!(AUTO_BUFFERED, Engine::File);
        uring_available().expect("io_uring on this kernel");
        assert_eq!(resolve(Engine::Auto, true).unwrap(), Engine::Uring);
        assert_eq!(resolve(Engine::Uring, false).unwrap(), Engine::Uring);
    }

    #[test]
    fn the_file_engine_refuses_direct() {
        let e = resolve(Engine::File, true).unwrap_err();
        assert_eq!(e.kind(), super::super::BackendErrorKind::InvalidSpec);
        assert!(e.to_string().contains("direct = true"), "{e}");
    }
}
