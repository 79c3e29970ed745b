"""The fused inference path's query chunks with selection and fine stage overlapped on two CUDA
streams (``dash_flex.attention._overlapped_rows_chunks``, opt-in ``OVERLAP_SELECTION``) against
the same chunks in order, the whole call and the float64 reference. The GPU tests run on the
device (`PYTHONPATH=. pytest -m gpu`); the ordering of the two streams is also checked on the CPU,
on recording stand-ins for them."""

from __future__ import annotations

import pytest
import torch

import dash_flex.attention as attention
from dash_flex import dash_attention
from dash_flex.reference import dash_attention_reference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def test_overlap_applies_only_to_cuda_calls_in_several_chunks(monkeypatch):
    """The overlap is for CUDA tensors in more than one chunk when the module switch is on (it is
    off by default until a device run has measured it)."""
    assert attention.OVERLAP_SELECTION is False
    monkeypatch.setattr(attention, "OVERLAP_SELECTION", True)
    cpu = torch.zeros(1)
    assert not attention.overlap_applies(cpu, 3)
    if torch.cuda.is_available():
        cuda = cpu.cuda()
        assert attention.overlap_applies(cuda, 2) and not attention.overlap_applies(cuda, 1)
        monkeypatch.setattr(attention, "OVERLAP_SELECTION", False)
        assert not attention.overlap_applies(cuda, 2)


def chunked_inputs(seed, S=3072, Hq=8, Hkv=2, D=128, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = (2 * torch.randn(1, Hq, S, D, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(1, Hkv, S, D, device="cuda", generator=g)).to(dtype)
    v = torch.randn(1, Hkv, S, D, device="cuda", generator=g).to(dtype)
    return q, k, v


def small_chunks(monkeypatch, Hkv, S, block=64, rows=384):
    """A budget of ``rows`` whole rows: causal chunks of 384+ rows, about eight of them at 3072."""
    per_row = Hkv * -(-S // block) * attention.ROWS_BYTES_PER_ENTRY
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", int(per_row * rows))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("builds_lists", [False, True], ids=["lists-on-caller", "lists-on-side"])
@pytest.mark.parametrize("priority", [-1, 0], ids=["high-priority", "same-priority"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
@pytest.mark.parametrize("caller_stream", [False, True], ids=["default-stream", "caller-stream"])
def test_overlapped_chunks_equal_in_order_chunks(builds_lists, priority, causal, caller_stream, monkeypatch):
    """Overlapped chunks give the in-order chunks' bits, with every fine stage held back by a GPU
    sleep on the caller's stream: a selection that did not wait for the fine stage two chunks
    back would reuse (overwrite) the p̄ rows or tile lists that fine stage has yet to read. The
    selections ran on the side stream, at most two chunks' selections (p̄ rows, or tile lists when
    the side stream builds them) were alive at once, and the result is the reference's; also from
    a caller's own (non-default) stream."""
    q, k, v = chunked_inputs(7 + causal)
    small_chunks(monkeypatch, k.shape[1], k.shape[2])
    monkeypatch.setattr(attention, "SELECTION_STREAM_PRIORITY", priority)
    monkeypatch.setattr(attention, "SELECTION_BUILDS_LISTS", builds_lists)
    streams, alive, most_alive = [], {}, {}

    def tracked(name, fn, note_stream=False):
        class Tracked(tuple):  # counts this function's outputs alive (created, not yet garbage)
            def __del__(self):
                alive[name] -= 1

        def wrapper(*args):
            if note_stream:
                streams.append(torch.cuda.current_stream().stream_id)
            alive[name] = alive.get(name, 0) + 1
            most_alive[name] = max(most_alive.get(name, 0), alive[name])
            return Tracked(fn(*args))

        return wrapper

    def slowed(fn):
        def wrapper(*args, **kwargs):
            torch.cuda._sleep(2_000_000)  # ~1 ms at H100 clocks, on the caller's stream, before the reads
            return fn(*args, **kwargs)

        return wrapper

    def run(overlap):
        monkeypatch.setattr(attention, "OVERLAP_SELECTION", overlap)
        with torch.no_grad():
            return dash_attention(q, k, v, causal=causal, fine_stage="fused")

    bounds, chunk_bounds = [], attention.fused_chunk_bounds
    monkeypatch.setattr(attention, "fused_chunk_bounds", lambda *a: bounds.append(chunk_bounds(*a)) or bounds[-1])
    monkeypatch.setattr(attention, "_attend_rows", slowed(attention._attend_rows))
    monkeypatch.setattr(attention, "_attend_listed", slowed(attention._attend_listed))
    in_order = run(False)
    n_chunks = len(bounds[0]) - 1  # (the overlapped call appends its own bounds below)
    assert n_chunks >= 4, bounds
    monkeypatch.setattr(attention, "_select_rows", tracked("rows", attention._select_rows, note_stream=True))
    monkeypatch.setattr(attention, "_tile_lists", tracked("lists", attention._tile_lists))
    stream = torch.cuda.Stream() if caller_stream else torch.cuda.current_stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        main_id = torch.cuda.current_stream().stream_id
        overlapped = run(True)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert len(streams) == n_chunks and main_id not in streams, (streams, main_id)
    kept = "lists" if builds_lists else "rows"
    assert set(most_alive) == ({"rows", "lists"} if builds_lists else {"rows"})
    assert most_alive[kept] == 2, most_alive
    assert torch.equal(overlapped, in_order)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), causal=causal)
    assert rel_err(overlapped, ref) < 2e-2


@pytest.mark.gpu
@needs_cuda
def test_overlap_keeps_the_peak_to_two_chunks_selections(monkeypatch):
    """The host queues every chunk at once, so the side stream must reuse the freed selections'
    memory rather than allocate one per chunk: the peak of an overlapped call in ~12 chunks
    exceeds the in-order call's by at most one chunk's p̄ rows and its score scratch (×1.5; ×2 when
    the side stream also builds the tile lists); one selection per chunk would be ~12 chunks' p̄
    rows. (MHA, so the score scratch is as small as p̄.)"""
    q, k, v = chunked_inputs(3, S=4096, Hq=2, Hkv=2)
    rows = 256
    small_chunks(monkeypatch, k.shape[1], k.shape[2], rows=rows)
    peaks = {}
    for overlap, builds_lists in ((False, False), (True, False), (True, True)) * 2:
        monkeypatch.setattr(attention, "OVERLAP_SELECTION", overlap)
        monkeypatch.setattr(attention, "SELECTION_BUILDS_LISTS", builds_lists)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            out = dash_attention(q, k, v, fine_stage="fused")
        torch.cuda.synchronize()
        peaks[overlap, builds_lists] = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
        del out
    # one more chunk's p̄ rows and score scratch (the side stream's), or its tile lists and bias rows
    one_chunk = (k.shape[1] + q.shape[1]) * (k.shape[2] // 64) * rows * 4
    assert peaks[True, False] <= peaks[False, False] + 1.5 * one_chunk, (peaks, one_chunk)
    assert peaks[True, True] <= peaks[False, False] + 2 * one_chunk, (peaks, one_chunk)


class FakeStream:
    """A stand-in CUDA stream that records its queue: ops, event records and waits, in queue order."""

    def __init__(self, name):
        self.name, self.queue = name, []

    def record_event(self):
        event = ("event", self.name, len(self.queue))  # covers the ops queued so far
        self.queue.append(event)
        return event

    def wait_event(self, event):
        self.queue.append(("wait", event))

    def wait_stream(self, other):
        self.wait_event(other.record_event())


@pytest.mark.parametrize("builds_lists", [False, True], ids=["lists-on-caller", "lists-on-side"])
def test_overlapped_chunks_order_their_streams_on_the_cpu(builds_lists, monkeypatch):
    """The overlap's ordering, on recording stand-ins for the two streams (CPU, so CI checks it;
    tests/test_gpu_overlap.py's GPU tests check the real streams): every selection runs on the
    side stream after it has waited for the caller's stream; every fine stage waits for an event
    recorded after its chunk's selection; every selection queued after chunk m's selection was
    freed (host side) waits, on the side stream, for an event recorded after chunk m's fine stage
    (so reusing its memory is safe); at most two selections are alive; the output is the chunks in
    order's (the same CPU computation)."""
    q, k, v = (
        torch.randn(1, h, 640, 32, generator=torch.Generator().manual_seed(s)) for s, h in ((1, 4), (2, 2), (3, 2))
    )
    q, k = 2 * q, 2 * k
    per_row = 2 * -(-640 // 16) * attention.ROWS_BYTES_PER_ENTRY
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", int(per_row * 128))  # 128-row budget: 4 chunks
    with torch.no_grad():
        in_order = dash_attention(q, k, v, block_size=16, fine_stage="fused")
    log, current, alive, most_alive = [], ["main"], [], [0]
    streams = {name: FakeStream(name) for name in ("main", "side")}

    class OnSide:
        def __enter__(self):
            current.append("side")

        def __exit__(self, *exc):
            current.pop()

    class Tracked(tuple):
        def __del__(self):
            alive.remove(self.chunk)
            log.append(("free", self.chunk))

    def on_stream(kind, fn, tracked=False):
        def wrapper(*args, **kwargs):
            chunk = int(round(float(args[0][0, 0, 0, 0]) * 1e6))  # chunks told apart by their first query entry
            queue = streams[current[-1]].queue
            log.append(("queued", current[-1], len(queue)))  # host order of the stream's ops
            queue.append((kind, chunk))
            result = fn(*args, **kwargs)
            if not tracked:
                return result
            result = Tracked(result)
            result.chunk = chunk
            alive.append(chunk)
            most_alive[0] = max(most_alive[0], len(alive))
            log.append(("alive", chunk))
            return result

        return wrapper

    monkeypatch.setattr(attention, "overlap_applies", lambda query, n: n > 1)
    monkeypatch.setattr(attention, "_selection_streams", lambda device: (streams["main"], streams["side"], OnSide))
    monkeypatch.setattr(attention, "SELECTION_BUILDS_LISTS", builds_lists)
    monkeypatch.setattr(attention, "_select_rows", on_stream("select", attention._select_rows, not builds_lists))
    monkeypatch.setattr(attention, "_tile_lists", on_stream("lists", attention._tile_lists, True))
    monkeypatch.setattr(attention, "_attend_rows", on_stream("attend", attention._attend_rows))
    monkeypatch.setattr(attention, "_attend_listed", on_stream("attend", attention._attend_listed))
    with torch.no_grad():
        overlapped = dash_attention(q, k, v, block_size=16, fine_stage="fused")
    side, main = streams["side"].queue, streams["main"].queue
    chunk_ids = [op[1] for op in main if op[0] == "attend"]
    assert len(chunk_ids) >= 4 and len(set(chunk_ids)) == len(chunk_ids)  # taller early (causal) chunks
    assert {op[0] for op in main} == {"attend", "event", "wait"}  # the caller's stream: fine stages only
    assert [op[1] for op in side if op[0] == "select"] == chunk_ids
    first_select = next(n for n, op in enumerate(side) if op[0] == "select")
    assert any(op[0] == "wait" and op[1][1] == "main" for op in side[:first_select])

    def waits_for(queue, before, stream, op_index):  # a wait in queue[:before] on an event covering op_index
        return any(op[0] == "wait" and op[1][1] == stream and op[1][2] > op_index for op in queue[:before])

    for chunk in chunk_ids:
        last_side_op = max(n for n, op in enumerate(side) if op[0] in ("select", "lists") and op[1] == chunk)
        attend_at = main.index(("attend", chunk))
        assert waits_for(main, attend_at, "side", last_side_op), f"chunk {chunk}'s fine stage does not wait"
    for chunk in chunk_ids:  # memory freed with chunk m's selection is reused by side ops queued later
        freed_at = log.index(("free", chunk))
        attend_at = main.index(("attend", chunk))
        for entry in log[freed_at:]:
            if entry[0] == "queued" and entry[1] == "side":
                op = side[entry[2]]
                assert waits_for(side, entry[2], "main", attend_at), f"{op} may reuse chunk {chunk}'s memory early"
    assert most_alive[0] == 2
    if builds_lists:  # the Triton list builder and fine kernel (interpreter) against the torch rows path
        assert rel_err(overlapped, in_order) < 1e-5
    else:
        assert torch.equal(overlapped, in_order)
