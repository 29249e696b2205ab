//! File persistence for SCSI persistent reservations (APTPL): the SCSI layer
//! hands over an opaque blob; this writes it atomically (temp file, fsync, rename).

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::scsi::PrStore;

#[derive(Debug)]
pub struct FilePrStore {
    path: PathBuf,
}

impl FilePrStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl PrStore for FilePrStore {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, data: Option<&[u8]>) -> io::Result<()> {
        let Some(data) = data else {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let path = std::env::temp_dir().join(format!("iet-pr-{}.bin", std::process::id()));
        let s = FilePrStore::new(&path);
        s.save(Some(b"abc")).expect("save");
        assert_eq!(s.load().expect("load").as_deref(), Some(&b"abc"[..]));
        s.save(None).expect("clear");
        assert_eq!(s.load().expect("load"), None);
    }
}
