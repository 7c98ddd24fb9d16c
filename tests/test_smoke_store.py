from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService


def test_a_linear_run_is_persisted(store, registry):
    registry.add("hello", lambda inputs, ctx: {"step": ctx.step_id})
    loaded = load_text(
        "name: t\nsteps:\n  - {id: a, runner: hello}\n  - {id: b, runner: hello}\n",
        "t.yaml",
        registry,
    )
    view = BatchService(store, DirectDispatcher(registry)).run(BatchService.prepare(loaded, {}))
    assert view.status == "succeeded"
    assert [(s.step, s.status, s.result) for s in view.steps] == [
        ("a", "succeeded", {"step": "a"}),
        ("b", "succeeded", {"step": "b"}),
    ]
    assert view.started_at.tzinfo is not None
