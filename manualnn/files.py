"""Writing the user's files so that nothing already saved is ever damaged.

``atomic_open(path)`` writes a temp file in the same folder, fsyncs it, renames it over ``path`` and
fsyncs the folder: ``path`` holds the old contents or the new, never half of either. The temp file
is named ``.NAME.PID.manualnn-tmp``: removed on every exit path that runs code, and a stale one left
by a killed process (its PID gone) is removed by the next write to the same path. The new file gets
the mode an ordinary write would give it: an overwritten file's own, else 0666 less the umask.

A write follows a symlink to its target (the link stays a link, and its target is what changes), and
refuses a path that leads into /proc (``/dev/stdout``, ``/dev/fd/N``: a process's open file, which a
rename would replace by a plain file) or to anything but a regular file: special paths are never
replaced.
"""
import contextlib
import errno
import glob
import os
import stat

TMP_SUFFIX = ".manualnn-tmp"
# A temp file's name: "." + the target's name cut to this many bytes + ".PID[.probe].manualnn-tmp", so
# it stays within the usual 255-byte name limit whatever the target's name and the PID
STEM_BYTES = 255 - 40
MAX_LINKS = 40   # as the kernel's own limit on a path's symlinks (ELOOP)


class OutputPathError(ValueError):
    """An output path that cannot or must not be written (named with its option by the CLI)."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_proc(folder):
    real = os.path.realpath(folder)
    return real == "/proc" or real.startswith("/proc/")


def write_target(path):
    """The file a write to ``path`` lands in: symlinks followed to their target, as ``open`` would.

    Raises OutputPathError for a path that leads into /proc (``/dev/stdout`` and the like) or through
    too many links."""
    here = os.path.abspath(os.fspath(path))
    for _ in range(MAX_LINKS):
        if _in_proc(os.path.dirname(here)):
            raise OutputPathError(f"{os.fspath(path)!r} leads into /proc (as /dev/stdout does: a process's "
                                  f"open file), not a file that can be replaced; expected a file path")
        if not os.path.islink(here):
            return os.path.realpath(here)   # (symlinked folders on the way resolved too)
        here = os.path.join(os.path.dirname(here), os.readlink(here))
    raise OutputPathError(f"{os.fspath(path)!r}: too many levels of symbolic links")


def _stem(path):
    """The start of the names of ``path``'s temp files: its name, cut to STEM_BYTES bytes."""
    return "." + os.fsdecode(os.fsencode(os.path.basename(path))[:STEM_BYTES]) + "."


def remove_stale_temp_files(path):
    """Delete temp files of earlier writes to ``path`` whose process is gone (a kill -9 mid-write)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = _stem(name)
    for tmp in glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(stem)}*{TMP_SUFFIX}")):
        pid = tmp[len(os.path.join(folder, stem)):-len(TMP_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Write ``path`` all at once or not at all (see the module's docstring). A path that is not, or
    does not lead to, a regular file (or a new one) is an OSError: it is never replaced."""
    try:
        path = write_target(path)
    except OutputPathError as e:
        raise OSError(errno.EINVAL, str(e)) from None
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, f"{path!r} is not a regular file (a FIFO, socket or device): not replaced")
    folder = os.path.dirname(path)
    remove_stale_temp_files(path)
    try:
        file_mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        file_mode = 0o666 & ~_umask()
    tmp = os.path.join(folder, f"{_stem(path)}{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), file_mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):   # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def describe_os_error(e):
    """'disk full' and friends in words, with the OS's own reason."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({reason})"
    return reason


def check_output_path(path):
    """Fail before any work, not after it, when ``path`` cannot be written: a folder, a special file
    (a FIFO or a device: not a place for a checkpoint), a path into /proc, a missing or read-only folder.
    A symlink is judged by its target (the file a write changes)."""
    target = write_target(path)
    shown = f"{path!r}" + (f" (a link to {target!r})" if os.path.islink(os.path.abspath(path)) else "")
    if os.path.isdir(target):
        raise OutputPathError(f"{shown} is a folder; expected a file path")
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise OutputPathError(f"{shown} is not a regular file (a FIFO, socket or device); expected a file path")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputPathError(f"cannot write {shown}: the folder {folder!r} does not exist")
    probe = os.path.join(folder, f"{_stem(target)}{os.getpid()}.probe{TMP_SUFFIX}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"cannot write {shown}: {describe_os_error(e)}") from None


def same_file(a, b):
    """Whether two paths name one file: the same resolved path, or (both existing) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(named_paths):
    """``named_paths``: (option, path or None) pairs, inputs and outputs. Refuse two options that name
    one file when at least one of them writes it (given as ``(option, path, writes)`` triples)."""
    items = [(o, p, w) for o, p, w in named_paths if p is not None]
    for i, (o1, p1, w1) in enumerate(items):
        for o2, p2, w2 in items[i + 1:]:
            if (w1 or w2) and same_file(p1, p2):
                writer = o1 if w1 else o2
                other = o2 if writer == o1 else o1
                raise OutputPathError(f"{writer} {p1 if writer == o1 else p2!r} names the same file as {other}; "
                                      f"it would be overwritten. Choose another path")
