"""Bounded reads of untrusted files: nothing here may hang, allocate without bound or unpickle.

- ``open_regular``: refuses FIFOs, devices, sockets and folders *before* opening (a FIFO would
  block forever, /dev/zero never ends), then reads at most the size the file had when opened
  (a /proc file or a growing log cannot make a read endless).
- ``memory_budget``: the memory a load may use (MemAvailable, capped by a cgroup limit).
- ``read_npz_arrays``: the zip directory and every .npy header are checked before any array is
  inflated: declared sizes against the budget and against each other, compression ratios, no
  object arrays (pickle).
- ``read_pt_dict``: the same size checks for a zip-format ``torch.save`` file, then
  ``torch.load(weights_only=True)``.
- ``read_text_bytes``: a text file's bytes, binary or non-UTF-8 content refused with its line;
  ``number`` (a strict float), ``sniff_delimiter`` and ``float32_table`` (Inf and float32 overflow
  refused) for CSV.

Every problem raises ``exc(message)`` with ``where`` (the file) leading the message; the caller
passes its own error class, so this module knows nothing of datasets.
"""
import csv
import io
import math
import os
import stat
import warnings
import zipfile

import numpy as np

MAX_RATIO = 1000                 # deflate peaks near 1032:1 on zeros; bzip2/lzma bombs go far beyond
RATIO_FROM = 4 << 20             # members smaller than this are too small to matter
DELIMITERS = ("\t", ";", ",")    # a tie goes to the first: commas are common inside cells of the others
SLACK = 1 << 20                  # a member may hold this much more than its array needs, no more

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def human(n):
    """Bytes in human units: 11.8 GB, 512 B."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def memory_budget():
    """Bytes a load may allocate: MemAvailable (else free pages), capped by a cgroup v2 limit."""
    budget = None
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    budget = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if budget is None:
        try:
            budget = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            budget = 4 << 30     # no way to ask (not Linux, not POSIX): a modest machine's worth
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                budget = min(budget, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return max(budget, 0)


class _Bounded(io.RawIOBase):
    """A read-only, seekable view of the first ``size`` bytes of an open file."""

    def __init__(self, raw, size):
        super().__init__()
        self.raw, self.size, self.pos = raw, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = max(0, {0: 0, 1: self.pos, 2: self.size}[whence] + offset)
        return self.pos

    def readinto(self, buffer):
        n = max(0, min(len(buffer), self.size - self.pos))
        if n == 0:
            return 0
        self.raw.seek(self.pos)
        got = self.raw.readinto(memoryview(buffer)[:n]) or 0
        self.pos += got
        return got

    def readall(self):
        """The rest of the view in one read (the default would take it 8 KB at a time)."""
        chunks = []
        while self.pos < self.size:
            self.raw.seek(self.pos)
            chunk = self.raw.read(self.size - self.pos)
            if not chunk:
                break
            chunks.append(chunk)
            self.pos += len(chunk)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def close(self):
        self.raw.close()
        super().close()


def open_regular(path, where, exc):
    """``(binary file, size)`` for a regular file (symlinks to one are fine); anything else is refused.

    The kind is checked with os.stat before opening, and again on the open descriptor (opened
    non-blocking, so a FIFO swapped in between cannot hang the open).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise exc(f"{where}: no such file (expected a .npz, .pt, .csv or .tsv file, or 'digits')") from None
    except OSError as e:
        raise exc(f"{where}: cannot be read ({e.strerror or e})") from None
    _refuse_special(st, where, exc)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise exc(f"{where}: cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        _refuse_special(st, where, exc)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return io.BufferedReader(_Bounded(raw, st.st_size)), st.st_size


def _refuse_special(st, where, exc):
    if stat.S_ISREG(st.st_mode):
        return
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    if kind == "a folder":
        raise exc(f"{where}: is a folder, expected a .npz, .pt, .csv or .tsv file")
    raise exc(f"{where}: is {kind}, not a regular file; only regular files are read")


def check_budget(where, what, nbytes, exc, budget=None):
    budget = memory_budget() if budget is None else budget
    if nbytes > budget:
        raise exc(f"{where}: {what} needs {human(nbytes)}, more than the {human(budget)} of memory available")


def _open_zip(f, where, kind, exc):
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise exc(f"{where}: not a readable {kind} file ({_first_line(e)})") from None


def _check_ratio(where, info, exc):
    if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise exc(f"{where}: member {info.filename!r} inflates {human(info.compress_size)} to "
                  f"{human(info.file_size)} (more than {MAX_RATIO}:1): refused as a zip bomb")


def _npy_header(zf, info, where, exc):
    """(shape, dtype, header bytes) of a .npy member, read from its first bytes only."""
    fmt = np.lib.format
    try:
        with zf.open(info) as member:
            version = fmt.read_magic(member)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(member)
            return shape, dtype, member.tell()
    except Exception as e:   # zipfile, zlib and numpy's parser raise many kinds on a damaged member
        raise exc(f"{where}: member {info.filename!r} is not a readable .npy array ({_first_line(e)})") from None


def read_npz_arrays(f, where, exc, names=("x", "y"), kinds="biuf", label_kinds="biufUS"):
    """``{name: ndarray}`` of a .npz, only ``names`` read; ``names[0]`` (or its capital, when ``names`` holds it)
    is required.

    ``kinds`` are the dtype kinds allowed for the first name, ``label_kinds`` for the others.
    """
    zf = _open_zip(f, where, ".npz", exc)
    with zf:
        members = {}
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            members.setdefault(key, info)
        if not _has_first(names, members):
            raise exc(f"{where}: expected arrays named {_named(names)}, found {list(members)}")
        plan, total, budget = [], 0, memory_budget()
        for name in names:
            info = members.get(name)
            if info is None:
                continue
            _check_ratio(where, info, exc)
            shape, dtype, offset = _npy_header(zf, info, where, exc)
            allowed = kinds if name.lower() == names[0] else label_kinds
            if dtype.hasobject:
                raise exc(f"{where}: {name!r} is an array of Python objects (it would need pickle, "
                          f"which is not loaded from data files); save numbers or strings")
            if dtype.kind not in allowed or dtype.names is not None:
                raise exc(f"{where}: {name!r} has dtype {dtype}, expected numbers" +
                          (" or strings" if "U" in allowed else ""))
            if any(not isinstance(n, int) or n < 0 for n in shape):
                raise exc(f"{where}: {name!r} declares an impossible shape {shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            check_budget(where, f"{name!r} (declared shape {shape}, {dtype})", nbytes, exc, budget)
            if info.file_size < offset + nbytes:
                raise exc(f"{where}: member {info.filename!r} declares {human(info.file_size)} but its array "
                          f"{shape} {dtype} needs {human(offset + nbytes)}: the archive is damaged")
            if info.file_size > offset + nbytes + SLACK:
                raise exc(f"{where}: member {info.filename!r} declares {human(info.file_size)} for an array of "
                          f"{human(nbytes)}: refused (a zip bomb or a damaged archive)")
            total += nbytes
            plan.append((name, info))
        check_budget(where, "its arrays", total, exc, budget)
        arrays = {}
        for name, info in plan:
            try:
                with zf.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            except Exception as e:   # zlib.error, BadZipFile (CRC), EOFError, ValueError (truncated) ...
                raise exc(f"{where}: not a readable .npz file: {name!r} is damaged ({_first_line(e)})") from None
    return arrays


def read_pt_dict(f, where, exc, names=("x", "y")):
    """The dict in a zip-format torch.save file (members checked first; ``weights_only``: no pickle)."""
    import torch
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError):
        raise exc(f"{where}: not a readable .pt file: not a zip-format .pt (torch.save writes zip files since "
                  f"PyTorch 1.6; load it there and save it again)") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_ratio(where, info, exc)
        check_budget(where, "its contents", sum(info.file_size for info in infos), exc)
    f.seek(0)
    try:
        with warnings.catch_warnings():   # torch's deprecation notes (TypedStorage) are not the user's business
            warnings.simplefilter("ignore")
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load on arbitrary bytes raises many kinds (struct.error among them)
        pickled = "weights only" in str(e).lower() or "weights_only" in str(e)   # torch's safe unpickler said no
        why = "it holds Python objects other than tensors, which are not unpickled" if pickled else _first_line(e)
        raise exc(f"{where}: not a readable .pt file ({why}); expected a dict with tensors {_named(names)}, saved "
                  f"with torch.save") from None
    if not isinstance(state, dict) or not _has_first(names, state):
        got = f"keys {sorted(map(str, state))}" if isinstance(state, dict) else type(state).__name__
        raise exc(f"{where}: expected a dict with tensors {_named(names)}, got {got}")
    return {name: state[name] for name in names if name in state}


def _has_first(names, found):
    return names[0] in found or names[0].upper() in names and names[0].upper() in found


def _named(names):
    """'x' and 'y' (or 'X' and 'Y'): the names a file must hold."""
    lower = [n for n in names if n == n.lower() or n.lower() not in names]
    spelled = " and ".join(map(repr, lower))
    upper = [n for n in names if n != n.lower() and n.lower() in names]
    return spelled + (f" (or {' and '.join(map(repr, upper))})" if upper else "")


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def number(cell):
    """float(cell) for a plain ASCII number, else None: Python's float() also reads "1_000" and non-ASCII
    digits ("١٢"), which no CSV parser does and which are more likely typos or text than numbers."""
    if not cell.isascii() or "_" in cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def read_text_bytes(f, where, exc):
    """``(data, start)``: all of a (bounded) binary file and where its text starts (after a UTF-8 byte-order
    mark). Zip archives, UTF-16, NUL bytes and non-UTF-8 bytes are refused, naming the line."""
    data = f.read()
    if data.startswith(b"PK\x03\x04"):
        raise exc(f"{where}: not a readable CSV text file: it is a zip archive (a .npz or .pt file renamed?)")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise exc(f"{where}: not a readable CSV text file: it is UTF-16 text; save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise exc(f"{where}: not a readable CSV text file: line {_line_at(data, nul)} holds NUL bytes (binary data)")
    if not data.isascii():   # a fast scan; only text with other bytes is decoded to check it
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise exc(f"{where}: not a readable CSV text file: line {_line_at(data, e.start)} is not UTF-8 (byte "
                      f"0x{data[e.start]:02x}); save it as UTF-8 text") from None
    return data, 3 if data.startswith(b"\xef\xbb\xbf") else 0


def _line_at(data, offset):
    return data.count(b"\n", 0, offset) + 1


def sniff_delimiter(sample):
    """The delimiter that splits every sample line into the same number (> 1) of cells, most of them numbers;
    else the one that splits out the most cells."""
    best, fallback = None, (-1, ",")
    for d in DELIMITERS:
        try:
            rows = [r for r in csv.reader(sample, delimiter=d, skipinitialspace=True) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        widths = {len(r) for r in rows}
        numeric = sum(number(c.strip()) is not None for r in rows for c in r)
        if len(widths) == 1 and min(widths) > 1 and (best is None or numeric > best[0]):
            best = (numeric, d)
        fallback = max(fallback, (sum(map(len, rows)), d), key=lambda t: t[0])
    return (best or fallback)[1]


FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_table(table, where, place, exc):
    """``table`` (float64 read from text, missing cells already dealt with) as float32; Inf and values float32
    cannot hold are refused, the first one named by ``place(row, column)``."""
    bad = ~np.isfinite(table)
    with np.errstate(over="ignore"):
        as32 = table.astype(np.float32)
    finite = not bad.any()
    if finite:
        bad = np.isinf(as32)
    if bad.any():
        i, j = np.unravel_index(int(bad.argmax()), bad.shape)
        v = float(table[i, j])
        if not finite:
            raise exc(f"{where}: {place(i, j)} holds {v}: infinite values are not allowed")
        raise exc(f"{where}: value {v:g} in {place(i, j)} is too large for float32 (largest {FLOAT32_MAX:.2g})")
    return as32
