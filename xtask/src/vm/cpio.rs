//! A writer for the "newc" cpio format, the one the kernel unpacks as an initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (magic `070701` and 13 eight-digit hex fields),
//! the NUL-terminated name padded to a multiple of 4, then the data padded to a multiple
//! of 4. The archive ends with an entry named `TRAILER!!!`. Parent directories are added
//! before their contents, because the kernel creates files with a plain `open(O_CREAT)`.

use std::{collections::BTreeSet, io::Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFCHR: u32 = 0o020_000;

/// Writes a newc archive to `out`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    dirs: BTreeSet<String>,
}

/// Archive paths are relative (`bin/ip`); a leading `/` is dropped.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl<W: Write> Writer<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            next_ino: 1,
            written: 0,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds directory `path` (and any missing parents) with permissions `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> std::io::Result<()> {
        let path = relative(path).trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds regular file `path` with permissions `perm` and contents `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        let path = relative(path);
        self.parents(path)?;
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds character device node `path` with device number `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        let path = relative(path);
        self.parents(path)?;
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the output and the archive's size in bytes.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name}: {} bytes do not fit a newc entry", data.len()),
            )
        })?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so equal inputs give equal archives
            size,
            0, // devmajor
            0, // devminor
            rdev_major,
            rdev_minor,
            name.len() as u32 + 1, // namesize, with the NUL
            0,                     // check (only for the "070702" variant)
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..pad])
    }
}

/// One entry read back from an archive.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive.
    pub name: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// `(major, minor)` of a device node.
    pub rdev: (u32, u32),
    /// File contents.
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer (the tests' check of the writer).
#[cfg(test)]
pub fn read(mut bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    let align = |n: usize| n.div_ceil(4) * 4;
    loop {
        if bytes.len() < 110 {
            return Err(format!("truncated header at offset {offset}"));
        }
        if &bytes[..6] != MAGIC.as_bytes() {
            return Err(format!("bad magic at offset {offset}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let text = std::str::from_utf8(&bytes[6 + i * 8..14 + i * 8])
                .map_err(|e| format!("header field {i} at offset {offset}: {e}"))?;
            u32::from_str_radix(text, 16)
                .map_err(|e| format!("header field {i} at offset {offset}: {e}"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        if namesize == 0 || bytes.len() < name_end {
            return Err(format!("truncated name at offset {offset}"));
        }
        let name = std::str::from_utf8(&bytes[110..name_end - 1])
            .map_err(|e| format!("name at offset {offset}: {e}"))?
            .to_owned();
        if bytes[name_end - 1] != 0 {
            return Err(format!("name of {name} is not NUL-terminated"));
        }
        let data_start = align(offset + name_end) - offset;
        let data_end = data_start + size;
        if bytes.len() < data_end {
            return Err(format!("truncated data of {name}"));
        }
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            rdev,
            data: bytes[data_start..data_end].to_vec(),
        });
        let next = (align(offset + data_end) - offset).min(bytes.len());
        bytes = &bytes[next..];
        offset += next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.file("/omnirelay/bin/tool", 0o755, b"\x7fELF binary")
            .unwrap();
        w.file("etc/plan", 0o644, b"12345").unwrap(); // 5 bytes: needs padding
        w.file("sbin/ip", 0o700, b"").unwrap(); // empty file
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.dir("omnirelay", 0o755).unwrap(); // already there: not repeated
        let (bytes, size) = w.finish().unwrap();
        assert_eq!(size as usize, bytes.len());
        bytes
    }

    #[test]
    fn archive_reads_back_with_parents_first_and_exact_contents() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "omnirelay",
                "omnirelay/bin",
                "omnirelay/bin/tool",
                "etc",
                "etc/plan",
                "sbin",
                "sbin/ip",
                "dev",
                "dev/console"
            ]
        );
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(by_name("omnirelay/bin/tool").data, b"\x7fELF binary");
        assert_eq!(by_name("omnirelay/bin/tool").mode, S_IFREG | 0o755);
        assert_eq!(by_name("etc/plan").data, b"12345");
        assert_eq!(by_name("sbin/ip").mode, S_IFREG | 0o700);
        assert!(by_name("sbin/ip").data.is_empty());
        assert_eq!(by_name("dev/console").mode, S_IFCHR | 0o600);
        assert_eq!(by_name("dev/console").rdev, (5, 1));
        assert_eq!(by_name("omnirelay").mode, S_IFDIR | 0o755);
    }

    #[test]
    fn header_is_the_newc_layout() {
        let bytes = sample();
        // First entry: the directory "omnirelay", inode 1, nlink 2, name size 10.
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&header[..6], "070701");
        assert_eq!(&header[6..14], "00000001", "inode");
        assert_eq!(&header[14..22], "000041ed", "mode: directory 0755");
        assert_eq!(&header[38..46], "00000002", "nlink");
        assert_eq!(&header[94..102], "0000000a", "namesize with NUL");
        assert_eq!(&bytes[110..120], b"omnirelay\0");
        // Header plus name is 120 bytes: already aligned, so the next entry follows.
        assert_eq!(&bytes[120..126], b"070701");
        // The trailer closes the archive.
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 16..]);
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
    }

    #[test]
    fn system_cpio_lists_the_archive_when_installed() {
        let Some(cpio) = omnirelay_test_support::caps::find_in_path("cpio") else {
            omnirelay_test_support::skip::report("needs GNU cpio (Debian package cpio)");
            return;
        };
        let path = std::env::temp_dir().join(format!("omnirelay-cpio-{}.cpio", std::process::id()));
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new(cpio)
            .args(["-t", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(names.len(), 9, "{listing}");
        assert!(names.contains(&"omnirelay/bin/tool"), "{listing}");
        assert!(names.contains(&"dev/console"), "{listing}");
    }

    #[test]
    fn corrupt_archives_are_rejected() {
        let bytes = sample();
        assert!(read(&bytes[..50]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(read(&bad).unwrap_err().contains("magic"));
        assert!(read(&bytes[..bytes.len() - 200]).is_err());
    }
}
