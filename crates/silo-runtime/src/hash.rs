//! SHA-256 of whole files, read with one large reused buffer.

use std::io::{self, Read, Write};

use ring::digest::{Context, SHA256};

/// The read size: large enough that a 150 MB tree hashes at disk or memory speed.
const BUFFER_SIZE: usize = 1 << 20;

/// The SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    finish(ring::digest::digest(&SHA256, bytes))
}

fn finish(digest: ring::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Hashes many files with one buffer, allocated once.
pub(crate) struct FileHasher {
    buffer: Vec<u8>,
}

impl FileHasher {
    pub(crate) fn new() -> FileHasher {
        FileHasher {
            buffer: vec![0; BUFFER_SIZE],
        }
    }

    /// Reads `from` to its end; returns the byte count and SHA-256.
    pub(crate) fn hash(&mut self, from: &mut impl Read) -> io::Result<(u64, [u8; 32])> {
        self.copy(from, &mut io::sink(), |_| {})
    }

    /// Copies `from` to its end into `to`, hashing on the way; `progress` gets the
    /// number of bytes of each chunk written. Returns the byte count and SHA-256.
    pub(crate) fn copy(
        &mut self,
        from: &mut impl Read,
        to: &mut impl Write,
        mut progress: impl FnMut(u64),
    ) -> io::Result<(u64, [u8; 32])> {
        let mut context = Context::new(&SHA256);
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &self.buffer[..n];
            context.update(chunk);
            to.write_all(chunk)?;
            total += n as u64;
            progress(n as u64);
        }
        Ok((total, finish(context.finish())))
    }
}
