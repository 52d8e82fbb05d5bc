"""Optional py-spy sampling of the Lading processes while the benchmark runs (`--py-spy DIR`).

`py-spy record --format raw` writes collapsed stacks (`frame;frame;... count`) per process;
`summarize` turns one into the top frames by own time and by inclusive time, which is what
docs/benchmarks.md quotes. py-spy needs ptrace rights (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def recording(processes: dict[str, int], out_dir: Path, *, rate: int = 200) -> Iterator[None]:
    """Samples each labelled pid into `out_dir/<label>.txt` until the block ends."""
    beside = Path(sys.executable).parent / "py-spy"
    binary = str(beside) if beside.is_file() else shutil.which("py-spy")
    if binary is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    running = []
    for label, pid in processes.items():
        running.append(subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--output", str(out_dir / f"{label}.txt"), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    try:
        yield
    finally:
        for process in running:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def summarize(raw: Path, *, top: int = 15) -> str:
    """Top frames of a collapsed-stack file by own samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{raw.name}: no samples"
    lines = [f"{raw.stem}: {total} samples", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        print(summarize(Path(path)))


if __name__ == "__main__":
    main()
