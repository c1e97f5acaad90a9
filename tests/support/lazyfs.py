"""A FUSE file system that forgets what was not synced, on command: power loss for one node.

In the spirit of LazyFS: it keeps every file in memory twice, as written (what a reader sees)
and as last synced. ``fsync``/``fdatasync`` on a file makes its content durable; ``fsync`` on a
directory makes its entries (creates, renames, unlinks) durable. The command ``powerloss`` on
the control socket drops everything else, as a power cut drops the page cache: files go back
to their last synced content, names to the directory's last synced entries.

Run: ``python tests/lazyfs.py MOUNTPOINT CONTROL_SOCKET`` (root, /dev/fuse, libfuse 3 and
mfusepy); unmount with ``fusermount3 -u MOUNTPOINT``. Mounted with zero attribute and entry
timeouts, and the kernel drops a file's cached pages when it is opened again, so a restarted
process reads what survived. Kill the process that uses the mount *before* the power loss:
a dead process's writes have all reached this file system (close flushes), so what it
forgets afterwards is exactly what was never synced.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy
from mfusepy import FuseOSError, Operations

F = TypeVar("F", bound=Callable[..., Any])


class Inode:
    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.data = bytearray()
        self.synced = b""
        self.children: dict[str, Inode] = {}
        self.synced_children: dict[str, Inode] = {}
        self.mtime = time.time()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def locked(method: F) -> F:
    def run(self: LazyFS, *args: Any) -> Any:
        with self.mutex:
            return method(self, *args)

    return run  # type: ignore[return-value]


class LazyFS(Operations):  # type: ignore[misc]
    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.root = Inode(stat.S_IFDIR | 0o700)
        self.inodes = [self.root]
        self.handles: dict[int, Inode] = {}
        self.next_handle = 1

    # ----------------------------------------------------------------- power loss

    def power_loss(self) -> None:
        with self.mutex:
            for inode in self.inodes:
                inode.data = bytearray(inode.synced)
                inode.children = dict(inode.synced_children)
            self.handles.clear()

    # ----------------------------------------------------------------- lookup

    def _find(self, path: str) -> Inode:
        inode = self.root
        for part in [p for p in path.split("/") if p]:
            child = inode.children.get(part)
            if child is None:
                raise FuseOSError(errno.ENOENT)
            inode = child
        return inode

    def _parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._find(head or "/")
        if not parent.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def _inode(self, path: str | None, fh: int | None) -> Inode:
        if fh and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self._find(path)

    def _handle(self, inode: Inode) -> int:
        self.next_handle += 1
        self.handles[self.next_handle] = inode
        return self.next_handle

    def _new(self, path: str, mode: int) -> Inode:
        parent, name = self._parent(path)
        if name in parent.children:
            raise FuseOSError(errno.EEXIST)
        inode = Inode(mode)
        parent.children[name] = inode
        self.inodes.append(inode)
        return inode

    # ----------------------------------------------------------------- operations

    @locked
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        inode = self._inode(path, fh)
        size = 4096 if inode.is_dir else len(inode.data)
        return {
            "st_mode": inode.mode,
            "st_nlink": 2 if inode.is_dir else 1,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_mtime": inode.mtime,
            "st_atime": inode.mtime,
            "st_ctime": inode.mtime,
        }

    @locked
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self._find(path).children]

    @locked
    def mkdir(self, path: str, mode: int) -> int:
        self._new(path, stat.S_IFDIR | mode)
        return 0

    @locked
    def rmdir(self, path: str) -> int:
        parent, name = self._parent(path)
        if parent.children[name].children:
            raise FuseOSError(errno.ENOTEMPTY)
        del parent.children[name]
        return 0

    @locked
    def unlink(self, path: str) -> int:
        parent, name = self._parent(path)
        if name not in parent.children:
            raise FuseOSError(errno.ENOENT)
        del parent.children[name]
        return 0

    @locked
    def rename(self, old: str, new: str) -> int:
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        if old_name not in old_parent.children:
            raise FuseOSError(errno.ENOENT)
        new_parent.children[new_name] = old_parent.children.pop(old_name)
        return 0

    @locked
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._handle(self._new(path, stat.S_IFREG | mode))

    @locked
    def open(self, path: str, flags: int) -> int:
        return self._handle(self._find(path))

    @locked
    def opendir(self, path: str) -> int:
        return self._handle(self._find(path))

    @locked
    def release(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @locked
    def releasedir(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @locked
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._inode(path, fh).data[offset : offset + size])

    @locked
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        inode = self._inode(path, fh)
        if offset > len(inode.data):
            inode.data.extend(bytes(offset - len(inode.data)))
        inode.data[offset : offset + len(data)] = data
        inode.mtime = time.time()
        return len(data)

    @locked
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        inode = self._inode(path, fh)
        if length < len(inode.data):
            del inode.data[length:]
        else:
            inode.data.extend(bytes(length - len(inode.data)))
        return 0

    @locked
    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        inode = self._inode(path, fh)
        if offset + size > len(inode.data):
            inode.data.extend(bytes(offset + size - len(inode.data)))
        return 0

    @locked
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        inode = self._inode(path, fh)
        inode.synced = bytes(inode.data)
        return 0

    @locked
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        inode = self._inode(path, fh)
        inode.synced_children = dict(inode.children)
        return 0

    @locked
    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        inode = self._inode(path, fh)
        inode.mode = (inode.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int, fh: int | None = None) -> int:
        return 0

    def utimens(self, path: str, times: Any = None, fh: int | None = None) -> int:
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close is not a sync

    def access(self, path: str, amode: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19,
                "f_bavail": 1 << 19, "f_files": 1 << 16, "f_ffree": 1 << 15, "f_namemax": 255}  # fmt: skip


def serve_control(fs: LazyFS, path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.recv(64).strip()
            if command == b"powerloss":
                fs.power_loss()
                conn.sendall(b"ok\n")
            else:
                conn.sendall(b"unknown command\n")


def main() -> None:
    mountpoint, control = sys.argv[1], sys.argv[2]
    fs = LazyFS()
    threading.Thread(target=serve_control, args=(fs, control), daemon=True).start()
    mfusepy.FUSE(
        fs, mountpoint, foreground=True, nothreads=True,
        attr_timeout=0, entry_timeout=0, negative_timeout=0,
    )  # fmt: skip


if __name__ == "__main__":
    main()
