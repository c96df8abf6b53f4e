"""A batch reader of a BPF perf event array: the event stream of kernels without BPF ring buffers
(< 5.8), with the interface of ``RingReader`` (wait, drain, records, close).

Owns: libbpf's perf_buffer (one buffer per CPU, opened and mapped by libbpf, which also handles
the memory ordering, so this reader runs on every CPU architecture), waiting on its epoll fd, and
handing out the records of a batch. libbpf calls back into Python once per record; the callback
only copies the record into a list, so decoding stays batched in ``drain``. libbpf's buffers
wake the reader at every sample (the ring's BPF side wakes it once a MiB is pending); the agent
drains whatever has accumulated by then, so wakeups batch themselves under load. Each sample is
copied out as it is consumed, and libbpf advances a CPU buffer's tail when that buffer is
consumed, before the batch is processed: like the ring reader, a slow batch holds no buffer
space during a burst (the bound is per CPU buffer, so a batch may hold one buffer's contents
beyond ``max_bytes``).

Records are the kernel side's own, self-describing (vigil_hdr.size), but perf pads each sample to
8 bytes: a record may carry up to 7 bytes of padding after its end, which the decoder ignores (it
reads by the lengths in the record).

Losses: the BPF programs count every failed send by kind, like with the ring buffer. Perf also
reports the samples it could not write, per CPU, as "lost" records; ``lost`` sums them. Both
count the same samples where bpf_perf_event_output returns the failure (5.x);
``vigil.kernel.backend`` reconciles the two.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import struct
import threading
from collections.abc import Iterator
from typing import Any

from vigil.kernel import libbpf

_U64 = struct.Struct("=Q")

# A record is at most the BPF side's EVBUF_SIZE (~8.3 KiB); a CPU's buffer must hold a few.
MIN_BUFFER_BYTES = 64 << 10


def per_cpu_pages(total_bytes: int, cpus: int, page_size: int = mmap.PAGESIZE) -> int:
    """Pages per CPU buffer: ``total_bytes`` shared by ``cpus``, rounded down to a power of two
    (perf's rule), and never under MIN_BUFFER_BYTES."""
    share = max(total_bytes // max(cpus, 1), MIN_BUFFER_BYTES)
    pages = max(share // page_size, 1)
    return 1 << (pages.bit_length() - 1)


class PerfReader:
    """Reads the records of one PERF_EVENT_ARRAY map. Not thread-safe; one reader per map."""

    def __init__(self, map_fd: int, page_cnt: int) -> None:
        if page_cnt < 1 or page_cnt & (page_cnt - 1):
            raise ValueError(f"perf buffer pages {page_cnt} is not a power of two")
        self.records = 0
        self.lost = 0  # samples perf reported as lost (all CPUs)
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._next = 0  # the buffer a batch starts with, in turn, so none waits behind others
        # The callbacks must outlive the perf buffer: libbpf keeps their addresses.
        self._sample_cb = libbpf.PERF_SAMPLE_FN(self._on_sample)
        self._lost_cb = libbpf.PERF_LOST_FN(self._on_lost)
        self._pb: int | None = libbpf.perf_buffer__new(map_fd, page_cnt, self._sample_cb,
                                                       self._lost_cb)
        self._count = libbpf.perf_buffer__buffer_cnt(self._pb)
        self._lock = threading.Lock()
        self._headers = [h for i in range(self._count)
                         if (h := libbpf.perf_buffer__header(self._pb, i)) is not None and h[1]]
        self._poll = select.poll()
        self._poll.register(libbpf.perf_buffer__epoll_fd(self._pb), select.POLLIN)

    def _on_sample(self, _ctx: Any, _cpu: int, data: Any, size: int) -> None:
        # Nothing may raise out of a ctypes callback (it would only be printed); this cannot.
        self._batch.append(data[:size])
        self._batch_bytes += size

    def _on_lost(self, _ctx: Any, _cpu: int, count: int) -> None:
        self.lost += count

    def wait(self, timeout: float) -> None:
        """Sleeps until a CPU's buffer has data or ``timeout`` seconds pass."""
        with contextlib.suppress(InterruptedError):
            self._poll.poll(int(timeout * 1000))

    def drain(self, max_bytes: int | None = None) -> Iterator[bytes]:
        """Yields the records of whole CPU buffers, in turn, until ``max_bytes`` are collected
        (a batch may exceed it by one buffer's contents) or every buffer is empty."""
        if self._pb is None:
            raise ValueError("perf reader is closed")
        pb, count = self._pb, self._count
        for i in range(count):
            idx = (self._next + i) % count
            libbpf.perf_buffer__consume_buffer(pb, idx)
            if max_bytes is not None and self._batch_bytes >= max_bytes:
                self._next = (idx + 1) % count
                break
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self.records += len(batch)
        yield from batch

    def fill_ratio(self) -> float | None:
        """How full the fullest CPU's buffer is, 0..1: bytes perf wrote that libbpf has not
        consumed yet (data_head - data_tail of its control page) over the buffer's size.
        Callable from another thread while ``drain`` runs; None once closed."""
        with self._lock:
            if self._pb is None:
                return None
            worst = 0.0
            for page, size in self._headers:
                head = _U64.unpack_from(page, libbpf.PERF_DATA_HEAD)[0]
                tail = _U64.unpack_from(page, libbpf.PERF_DATA_TAIL)[0]
                worst = max(worst, min(max(head - tail, 0) / size, 1.0))
            return worst

    def close(self) -> None:
        with self._lock:  # fill_ratio reads pages perf_buffer__free unmaps
            pb, self._pb = self._pb, None
            for page, _ in self._headers:
                page.release()
            self._headers = []
        if pb is not None:
            libbpf.perf_buffer__free(pb)  # closes the epoll fd too

    def __enter__(self) -> PerfReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
