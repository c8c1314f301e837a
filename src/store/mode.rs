//! The modes of what sockit creates in its data folder: the server's user
//! alone may read it (accounts, direct messages, the audit log, every user's
//! files), whatever the umask says.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file sockit creates: read and write for its owner.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder sockit creates: its owner only.
pub const DIR_MODE: u32 = 0o700;

/// Options that create a missing file with [`FILE_MODE`]; add the access
/// (`write`, `append`) the caller needs.
pub fn private_file() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(FILE_MODE);
    o
}

/// Creates `path` and its missing parents with [`DIR_MODE`].
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Makes sure the file at `path` exists and is its owner's alone, before a
/// library (SQLite) opens it: created with [`FILE_MODE`], or narrowed to it
/// when an older sockit left it readable by others. SQLite gives its `-wal`
/// and `-shm` files the mode of the database.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let file = private_file().write(true).open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// True when others than the owner may enter or read the folder at `path`.
pub fn open_to_others(path: &Path) -> io::Result<bool> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders_are_the_owners_alone_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&old).unwrap();
        ensure_private_file(&d.path().join("new.db")).unwrap();
        create_private_dir_all(&d.path().join("a/b")).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(d.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("old.db"), 0o600);
        assert_eq!(mode("new.db"), 0o600);
        assert_eq!(mode("a"), 0o700);
        assert_eq!(mode("a/b"), 0o700);
    }
}
