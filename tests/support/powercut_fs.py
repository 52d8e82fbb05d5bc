"""A FUSE file system that forgets what was never made durable: the tests' power cut.

Run as `python -m tests.support.powercut_fs MOUNTPOINT CONTROL_SOCKET STATE_FILE` (as root, or
wherever /dev/fuse may be opened); `tests/support/powercut.py` drives it. It keeps everything in
memory, twice: the *live* tree every process sees, and the *durable* tree a machine would find on
its disk after losing power. Like LazyFS (Jepsen's file system for the same job), writes land in
a page-cache model and reach the disk only when the program asks for it:

- `write`/`truncate` change the live file only;
- `fsync`/`fdatasync` of a file copy its live bytes (and size, mode, times) to its durable inode,
  but not its name: a file's name is an entry of its folder;
- `fsync` of a folder makes its live entries (creates, renames in and out, unlinks, hard links,
  mkdirs) the durable ones. A folder or file whose entry becomes durable before it was ever
  synced itself is durable empty (a file created, written and renamed without an fsync comes
  back empty, as it does on a real disk);
- a rename is two entries, one per folder, each made durable by an fsync of its own folder
  (POSIX promises no more; ext4 and XFS happen to journal both sides together).

The control socket takes one command per connection: `cut` writes the durable tree reachable
from the root to STATE_FILE and answers `ok`; from then on every operation fails with EIO, and
the caller unmounts. A new process started on the same STATE_FILE mounts exactly what was synced:
a fresh mount also means the kernel's caches of the old one are gone. `stats` answers counters
as JSON.

Memory maps: files are opened without direct_io, so the kernel's page cache serves shared
writable mappings, which SQLite needs for its `-shm` wal-index (its database file is not mapped:
mmap_size is 0 by default). Dirty mapped pages reach this layer when the kernel writes them back,
as unsynced writes like any other; SQLite never fsyncs the -shm and rebuilds it from the WAL
after a crash. keep_cache is off, so every open re-reads a file through this layer; and a cut
remounts, so nothing cached from before a cut is ever served after it. Locks (fcntl, flock) are
left to the kernel, which keeps them for the processes of this one machine.

Deliberately out of the model: kernel writeback after a timeout (the worst case is that nothing
was written back) and torn sectors (SQLite's WAL checksums cope with those anyway).

One difference from a disk file system: a file unlinked (or renamed over) while open keeps
working through its descriptor (read, write, fsync: they carry the handle), but an `fstat` on it
fails with ESTALE once the kernel's one-second attribute cache has expired, because libfuse's
high-level API knows inodes by name and the kernel sends no handle with a stat. (Without
`hard_remove` libfuse would instead rename such files to `.fuse_hidden*`, which could then
survive a cut as names a disk would not have kept.)

Performance: single-threaded (`-s`): one Python thread serves every request, at tens of
microseconds each; a file remembers the byte range written since its last fsync, so an fsync
copies only that.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_INO = 1


@dataclass(slots=True)
class DurableNode:
    """What the disk holds for one inode."""

    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    target: str = ""
    mtime_ns: int = 0


@dataclass(slots=True)
class Node:
    """One live inode."""

    ino: int
    mode: int
    uid: int
    gid: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    target: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    nlink: int = 0
    opened: int = 0
    # Bytes [dirty_low, dirty_high) may differ from the durable copy.
    dirty_low: int = 0
    dirty_high: int = 0

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()

    def mark(self, low: int, high: int) -> None:
        if self.dirty_high <= self.dirty_low:
            self.dirty_low, self.dirty_high = low, high
        else:
            self.dirty_low, self.dirty_high = min(self.dirty_low, low), max(self.dirty_high, high)


class Tree:
    """The live and durable trees, and every file operation on them (paths are `/a/b`)."""

    def __init__(self, durable: dict[int, DurableNode] | None = None, next_ino: int = ROOT_INO + 1) -> None:
        now = time.time_ns()
        if not durable:
            durable = {ROOT_INO: DurableNode(mode=stat.S_IFDIR | 0o755, mtime_ns=now)}
        self.durable = durable
        self.next_ino = next_ino
        self.nodes: dict[int, Node] = {}
        for ino, kept in durable.items():
            self.nodes[ino] = Node(ino=ino, mode=kept.mode, uid=os.getuid(), gid=os.getgid(),
                                   data=bytearray(kept.data), entries=dict(kept.entries), target=kept.target,
                                   mtime_ns=kept.mtime_ns, ctime_ns=kept.mtime_ns)
        self.nodes[ROOT_INO].nlink = 2
        for node in list(self.nodes.values()):
            for child in node.entries.values():
                linked = self.nodes[child]
                if stat.S_ISDIR(linked.mode):
                    linked.nlink += 2
                    node.nlink += 1
                else:
                    linked.nlink += 1
        self.cut_done = False
        # Taken by every file operation and by `cut` (the control socket's thread).
        self.lock = threading.Lock()
        self.counters = {"fsync": 0, "fsyncdir": 0, "write": 0, "rename": 0}

    # -- lookups --------------------------------------------------------------------------------

    def node(self, path: str) -> Node:
        current = self.nodes[ROOT_INO]
        for part in path.split("/"):
            if not part:
                continue
            if not stat.S_ISDIR(current.mode):
                raise OSError(errno.ENOTDIR, path)
            child = current.entries.get(part)
            if child is None:
                raise OSError(errno.ENOENT, path)
            current = self.nodes[child]
        return current

    def parent(self, path: str) -> tuple[Node, str]:
        folder, _, name = path.rstrip("/").rpartition("/")
        parent = self.node(folder)
        if not stat.S_ISDIR(parent.mode):
            raise OSError(errno.ENOTDIR, path)
        return parent, name

    def handle(self, path: str | None, fh: int | None) -> Node:
        """The node of an open file (by handle: it may have been renamed or unlinked), else by path."""
        if fh:
            node = self.nodes.get(fh)
            if node is not None:
                return node
        if path is None:
            raise OSError(errno.EBADF, "no path and no handle")
        return self.node(path)

    # -- creation and names ---------------------------------------------------------------------

    def _new(self, mode: int, target: str = "") -> Node:
        context_uid, context_gid = os.getuid(), os.getgid()
        node = Node(ino=self.next_ino, mode=mode, uid=context_uid, gid=context_gid, target=target)
        node.touch()
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def _link(self, parent: Node, name: str, node: Node) -> None:
        if name in parent.entries:
            raise OSError(errno.EEXIST, name)
        parent.entries[name] = node.ino
        node.nlink += 2 if stat.S_ISDIR(node.mode) else 1
        if stat.S_ISDIR(node.mode):
            parent.nlink += 1
        parent.touch()

    def _unlink(self, parent: Node, name: str) -> Node:
        node = self.nodes[parent.entries.pop(name)]
        node.nlink -= 2 if stat.S_ISDIR(node.mode) else 1
        if stat.S_ISDIR(node.mode):
            parent.nlink -= 1
        parent.touch()
        node.ctime_ns = time.time_ns()
        self._forget_if_gone(node)
        return node

    def _forget_if_gone(self, node: Node) -> None:
        # The durable copy (if any) stays: only the live inode is freed.
        if node.nlink <= 0 and node.opened <= 0 and node.ino != ROOT_INO:
            self.nodes.pop(node.ino, None)

    def create(self, path: str, mode: int) -> int:
        parent, name = self.parent(path)
        existing = parent.entries.get(name)
        if existing is not None:
            node = self.nodes[existing]
        else:
            node = self._new(stat.S_IFREG | (mode & 0o7777))
            self._link(parent, name, node)
        node.opened += 1
        return node.ino

    def mknod(self, path: str, mode: int) -> None:
        parent, name = self.parent(path)
        self._link(parent, name, self._new(mode))

    def mkdir(self, path: str, mode: int) -> None:
        parent, name = self.parent(path)
        self._link(parent, name, self._new(stat.S_IFDIR | (mode & 0o7777)))

    def symlink(self, path: str, target: str) -> None:
        parent, name = self.parent(path)
        self._link(parent, name, self._new(stat.S_IFLNK | 0o777, target))

    def link(self, path: str, source: str) -> None:
        node = self.node(source)
        if stat.S_ISDIR(node.mode):
            raise OSError(errno.EPERM, source)
        parent, name = self.parent(path)
        self._link(parent, name, node)
        node.ctime_ns = time.time_ns()

    def unlink(self, path: str) -> None:
        parent, name = self.parent(path)
        if name not in parent.entries:
            raise OSError(errno.ENOENT, path)
        if stat.S_ISDIR(self.nodes[parent.entries[name]].mode):
            raise OSError(errno.EISDIR, path)
        self._unlink(parent, name)

    def rmdir(self, path: str) -> None:
        parent, name = self.parent(path)
        if name not in parent.entries:
            raise OSError(errno.ENOENT, path)
        node = self.nodes[parent.entries[name]]
        if not stat.S_ISDIR(node.mode):
            raise OSError(errno.ENOTDIR, path)
        if node.entries:
            raise OSError(errno.ENOTEMPTY, path)
        self._unlink(parent, name)

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self.parent(old)
        if old_name not in old_parent.entries:
            raise OSError(errno.ENOENT, old)
        moving = self.nodes[old_parent.entries[old_name]]
        new_parent, new_name = self.parent(new)
        if new_parent.entries.get(new_name) == moving.ino:
            return
        if stat.S_ISDIR(moving.mode):
            # No folder may move below itself.
            probe = new
            while probe not in ("", "/"):
                if self.node(probe).ino == moving.ino:
                    raise OSError(errno.EINVAL, new)
                probe = probe.rpartition("/")[0]
        replaced = new_parent.entries.get(new_name)
        if replaced is not None:
            target = self.nodes[replaced]
            if stat.S_ISDIR(target.mode):
                if not stat.S_ISDIR(moving.mode):
                    raise OSError(errno.EISDIR, new)
                if target.entries:
                    raise OSError(errno.ENOTEMPTY, new)
            elif stat.S_ISDIR(moving.mode):
                raise OSError(errno.ENOTDIR, new)
            self._unlink(new_parent, new_name)
        moving.opened += 1  # keep it alive between the two halves
        self._unlink(old_parent, old_name)
        self._link(new_parent, new_name, moving)
        moving.opened -= 1
        self.counters["rename"] += 1

    # -- contents -------------------------------------------------------------------------------

    def open(self, path: str) -> int:
        node = self.node(path)
        node.opened += 1
        return node.ino

    def release(self, fh: int) -> None:
        node = self.nodes.get(fh)
        if node is not None:
            node.opened -= 1
            self._forget_if_gone(node)

    def read(self, node: Node, size: int, offset: int) -> bytes:
        return bytes(node.data[offset : offset + size])

    def write(self, node: Node, data: bytes, offset: int) -> int:
        if stat.S_ISDIR(node.mode):
            raise OSError(errno.EISDIR, "write")
        buffer = node.data
        if offset > len(buffer):
            buffer.extend(bytes(offset - len(buffer)))
        end = offset + len(data)
        buffer[offset:end] = data
        node.mark(offset, end)
        node.touch()
        self.counters["write"] += 1
        return len(data)

    def truncate(self, node: Node, length: int) -> None:
        size = len(node.data)
        if length < size:
            del node.data[length:]
        elif length > size:
            node.data.extend(bytes(length - size))
        node.mark(min(size, length), max(size, length))
        node.touch()

    # -- durability -----------------------------------------------------------------------------

    def fsync(self, node: Node) -> None:
        """A file's bytes, size, mode and times become durable (not its name)."""
        self.counters["fsync"] += 1
        kept = self.durable.get(node.ino)
        if kept is None:
            self.durable[node.ino] = DurableNode(node.mode, bytearray(node.data), {}, node.target, node.mtime_ns)
        else:
            size = len(node.data)
            if node.dirty_high > node.dirty_low:
                low, high = node.dirty_low, min(node.dirty_high, size)
                if len(kept.data) < size:
                    kept.data.extend(bytes(size - len(kept.data)))
                if high > low:
                    kept.data[low:high] = node.data[low:high]
            del kept.data[size:]
            kept.mode, kept.mtime_ns = node.mode, node.mtime_ns
        node.dirty_low = node.dirty_high = 0

    def fsyncdir(self, node: Node) -> None:
        """A folder's entries become durable; entries naming inodes never synced make them
        durable as they would be found on a disk: empty."""
        self.counters["fsyncdir"] += 1
        kept = self.durable.get(node.ino)
        if kept is None:
            kept = self.durable[node.ino] = DurableNode(node.mode, mtime_ns=node.mtime_ns)
        kept.entries = dict(node.entries)
        kept.mode, kept.mtime_ns = node.mode, node.mtime_ns
        for child in node.entries.values():
            if child not in self.durable:
                live = self.nodes[child]
                self.durable[child] = DurableNode(live.mode, target=live.target, mtime_ns=live.mtime_ns)

    def reachable_durable(self) -> dict[int, DurableNode]:
        """The durable tree as a machine would find it: what the root's durable entries reach."""
        found: dict[int, DurableNode] = {}
        pending = [ROOT_INO]
        while pending:
            ino = pending.pop()
            if ino in found:
                continue
            kept = self.durable[ino]
            found[ino] = kept
            pending.extend(kept.entries.values())
        return found

    def cut(self, state_file: Path) -> None:
        """Writes the durable tree to `state_file`; every later operation fails."""
        self.cut_done = True
        temporary = state_file.with_name(state_file.name + ".tmp")
        with open(temporary, "wb") as out:
            pickle.dump({"next_ino": self.next_ino, "durable": self.reachable_durable()}, out,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, state_file)

    def attributes(self, node: Node) -> dict[str, Any]:
        size = len(node.data) if not stat.S_ISLNK(node.mode) else len(node.target)
        return {
            "st_mode": node.mode,
            "st_ino": node.ino,
            "st_nlink": node.nlink,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_size": 4096 if stat.S_ISDIR(node.mode) else size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 4096,
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.ctime_ns,
        }


def load_tree(state_file: Path) -> Tree:
    if not state_file.exists():
        return Tree()
    with open(state_file, "rb") as source:
        saved = pickle.load(source)
    return Tree(saved["durable"], saved["next_ino"])


def build_operations(tree: Tree) -> tuple[Any, Any]:
    """The mfusepy `Operations` over `tree`, and the `FUSE` class to mount them with (imported
    here: only the daemon needs mfusepy)."""
    import mfusepy

    def guarded(method: Any) -> Any:
        def run(self: Any, *args: Any) -> Any:
            with tree.lock:
                if tree.cut_done:
                    raise mfusepy.FuseOSError(errno.EIO)
                try:
                    return method(self, *args)
                except OSError as error:
                    if isinstance(error, mfusepy.FuseOSError):
                        raise
                    raise mfusepy.FuseOSError(error.errno or errno.EIO) from None

        run.__name__ = method.__name__
        return run

    class PowerCutOperations(mfusepy.Operations):
        use_ns = True
        # Operations on an open file whose name is gone (hard_remove) come with a handle only.
        flag_nullpath_ok = True
        flag_nopath = True

        @guarded
        def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
            return tree.attributes(tree.handle(path, fh))

        @guarded
        def readdir(self, path: str | None, fh: int) -> list[Any]:
            node = tree.handle(path, fh)
            listed: list[Any] = [(".", {"st_mode": node.mode, "st_ino": node.ino}, 0), ("..", None, 0)]
            for name, ino in node.entries.items():
                child = tree.nodes[ino]
                listed.append((name, {"st_mode": child.mode, "st_ino": ino}, 0))
            return listed

        @guarded
        def opendir(self, path: str) -> int:
            node = tree.node(path)
            if not stat.S_ISDIR(node.mode):
                raise OSError(errno.ENOTDIR, path)
            node.opened += 1
            return node.ino

        @guarded
        def releasedir(self, path: str | None, fh: int) -> int:
            tree.release(fh)
            return 0

        @guarded
        def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
            tree.fsyncdir(tree.handle(path, fh))
            return 0

        @guarded
        def mkdir(self, path: str, mode: int) -> int:
            tree.mkdir(path, mode)
            return 0

        @guarded
        def rmdir(self, path: str) -> int:
            tree.rmdir(path)
            return 0

        @guarded
        def mknod(self, path: str, mode: int, dev: int) -> int:
            tree.mknod(path, mode)
            return 0

        @guarded
        def create(self, path: str, mode: int, flags: int = 0) -> int:
            return tree.create(path, mode)

        @guarded
        def open(self, path: str, flags: int) -> int:
            return tree.open(path)

        @guarded
        def release(self, path: str | None, fh: int) -> int:
            tree.release(fh)
            return 0

        @guarded
        def flush(self, path: str | None, fh: int) -> int:
            return 0

        @guarded
        def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
            return tree.read(tree.handle(path, fh), size, offset)

        @guarded
        def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
            return tree.write(tree.handle(path, fh), data, offset)

        @guarded
        def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
            tree.truncate(tree.handle(path, fh), length)
            return 0

        @guarded
        def fsync(self, path: str | None, datasync: int, fh: int) -> int:
            tree.fsync(tree.handle(path, fh))
            return 0

        @guarded
        def unlink(self, path: str) -> int:
            tree.unlink(path)
            return 0

        @guarded
        def rename(self, old: str, new: str) -> int:
            tree.rename(old, new)
            return 0

        @guarded
        def link(self, target: str, source: str) -> int:
            tree.link(target, source)
            return 0

        @guarded
        def symlink(self, target: str, source: str) -> int:
            tree.symlink(target, source)
            return 0

        @guarded
        def readlink(self, path: str) -> str:
            return tree.node(path).target

        @guarded
        def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
            node = tree.handle(path, fh)
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
            node.ctime_ns = time.time_ns()
            return 0

        @guarded
        def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
            node = tree.handle(path, fh)
            node.uid = node.uid if uid < 0 else uid
            node.gid = node.gid if gid < 0 else gid
            return 0

        @guarded
        def utimens(self, path: str | None, times: tuple[int, int] | None = None, fh: int | None = None) -> int:
            tree.handle(path, fh).mtime_ns = times[1] if times else time.time_ns()
            return 0

        @guarded
        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                    "f_bavail": 1 << 23, "f_files": 1 << 20, "f_ffree": 1 << 19, "f_namemax": 255}

    class HandleAwareFUSE(mfusepy.FUSE):
        """mfusepy drops the open file of truncate/chmod/chown/utimens on libfuse 3; with
        `nullpath_ok` their path is then None (ftruncate, fchmod): pass the handle on."""

        def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
            return self.operations.truncate(_decoded(path), length, fip.contents.fh if fip else None)

        def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
            return self.operations.chmod(_decoded(path), mode, fip.contents.fh if fip else None)

        def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
            uid = -1 if uid == 0xFFFFFFFF else uid
            gid = -1 if gid == 0xFFFFFFFF else gid
            return self.operations.chown(_decoded(path), uid, gid, fip.contents.fh if fip else None)

        def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
            times = None
            if buf:
                times = (mfusepy.time_of_timespec(buf.contents.actime, use_ns=True),
                         mfusepy.time_of_timespec(buf.contents.modtime, use_ns=True))
            return self.operations.utimens(_decoded(path), times, fip.contents.fh if fip else None)

    return PowerCutOperations(), HandleAwareFUSE


def _decoded(path: bytes | None) -> str | None:
    return None if path is None else path.decode("utf-8", "surrogateescape")


def _serve_control(tree: Tree, control: Path, state_file: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(control))
    server.listen(4)
    while True:
        connection, _ = server.accept()
        with connection:
            command = connection.recv(64).decode().strip()
            if command == "cut":
                with tree.lock:
                    tree.cut(state_file)
                reply = "ok"
            elif command == "stats":
                reply = json.dumps({**tree.counters, "inodes": len(tree.nodes), "durable": len(tree.durable)})
            else:
                reply = "ping" if command == "ping" else f"unknown command {command!r}"
            connection.sendall(reply.encode())


def main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.DEBUG if os.environ.get("POWERCUT_FS_DEBUG") else logging.WARNING)

    mountpoint, control, state_file = argv[1], Path(argv[2]), Path(argv[3])
    tree = load_tree(state_file)
    operations, fuse = build_operations(tree)
    # The FUSE loop is single-threaded; the control thread cuts under the tree's lock.
    threading.Thread(target=_serve_control, args=(tree, control, state_file), daemon=True).start()
    # hard_remove: an unlinked open file is gone from its folder at once (no .fuse_hidden file);
    # use_ino: st_ino is ours (the blob backend compares inode numbers); auto_unmount: a daemon
    # that dies leaves no dead mount behind.
    fuse(operations, mountpoint, foreground=True, nothreads=True, hard_remove=True, use_ino=True,
         fsname="powercut", subtype="powercut", auto_unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
