"""Results as dataclasses whose fields are the top-level keys of the CLI's ``--json`` (values
stay plain dicts, lists and numbers), with ``to_dict()`` and a notebook rendering."""

import dataclasses
import html

_GIB = float(1 << 30)


def _gib(n):
    return "" if n is None else f"{n / _GIB:.2f} GiB"


@dataclasses.dataclass(repr=False)
class Result:
    """What every result has besides the JSON's fields: the exit code the CLI would return,
    the argv it ran, and ``to_dict()``."""

    def to_dict(self):
        """The JSON document the CLI prints with ``--json``, as plain Python data."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __repr__(self):
        keys = ", ".join(f.name for f in dataclasses.fields(self))
        return f"{type(self).__bases__[0].__name__}(exit_code={self.exit_code}; {keys})"


class CheckResult(Result):
    """``vramplan check --json``: ``fits`` (None without a GPU), ``peak``, ``phases``,
    ``tensors``, ``categories``, ... and ``svg``, the memory timeline the CLI draws."""

    def _repr_html_(self):
        verdict = {True: "FITS", False: "DOES NOT FIT", None: "no GPU given"}[self.fits]
        gpu = self.gpu or {}
        head = f"<p><b>{html.escape(verdict)}</b>"
        if gpu:
            head += (
                f" on {html.escape(str(gpu.get('name', '')))}"
                f" ({_gib(gpu.get('usable_bytes'))} usable)"
            )
        head += f" — peak {_gib(self.peak.get('device_bytes'))} on the device in phase "
        head += f"<code>{html.escape(str(self.peak.get('phase')))}</code></p>"
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(str(p.get("name"))),
                _gib(p.get("peak_allocated_bytes")),
                _gib(p.get("peak_reserved_bytes")),
                _gib(p.get("peak_device_bytes")),
            )
            for p in self.phases
        )
        table = (
            "<table><tr><th>phase</th><th>peak allocated</th><th>peak reserved</th>"
            f"<th>peak on the device</th></tr>{rows}</table>"
        )
        return head + table + (self.svg or "")


class SuggestResult(Result):
    """``vramplan suggest --json``: ``best`` (None when nothing fits), ``baseline``,
    ``alternatives``, ``notes``, ..."""

    def _repr_html_(self):
        rows = []
        for label, c in [("your config", self.baseline)] + [
            (a.get("label", ""), a) for a in ([self.best] if self.best else [])
        ] + [(a.get("label", ""), a) for a in self.alternatives or []]:
            rows.append(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                    html.escape(str(label)),
                    html.escape(str(c.get("changes", ""))),
                    _gib(c.get("peak_device_bytes")),
                    c.get("fits", ""),
                )
            )
        return (
            "<table><tr><th>candidate</th><th>changes</th><th>peak on the device</th>"
            f"<th>fits</th></tr>{''.join(rows)}</table>"
        )


class DiagnoseResult(Result):
    """``vramplan diagnose --json``: ``is_oom``, ``facts`` (bytes), ``phase``, ``culprit``,
    ``causes``, ``fixes``, ..."""

    def _repr_html_(self):
        items = "".join(
            f"<li><b>{html.escape(str(c.get('kind')))}</b>: {html.escape(str(c.get('evidence')))}</li>"
            for c in self.causes or []
        )
        culprit = self.culprit or {}
        return (
            f"<p>OOM: {self.is_oom}, phase <code>{html.escape(str(self.phase))}</code>, "
            f"culprit {html.escape(str(culprit.get('name')))}</p><ul>{items}</ul>"
        )


_TYPES = {}


def make_result(base, data, code, argv, svg=None):
    """An instance of a dataclass with exactly ``data``'s keys as fields, subclassing ``base``
    (so ``isinstance(r, CheckResult)`` holds whatever fields a CLI version prints)."""
    keys = tuple(data)
    cls = _TYPES.get((base, keys))
    if cls is None:
        cls = dataclasses.make_dataclass(
            base.__name__, [(k, object) for k in keys], bases=(base,), repr=False
        )
        cls.__qualname__ = base.__name__
        _TYPES[(base, keys)] = cls
    result = cls(**data)
    result.exit_code = code
    result.argv = list(argv)
    result.svg = svg
    return result
