"""Handler registration mistakes a user makes, caught when the module is loaded (ceylon-worker
--app exits 2 saying what is wrong), not at each task, nor silently."""

from __future__ import annotations

import sys

import pytest

from ceylon_net.edge import handlers
from ceylon_net.errors import ConfigError


@pytest.mark.timeout(10)
def test_two_different_functions_of_one_name_in_one_module_are_refused(tmp_path, monkeypatch):
    """A copy-pasted handler kept its function name and its handler name: the second
    silently replaced the first (only the same file and qualname are compared, as for a
    module imported twice, as __main__ and by name). ``ceylon-worker --app h5_dup_app``
    logs "--app h5_dup_app: handlers x" and runs only the second."""
    (tmp_path / "h5_dup_app.py").write_text(
        "from ceylon_net import handler\n\n\n"
        "@handler(\"x\")\ndef process():\n    return 1\n\n\n"
        "@handler(\"x\")\ndef process():  # noqa: F811\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(handlers, "_HANDLERS", {})
    monkeypatch.delitem(sys.modules, "h5_dup_app", raising=False)
    try:
        with pytest.raises(ConfigError, match="handler 'x' is registered twice"):
            handlers.load_app("h5_dup_app")
    finally:
        sys.modules.pop("h5_dup_app", None)


@pytest.mark.timeout(10)
def test_two_lambdas_under_one_name_are_refused(monkeypatch):
    monkeypatch.setattr(handlers, "_HANDLERS", {})
    handlers.handler("h5.lam")(lambda: 1)
    with pytest.raises(ConfigError, match="registered twice"):
        handlers.handler("h5.lam")(lambda: 2)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("thing", [5, "process", classmethod(lambda cls: 1)],
                         ids=["int", "str", "classmethod"])
def test_what_cannot_be_called_is_refused_as_a_handler(monkeypatch, thing):
    """Registered, advertised to the admin, and then every task of it fails with
    "TypeError: 'int' object is not callable"."""
    monkeypatch.setattr(handlers, "_HANDLERS", {})
    with pytest.raises(ConfigError, match=r"^handler 'h5.bad': .* cannot be called \(a method: "):
        handlers.handler("h5.bad")(thing)


def _gen():
    yield 1


async def _agen():
    yield 1


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fn", [_gen, _agen], ids=["generator", "async generator"])
def test_a_generator_function_is_refused_as_a_handler(monkeypatch, fn):
    """Its tasks failed 'cannot encode generator', its body never run."""
    monkeypatch.setattr(handlers, "_HANDLERS", {})
    with pytest.raises(ConfigError, match=r"^handler 'h.gen': _a?gen \(.*\) is a generator "
                                          r"function \(it yields\): .*; return a list$"):
        handlers.handler("h.gen")(fn)
    assert handlers.registered() == {}
