"""Two nodes over TCP+Noise on 127.0.0.1: messages per second delivered and acknowledged.

Alice and Bob run as real nodes (SQLite stores in a temporary directory, TCP+Noise on loopback,
the whole node stack: engine, framing, Noise, transports), each in its own process, as two
devices would. Alice sends N messages in bulk (``send_many``,
batches of ``--batch``) and the clock stops when Bob has delivered every one and Alice has seen
every acknowledgement. Cases: 256-byte messages (count per second) and 60 KB messages (MB/s).

    python3 dev.py bench node_tcp [--quick] [--only small|large] [--page-size N] [--repeat N]
                                  [--envelope signed|raw|both] [--keep-freed-memory-mib N]
                                  [--profile DIR]

``--envelope`` is the group's setting: ``signed`` (the default of a group: Alice signs every
message, Bob checks the author and, the message coming straight from her over Noise, skips the
signature), ``raw`` (bodies as they are), or ``both`` (the default here), which alternates
signed and raw runs, so that a loaded machine's drift falls on both alike.
``--repeat`` runs each case several times and reports every run and the median (the machine may
be shared: a single run says little). ``--profile DIR`` writes cProfile statistics of both
processes (``alice-*.prof``, ``bob-*.prof``) for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import trio

from mvds_node.node import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    PeerConnected,
    create_identity,
    group_id_for,
    load_config,
    open_node,
    parse_address,
    save_config,
)

T = TypeVar("T")


Envelope = Literal["signed", "raw"]


def config(
    directory: Path,
    me: str,
    other: bytes,
    other_log_key: bytes,
    page_size: int = 4096,
    keep_freed: int = 64,
    envelope: Envelope = "signed",
) -> NodeConfig:
    return NodeConfig(
        store_page_size=page_size,
        keep_freed_memory_mib=keep_freed,
        data_dir=directory / me,
        name=me,
        listen=("127.0.0.1", 0),
        peers=(PeerConfig(key=other, name="peer", log_key=other_log_key),),
        groups=(GroupConfig("bench", group_id_for("bench"), (other,), envelope=envelope),),
        epoch_seconds=0.05,
    )


def _profiled(profile: str | None, name: str, fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``trio.run(fn, *args)``, under cProfile when ``profile`` names a directory."""
    if not profile:
        return trio.run(fn, *args)
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(lambda: trio.run(fn, *args))
    finally:
        profiler.dump_stats(os.path.join(profile, f"{name}.prof"))


async def receiver(directory: str, messages: int) -> None:
    """The receiving node, in its own process: print its address, then "done" when it has
    delivered ``messages`` messages."""
    async with open_node(load_config(directory)) as node, node.messages() as inbox:
        print(node.status().listening[0], flush=True)
        delivered = 0
        async for _ in inbox:
            if not delivered:
                cpu = _cpu()  # from the first delivery on: the setup is not counted
            delivered += 1
            if delivered == messages:
                break
        used, faults = _since(cpu)
        print(f"done {used:.3f} {faults}", flush=True)
        # Stay up until the sender has seen every acknowledgement and closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


async def run(
    messages: int,
    size: int,
    batch: int,
    page_size: int = 4096,
    profile: str | None = None,
    keep_freed: int = 64,
    envelope: Envelope = "signed",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alice = create_identity(root / "alice" / "identity.key")
        bob = create_identity(root / "bob" / "identity.key")
        for me, other in (("alice", bob), ("bob", alice)):
            save_config(
                config(
                    root,
                    me,
                    other.public_key,
                    other.signing_public_key,
                    page_size,
                    keep_freed,
                    envelope,
                )
            )
        tag = f"{size}-{page_size}-{time.monotonic_ns()}"
        argv = [sys.executable, __file__, "--receiver", str(root / "bob"), str(messages)]
        if profile:
            argv += ["--profile", profile, "--tag", tag]
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdin is not None
        lines = _lines(process.stdout)
        address = await lines.__anext__()
        async with open_node(load_config(root / "alice")) as a, a.events() as events:
            host, port = parse_address(address)
            a.add_peer(replace(a.config.peer(bob.public_key), address=(host, port)))
            async for event in events:
                if isinstance(event, PeerConnected):
                    break
            bodies = [i.to_bytes(8, "big") + b"\xab" * (size - 8) for i in range(messages)]
            start = time.perf_counter()
            cpu = _cpu()
            for first in range(0, messages, batch):
                await a.send_many("bench", bodies[first : first + batch])
            done, receiver_cpu, receiver_faults = (await lines.__anext__()).split()
            assert done == "done"
            delivered = time.perf_counter() - start
            # Acknowledgements: Alice's records for Bob are gone once he acked everything. The
            # acked events themselves are advisory (dropped when a burst fills the buffer), so
            # count in the store, checking whenever an event arrives.
            while a.status().peers[0].pending:
                with trio.move_on_after(0.02):
                    await events.receive()
            elapsed = time.perf_counter() - start
            sender_cpu, sender_faults = _since(cpu)
            stats = a.status().engine
        await process.stdin.aclose()
        await process.wait()
    return {
        "envelope": envelope,
        "messages": messages,
        "body_bytes": size,
        "send_batch": batch,
        "store_page_size": page_size,
        "keep_freed_memory_mib": keep_freed,
        "seconds_to_deliver": round(delivered, 3),
        "seconds_to_ack": round(elapsed, 3),
        "messages_per_second": round(messages / elapsed),
        "megabytes_per_second": round(messages * size / elapsed / 1e6, 1),
        "sender_cpu_seconds": round(sender_cpu, 3),
        "receiver_cpu_seconds": float(receiver_cpu),
        "sender_page_faults": sender_faults,
        "receiver_page_faults": int(receiver_faults),
        "payloads_sent": stats["payloads_sent"],
        "bytes_sent": stats["bytes_sent"],
    }


def _cpu() -> tuple[float, int]:
    """CPU seconds this process has used (user and system mode), and its page faults (on a
    virtual machine, each page of memory the process takes fresh costs microseconds)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt + usage.ru_majflt


def _since(start: tuple[float, int]) -> tuple[float, int]:
    cpu, faults = _cpu()
    return cpu - start[0], faults - start[1]


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError("the receiver process exited")
        buf += chunk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument(
        "--only", choices=("small", "large"), help="only 256-byte or only 60 KB messages"
    )
    parser.add_argument(
        "--page-size", type=int, action="append", help="store page size (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument(
        "--keep-freed-memory-mib",
        type=int,
        default=64,
        help="the nodes' keep_freed_memory_mib (0: the C allocator's defaults)",
    )
    parser.add_argument(
        "--envelope",
        choices=("signed", "raw", "both"),
        default="both",
        help="the group's envelope; both: signed and raw runs, alternating",
    )
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of both sides")
    parser.add_argument("--receiver", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="bob", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        _profiled(
            args.profile, f"bob-{args.tag}", receiver, args.receiver[0], int(args.receiver[1])
        )
        return
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    scale = 10 if args.quick else 1
    cases = []
    if args.only != "large":
        cases.append((50_000 // scale, 256, 1000))
    if args.only != "small":
        cases.append((5_000 // scale, 60_000, 100))
    envelopes: tuple[Envelope, ...] = (
        ("signed", "raw") if args.envelope == "both" else (args.envelope,)
    )
    results = []
    for messages, size, batch in cases:
        for page_size in args.page_size or (4096, 65536):
            runs: dict[str, list[dict[str, Any]]] = {e: [] for e in envelopes}
            for i in range(args.repeat):
                for envelope in envelopes:  # alternating: a drifting load falls on both
                    runs[envelope].append(
                        _profiled(
                            args.profile,
                            f"alice-{size}-{page_size}-{envelope}-{i}",
                            run,
                            messages,
                            size,
                            batch,
                            page_size,
                            args.profile,
                            args.keep_freed_memory_mib,
                            envelope,
                        )
                    )
            results += [_summary(r) for r in runs.values()]
    print(
        json.dumps(
            {
                "benchmark": "node_tcp",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "load_average": os.getloadavg(),
                "results": results,
            },
            indent=2,
        )
    )


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One case: the median run's figures, and every run's rate when there were several."""
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: float(r["seconds_to_ack"]))
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = len(runs)
    median["messages_per_second_each"] = [r["messages_per_second"] for r in runs]
    median["megabytes_per_second_each"] = [r["megabytes_per_second"] for r in runs]
    return median


if __name__ == "__main__":
    main()
