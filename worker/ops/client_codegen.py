"""The generator of the slim client's job methods: pgpool_client/jobs.py, written from the
registry (jobs/registry.py): one contract (name, argument model, result type) and one typed method
per job. ``python -m worker.ops.client_codegen`` (``make client-jobs``) rewrites the file;
tests/unit/test_client_contracts.py fails when the file and the registry differ."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import types
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

import pgpool_client.models
from jobs.registry import JOBS, JobSpec
from pgpool_client.flow import Concurrency, Flow, Rate

TARGET = Path(pgpool_client.models.__file__).with_name("jobs.py")
HEADER = '''"""The jobs' contracts and typed methods, generated from jobs/registry.py: do not edit by hand.

Regenerate with ``make client-jobs`` (``python -m worker.ops.client_codegen``);
tests/unit/test_client_contracts.py fails when this file and the registry differ.
"""

from __future__ import annotations

{imports}

CONTRACTS: dict[str, JobContract] = {{
{contracts}}}


class JobMethods(ABC):
    """One typed method per job of the registry, each over ``enqueue`` (the Client's)."""

    @abstractmethod
    async def enqueue(
        self,
        name: str,
        /,
        *args: Any,
        options: EnqueueOptions | None = None,
        **kwargs: Any,
    ) -> JobHandle[Any]:
        """Enqueue job ``name`` (pgpool_client.client.Client.enqueue)."""
'''


class Renderer:
    """Python source for the types of fields and results, and the names it needs imported."""

    def __init__(self) -> None:
        self.models: set[str] = set()
        self.typing: set[str] = {"Any", "Unpack"}
        self.datetime = False
        self.flow: set[str] = set()  # pgpool_client.flow's names the contracts use

    def render(self, tp: Any) -> str:
        """``tp`` as source text; raises TypeError for a type it has no rendering for."""
        origin = get_origin(tp)
        if origin is Annotated:
            return self.render(get_args(tp)[0])
        if origin in (Union, types.UnionType):
            parts = [self.render(a) for a in get_args(tp) if a is not type(None)]
            return " | ".join([*parts, "None"] if type(None) in get_args(tp) else parts)
        if origin is Literal:
            self.typing.add("Literal")
            return f"Literal[{', '.join(json.dumps(a) for a in get_args(tp))}]"
        if origin is list or origin is dict:
            name = "list" if origin is list else "dict"
            return f"{name}[{', '.join(self.render(a) for a in get_args(tp))}]"
        if tp is None or tp is type(None):
            return "None"
        if tp in (int, str, bool, float):
            return str(tp.__name__)
        if tp in (datetime, AwareDatetime):
            self.datetime = True
            return "datetime"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            name = str(getattr(tp, "__name__", ""))
            if getattr(pgpool_client.models, name, None) is not tp:
                raise TypeError(f"{name} is not a model of pgpool_client/models.py")
            self.models.add(name)
            return name
        raise TypeError(f"no rendering of {tp!r} for the client's job methods")


def _parameter(r: Renderer, name: str, info: FieldInfo) -> str:
    text = f"{name}: {r.render(info.annotation)}"
    if info.is_required():
        return text
    if info.default_factory is not None:
        raise TypeError(f"field {name!r}: a default_factory has no rendering (use a default)")
    default = info.default
    return f"{text} = {json.dumps(default) if isinstance(default, str) else repr(default)}"


def _method(r: Renderer, spec: JobSpec[Any, Any]) -> str:
    fields = spec.args_model.model_fields
    params = ["self"]
    for name, info in fields.items():
        if not info.is_required() and "*" not in params:
            params.append("*")
        params.append(_parameter(r, name, info))
    params.append("**options: Unpack[EnqueueOptions]")
    result = r.render(get_type_hints(spec.function)["return"])
    doc = " ".join((spec.function.__doc__ or "").strip().split("\n\n")[0].split())
    lines = textwrap.wrap(doc, 88)
    body = "".join(f"        {line}\n" for line in lines)
    passed = "".join(f"            {name}={name},\n" for name in fields)
    return (
        f"\n    async def {spec.name}(\n"
        + "".join(f"        {p},\n" for p in params)
        + f"    ) -> JobHandle[{result}]:\n"
        + f'        """Enqueue ``{spec.name}`` ({spec.args_model.__name__}).\n\n{body}        """\n'
        + "        return await self.enqueue(\n"
        + f'            "{spec.name}",\n            options=options,\n{passed}        )\n'
    )


def _flow(r: Renderer, flow: Flow | None) -> str:
    """A contract's flow declaration as source (one item a line), "" for none."""
    if flow is None:
        return ""
    r.flow.add("Flow")
    parts = []
    for label, items in (("concurrency", flow.concurrency), ("rates", flow.rates)):
        if items:
            r.flow.add(type(items[0]).__name__)
            one_line = f"            {label}=({_call(items[0])},),\n"
            if len(items) == 1 and len(one_line) <= 101:  # as ruff format writes it
                parts.append(one_line)
                continue
            parts.append(f"            {label}=(\n")
            parts += [f"                {_call(item)},\n" for item in items]
            parts.append("            ),\n")
    if flow.fair is not None:
        parts.append(f"            fair={flow.fair!r},\n".replace("'", '"'))
    if flow.priority:
        parts.append(f"            priority={flow.priority},\n")
    return "        flow=Flow(\n" + "".join(parts) + "        ),\n"


def _call(item: Concurrency | Rate) -> str:
    """``Concurrency("name", max=1, key="user_id")``: the declared fields, defaults left out."""
    args = [f'"{item.name}"']
    for field in dataclasses.fields(item)[1:]:
        value = getattr(item, field.name)
        if value != field.default:
            args.append(f"{field.name}={value!r}".replace("'", '"'))
    return f"{type(item).__name__}({', '.join(args)})"


def generate() -> str:
    """The text of pgpool_client/jobs.py for the registry as it is."""
    r = Renderer()
    methods = "".join(_method(r, spec) for spec in JOBS)
    contracts = ""
    for spec in JOBS:
        r.models.add(spec.args_model.__name__)
        result = r.render(get_type_hints(spec.function)["return"])
        contracts += (
            f'    "{spec.name}": JobContract(\n'
            f'        "{spec.name}",\n        {spec.args_model.__name__},\n        {result},\n'
            + _flow(r, spec.flow)
            + "    ),\n"
        )
    imports = (
        "from abc import ABC, abstractmethod\n"
        + ("from datetime import datetime\n" if r.datetime else "")
        + (
            f"from typing import {', '.join(sorted(r.typing))}\n\n"
            "from pgpool_client.contracts import JobContract\n"
            + (f"from pgpool_client.flow import {', '.join(sorted(r.flow))}\n" if r.flow else "")
            + "from pgpool_client.handle import EnqueueOptions, JobHandle\n"
            "from pgpool_client.models import (\n"
            + "".join(f"    {name},\n" for name in sorted(r.models, key=lambda n: (n.lower(), n)))
            + ")"
        )
    )
    return HEADER.format(imports=imports, contracts=contracts) + methods


def main() -> int:
    """Rewrite pgpool_client/jobs.py; exit 0."""
    TARGET.write_text(generate(), encoding="utf-8")
    print(f"wrote {TARGET}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
