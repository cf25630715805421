"""ZeroGPU behaviour of the app without ZeroGPU: a refused call ("illegal duration") is retried
shorter, a used-up allowance is said in plain words, the deadline inside a call comes from the call's
own arguments, and a failed `import spaces` on a ZeroGPU Space is an error.

The refusals are the `spaces` package's own exceptions (`spaces.zero.gradio.error`, as
`spaces/zero/client.py` raises them when scheduling a call); the decorator is replaced by one that
evaluates the duration callable of the call's arguments and refuses like ZeroGPU would."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys

import pytest

from lora_codec import app_support as S

from .conftest import EXAMPLE

spaces_gradio = pytest.importorskip("spaces.zero.gradio")
gr = pytest.importorskip("gradio")


def refusal(title: str, requested: float):
    msg = (f"The requested GPU duration ({round(requested)}s) is larger than the maximum allowed"
           if title == S.ZEROGPU_ILLEGAL_DURATION else
           f"You have exceeded your free ZeroGPU quota ({round(requested)}s requested vs. 0s left). Try again in 2:00:00.")
    return spaces_gradio.error(title, msg)


class FakeZeroGPU:
    """A stand-in for `spaces.GPU(duration=...)` on a Space whose visitor may use `allowance_s`
    seconds per call (`quota_left` calls in all): the duration is computed from the call's own
    arguments, as `spaces` does, and a longer call is refused before it starts."""

    def __init__(self, allowance_s: float, quota_left: int = 1000):
        self.allowance_s = allowance_s
        self.quota_left = quota_left
        self.requested: list[float] = []
        self.accepted: list[float] = []

    def _check(self, duration, args, kwargs):
        d = duration(*args, **kwargs) if callable(duration) else duration
        self.requested.append(d)
        if self.quota_left <= 0:
            raise refusal("ZeroGPU quota exceeded", d)
        if d > self.allowance_s:
            raise refusal(S.ZEROGPU_ILLEGAL_DURATION, d)
        self.quota_left -= 1
        self.accepted.append(d)

    def GPU(self, duration):
        def deco(fn):
            if inspect.isgeneratorfunction(fn):
                @functools.wraps(fn)
                def gen(*args, **kwargs):
                    self._check(duration, args, kwargs)
                    yield from fn(*args, **kwargs)
                return gen

            @functools.wraps(fn)
            def plain(*args, **kwargs):
                self._check(duration, args, kwargs)
                return fn(*args, **kwargs)
            return plain
        return deco


def test_refusals_are_recognised():
    assert S.is_duration_refusal(refusal(S.ZEROGPU_ILLEGAL_DURATION, 200))
    assert not S.is_quota_refusal(refusal(S.ZEROGPU_ILLEGAL_DURATION, 200))
    assert S.is_quota_refusal(refusal("ZeroGPU quota exceeded", 200))
    assert not S.is_duration_refusal(refusal("ZeroGPU quota exceeded", 200))
    assert not S.is_duration_refusal(RuntimeError("CUDA out of memory"))


def test_illegal_duration_is_retried_shorter(monkeypatch):
    """The `S.gpu` decorator with a ZeroGPU that allows 50 s: 120 s and 72 s are refused, 43 s runs."""
    fake = FakeZeroGPU(allowance_s=50)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setattr(S, "LIMITS", dataclasses.replace(S.LIMITS, max_gpu_call_s=120, min_gpu_call_s=30))

    @S.gpu(duration=lambda n, call_s: call_s)
    def work(n, call_s):
        for i in range(n):
            yield i

    shorter = []
    items = list(S.iter_gpu_call(lambda cs: work(3, cs), 120.0, on_shorter=shorter.append))
    assert items == [0, 1, 2]
    assert fake.requested == [120, 72, 43] and fake.accepted == [43]
    assert shorter == [72, 43]

    # an allowance below the shortest useful call: the visitor is told in plain words
    fake2 = FakeZeroGPU(allowance_s=20)
    monkeypatch.setitem(sys.modules, "spaces", fake2)

    @S.gpu(duration=lambda call_s: call_s)
    def one(call_s):
        return "ran"

    with pytest.raises(S.GpuAllowanceError, match="GPU allowance on this Space is used up"):
        S.gpu_call(one, 120.0)
    assert fake2.requested == [120, 72, 43] and not fake2.accepted
    # a one-piece call (finish, decode) is not retried shorter than it needs
    with pytest.raises(S.GpuAllowanceError, match="needs about"):
        S.gpu_call(one, 120.0, need_s=100.0)


def test_quota_exceeded_says_allowance_used_up(monkeypatch):
    fake = FakeZeroGPU(allowance_s=500, quota_left=0)
    monkeypatch.setitem(sys.modules, "spaces", fake)

    @S.gpu(duration=lambda call_s: call_s)
    def work(call_s):
        yield 1

    with pytest.raises(S.GpuAllowanceError) as info:
        list(S.iter_gpu_call(work, 120.0))
    msg = str(info.value)
    assert "GPU allowance on this Space is used up" in msg and "Keep improving" in msg
    assert "exceeded your free ZeroGPU quota" in msg  # what ZeroGPU said, passed on
    assert fake.requested == [120]  # no retry: a shorter call would be refused too


def test_failed_spaces_import_on_zerogpu_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    monkeypatch.setattr(S, "ON_ZEROGPU", False)
    assert S.import_spaces() is None
    assert S.gpu(10)(len) is len  # off a Space: the identity decorator
    monkeypatch.setattr(S, "ON_ZEROGPU", True)
    with pytest.raises(RuntimeError, match="ZeroGPU Space"):
        S.gpu(10)


def test_fit_deadline_counts_from_the_call_and_its_own_duration():
    # 100 s asked for: after 70 s with 5 s steps there is room (70 + 10 + 10 <= 100), after 85 s not
    assert not S.fit_deadline_reached(70.0, 100.0, 5.0)
    assert S.fit_deadline_reached(85.0, 100.0, 5.0)
    assert S.fit_slice_s(120.0, 30.0, 2.0) == pytest.approx(78.0)
    assert S.fit_slice_s(20.0, 30.0) == 1.0


def test_app_fit_retries_a_refused_call_shorter(monkeypatch, tmp_path):
    """A whole compress in the app (tiny backbone) on a simulated ZeroGPU that allows 50 s per call:
    the first fit call (120 s) and the next (72 s) are refused, 43 s calls run, the job remembers
    the length that worked, and the code is written. Then the quota runs out: the visitor reads that
    the GPU allowance is used up."""
    import app
    from lora_codec.app import gpu as G

    fake = FakeZeroGPU(allowance_s=50)
    monkeypatch.setattr(S, "ON_ZEROGPU", True)
    limits = dataclasses.replace(S.LIMITS, max_gpu_call_s=120, min_gpu_call_s=30)
    monkeypatch.setattr(S, "LIMITS", limits)
    monkeypatch.setattr(app, "LIMITS", limits)
    raw_fit, raw_finish = G.gpu_fit, G.gpu_finish
    monkeypatch.setattr(G, "gpu_fit", fake.GPU(G.fit_duration)(raw_fit))
    monkeypatch.setattr(G, "gpu_finish", fake.GPU(G.finish_duration)(raw_finish))
    monkeypatch.setattr(S, "APP_TMP", tmp_path)
    assert app.COSTS.ready.wait(180)

    ui = {k: k for k in app.OUTPUT_KEYS}
    compress = app.make_compress(ui)
    outs = list(compress(str(EXAMPLE), "a rabbit", 0.0, "balanced", 1.0, 6, 0, 0, 2, 17, 1, 0, None, None, None))
    last = outs[-1]
    assert last["summary"]["fit_steps"] == 6 and last["summary"]["total_bytes"] > 0
    job = last["job"]
    assert job["max_call_s"] == 43
    assert fake.requested[:3] == [120, 72, 43]
    assert all(d <= 50 for d in fake.accepted)

    # the allowance runs out: a plain-words message, the saved fit is kept
    fake.quota_left = 0
    more = app.make_keep_improving(ui)
    with pytest.raises(gr.Error) as info:
        list(more(3, job, None))
    assert "GPU allowance on this Space is used up" in info.value.message
