//! What the runner keeps on disk is its user's alone: the state directory (0700) and every file
//! in it (0600), the trace file (0600) and the control socket (0600), whatever the umask.
//!
//! The state holds the key's secrets (key-wrapping key, PIN verifier, attestation key), so
//! reading it is cloning the key, and whoever can write or plant it decides which key the
//! runner becomes. As OpenSSH's StrictModes does, an existing directory or file owned by another
//! user, or writable by its group or others, is refused with a message naming the path and the
//! fix; one that is only readable by others (as earlier versions of the runner left them, under
//! umask 022) is made private again, with a warning that its secrets may have been copied.
//! Nothing here follows a symbolic link (`O_NOFOLLOW`), and the files of a state directory are
//! opened relative to the directory already checked (`openat`), so a path cannot be swapped
//! between the check and the use. [`PrivateDir::open_file`] is the one place where a
//! state-directory file is opened.

use std::fs::{File, Metadata, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::peer::own_uid;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Group- or other-writable.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// Any access for group or others.
const OPEN_TO_OTHERS: u32 = 0o077;
const STICKY: u32 = 0o1000;

/// A directory of the runner's user's own, checked and held open: the state directory, or a
/// key's directory inside it.
pub struct PrivateDir {
    dir: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// Open the directory at `path`, creating it (and its parents) if missing.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dirs(parent)?;
        }
        Self::open_at(CWD, path, path.to_path_buf())
    }

    /// The directory `name` inside this one, created if missing.
    pub fn subdir(&self, name: &str) -> io::Result<Self> {
        let path = self.path.join(name);
        Self::open_at(self.dir.as_fd(), one_component(name, &path)?, path)
    }

    /// Open the file `name` in this directory for reading and writing, creating it (0600) if
    /// missing. Every file of the state directory is opened here.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            self.dir.as_fd(),
            one_component(name, &path)?,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| open_error(&path, e))?;
        let file = File::from(fd);
        make_private(&file, &path, Kind::File)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_at(base: BorrowedFd, name: &Path, path: PathBuf) -> io::Result<Self> {
        match rustix::fs::mkdirat(base, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(at_path(&path, e.into())),
        }
        let fd = rustix::fs::openat(
            base,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(&path, e))?;
        let dir = File::from(fd);
        make_private(&dir, &path, Kind::Dir)?;
        Ok(Self {
            dir: dir.into(),
            path,
        })
    }
}

/// Create or truncate the trace file at `path`: 0600, not through a link, and if it exists,
/// this user's and writable by nobody else.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    // NONBLOCK: a FIFO planted at the path would otherwise hold the open until someone reads it.
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    )
    .map_err(|e| open_error(path, e))?;
    let file = File::from(fd);
    make_private(&file, path, Kind::File)?;
    file.set_len(0).map_err(|e| at_path(path, e))?;
    Ok(file)
}

/// Bind the control socket at `path`, readable and writable by this user alone (0600), in a
/// directory where nobody else can replace it. A socket left there by an earlier run of this
/// user's is removed; anything else at the path is refused.
pub fn bind_private_socket(path: &Path) -> io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    create_dirs(dir)?;
    check_socket_dir(dir)?;
    remove_stale_socket(path)?;
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let address = rustix::net::SocketAddrUnix::new(path).map_err(|e| at_path(path, e.into()))?;
    rustix::net::bind(&socket, &address).map_err(|e| at_path(path, e.into()))?;
    // The socket file gets 0777 less the umask; narrow it before listen(), so that nobody can
    // have connected in between (a connection to a socket that does not listen is refused).
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
        .map_err(|e| at_path(path, e))?;
    rustix::net::listen(&socket, 128)?;
    Ok(UnixListener::from(socket))
}

/// Make `dir` and its missing parents, private to this user: 0700 (less the umask, which can
/// only take bits away).
fn create_dirs(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| at_path(dir, e))
}

/// The control socket's directory: this user's or root's, and if others may write in it, only
/// with the sticky bit (as /tmp), so that nobody else can rename or remove the socket.
fn check_socket_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| at_path(dir, e))?;
    let me = own_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refused(format!(
            "{}, the control socket's directory, is owned by uid {}, not by this user (uid {me}) \
             or root: choose a directory of your own for --control",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 && meta.mode() & STICKY == 0 {
        return Err(refused(format!(
            "{}, the control socket's directory, is writable by others (mode {:04o}) without \
             the sticky bit, so another user could replace the socket: `chmod go-w {}`, or \
             choose a directory of your own for --control",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

/// Remove a socket this user left behind (nobody listens on it any more); refuse anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        meta => meta.map_err(|e| at_path(path, e))?,
    };
    if !meta.file_type().is_socket() || meta.uid() != own_uid() {
        return Err(refused(format!(
            "{} exists and is not a control socket of this user's (a {} owned by uid {}): \
             remove it, or choose another --control path",
            path.display(),
            kind_name(&meta),
            meta.uid()
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: another runner serves this control socket",
                path.display()
            ),
        ));
    }
    std::fs::remove_file(path).map_err(|e| at_path(path, e))
}

/// Remove the control socket at `path` when the runner stops, if it is still this user's socket.
pub fn remove_own_socket(path: &Path) {
    if std::fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.file_type().is_socket() && meta.uid() == own_uid())
    {
        let _ = std::fs::remove_file(path);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Check what was opened (its type, owner and who may write it), then set its mode to exactly
/// 0700 or 0600: what the runner creates gets that mode whatever the umask, and an earlier
/// version's 0755 / 0644 is narrowed, with a warning.
fn make_private(file: &File, path: &Path, kind: Kind) -> io::Result<()> {
    let meta = file.metadata().map_err(|e| at_path(path, e))?;
    let (right_type, mode, fix) = match kind {
        Kind::Dir => (meta.is_dir(), DIR_MODE, "chmod 0700"),
        Kind::File => (meta.is_file(), FILE_MODE, "chmod 0600"),
    };
    if !right_type {
        return Err(refused(format!(
            "{} is a {}, not a {}",
            path.display(),
            kind_name(&meta),
            if kind == Kind::Dir {
                "directory"
            } else {
                "regular file"
            }
        )));
    }
    let me = own_uid();
    if meta.uid() != me {
        return Err(refused(format!(
            "{} is owned by uid {}, not by this user (uid {me}): another user could have \
             planted it, or could read what the key keeps there; use a path of your own (or, \
             if it really is yours, `chown {me} {}`)",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    let current = meta.mode() & 0o7777;
    if current & WRITABLE_BY_OTHERS != 0 {
        return Err(refused(format!(
            "{} is writable by its group or by others (mode {current:04o}), so another user \
             could have changed it: check it, then `{fix} {}`",
            path.display(),
            path.display()
        )));
    }
    if current != mode {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| at_path(path, e))?;
    }
    // (What was just made has no group or other bits: 0600 or 0700 less the umask.)
    if current & OPEN_TO_OTHERS != 0 {
        tracing::warn!(
            path = %path.display(),
            "was readable by other users (mode {current:04o}); now {mode:04o}. Anyone on this \
             machine could have copied what it held: if it is a key's state, reset the key \
             (authenticatorReset) or start a new state directory"
        );
    }
    Ok(())
}

fn kind_name(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_file() {
        "regular file"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "device"
    }
}

/// A single path component: a file of a state directory never reaches outside it.
fn one_component<'a>(name: &'a str, path: &Path) -> io::Result<&'a Path> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a name inside the state directory", path.display()),
        ));
    }
    Ok(Path::new(name))
}

fn open_error(path: &Path, error: Errno) -> io::Error {
    // O_NOFOLLOW meets a link: ELOOP, or ENOTDIR when a directory was asked for.
    let link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if error == Errno::LOOP || (error == Errno::NOTDIR && link()) {
        return refused(format!(
            "{} is a symbolic link: the runner does not follow links to its state, trace or \
             socket (one could point it at another user's file); give the real path",
            path.display()
        ));
    }
    if error == Errno::NOTDIR {
        return refused(format!("{} is not a directory", path.display()));
    }
    at_path(path, error.into())
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message)
}

fn at_path(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn made_private_whatever_the_umask_allows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(&tmp.path().join("a/state")).unwrap();
        let _file = dir.open_file("state.lfs").unwrap();
        let key2 = dir.subdir("key-2").unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("state.lfs")), 0o600);
        assert_eq!(mode(key2.path()), 0o700);
    }

    #[test]
    fn readable_state_is_narrowed_and_writable_state_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, Permissions::from_mode(0o755)).unwrap();
        std::fs::write(state.join("state.lfs"), b"").unwrap();
        std::fs::set_permissions(state.join("state.lfs"), Permissions::from_mode(0o644)).unwrap();
        let dir = PrivateDir::open(&state).unwrap();
        dir.open_file("state.lfs").unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("state.lfs")), 0o600);

        std::fs::set_permissions(state.join("state.lfs"), Permissions::from_mode(0o620)).unwrap();
        let error = dir.open_file("state.lfs").unwrap_err();
        assert!(
            error.to_string().contains("writable by its group"),
            "{error}"
        );
        std::fs::set_permissions(&state, Permissions::from_mode(0o770)).unwrap();
        let error = PrivateDir::open(&state).err().unwrap();
        assert!(error.to_string().contains("chmod 0700"), "{error}");
    }

    #[test]
    fn links_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = PrivateDir::open(&tmp.path().join("real")).unwrap();
        symlink(real.path(), tmp.path().join("link")).unwrap();
        let error = PrivateDir::open(&tmp.path().join("link")).err().unwrap();
        assert!(error.to_string().contains("symbolic link"), "{error}");

        std::fs::write(tmp.path().join("elsewhere"), b"keep").unwrap();
        symlink(tmp.path().join("elsewhere"), real.path().join("state.lfs")).unwrap();
        let error = real.open_file("state.lfs").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        symlink(tmp.path().join("elsewhere"), tmp.path().join("trace")).unwrap();
        let error = create_private_file(&tmp.path().join("trace")).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(
            std::fs::read(tmp.path().join("elsewhere")).unwrap(),
            b"keep"
        );
        assert!(real.open_file("../elsewhere").is_err());
    }

    #[test]
    fn the_socket_is_0600_and_only_a_stale_socket_of_ours_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("control.sock");
        let listener = bind_private_socket(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // In use: refused, and the live socket stays.
        let error = bind_private_socket(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        drop(listener);
        // Stale: replaced.
        let _listener = bind_private_socket(&path).unwrap();
        // Not a socket: refused, and left alone.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"keep").unwrap();
        assert!(bind_private_socket(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        // A directory anyone may write in, without the sticky bit: refused.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        let error = bind_private_socket(&open.join("s")).unwrap_err();
        assert!(error.to_string().contains("sticky"), "{error}");
        std::fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
        bind_private_socket(&open.join("s")).unwrap();
    }
}
